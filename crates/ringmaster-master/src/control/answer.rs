//! Answering one request: what needs the supervisor goes to it as a
//! [`Command`] (a one-shot answer, or reply lines streamed until the final
//! one); `logs` and `events` are served here from their hubs, each
//! following until the client goes away.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::request::{
    self, Command, EVENTS_QUEUE, LogFilter, Request, ScaleTo, error, is_final, log_event, ok,
};
use super::{ANSWER_TIMEOUT, FOLLOW_HEARTBEAT, Shared, WRITE_CHUNK, send, write_all};

/// Answers one request; an error is the client gone.
pub(super) async fn handle(
    line: &str,
    shared: &Shared,
    write: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let request = match request::parse(line) {
        Ok(r) => r,
        Err(e) => return send(write, &e).await,
    };
    match request {
        Request::Status {} => {
            let (tx, rx) = oneshot::channel();
            let answer = match ask(shared, Command::Status(tx), rx).await {
                Ok(status) => ok(serde_json::to_value(status).unwrap_or(Value::Null)),
                Err(e) => e,
            };
            send(write, &answer).await
        }
        Request::Logs {
            follow,
            lines,
            group,
            slot,
            level,
        } => match LogFilter::new(group, slot, level.as_deref()) {
            Ok(filter) => logs(shared, write, filter, lines, follow).await,
            Err(e) => send(write, &e).await,
        },
        Request::Events { last } => events(shared, write, last).await,
        Request::Scale {
            group,
            count,
            delta,
        } => scale(shared, write, group, count, delta).await,
        Request::Reload { group } => {
            let (events, rx) = mpsc::channel(EVENTS_QUEUE);
            stream(shared, write, Command::Reload { group, events }, rx).await
        }
        Request::Restart { group, slot } => {
            let (events, rx) = mpsc::channel(EVENTS_QUEUE);
            let cmd = Command::Restart {
                group,
                slot,
                events,
            };
            stream(shared, write, cmd, rx).await
        }
        Request::Stop { timeout_ms } => {
            let (events, rx) = mpsc::channel(EVENTS_QUEUE);
            let timeout = timeout_ms.map(Duration::from_millis);
            stream(shared, write, Command::Stop { timeout, events }, rx).await
        }
        Request::Upgrade {} => {
            let (events, rx) = mpsc::channel(EVENTS_QUEUE);
            stream(shared, write, Command::Upgrade { events }, rx).await
        }
    }
}

/// `scale`: to a count or by a delta (exactly one of them).
async fn scale(
    shared: &Shared,
    write: &mut OwnedWriteHalf,
    group: String,
    count: Option<usize>,
    delta: Option<i64>,
) -> std::io::Result<()> {
    let to = match (count, delta) {
        (Some(n), None) => ScaleTo::Count(n),
        (None, Some(d)) => ScaleTo::Delta(d),
        _ => {
            let e = error(
                "bad_request",
                "scale takes either \"count\" (the new number of workers) or \"delta\" (+K or -K)"
                    .into(),
            );
            return send(write, &e).await;
        }
    };
    let (tx, rx) = oneshot::channel();
    let cmd = Command::Scale {
        group,
        to,
        reply: tx,
    };
    let answer = ask(shared, cmd, rx).await.unwrap_or_else(|e| e);
    send(write, &answer).await
}

