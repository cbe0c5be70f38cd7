//! The NATS side of the bridge: the connection and its options, one task
//! per topic and direction, and the counters they keep.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, HeaderMap, ServerAddr, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use ringmaster_config::BridgeConfig;
use ringmaster_registry::series;
use ringmaster_worker::{
    BootError, Counter, DrainHold, Gauge, Init, Ipc, RawSubscription, Registry, Target,
};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The NATS header carrying the id of the master whose worker published
/// a message: a bridge skips messages with its own master's id.
pub const ORIGIN_HEADER: &str = "Ringmaster-Origin";

/// How long the bridge's boot waits for its first connection before it
/// reports ready anyway (NATS down at start must not stop the host).
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(2);
/// The longest wait between two reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How long one publish may wait for room in the client's buffer (a
/// connection that broke unnoticed) before the message is dropped.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a draining bridge still delivers the messages NATS sent it
/// before it took the unsubscription.
const DRAIN_DELIVER: Duration = Duration::from_secs(1);
/// Messages the client buffers while it writes; publishes beyond wait.
const CLIENT_CAPACITY: usize = 8192;

/// The bridge's counters, in the registry.
struct Stats {
    sent: Counter,
    received: Counter,
    /// Not sent: NATS was not connected; the publish failed or timed out.
    out_disconnected: Counter,
    out_failed: Counter,
    /// Not delivered here: the NATS client's buffer overflowed (a slow
    /// consumer); the master's IPC refused it.
    in_slow: Counter,
    in_refused: Counter,
    connected: Gauge,
    /// The last state logged, so that each change is logged once.
    up: AtomicBool,
    /// Set once this process drains: it no longer writes the shared
    /// `connected` gauge (its successor in the slot does).
    draining: AtomicBool,
    /// The last server or client error logged (each new one once).
    last_error: Mutex<String>,
}

impl Stats {
    fn new(registry: &Registry) -> Self {
        let dropped = |direction: &str, reason: &str| {
            registry.counter_with(
                series::BRIDGE_DROPPED,
                "Messages the bridge lost: out = not sent to NATS, in = not delivered here",
                &[("direction", direction), ("reason", reason)],
            )
        };
        Stats {
            sent: registry.counter(series::BRIDGE_SENT, "Local publications sent to NATS"),
            received: registry.counter(
                series::BRIDGE_RECEIVED,
                "Publications from other hosts delivered here",
            ),
            out_disconnected: dropped("out", "disconnected"),
            out_failed: dropped("out", "failed"),
            in_slow: dropped("in", "slow_consumer"),
            in_refused: dropped("in", "refused"),
            connected: registry.gauge(
                series::BRIDGE_CONNECTED,
                "1 while the bridge is connected to NATS",
            ),
            up: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
        }
    }

    fn dropped(&self) -> u64 {
        self.out_disconnected.value()
            + self.out_failed.value()
            + self.in_slow.value()
            + self.in_refused.value()
    }

    /// Records the connection's state; logs a change once.
    fn set_up(&self, up: bool, url: &str) {
        if !self.draining.load(Ordering::Relaxed) {
            self.connected.set(i64::from(up));
        }
        if self.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        if up {
            tracing::info!(url, "bridge connected to NATS");
        } else {
            tracing::warn!(
                url,
                "bridge lost NATS; local delivery goes on, messages to other hosts are dropped and counted until it reconnects"
            );
        }
    }

    /// Logs a server or client error, unless it is the one logged last.
    fn error(&self, what: &str, error: String) {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        if *last != error {
            tracing::warn!(error = %error, "bridge: NATS {what} error");
            *last = error;
        }
    }
}

/// The bridge: its connection, its tasks' counters and what `GET /` shows.
pub(crate) struct Link {
    cfg: BridgeConfig,
    instance: String,
    client: Client,
    stats: Arc<Stats>,
}

