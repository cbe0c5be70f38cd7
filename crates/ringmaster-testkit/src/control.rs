//! The test side of the master's control socket: one-off requests
//! ([`ClusterProc::ask`], [`ClusterProc::status`]) and the stream of
//! lifecycle events ([`Events`]) that tests wait on instead of searching
//! the log's text.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringmaster_proto::{ClusterStatus, ControlRequest, Lifecycle, LifecycleRecord};
use serde_json::{Value, json};

use crate::ClusterProc;

/// How long a one-off request may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

impl ClusterProc {
    /// The master's control socket (`server.control_socket`, relative to
    /// the cluster's directory; `ringmaster.sock` by default).
    pub fn control_socket(&self) -> PathBuf {
        self.control_socket.clone()
    }

    /// Sends one control request (`v` is added) and returns every reply
    /// line up to the final one; `Err` when the socket cannot be reached.
    pub fn try_ask(&self, mut request: Value) -> std::io::Result<Vec<Value>> {
        request["v"] = json!(1);
        let mut stream = UnixStream::connect(&self.control_socket)?;
        stream.set_read_timeout(Some(ASK_TIMEOUT))?;
        stream.write_all(format!("{request}\n").as_bytes())?;
        let mut lines = Vec::new();
        for line in BufReader::new(stream).lines() {
            let value: Value = serde_json::from_str(&line?)?;
            let last = value.get("ok").is_some();
            lines.push(value);
            if last {
                return Ok(lines);
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the master closed the control connection before its final line: {lines:?}"),
        ))
    }

    /// Like [`ClusterProc::try_ask`], failing the test when the socket
    /// cannot be reached.
    pub fn ask(&self, request: Value) -> Vec<Value> {
        self.try_ask(request.clone()).unwrap_or_else(|e| {
            panic!(
                "control request {request} to {} failed: {e}\n{}",
                self.control_socket.display(),
                self.log()
            )
        })
    }

    /// The cluster's status, as `status --json` prints it.
    pub fn status(&self) -> ClusterStatus {
        let lines = self.ask(json!({"cmd": "status"}));
        let last = lines.last().cloned().unwrap_or_default();
        serde_json::from_value(last["result"].clone())
            .unwrap_or_else(|e| panic!("status does not read ({e}): {last}"))
    }

    /// The status, or `None` while the control socket does not answer
    /// (the master is starting) or the answer is an error.
    pub fn try_status(&self) -> Option<ClusterStatus> {
        let lines = self.try_ask(json!({"cmd": "status"})).ok()?;
        serde_json::from_value(lines.last()?["result"].clone()).ok()
    }

    /// The master's lifecycle events from now on: subscribe before doing
    /// what the test waits for. Returns once the master has confirmed the
    /// subscription, so nothing the test does next falls before it.
    pub fn events(&self) -> Events {
        self.subscribe(0)
    }

    /// Every lifecycle event the master kept (its last 1024), then every
    /// new one: for what happened before the test could subscribe (the
    /// first spawns).
    pub fn history(&self) -> Events {
        self.subscribe(usize::MAX >> 1)
    }

    fn subscribe(&self, last: usize) -> Events {
        let connect = || -> std::io::Result<UnixStream> {
            let mut stream = UnixStream::connect(&self.control_socket)?;
            stream.write_all(ControlRequest::Events { last }.to_line().as_bytes())?;
            Ok(stream)
        };
        let stream = connect().unwrap_or_else(|e| {
            panic!(
                "cannot subscribe to the lifecycle events at {}: {e}\n{}",
                self.control_socket.display(),
                self.log()
            )
        });
        let mut events = Events {
            reader: BufReader::new(stream),
            seen: Vec::new(),
            next: 0,
            partial: String::new(),
            subscribed: false,
        };
        let deadline = Instant::now() + ASK_TIMEOUT;
        while !events.subscribed {
            if let Err(why) = events.read_one(deadline) {
                panic!("subscribing to the lifecycle events: {why}\n{}", self.log());
            }
        }
        events
    }
}

