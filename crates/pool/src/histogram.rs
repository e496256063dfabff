//! A lock-free latency histogram in bounded memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: about 3 % relative precision.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two covered: nanoseconds up to 2^40 ns (about 18 minutes).
const MAGNITUDES: usize = 40 - SUB_BITS as usize + 1;
const BUCKETS: usize = SUB * MAGNITUDES;
/// Copies of the buckets, one per group of threads: calls of similar latency land in the same
/// bucket, and threads on different cores counting into one line would pull it back and forth.
const STRIPES: usize = 4;

/// Records durations with relaxed atomic increments (no lock, no allocation after creation)
/// and answers percentiles. Fixed size: about 37 KiB (four stripes of 9 KiB, so threads on
/// different cores recording similar durations do not write the same cache line).
///
/// ```
/// use std::time::Duration;
/// use flowbalancer_pool::LatencyHistogram;
///
/// let histogram = LatencyHistogram::new();
/// for us in 1..=100 {
///     histogram.record(Duration::from_micros(us));
/// }
/// let p50 = histogram.percentile(50.0);
/// assert!(p50 >= Duration::from_micros(48) && p50 <= Duration::from_micros(52));
/// ```
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    max_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS * STRIPES).map(|_| AtomicU64::new(0)).collect(),
            max_ns: AtomicU64::new(0),
        }
    }

    fn index(ns: u64) -> usize {
        if ns < SUB as u64 {
            return ns as usize;
        }
        let magnitude = 63 - ns.leading_zeros(); // >= SUB_BITS
        let shift = magnitude - SUB_BITS;
        let sub = (ns >> shift) as usize & (SUB - 1);
        let index = (shift as usize + 1) * SUB + sub;
        index.min(BUCKETS - 1)
    }

    /// The smallest value that falls into bucket `index` (its upper end for reporting).
    fn upper(index: usize) -> u64 {
        if index < SUB {
            return index as u64;
        }
        let shift = (index / SUB - 1) as u32;
        let sub = (index % SUB) as u64;
        ((SUB as u64 + sub + 1) << shift).saturating_sub(1)
    }

    /// Records one duration.
    pub fn record(&self, duration: Duration) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        // One atomic increment per duration: the count is the buckets' sum, read rarely.
        let stripe = crate::stats::stripe() % STRIPES;
        self.buckets[stripe * BUCKETS + Self::index(ns)].fetch_add(1, Ordering::Relaxed);
        if ns > self.max_ns.load(Ordering::Relaxed) {
            self.max_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .sum()
    }

    /// The largest recorded duration.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))
    }

    /// The `p`-th percentile (0–100), within the bucket precision; zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut counts = vec![0u64; BUCKETS];
        for stripe in self.buckets.chunks(BUCKETS) {
            for (count, bucket) in counts.iter_mut().zip(stripe) {
                *count += bucket.load(Ordering::Relaxed);
            }
        }
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * total as f64)
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let value = Self::upper(index).min(self.max_ns.load(Ordering::Relaxed));
                return Duration::from_nanos(value);
            }
        }
        self.max()
    }

    /// p50, p95, p99 and max at once.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count(),
            p50: self.percentile(50.0),
            p95: self.percentile(95.0),
            p99: self.percentile(99.0),
            max: self.max(),
        }
    }
}

/// Percentiles of a [`LatencyHistogram`] at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct LatencySummary {
    /// Recorded durations.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for ns in (0..100_000u64).chain([1 << 30, 1 << 39, u64::MAX]) {
            let index = LatencyHistogram::index(ns);
            assert!(index >= last || ns > 100_000, "index grows with the value");
            last = index;
            if ns < 1 << 39 {
                let upper = LatencyHistogram::upper(index);
                assert!(upper >= ns, "bucket {index} upper {upper} < {ns}");
                assert!(
                    upper as f64 <= ns as f64 * 1.07 + 1.0,
                    "precision at {ns}: {upper}"
                );
            }
        }
    }
}
