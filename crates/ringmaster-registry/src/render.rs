//! Reading the whole registry at once ([`Snapshot`]) and rendering it in
//! the Prometheus text exposition format or as JSON.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::{Kind, Segment};

/// The value of one series, summed over every row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A counter's total.
    Counter(u64),
    /// A gauge's sum over the live workers (and the master's row).
    Gauge(i64),
    /// A histogram: cumulative counts per upper bound (the last is `+Inf`,
    /// as `f64::INFINITY`), the count and the sum of observations.
    Histogram {
        /// `(upper bound, observations <= bound)`, ascending.
        buckets: Vec<(f64, u64)>,
        /// All observations.
        count: u64,
        /// Their sum.
        sum: f64,
    },
}

/// One series: name, labels, kind and value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// Its one-line description.
    pub help: String,
    /// Its value.
    pub value: Value,
}

/// Every series of a segment, read consistently (no fold in between).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The series, in registration order.
    pub series: Vec<Sample>,
}

/// The series of one name, for rendering.
pub type Series<'a> = Vec<&'a Sample>;

impl Segment {
    /// Reads every series.
    pub fn snapshot(&self) -> Snapshot {
        let descs: Vec<_> = (0..self.series_count()).map(|i| self.desc(i)).collect();
        self.consistent(|| Snapshot {
            series: descs
                .iter()
                .map(|d| {
                    let rows: Vec<_> = (0..=self.rows()).map(|r| self.row_cells(d, r)).collect();
                    let total = |i: usize| {
                        rows.iter()
                            .filter_map(|c| c.get(i))
                            .map(|c| c.load(Ordering::Relaxed))
                            .fold(0u64, u64::wrapping_add)
                    };
                    let value = match d.kind {
                        Kind::Counter => Value::Counter(total(0)),
                        Kind::Gauge => Value::Gauge(total(0) as i64),
                        Kind::Histogram => {
                            let nb = d.buckets.len();
                            let mut cumulative = 0u64;
                            let mut buckets = Vec::with_capacity(nb + 1);
                            for i in 0..=nb {
                                cumulative = cumulative.wrapping_add(total(i));
                                let bound = d.buckets.get(i).copied().unwrap_or(f64::INFINITY);
                                buckets.push((bound, cumulative));
                            }
                            let sum = rows
                                .iter()
                                .filter_map(|c| c.get(nb + 1))
                                .map(|c| f64::from_bits(c.load(Ordering::Relaxed)))
                                .sum();
                            Value::Histogram {
                                buckets,
                                count: cumulative,
                                sum,
                            }
                        }
                    };
                    Sample {
                        name: d.name.clone(),
                        kind: d.kind,
                        labels: d.labels.clone(),
                        help: d.help.clone(),
                        value,
                    }
                })
                .collect(),
        })
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(labels: &[(String, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn number(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_string()
    } else {
        format!("{v}")
    }
}

impl Snapshot {
    /// The series grouped by name, in order of first registration.
    pub fn by_name(&self) -> Vec<(&str, Series<'_>)> {
        let mut out: Vec<(&str, Series<'_>)> = Vec::new();
        for s in &self.series {
            match out.iter_mut().find(|(n, _)| *n == s.name) {
                Some((_, list)) => list.push(s),
                None => out.push((&s.name, vec![s])),
            }
        }
        out
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        for (name, series) in self.by_name() {
            let help = series[0].help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {}", series[0].kind.as_str());
            for s in series {
                match &s.value {
                    Value::Counter(v) => {
                        let _ = writeln!(out, "{name}{} {v}", label_text(&s.labels, None));
                    }
                    Value::Gauge(v) => {
                        let _ = writeln!(out, "{name}{} {v}", label_text(&s.labels, None));
                    }
                    Value::Histogram {
                        buckets,
                        count,
                        sum,
                    } => {
                        for (bound, n) in buckets {
                            let le = Some(("le", number(*bound)));
                            let _ = writeln!(out, "{name}_bucket{} {n}", label_text(&s.labels, le));
                        }
                        let labels = label_text(&s.labels, None);
                        let _ = writeln!(out, "{name}_sum{labels} {}", number(*sum));
                        let _ = writeln!(out, "{name}_count{labels} {count}");
                    }
                }
            }
        }
        out
    }

    /// The snapshot as JSON: `{"series": [{"name", "kind", "labels": {..},
    /// "value"}]}`; a histogram's value is `{"buckets": [[le, n], ..],
    /// "count", "sum"}` with `le` of the last bucket `null` (`+Inf`).
    pub fn to_json(&self) -> serde_json::Value {
        let series: Vec<serde_json::Value> = self
            .series
            .iter()
            .map(|s| {
                let labels: serde_json::Map<String, serde_json::Value> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                    .collect();
                let value = match &s.value {
                    Value::Counter(v) => serde_json::json!(v),
                    Value::Gauge(v) => serde_json::json!(v),
                    Value::Histogram {
                        buckets,
                        count,
                        sum,
                    } => serde_json::json!({
                        "buckets": buckets
                            .iter()
                            .map(|(b, n)| serde_json::json!([if b.is_finite() { Some(*b) } else { None }, n]))
                            .collect::<Vec<_>>(),
                        "count": count,
                        "sum": sum,
                    }),
                };
                serde_json::json!({
                    "name": s.name,
                    "kind": s.kind,
                    "labels": labels,
                    "value": value,
                })
            })
            .collect();
        serde_json::json!({ "series": series })
    }
}
