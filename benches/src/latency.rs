//! Latency recording: HdrHistograms (3 significant digits, 1 µs to 60 s), sharded so that
//! concurrent workers rarely contend, merged into a [`LatencySummary`] at the end.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const LOWEST_NS: u64 = 1_000;
const HIGHEST_NS: u64 = 60_000_000_000;

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, 3 digits).
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Latency histograms shared by the workers of one measurement.
#[derive(Debug)]
pub struct LatencyRecorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl LatencyRecorder {
    /// A recorder with `shards` histograms (at least one); worker `i` records into shard `i % shards`.
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// Records one call's latency for worker `worker`. Values beyond 60 s are clamped.
    pub fn record(&self, worker: usize, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(LOWEST_NS, HIGHEST_NS);
        let shard = &self.shards[worker % self.shards.len()];
        let mut h = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        h.saturating_record(ns);
    }

    /// Forgets everything recorded so far (end of the warm-up).
    pub fn reset(&self) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .reset();
        }
    }

    /// Percentiles over every shard.
    pub fn summary(&self) -> LatencySummary {
        let mut all = new_histogram();
        for shard in &self.shards {
            let h = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Same bounds on both sides: adding cannot fail.
            let _ = all.add(&*h);
        }
        LatencySummary::from_histogram(&all)
    }
}

/// Latency percentiles of one measurement, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of recorded calls.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest recorded value.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl LatencySummary {
    fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Self {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1_000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_across_shards() {
        let r = LatencyRecorder::new(4);
        for i in 1..=1000u64 {
            r.record(i as usize, Duration::from_micros(i));
        }
        let s = r.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p90_us - 900.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() <= 1.0, "{s:?}");
        r.reset();
        assert_eq!(r.summary(), LatencySummary::default());
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let r = LatencyRecorder::new(0);
        r.record(7, Duration::from_nanos(1));
        r.record(7, Duration::from_secs(3600));
        let s = r.summary();
        assert_eq!(s.count, 2);
        assert!(s.max_us >= 59_000_000.0, "{s:?}");
    }
}
