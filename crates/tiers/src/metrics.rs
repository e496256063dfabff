//! Per-tier metrics, readable while calls run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use flowbalancer_pool::{LatencyHistogram, LatencySummary};
use parking_lot::Mutex;
use serde::Serialize;

use crate::breaker::BreakerState;

/// One counter of a tier: the value `Router::stats` reads, and the same count through the
/// `metrics` facade (a no-op unless a recorder was installed before the router was built).
#[derive(Debug)]
pub(crate) struct Count {
    value: AtomicU64,
    metric: metrics::Counter,
}

impl Count {
    fn new(name: &'static str, tier: &str) -> Self {
        Self {
            value: AtomicU64::new(0),
            metric: metrics::counter!(name, "tier" => tier.to_string()),
        }
    }

    pub(crate) fn bump(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
        self.metric.increment(1);
    }

    pub(crate) fn load(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(crate) struct TierMetrics {
    tier: String,
    /// Calls sent to the tier, for the `metrics` recorder (counted when they start).
    pub(crate) calls_started: metrics::Counter,
    /// Calls given up while the tier ran them (the caller dropped the call). With the
    /// served and the failed calls, the calls `Router::stats` reports.
    pub(crate) given_up: Count,
    /// Served calls: the latency histogram counts them (one atomic increment less per call).
    pub(crate) successes: metrics::Counter,
    pub(crate) failures: Mutex<BTreeMap<String, u64>>,
    pub(crate) fallbacks_in: Count,
    pub(crate) fallbacks_out: Count,
    pub(crate) skips: Count,
    pub(crate) breaker_openings: metrics::Counter,
    pub(crate) latency: LatencyHistogram,
    pub(crate) latency_seconds: metrics::Histogram,
}

impl TierMetrics {
    /// The metrics of tier `tier`, registered with the `metrics` recorder installed now.
    pub(crate) fn new(tier: &str) -> Self {
        describe();
        Self {
            tier: tier.to_string(),
            calls_started: metrics::counter!("flowbalancer_tier_calls_total", "tier" => tier.to_string()),
            given_up: Count::new("flowbalancer_tier_calls_given_up_total", tier),
            successes: metrics::counter!("flowbalancer_tier_successes_total", "tier" => tier.to_string()),
            failures: Mutex::new(BTreeMap::new()),
            fallbacks_in: Count::new("flowbalancer_tier_fallbacks_in_total", tier),
            fallbacks_out: Count::new("flowbalancer_tier_fallbacks_out_total", tier),
            skips: Count::new("flowbalancer_tier_skips_total", tier),
            breaker_openings: metrics::counter!(
                "flowbalancer_tier_breaker_openings_total",
                "tier" => tier.to_string()
            ),
            latency: LatencyHistogram::new(),
            latency_seconds: metrics::histogram!(
                "flowbalancer_tier_call_duration_seconds",
                "tier" => tier.to_string()
            ),
        }
    }

    pub(crate) fn failure(&self, kind: &str) {
        *self.failures.lock().entry(kind.to_string()).or_insert(0) += 1;
        // Failures are rare next to calls: their counter is looked up per failure, by kind.
        metrics::counter!(
            "flowbalancer_tier_failures_total",
            "tier" => self.tier.clone(),
            "kind" => kind.to_string()
        )
        .increment(1);
    }

    /// Calls that ended at the tier: served, failed (any kind, caller errors included) or
    /// given up. Counted as they end, so a call still running is not in it yet.
    pub(crate) fn calls(&self) -> u64 {
        let failed: u64 = self.failures.lock().values().sum();
        self.latency
            .count()
            .saturating_add(failed)
            .saturating_add(self.given_up.load())
    }

    pub(crate) fn served(&self, latency: std::time::Duration) {
        self.successes.increment(1);
        self.latency.record(latency);
        self.latency_seconds.record(latency.as_secs_f64());
    }
}

/// Describes the router's metrics to the recorder (units and help texts).
fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!("flowbalancer_tier_calls_total", "Calls sent to the tier.");
    describe_counter!(
        "flowbalancer_tier_calls_given_up_total",
        "Calls given up while the tier ran them (the caller dropped the call)."
    );
    describe_counter!(
        "flowbalancer_tier_successes_total",
        "Calls the tier served."
    );
    describe_counter!(
        "flowbalancer_tier_failures_total",
        "The tier's failures by kind (caller errors included, under their own kinds)."
    );
    describe_counter!(
        "flowbalancer_tier_fallbacks_in_total",
        "Calls the tier served after another tier failed."
    );
    describe_counter!(
        "flowbalancer_tier_fallbacks_out_total",
        "Calls that failed or were skipped at the tier and went on to a later tier."
    );
    describe_counter!(
        "flowbalancer_tier_skips_total",
        "Times the tier was skipped (breaker open, unavailable, retry budget)."
    );
    describe_counter!(
        "flowbalancer_tier_breaker_openings_total",
        "Times the tier's breaker opened."
    );
    describe_histogram!(
        "flowbalancer_tier_call_duration_seconds",
        Unit::Seconds,
        "Latency of the calls the tier served."
    );
}

/// One tier's metrics at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TierStats {
    /// The tier.
    pub name: String,
    /// Calls that ended at it: served, failed or given up by the caller (a call still
    /// running is counted when it ends).
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