impl Link {
    /// Connects (in the background: NATS may be down) and starts one task
    /// per topic and direction. Fails on settings NATS cannot use (a bad
    /// URL, a file that cannot be read), with the key to fix.
    pub(crate) async fn start(cfg: BridgeConfig, init: &Init) -> Result<Self, BootError> {
        let servers = servers(&cfg)?;
        let instance = instance();
        let ipc = init.ipc();
        let draining = init.draining();
        let stats = Arc::new(Stats::new(init.registry()));
        let url = cfg.redacted_url();
        let (up_tx, mut up_rx) = watch::channel(false);
        let options = options(&cfg, &instance, stats.clone(), url.clone(), up_tx).await?;
        let client = options
            .connect(servers)
            .await
            .map_err(|e| format!("bridge.url {url}: {e}"))?;
        tracing::info!(url = %url, topics = ?cfg.topics, instance = %instance, "bridge starting");

        let (drain_tx, drain_rx) = watch::channel(false);
        let stats_drain = stats.clone();
        tokio::spawn(async move {
            draining.await;
            stats_drain.draining.store(true, Ordering::Relaxed);
            let _ = drain_tx.send(true);
        });
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN_HEADER, instance.as_str());
        for topic in &cfg.topics {
            let subject = Subject::from(cfg.subject(topic));
            tokio::spawn(outbound(
                ipc.subscribe_bytes(topic),
                subject.clone(),
                client.clone(),
                headers.clone(),
                stats.clone(),
            ));
            let subscriber = client
                .queue_subscribe(subject, format!("ringmaster.{instance}"))
                .await
                .map_err(|e| format!("bridge.topics {topic:?}: cannot subscribe: {e}"))?;
            tokio::spawn(inbound(
                init.hold_drain(),
                subscriber,
                topic.clone(),
                instance.clone(),
                ipc.clone(),
                stats.clone(),
                drain_rx.clone(),
            ));
        }
        // Ready once connected, or after a short wait without NATS; once
        // connected, after the server took the subscriptions (a flush
        // waits for its answer), so that during a reload the successor is
        // in the queue group before its predecessor leaves it.
        let _ = tokio::time::timeout(FIRST_CONNECT_WAIT, up_rx.wait_for(|up| *up)).await;
        if is_connected(&client) {
            let _ = tokio::time::timeout(FIRST_CONNECT_WAIT, client.flush()).await;
        }
        Ok(Link {
            cfg,
            instance,
            client,
            stats,
        })
    }

    /// The bridge's state and counters, as `GET /` answers them.
    pub(crate) fn report(&self) -> Value {
        let s = &self.stats;
        json!({
            "state": if is_connected(&self.client) { "connected" } else { "disconnected" },
            "url": self.cfg.redacted_url(),
            "topics": self.cfg.topics,
            "subjects": self.cfg.topics.iter().map(|t| self.cfg.subject(t)).collect::<Vec<_>>(),
            "instance": self.instance,
            "required": self.cfg.required,
            "sent": s.sent.value(),
            "received": s.received.value(),
            "dropped": s.dropped(),
            "dropped_by_reason": {
                "out_disconnected": s.out_disconnected.value(),
                "out_failed": s.out_failed.value(),
                "in_slow_consumer": s.in_slow.value(),
                "in_refused": s.in_refused.value(),
            },
        })
    }
}

fn is_connected(client: &Client) -> bool {
    client.connection_state() == State::Connected
}

/// Local publications on one topic, out to NATS.
async fn outbound(
    mut local: RawSubscription,
    subject: Subject,
    client: Client,
    headers: HeaderMap,
    stats: Arc<Stats>,
) {
    while let Some(d) = local.recv().await {
        if !is_connected(&client) {
            stats.out_disconnected.inc();
            continue;
        }
        let payload = Bytes::from_owner(d.msg);
        let publish = client.publish_with_headers(subject.clone(), headers.clone(), payload);
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(())) => stats.sent.inc(),
            Ok(Err(e)) => {
                stats.out_failed.inc();
                stats.error("publish", format!("{subject}: {e}"));
            }
            Err(_) => {
                stats.out_failed.inc();
                stats.error(
                    "publish",
                    format!("{subject}: no room in the client's buffer for {PUBLISH_TIMEOUT:?}"),
                );
            }
        }
    }
}

/// Messages from other hosts on one topic, published here. At the drain
/// it leaves the queue group to its successor (which subscribed before it
/// reported ready) and still delivers what NATS sent it before the server
/// took the unsubscription, for at most [`DRAIN_DELIVER`]; its hold keeps
/// the process until then.
async fn inbound(
    _hold: DrainHold,
    mut remote: async_nats::Subscriber,
    topic: String,
    instance: String,
    ipc: Ipc,
    stats: Arc<Stats>,
    mut draining: watch::Receiver<bool>,
) {
    let mut deadline = None;
    loop {
        let msg = match deadline {
            None => {
                let drain = tokio::select! {
                    m = remote.next() => Ok(m),
                    _ = draining.wait_for(|d| *d) => Err(()),
                };
                match drain {
                    Ok(m) => m,
                    Err(()) => {
                        if remote.drain().await.is_err() {
                            return;
                        }
                        deadline = Some(tokio::time::Instant::now() + DRAIN_DELIVER);
                        continue;
                    }
                }
            }
            Some(at) => tokio::time::timeout_at(at, remote.next())
                .await
                .ok()
                .flatten(),
        };
        let Some(msg) = msg else {
            return;
        };
        let own = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(ORIGIN_HEADER))
            .is_some_and(|v| v.as_str() == instance);
        if own {
            continue;
        }
        match ipc
            .publish_bytes(Target::All, &topic, msg.payload.to_vec())
            .await
        {
            Ok(()) => stats.received.inc(),
            Err(e) => {
                stats.in_refused.inc();
                stats.error("delivery", format!("topic {topic:?}: {e}"));
            }
        }
    }
}

