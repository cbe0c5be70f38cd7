//! The names of the series ringmaster itself keeps, in one place: the
//! worker's HTTP middleware writes the `http_*` series, the master its own
//! `ringmaster_*` ones, and `status`, the admin worker and the dashboard
//! read them back by these names. An application's own series are named
//! by the application.
//!
//! Names starting with [`RESERVED_PREFIX`] are the master's: a worker may
//! not register them (except [`WORKER_LOG_LINES_DROPPED`], which each
//! worker counts for itself).

/// The prefix of the master's own series.
pub const RESERVED_PREFIX: &str = "ringmaster_";

/// Requests answered, by method, route and status (counter).
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// Requests being answered now (gauge).
pub const HTTP_IN_FLIGHT: &str = "http_requests_in_flight";
/// Time to answer a request, in seconds (histogram).
pub const HTTP_DURATION: &str = "http_request_duration_seconds";

/// Restarts of a slot's workers (counter, by group and slot).
pub const WORKER_RESTARTS: &str = "ringmaster_worker_restarts_total";
/// 1 while the slot's worker is ready (gauge, by group and slot).
pub const WORKER_READY: &str = "ringmaster_worker_ready";
/// Seconds since the slot's worker became ready (gauge).
pub const WORKER_UPTIME: &str = "ringmaster_worker_uptime_seconds";
/// Resident memory of the slot's worker (gauge).
pub const WORKER_RSS: &str = "ringmaster_worker_rss_bytes";
/// Log lines a worker dropped because its log pipe was full (counter).
pub const WORKER_LOG_LINES_DROPPED: &str = "ringmaster_worker_log_lines_dropped_total";

/// IPC messages the master received from workers (counter).
pub const IPC_RECEIVED: &str = "ringmaster_ipc_messages_received_total";
/// IPC messages the master delivered to workers (counter).
pub const IPC_ROUTED: &str = "ringmaster_ipc_messages_routed_total";
/// IPC messages dropped for a full queue (counter).
pub const IPC_DROPPED: &str = "ringmaster_ipc_messages_dropped_total";
/// IPC requests that got no reply (counter).
pub const IPC_REQUESTS_FAILED: &str = "ringmaster_ipc_requests_failed_total";

/// The prefix of the bridge worker's series: the one worker allowed to
/// register names under [`RESERVED_PREFIX`] besides
/// [`WORKER_LOG_LINES_DROPPED`].
pub const BRIDGE_PREFIX: &str = "ringmaster_bridge_";
/// Local publications the bridge sent to NATS (counter).
pub const BRIDGE_SENT: &str = "ringmaster_bridge_messages_sent_total";
/// Publications from other hosts the bridge delivered here (counter).
pub const BRIDGE_RECEIVED: &str = "ringmaster_bridge_messages_received_total";
/// Messages the bridge lost, by `direction` (`out`: not sent to NATS,
/// `in`: not delivered here) and `reason` (counter).
pub const BRIDGE_DROPPED: &str = "ringmaster_bridge_messages_dropped_total";
/// 1 while the bridge is connected to NATS, else 0 (gauge).
pub const BRIDGE_CONNECTED: &str = "ringmaster_bridge_connected";

/// Lines the master wrote to the application log (counter).
pub const LOG_LINES_WRITTEN: &str = "ringmaster_log_lines_written_total";
/// Lines the master's log dropped (counter).
pub const LOG_LINES_DROPPED: &str = "ringmaster_log_lines_dropped_total";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_valid_and_the_masters_are_reserved() {
        let masters = [
            WORKER_RESTARTS,
            WORKER_READY,
            WORKER_UPTIME,
            WORKER_RSS,
            WORKER_LOG_LINES_DROPPED,
            IPC_RECEIVED,
            IPC_ROUTED,
            IPC_DROPPED,
            IPC_REQUESTS_FAILED,
            LOG_LINES_WRITTEN,
            LOG_LINES_DROPPED,
            BRIDGE_SENT,
            BRIDGE_RECEIVED,
            BRIDGE_DROPPED,
            BRIDGE_CONNECTED,
        ];
        for name in masters
            .iter()
            .chain(&[HTTP_REQUESTS, HTTP_IN_FLIGHT, HTTP_DURATION])
        {
            crate::validate_name(name).unwrap();
        }
        assert!(masters.iter().all(|n| n.starts_with(RESERVED_PREFIX)));
        assert!(BRIDGE_PREFIX.starts_with(RESERVED_PREFIX));
    }
}
