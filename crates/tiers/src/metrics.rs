//! Per-tier metrics, readable while calls run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use flowbalancer_pool::{LatencyHistogram, LatencySummary};
use parking_lot::Mutex;
use serde::Serialize;

use crate::breaker::BreakerState;

#[derive(Debug, Default)]
pub(crate) struct TierMetrics {
    pub(crate) calls: AtomicU64,
    pub(crate) successes: AtomicU64,
    pub(crate) failures: Mutex<BTreeMap<String, u64>>,
    pub(crate) fallbacks_in: AtomicU64,
    pub(crate) fallbacks_out: AtomicU64,
    pub(crate) skips: AtomicU64,
    pub(crate) latency: LatencyHistogram,
}

impl TierMetrics {
    pub(crate) fn failure(&self, kind: &str) {
        *self.failures.lock().entry(kind.to_string()).or_insert(0) += 1;
    }
}

/// One tier's metrics at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierStats {
    /// The tier.
    pub name: String,
    /// Calls sent to it.
    pub calls: u64,
    /// Calls it served.
    pub successes: u64,
    /// Its failures by kind (caller errors included, under their own kinds).
    pub failures: BTreeMap<String, u64>,
    /// Calls it served after another tier failed (fallbacks in).
    pub fallbacks_in: u64,
    /// Calls that failed or were skipped here and went on to a later tier (fallbacks out).
    pub fallbacks_out: u64,
    /// Times it was skipped (breaker open, unavailable, retry budget).
    pub skips: u64,
    /// Its breaker's state.
    pub breaker: BreakerState,
    /// Its breaker's transitions so far.
    pub breaker_transitions: u64,
    /// Latency of the calls it served.
    pub latency: LatencySummary,
}

pub(crate) fn load(n: &AtomicU64) -> u64 {
    n.load(Ordering::Relaxed)
}
