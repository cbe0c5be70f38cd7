//! Module `live`: long-lived connections that end cleanly on a drain.
//!
//! - `GET /ws`: a WebSocket echo (text and binary). When the worker starts
//!   draining (a reload, a scale-down, a stop) it sends a close frame with
//!   code 1001 ("going away") and the reason `draining`, so the client knows
//!   to reconnect, which lands on a worker that is not draining.
//! - `GET /events`: server-sent events, a `tick` every `every_ms` (default
//!   1000) with a count and the worker's pid. On a drain it sends one last
//!   event, `drain`, and ends the stream; an `EventSource` reconnects by
//!   itself.
//!
//! Both read the drain from `AppContext::draining`; what ignores it is cut
//! at the group's `drain_timeout`. With `RINGMASTER_DEMO_TEST_ROUTES=1`,
//! `GET /__test/ws-ignore-drain` is an echo that does not, for the tests of
//! that cut.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ringmaster::axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use ringmaster::axum::response::sse::{Event, KeepAlive, Sse};
use ringmaster::prelude::*;
use serde::Deserialize;
use tokio::sync::mpsc;

/// The WebSocket close code sent on a drain (RFC 6455: going away).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// The live module; `test_routes` mounts `/__test/ws-ignore-drain`.
pub struct Live {
    /// Mount the echo that ignores the drain.
    pub test_routes: bool,
}

impl Live {
    /// The module with the test route as `RINGMASTER_DEMO_TEST_ROUTES` says.
    pub fn from_env() -> Self {
        Live {
            test_routes: crate::ops::switch(crate::ops::ENV_TEST_ROUTES),
        }
    }
}

impl Module for Live {
    fn routes(&self) -> Controller {
        let c = Controller::new("/").get("/ws", ws).get("/events", events);
        if self.test_routes {
            c.get("/__test/ws-ignore-drain", ws_ignore_drain)
        } else {
            c
        }
    }
}

/// `GET /ws`: the echo that closes with 1001 on a drain.
async fn ws(upgrade: WebSocketUpgrade, State(ctx): State<AppContext>) -> impl IntoResponse {
    upgrade.on_upgrade(move |socket| echo(socket, Some(ctx)))
}

/// `GET /__test/ws-ignore-drain`: the echo, deaf to the drain.
async fn ws_ignore_drain(upgrade: WebSocketUpgrade) -> impl IntoResponse {
    upgrade.on_upgrade(move |socket| echo(socket, None))
}

/// Echoes until the client closes, or (with a context) the worker drains.
async fn echo(mut socket: WebSocket, ctx: Option<AppContext>) {
    let drained = async move {
        match ctx {
            Some(ctx) => ctx.draining().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(drained);
    loop {
        let msg = tokio::select! {
            () = &mut drained => {
                let frame = CloseFrame {
                    code: CLOSE_GOING_AWAY,
                    reason: "draining".into(),
                };
                if socket.send(Message::Close(Some(frame))).await.is_ok() {
                    // The client answers with its own close frame; wait a
                    // moment for it so the close is clean on both sides.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(m)) = socket.recv().await {
                            if matches!(m, Message::Close(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                }
                return;
            }
            msg = socket.recv() => msg,
        };
        let reply = match msg {
            Some(Ok(Message::Text(t))) => Message::Text(t),
            Some(Ok(Message::Binary(b))) => Message::Binary(b),
            // Pings are answered by the socket itself; pongs need nothing.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

/// The query of `GET /events`.
#[derive(Deserialize)]
struct EventsQuery {
    every_ms: Option<u64>,
}

/// `GET /events`: ticks, then one `drain` event when the worker drains.
async fn events(State(ctx): State<AppContext>, Query(q): Query<EventsQuery>) -> impl IntoResponse {
    let every = Duration::from_millis(q.every_ms.unwrap_or(1000).clamp(10, 60_000));
    let (tx, rx) = mpsc::channel(4);
    let pid = std::process::id();
    let drained = ctx.draining();
    tokio::spawn(async move {
        tokio::pin!(drained);
        let mut tick = tokio::time::interval(every);
        for n in 0u64.. {
            let event = tokio::select! {
                () = &mut drained => {
                    let last = Event::default().event("drain").data(format!(r#"{{"pid":{pid}}}"#));
                    let _ = tx.send(last).await;
                    return;
                }
                _ = tick.tick() => Event::default()
                    .event("tick")
                    .data(format!(r#"{{"n":{n},"pid":{pid}}}"#)),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    Sse::new(Events(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The events a stream's task sends; the stream ends when it stops.
struct Events(mpsc::Receiver<Event>);

impl futures_core::Stream for Events {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}
