//! A Prometheus histogram whose observation is three relaxed atomic adds.
//!
//! prometheus-client's `Histogram` takes a write lock on every observation; with one
//! histogram per route shared by every worker thread, that lock is a cache line all cores
//! fight over on each request. Here each bucket is its own counter, and the exposition
//! (rare) adds them up; a scrape may see an observation in `count` a moment before its
//! bucket, which Prometheus tolerates (it is the same with any lock-free histogram).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A histogram with fixed upper bounds (and `+Inf`), shared by its clones.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending, the last one `f64::MAX` (`+Inf`).
    upper: Box<[f64]>,
    /// Observations per bucket (not cumulative).
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum of observations in nanounits (seconds → nanoseconds).
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds (ascending) plus `+Inf`.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let upper: Box<[f64]> = bounds
            .into_iter()
            .chain(std::iter::once(f64::MAX))
            .collect();
        let counts = upper.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                upper,
                counts,
                count: AtomicU64::new(0),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Records one value (negative and NaN values count as 0).
    pub fn observe(&self, value: f64) {
        let value = if value.is_nan() { 0.0 } else { value.max(0.0) };
        let bucket = self.inner.upper.partition_point(|&u| u < value);
        let bucket = bucket.min(self.inner.counts.len() - 1);
        self.inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        self.inner
            .sum_nanos
            .fetch_add((value * 1e9) as u64, Ordering::Relaxed);
    }

    /// (sum, count, [(upper bound, observations in that bucket)]).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets = self
            .inner
            .upper
            .iter()
            .zip(self.inner.counts.iter())
            .map(|(&u, c)| (u, c.load(Ordering::Relaxed)))
            .collect();
        (
            self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            self.inner.count.load(Ordering::Relaxed),
            buckets,
        )
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let h = AtomicHistogram::new([0.001, 0.01, 0.1]);
        for v in [0.0005, 0.001, 0.002, 0.05, 3.0, f64::NAN, -1.0] {
            h.observe(v);
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 7);
        assert!((sum - 3.0535).abs() < 1e-6, "{sum}");
        let counts: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        assert_eq!(counts, vec![4, 1, 1, 1]);
        assert_eq!(buckets[3].0, f64::MAX);
    }

    #[test]
    fn the_exposition_is_cumulative_like_prometheus_clients() {
        let ours = AtomicHistogram::new([0.01, 0.1]);
        let theirs = prometheus_client::metrics::histogram::Histogram::new([0.01, 0.1]);
        for v in [0.005, 0.05, 0.5, 0.07] {
            ours.observe(v);
            theirs.observe(v);
        }
        let text = |name: &str, metric: Box<dyn FnOnce(&mut Registry)>| {
            let mut registry = Registry::default();
            metric(&mut registry);
            let mut out = String::new();
            encode(&mut out, &registry).unwrap();
            out.replace(name, "x")
        };
        let a = text("ours", Box::new(move |r| r.register("ours", "h", ours)));
        let b = text(
            "theirs",
            Box::new(move |r| r.register("theirs", "h", theirs)),
        );
        assert_eq!(a, b);
        assert!(a.contains("x_bucket{le=\"0.1\"} 3"), "{a}");
    }
}
