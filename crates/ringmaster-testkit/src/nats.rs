//! A private `nats-server` per test, on a free port, that the test may
//! stop and start again (the machine's shared NATS is never touched), and
//! a raw publisher speaking the NATS text protocol, for messages the
//! bridge itself would never send.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server` process, killed when this value is dropped.
pub struct NatsServer {
    addr: SocketAddr,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts `nats-server` on a free port of 127.0.0.1 and waits until it
    /// accepts connections. Panics, saying how to install it, when the
    /// binary is missing.
    pub fn start() -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port for nats-server")
            .port();
        let mut server = NatsServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
        };
        server.resume();
        server
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Kills the server (its clients see the connection drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, and waits until it
    /// accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let deadline = Instant::now() + Duration::from_secs(10);
        let child = Command::new(binary())
            .args(["-a", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run nats-server: {e}. Install it (`apt-get install nats-server`, or \
                     https://github.com/nats-io/nats-server/releases) so that it is on PATH"
                )
            });
        self.child = Some(child);
        while TcpStream::connect(self.addr).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("nats-server on {} exited at start: {status}", self.addr);
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Publishes `payload` on `subject` with the `headers` given, over a
    /// connection of its own, and waits for the server to have it.
    pub fn publish(&self, subject: &str, headers: &[(&str, &str)], payload: &[u8]) {
        let stream = TcpStream::connect(self.addr).expect("connect to nats-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("INFO");
        assert!(line.starts_with("INFO "), "{line}");
        let mut head = String::from("NATS/1.0\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = Vec::new();
        out.extend_from_slice(b"CONNECT {\"verbose\":false,\"headers\":true}\r\n");
        out.extend_from_slice(
            format!(
                "HPUB {subject} {} {}\r\n",
                head.len(),
                head.len() + payload.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\nPING\r\n");
        (&stream).write_all(&out).expect("publish");
        loop {
            line.clear();
            reader.read_line(&mut line).expect("PONG");
            assert!(!line.starts_with("-ERR"), "nats-server refused: {line}");
            if line.starts_with("PONG") {
                return;
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `nats-server` to run: the one on `PATH`, else Debian's, which
/// lives in `/usr/sbin` (not on an ordinary user's `PATH`).
fn binary() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| "/usr/sbin/nats-server".into())
}
