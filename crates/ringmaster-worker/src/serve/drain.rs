//! Once the drain starts: every connection already on its way to this
//! worker is still served (the client waiting at the limit, connections
//! handed over and not taken yet, the listener's queue), then the loop
//! waits for every connection to close, upgraded ones included.

use std::sync::atomic::Ordering;

use tokio::net::{TcpListener, TcpStream, UnixDatagram};

use super::accept::Accept;
use super::{Server, handover};

/// Serves what is on its way, then waits for every connection to close.
pub(super) async fn finish(mut server: Server, accept: Accept) {
    server.draining.store(true, Ordering::Relaxed);
    // A client accepted at the limit is served as the others drain.
    if let Some(tcp) = accept.waiting
        && let Ok(permit) = server.permits.clone().acquire_owned().await
    {
        server.serve_one(tcp, permit);
    }
    // So are connections the master handed over and this loop has not
    // taken yet (closing the socket would reset them).
    if let Some(sock) = &accept.adopt {
        serve_handed_over(&mut server, sock).await;
    }
    sweep_queue(&mut server, accept.listener).await;
    wait_for_connections(server).await;
}

/// Serves the connections waiting on the master's hand-over socket.
async fn serve_handed_over(server: &mut Server, sock: &UnixDatagram) {
    while let Some(tcp) = handover::take_pending(sock) {
        match (tcp, server.permits.clone().acquire_owned().await) {
            (Ok(tcp), Ok(permit)) => server.serve_one(tcp, permit),
            _ => break,
        }
    }
}

/// Takes what is queued already: when this worker holds the last copy of
/// its socket (a slot removed by scale-down), closing it would reset
/// those connections. Elsewhere the socket stays open in the master.
async fn sweep_queue(server: &mut Server, listener: TcpListener) {
    let std_listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "cannot sweep the accept queue");
            return;
        }
    };
    loop {
        let Ok(permit) = server.permits.clone().acquire_owned().await else {
            break;
        };
        let Ok((tcp, _peer)) = std_listener.accept() else {
            break;
        };
        if let Ok(tcp) = tcp
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(tcp))
        {
            server.serve_one(tcp, permit);
        }
    }
}

/// Waits for the open connections, then for the upgraded ones.
async fn wait_for_connections(mut server: Server) {
    let open = server.connections.len();
    if open > 0 {
        tracing::debug!(open, "waiting for open connections");
    }
    while server.connections.join_next().await.is_some() {}
    // Upgraded connections (WebSocket) left hyper with their permit: they
    // are done when the application drops them (it sees the drain through
    // `AppContext::draining`); the drain deadline cuts the rest.
    let max = server.limits.max_connections;
    let upgraded = max - server.permits.available_permits();
    if upgraded > 0 {
        tracing::debug!(upgraded, "waiting for upgraded connections");
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        let _ = server.permits.acquire_many(all).await;
    }
}