/// `bridge.url`, parsed: one or more servers separated by commas.
fn servers(cfg: &BridgeConfig) -> Result<Vec<ServerAddr>, BootError> {
    let url = cfg.url.as_deref().unwrap_or_default();
    url.split(',')
        .map(str::trim)
        .map(|u| {
            u.parse::<ServerAddr>().map_err(|e| {
                let mut one = BridgeConfig::default();
                one.url = Some(u.to_owned());
                let shown = one.redacted_url();
                format!("bridge.url: cannot use {shown:?}: {e}").into()
            })
        })
        .collect()
}

/// This master's id (`RINGMASTER_INSTANCE`), or outside a cluster one
/// drawn from the pid and the clock.
fn instance() -> String {
    std::env::var(ringmaster_worker::ENV_INSTANCE).unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        format!("{:016x}", nanos ^ (u64::from(std::process::id()) << 40))
    })
}

/// A file `bridge.KEY` names, checked at boot so that a typo is an error
/// naming the key, not a reconnect loop.
fn readable(key: &str, path: &std::path::Path) -> Result<(), BootError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("bridge.{key}: cannot read {}: {e}", path.display()).into())
}

/// The client's options: the login and TLS settings of `cfg`, no echo,
/// endless reconnects with a capped backoff, and the event callback that
/// keeps the state and the counters.
async fn options(
    cfg: &BridgeConfig,
    instance: &str,
    stats: Arc<Stats>,
    url: String,
    up: watch::Sender<bool>,
) -> Result<ConnectOptions, BootError> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut o = ConnectOptions::new()
        .name(format!("ringmaster-bridge {} {instance}", host.trim()))
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .client_capacity(CLIENT_CAPACITY)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let stats = stats.clone();
            let url = url.clone();
            let up = up.clone();
            async move {
                match event {
                    Event::Connected => {
                        stats.set_up(true, &url);
                        up.send_replace(true);
                    }
                    Event::Disconnected | Event::Closed => {
                        stats.set_up(false, &url);
                        up.send_replace(false);
                    }
                    Event::SlowConsumer(_) => stats.in_slow.inc(),
                    Event::LameDuckMode => {
                        tracing::info!(url, "bridge: the NATS server is shutting down (lame duck mode); the client will move to another");
                    }
                    Event::ServerError(e) => stats.error("server", e.to_string()),
                    Event::ClientError(e) => stats.error("client", e.to_string()),
                    Event::Draining => {}
                }
            }
        });
    if let Some(path) = &cfg.credentials {
        readable("credentials", path)?;
        o = o
            .credentials_file(path)
            .await
            .map_err(|e| format!("bridge.credentials: {}: {e}", path.display()))?;
    }
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        o = o.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &cfg.token {
        o = o.token(token.clone());
    }
    if cfg.tls_required {
        o = o.require_tls(true);
    }
    if let Some(ca) = &cfg.tls_ca {
        readable("tls_ca", ca)?;
        o = o.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        readable("tls_cert", cert)?;
        readable("tls_key", key)?;
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(o)
}

/// The wait before reconnect attempt `attempts` (1 for the first): none,
/// then 50 ms doubling up to [`MAX_RECONNECT_DELAY`], with up to 20% of
/// jitter so that many hosts do not all knock at once.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let base = Duration::from_millis(50).saturating_mul(1 << (attempts - 2).min(5));
    let base = base.min(MAX_RECONNECT_DELAY);
    let jitter = (u64::from(std::process::id()).wrapping_mul(attempts as u64 * 7919)) % 20;
    base + base * jitter as u32 / 100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_a_cap() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        let second = reconnect_delay(2);
        assert!(second >= Duration::from_millis(50) && second < Duration::from_millis(61));
        for n in 2..100 {
            let d = reconnect_delay(n);
            assert!(d <= MAX_RECONNECT_DELAY * 6 / 5, "attempt {n}: {d:?}");
            assert!(d >= reconnect_delay(n - 1).min(MAX_RECONNECT_DELAY) * 5 / 6);
        }
    }

    #[test]
    fn urls_are_checked_without_showing_passwords() {
        let mut cfg = BridgeConfig::default();
        cfg.url = Some("nats://a:4222, tls://b:4223".into());
        assert_eq!(servers(&cfg).expect("two servers").len(), 2);
        cfg.url = Some("nats://u:hunter2@h:notaport".into());
        let err = servers(&cfg).expect_err("bad port").to_string();
        assert!(err.starts_with("bridge.url: cannot use"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
