//! Plain HTTP/1.1 over std sockets: one-off requests with or without a
//! timeout, a keep-alive client, and the pid a worker's `/healthz` names.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response: status, headers and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `Name: value` header lines.
fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// An HTTP/1.1 client on one keep-alive connection, as a browser or a
/// connection pool uses one: it reconnects only when the server said
/// `Connection: close` (or closed after a complete response), never to hide
/// a request that failed.
#[derive(Debug)]
pub struct KeepAlive {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    /// How many connections it opened.
    pub connections: u64,
}

impl KeepAlive {
    /// A client for `addr`; connects on the first request.
    pub fn new(addr: SocketAddr) -> Self {
        KeepAlive {
            addr,
            stream: None,
            connections: 0,
        }
    }

    /// Sends GET `path` on the current connection (opening one if needed).
    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.set_nodelay(true)?;
            self.stream = Some(BufReader::new(s));
            self.connections += 1;
        }
        let result = self.exchange(path);
        if !matches!(&result, Ok((_, true))) {
            self.stream = None;
        }
        result.map(|(r, _)| r)
    }

    /// One request and its response; also whether the connection stays open.
    fn exchange(&mut self, path: &str) -> std::io::Result<(Response, bool)> {
        let addr = self.addr;
        let reader = self
            .stream
            .as_mut()
            .ok_or_else(|| std::io::Error::other("not connected"))?;
        write!(
            reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        )?;
        let mut status_line = String::new();
        if reader.read_line(&mut status_line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut length = 0usize;
        let mut keep = true;
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            head.push(line.to_string());
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(std::io::Error::other)?;
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                keep = false;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let body = String::from_utf8_lossy(&body).into_owned();
        let headers = parse_headers(head.iter().map(String::as_str));
        Ok((
            Response {
                status,
                headers,
                body,
            },
            keep,
        ))
    }
}

/// One request with any method and an optional JSON body, over a fresh
/// connection (`Connection: close`). For a redirect (3xx) the `Location`
/// header stands in the body's place.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<Response> {
    exchange(addr, method, path, json, Duration::from_secs(10))
}

/// One GET over a fresh connection (`Connection: close`).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    get_timeout(addr, path, Duration::from_secs(10))
}

/// One GET with a connect and read timeout.
pub fn get_timeout(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<Response> {
    exchange(addr, "GET", path, None, timeout)
}

fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let body = json.unwrap_or("");
    let ctype = if json.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP head in {text:?}")))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let body = if (300..400).contains(&status) {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(name, _)| name.eq_ignore_ascii_case("location"))
                    .map(|(_, v)| v.trim())
            })
            .unwrap_or("")
            .to_string()
    } else {
        body.to_string()
    };
    let headers = parse_headers(head.lines().skip(1));
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The pid in a `/healthz` body.
pub fn health_pid(addr: SocketAddr) -> std::io::Result<u32> {
    let r = get(addr, "/healthz")?;
    let v: serde_json::Value = serde_json::from_str(&r.body)
        .map_err(|e| std::io::Error::other(format!("{e}: {}", r.body)))?;
    v["pid"]
        .as_u64()
        .map(|p| p as u32)
        .ok_or_else(|| std::io::Error::other(r.body))
}
