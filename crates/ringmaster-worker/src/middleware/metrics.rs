//! The built-in HTTP metrics ([`HttpMetrics`]), in the cluster's
//! registry: `http_requests_total{group,route,method,status}`,
//! `http_request_duration_seconds{group,route}` and
//! `http_requests_in_flight{group}`; a [`RequestTimer`] measures one
//! request.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};

use ringmaster_registry::series;

use crate::registry::{Counter, Gauge, Histogram, Registry};

/// The built-in HTTP metrics of one worker, in the cluster's registry.
pub struct HttpMetrics {
    registry: Registry,
    group: String,
    in_flight: Gauge,
    // A handful of routes per app: a scan of short strings costs less
    // than hashing the path with SipHash on every request.
    routes: RwLock<Vec<Arc<RouteMetrics>>>,
}

/// Bucket bounds of `http_request_duration_seconds`: from 100 µs, since a
/// Rust handler often answers in tens of microseconds (with the default
/// buckets' 1 ms floor, every p50 and p99 `status` and the dashboard show
/// would read "under 1 ms"), up to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The series of one route.
struct RouteMetrics {
    route: Arc<str>,
    duration: Histogram,
    counts: RwLock<Vec<(&'static str, u16, Counter)>>,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The method as a label: the standard ones, else `OTHER` (a client must
/// not be able to make series without bound).
pub(super) fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl HttpMetrics {
    /// The metrics of a worker of `group`, recorded in `registry`.
    pub fn new(registry: &Registry, group: &str) -> Arc<Self> {
        Arc::new(HttpMetrics {
            registry: registry.clone(),
            group: group.to_string(),
            in_flight: registry.gauge_with(
                series::HTTP_IN_FLIGHT,
                "Requests being handled now.",
                &[("group", group)],
            ),
            routes: RwLock::new(Vec::new()),
        })
    }

    /// Starts measuring `req`, which arrived at `start`: one more request
    /// in flight until the timer is dropped.
    pub(super) fn start(
        self: &Arc<Self>,
        req: &Request,
        start: std::time::Instant,
    ) -> RequestTimer {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        self.in_flight.inc();
        RequestTimer {
            metrics: self.clone(),
            route: self.route(route),
            method: method_label(req.method()),
            start,
        }
    }

    /// The series of `route` (the matched path pattern, so a handful per app).
    fn route(&self, route: &str) -> Arc<RouteMetrics> {
        let find =
            |routes: &[Arc<RouteMetrics>]| routes.iter().find(|r| &*r.route == route).cloned();
        if let Some(r) = find(&read(&self.routes)) {
            return r;
        }
        let mut routes = write(&self.routes);
        if let Some(r) = find(&routes) {
            return r;
        }
        let r = Arc::new(RouteMetrics {
            route: route.into(),
            duration: self.registry.histogram_with(
                series::HTTP_DURATION,
                "Time from the request to its response head, in seconds.",
                &[("group", &self.group), ("route", route)],
                &LATENCY_BUCKETS,
            ),
            counts: RwLock::new(Vec::new()),
        });
        routes.push(r.clone());
        r
    }

    fn count(&self, route: &RouteMetrics, method: &'static str, status: u16) {
        let found = read(&route.counts)
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
            .map(|(_, _, c)| c.clone());
        let counter = match found {
            Some(c) => c,
            None => {
                let c = self.registry.counter_with(
                    series::HTTP_REQUESTS,
                    "Requests answered, by route, method and status.",
                    &[
                        ("group", &self.group),
                        ("route", &route.route),
                        ("method", method),
                        ("status", &status.to_string()),
                    ],
                );
                write(&route.counts).push((method, status, c.clone()));
                c
            }
        };
        counter.inc();
    }
}

/// One request being measured; leaving it (answered or dropped) lowers
/// the in-flight gauge.
pub(super) struct RequestTimer {
    metrics: Arc<HttpMetrics>,
    route: Arc<RouteMetrics>,
    method: &'static str,
    pub(super) start: std::time::Instant,
}

impl RequestTimer {
    /// Records the answered request: its duration and its count.
    pub(super) fn finish(self, status: StatusCode, took: Duration) {
        self.route.duration.observe_duration(took);
        self.metrics
            .count(&self.route, self.method, status.as_u16());
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}
