//! `GET /events`: the dashboard's Server-Sent Events. A `snapshot` first
//! (five minutes of history, the status, the log tail), then a `tick`
//! every second. The stream ends when the admin worker drains, so an open
//! dashboard never holds up a reload or a stop (the browser reconnects to
//! the next admin worker by itself).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ringmaster_worker::{AppContext, AppError, Shared};
use tokio::sync::{broadcast, mpsc};

use crate::sampler::Feed;

/// Events queued for one slow client before it loses ticks.
const QUEUE: usize = 8;

/// The receiving end of one client's events, as the stream axum sends.
struct Events(mpsc::Receiver<Event>);

impl futures_core::Stream for Events {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

pub(crate) async fn stream(
    State(ctx): State<AppContext>,
    feed: Shared<Feed>,
) -> Result<Response, AppError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    // Subscribed before the snapshot is taken: no tick falls between.
    let ticks = feed.ticks.subscribe();
    let snapshot = Event::default()
        .event("snapshot")
        .data(feed.snapshot_json());
    tokio::spawn(forward(tx, snapshot, ticks, ctx.draining()));
    let sse = Sse::new(Events(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok(sse.into_response())
}

/// Sends the snapshot, then every tick, until the client goes or the
/// worker drains.
async fn forward(
    tx: mpsc::Sender<Event>,
    snapshot: Event,
    mut ticks: broadcast::Receiver<Arc<str>>,
    draining: impl Future<Output = ()>,
) {
    if tx.send(snapshot).await.is_err() {
        return;
    }
    tokio::pin!(draining);
    loop {
        let data = tokio::select! {
            tick = ticks.recv() => match tick {
                Ok(data) => data,
                // A client too slow for one tick a second misses some.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = &mut draining => return,
            () = tx.closed() => return,
        };
        let event = Event::default().event("tick").data(&*data);
        if tx.try_send(event).is_err() && tx.is_closed() {
            return;
        }
    }
}