/// Sends a command with a one-shot answer and waits for it.
async fn ask<T>(shared: &Shared, cmd: Command, rx: oneshot::Receiver<T>) -> Result<T, Value> {
    let gone = || {
        error(
            "unavailable",
            "the master is stopping and no longer takes commands".into(),
        )
    };
    shared.commands.send(cmd).await.map_err(|_| gone())?;
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(gone()),
        Err(_) => Err(error(
            "timeout",
            format!(
                "the master did not answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Sends a command whose reply lines stream in, and relays them until the
/// final one.
async fn stream(
    shared: &Shared,
    write: &mut OwnedWriteHalf,
    cmd: Command,
    mut rx: mpsc::Receiver<Value>,
) -> std::io::Result<()> {
    if shared.commands.send(cmd).await.is_err() {
        let e = error(
            "unavailable",
            "the master is stopping and no longer takes commands".into(),
        );
        return send(write, &e).await;
    }
    while let Some(line) = rx.recv().await {
        send(write, &line).await?;
        if is_final(&line) {
            return Ok(());
        }
    }
    // The supervisor dropped the stream without a final line: it stopped.
    let e = error(
        "unavailable",
        "the master stopped before the command finished".into(),
    );
    send(write, &e).await
}

/// `logs`: the last `lines` lines that pass `filter`, then with `follow`
/// every new one until the client goes away.
async fn logs(
    shared: &Shared,
    write: &mut OwnedWriteHalf,
    filter: LogFilter,
    lines: usize,
    follow: bool,
) -> std::io::Result<()> {
    let Some(hub) = &shared.logs else {
        let e = error(
            "unavailable",
            "this master does not capture its workers' logs".into(),
        );
        return send(write, &e).await;
    };
    // Subscribe before reading the ring, so no line falls between.
    let mut rx = follow.then(|| hub.subscribe());
    let sent = {
        // A tail copies up to the whole ring: a few at a time, so that
        // many clients cannot make the master hold many copies.
        let _permit = shared.tails.acquire().await;
        let tail = hub.tail(lines, |l| filter.keeps(l));
        let mut out = Vec::new();
        for line in &tail {
            push_line(&mut out, &log_event(line));
            if out.len() >= WRITE_CHUNK {
                write_all(write, &out).await?;
                out.clear();
            }
        }
        write_all(write, &out).await?;
        tail.len()
    };
    let Some(rx) = &mut rx else {
        return send(write, &ok(json!({"lines": sent}))).await;
    };
    follow_logs(write, &filter, rx).await
}

/// `logs --follow`: every new line that passes `filter`, until the client
/// goes away.
async fn follow_logs(
    write: &mut OwnedWriteHalf,
    filter: &LogFilter,
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<crate::logs::Block>>,
) -> std::io::Result<()> {
    let mut last_write = Instant::now();
    loop {
        // A follower that hung up is noticed by the next write: when
        // nothing was written for a while (a quiet log, or a filter that
        // drops everything), a heartbeat line is that write, so gone
        // followers cannot keep every connection busy.
        let quiet = (last_write + FOLLOW_HEARTBEAT).saturating_duration_since(Instant::now());
        let next = match tokio::time::timeout(quiet, rx.recv()).await {
            Ok(next) => next,
            Err(_) => {
                send(write, &json!({"event": "heartbeat"})).await?;
                last_write = Instant::now();
                continue;
            }
        };
        let block = match next {
            Ok(b) => b,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                send(write, &json!({"event": "skipped", "blocks": n})).await?;
                continue;
            }
            Err(_) => return Ok(()),
        };
        let mut out = Vec::new();
        for line in block.lines().filter(|l| filter.keeps(l)) {
            push_line(&mut out, &log_event(&line));
        }
        if !out.is_empty() {
            write_all(write, &out).await?;
            last_write = Instant::now();
        }
    }
}

/// `events`: the last `last` lifecycle events kept, then every new one
/// until the client goes away (a heartbeat line after a quiet while, so a
/// client that hung up is noticed, as for `logs --follow`).
async fn events(shared: &Shared, write: &mut OwnedWriteHalf, last: usize) -> std::io::Result<()> {
    let (replay, mut rx) = shared.lifecycle.subscribe(last);
    let mut out = Vec::new();
    for record in &replay {
        push_record(&mut out, record);
    }
    // From here on nothing is missed: a client may now act and wait for
    // what follows (a test sends its signal only after this line).
    push_line(&mut out, &json!({"event": "subscribed"}));
    write_all(write, &out).await?;
    loop {
        let record = match tokio::time::timeout(FOLLOW_HEARTBEAT, rx.recv()).await {
            Err(_) => {
                send(write, &json!({"event": "heartbeat"})).await?;
                continue;
            }
            Ok(Ok(record)) => record,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                send(write, &json!({"event": "skipped", "events": n})).await?;
                continue;
            }
            Ok(Err(_)) => return Ok(()),
        };
        out.clear();
        push_record(&mut out, &record);
        // What else is queued goes in the same write.
        while let Ok(record) = rx.try_recv() {
            push_record(&mut out, &record);
        }
        write_all(write, &out).await?;
    }
}

fn push_record(out: &mut Vec<u8>, record: &ringmaster_proto::LifecycleRecord) {
    if serde_json::to_writer(&mut *out, record).is_ok() {
        out.push(b'\n');
    }
}

fn push_line(out: &mut Vec<u8>, line: &Value) {
    if serde_json::to_writer(&mut *out, line).is_ok() {
        out.push(b'\n');
    }
}
