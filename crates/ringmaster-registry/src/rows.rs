//! Reading one metric row by row (what each worker slot recorded), and
//! quantiles from histogram buckets: what `status` shows per worker and
//! the dashboard per group.

use std::sync::atomic::Ordering;

use crate::{Kind, Segment};

/// One metric name summed over its label sets, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct PerRow {
    /// The metric's kind.
    pub kind: Kind,
    /// A histogram's finite bucket bounds; empty otherwise.
    pub bounds: Vec<f64>,
    /// Per row (`0..=rows`, the retired row last): one value for a
    /// counter or gauge (a gauge as `i64` bits); for a histogram the count
    /// of each bucket (not cumulative), `+Inf` last.
    pub rows: Vec<Vec<u64>>,
}

impl Segment {
    /// Every series named `name` whose labels pass `keep`, summed per
    /// row; `None` when no series of that name is registered.
    pub fn per_row(
        &self,
        name: &str,
        keep: impl Fn(&[(String, String)]) -> bool,
    ) -> Option<PerRow> {
        let descs: Vec<_> = (0..self.series_count())
            .map(|i| self.desc(i))
            .filter(|d| d.name == name && keep(&d.labels))
            .collect();
        let first = descs.first()?;
        let (kind, bounds) = (first.kind, first.buckets.clone());
        let width = match kind {
            Kind::Histogram => bounds.len() + 1,
            _ => 1,
        };
        let rows = self.consistent(|| {
            (0..=self.rows())
                .map(|row| {
                    let mut sums = vec![0u64; width];
                    for d in &descs {
                        let cells = self.row_cells(d, row);
                        for (sum, cell) in sums.iter_mut().zip(cells) {
                            *sum = sum.wrapping_add(cell.load(Ordering::Relaxed));
                        }
                    }
                    sums
                })
                .collect()
        });
        Some(PerRow { kind, bounds, rows })
    }
}

/// The `q` quantile (0 to 1) of observations counted per bucket: `counts`
/// holds each bucket's own count (not cumulative), `+Inf` last, for the
/// finite upper `bounds`. Interpolates linearly inside the bucket, as
/// Prometheus's `histogram_quantile` does; a rank in the `+Inf` bucket
/// gives the highest finite bound. `None` without observations.
///
/// ```
/// use ringmaster_registry::quantile;
/// // 20 observations in (1, 2]: the median is halfway through that bucket.
/// let median = quantile(&[1.0, 2.0], &[0, 20, 0], 0.5).unwrap();
/// assert!((median - 1.5).abs() < 1e-6);
/// assert_eq!(quantile(&[1.0, 2.0], &[0, 0, 0], 0.5), None);
/// ```
pub fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || counts.len() != bounds.len() + 1 {
        return None;
    }
    // A hair below, so that 0.99 * 100 (99.00000000000001) lands in the
    // bucket holding the 99th observation.
    let rank = q.clamp(0.0, 1.0) * total as f64 - 1e-9;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied().or(Some(0.0));
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let into = (rank - below as f64) / n as f64;
            return Some(lower + (upper - lower) * into.clamp(0.0, 1.0));
        }
        below += n;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let bounds = [0.001, 0.01, 0.1];
        // 100 observations all in (0.001, 0.01].
        let counts = [0, 100, 0, 0];
        let p50 = quantile(&bounds, &counts, 0.5).unwrap();
        assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
        let p99 = quantile(&bounds, &counts, 0.99).unwrap();
        assert!((p99 - 0.00991).abs() < 1e-9, "{p99}");
        // One slow request in +Inf: p99 of 100 stays in the bucket below,
        // p100 is the highest finite bound.
        let counts = [0, 99, 0, 1];
        assert!(quantile(&bounds, &counts, 0.99).unwrap() <= 0.01);
        assert_eq!(quantile(&bounds, &counts, 1.0), Some(0.1));
        assert_eq!(quantile(&bounds, &[1, 2], 0.5), None, "wrong width");
    }

    #[test]
    fn per_row_sums_label_sets_of_one_row() {
        let seg = Segment::create(crate::MIN_SIZE, 4).unwrap();
        let labels = |route: &str| vec![("route".to_string(), route.to_string())];
        let a = seg
            .register("req_total", "h", Kind::Counter, &labels("/a"), &[])
            .unwrap();
        let b = seg
            .register("req_total", "h", Kind::Counter, &labels("/b"), &[])
            .unwrap();
        let h = seg
            .register("lat", "h", Kind::Histogram, &[], &[0.1, 1.0])
            .unwrap();
        seg.cells(a, 1)[0].fetch_add(3, Ordering::Relaxed);
        seg.cells(b, 1)[0].fetch_add(4, Ordering::Relaxed);
        seg.cells(b, 2)[0].fetch_add(5, Ordering::Relaxed);
        crate::observe(seg.cells(h, 2), &[0.1, 1.0], 0.5);
        let rows = seg.per_row("req_total", |_| true).unwrap();
        assert_eq!(rows.rows.len(), 5, "4 rows and the retired one");
        assert_eq!((rows.rows[1][0], rows.rows[2][0]), (7, 5));
        let only_a = seg.per_row("req_total", |l| l[0].1 == "/a").unwrap();
        assert_eq!(only_a.rows[1][0], 3);
        let lat = seg.per_row("lat", |_| true).unwrap();
        assert_eq!(lat.rows[2], vec![0, 1, 0]);
        assert!(seg.per_row("missing", |_| true).is_none());
    }
}