/// A subscription to the master's lifecycle events (the control socket's
/// `events` request). Every event read is kept, so several waits can
/// match events in order.
pub struct Events {
    reader: BufReader<UnixStream>,
    /// Every event read so far.
    seen: Vec<LifecycleRecord>,
    /// Index in `seen` of the first event no wait has consumed yet.
    next: usize,
    /// A line read in part when a read timed out.
    partial: String,
    /// Whether the master confirmed the subscription.
    subscribed: bool,
}

impl Events {
    /// Waits for the next event (after those earlier waits matched) that
    /// `pred` accepts, and returns it; fails the test after `timeout`,
    /// printing every event seen.
    pub fn wait(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Lifecycle) -> bool,
    ) -> Lifecycle {
        self.wait_n(timeout, what, 1, &mut pred).remove(0).what
    }

    /// Waits until `n` more events that `pred` accepts have arrived;
    /// returns them, numbered and timed.
    pub fn wait_n(
        &mut self,
        timeout: Duration,
        what: &str,
        n: usize,
        mut pred: impl FnMut(&Lifecycle) -> bool,
    ) -> Vec<LifecycleRecord> {
        let deadline = Instant::now() + timeout;
        let mut found = Vec::new();
        loop {
            while self.next < self.seen.len() && found.len() < n {
                let record = &self.seen[self.next];
                self.next += 1;
                if pred(&record.what) {
                    found.push(record.clone());
                }
            }
            if found.len() == n {
                return found;
            }
            if let Err(why) = self.read_one(deadline) {
                panic!(
                    "waiting for {what} ({} of {n} seen): {why}; the events were:\n{}",
                    found.len(),
                    self.listing()
                );
            }
        }
    }

    /// Waits until the master kills worker `pid`; why it did.
    pub fn wait_killed(&mut self, timeout: Duration, pid: u32) -> String {
        let what = format!("worker {pid} killed");
        let killed = self.wait(
            timeout,
            &what,
            |e| matches!(e, Lifecycle::WorkerKilled { pid: p, .. } if *p == pid),
        );
        match killed {
            Lifecycle::WorkerKilled { reason, .. } => reason,
            _ => unreachable!("the wait matched a kill"),
        }
    }

    /// Every event read so far.
    pub fn seen(&self) -> Vec<Lifecycle> {
        self.seen.iter().map(|r| r.what.clone()).collect()
    }

    /// Reads events for `d`, keeping them (for a test that checks that
    /// something did *not* happen).
    pub fn gather(&mut self, d: Duration) -> Vec<Lifecycle> {
        let deadline = Instant::now() + d;
        while self.read_one(deadline).is_ok() {}
        self.seen()
    }

    fn listing(&self) -> String {
        self.seen
            .iter()
            .map(|r| format!("  #{} +{} ms {}\n", r.seq, r.at_ms, r.what))
            .collect()
    }

    /// Reads lines until one lifecycle event is kept or the subscription
    /// is confirmed, or `deadline`.
    fn read_one(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            // What a timed-out read got of a line stays for the next read.
            match self.reader.read_line(&mut self.partial) {
                Ok(0) => return Err("the master closed the events stream".into()),
                Ok(_) if !self.partial.ends_with('\n') => continue,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("timed out".into());
                }
                Err(e) => return Err(format!("reading the events failed: {e}")),
            }
            let line = std::mem::take(&mut self.partial);
            let value: Value = serde_json::from_str(&line)
                .map_err(|e| format!("a line that is not JSON ({e}): {line}"))?;
            match value["event"].as_str() {
                Some("lifecycle") => {
                    let record: LifecycleRecord = serde_json::from_value(value)
                        .map_err(|e| format!("an event that does not read ({e}): {line}"))?;
                    if let Some(last) = self.seen.last()
                        && record.seq != last.seq + 1
                    {
                        return Err(format!(
                            "events {}..{} were skipped",
                            last.seq + 1,
                            record.seq
                        ));
                    }
                    self.seen.push(record);
                    return Ok(());
                }
                Some("skipped") => return Err(format!("the master skipped events: {line}")),
                Some("subscribed") => {
                    self.subscribed = true;
                    return Ok(());
                }
                _ if value.get("ok").is_some() => {
                    return Err(format!("the events request ended: {line}"));
                }
                // Heartbeats.
                _ => {}
            }
        }
    }
}
