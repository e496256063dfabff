//! Pool counters and the snapshot `Pool::stats` returns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::histogram::LatencySummary;
use crate::state::WorkerState;

/// The failure kinds a pool counts, by their [`PoolError::kind_name`](crate::PoolError::kind_name)
/// (and `health_check` for failed checks).
pub const FAILURE_KINDS: [&str; 16] = [
    "overloaded",
    "queue_timeout",
    "timeout",
    "deadline_exceeded",
    "crashed",
    "protocol_violation",
    "bad_params",
    "unknown_method",
    "handler",
    "transient",
    "no_workers",
    "session_busy",
    "session_worker_lost",
    "shutting_down",
    "health_check",
    "cancelled",
];

/// One counter of a pool: the value `Pool::stats` reads, and the same count through the
/// `metrics` facade (a no-op unless the application installed a recorder before the pool was
/// built).
#[derive(Debug)]
pub(crate) struct Count {
    value: AtomicU64,
    metric: metrics::Counter,
}

impl Count {
    fn new(name: &'static str, pool: &str) -> Self {
        Self {
            value: AtomicU64::new(0),
            metric: metrics::counter!(name, "pool" => pool.to_string()),
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

/// The calls counter, bumped by every call from every thread: its value is split into
/// stripes a cache line apart, one per thread (round-robin), so two threads counting calls do
/// not pull the same line from each other's core. Reading sums the stripes.
#[derive(Debug)]
pub(crate) struct HotCount {
    stripes: [Stripe; STRIPES],
    metric: metrics::Counter,
}

const STRIPES: usize = 8;

/// One stripe, alone on its cache line (two lines: adjacent-line prefetch pulls pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

impl HotCount {
    fn new(name: &'static str, pool: &str) -> Self {
        Self {
            stripes: Default::default(),
            metric: metrics::counter!(name, "pool" => pool.to_string()),
        }
    }

    pub(crate) fn bump(&self) {
        self.stripes[stripe()].0.fetch_add(1, Ordering::Relaxed);
        self.metric.increment(1);
    }

    pub(crate) fn load(&self) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| stripe.0.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }
}

/// This thread's stripe (0..8), handed out round-robin on first use.
pub(crate) fn stripe() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        let mut index = stripe.get();
        if index == usize::MAX {
            index = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            stripe.set(index);
        }
        index
    })
}

#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) calls: HotCount,
    /// Successes are counted by the pool's latency histogram (one per success); this is the
    /// same count through the `metrics` facade.
    pub(crate) successes: metrics::Counter,
    pub(crate) failures: [Count; FAILURE_KINDS.len()],
    pub(crate) retries: Count,
    /// Calls given up on while the worker ran them (deadline, caller gone).
    pub(crate) cancels: Count,
    pub(crate) started: Count,
    pub(crate) start_failures: Count,
    pub(crate) replacements: Count,
    pub(crate) recycles: Count,
    pub(crate) overflow_retired: Count,
    pub(crate) affinity_hits: Count,
    pub(crate) affinity_misses: Count,
    pub(crate) affinity_spills: Count,
    pub(crate) affinity_rebinds: Count,
    /// Worker state transitions by the state entered (indexed by `WorkerState::index`).
    pub(crate) transitions: std::sync::Arc<[metrics::Counter; WorkerState::ALL.len()]>,
    /// Calls running (and health-check reservations), summed over the pool's workers.
    pub(crate) in_flight: metrics::Gauge,
    /// Callers waiting in the admission queue.
    pub(crate) queue_depth: metrics::Gauge,
    /// Latency of successful calls, in seconds.
    pub(crate) latency: metrics::Histogram,
}

impl Counters {
    /// The counters of pool `pool`, registered with the `metrics` recorder installed now.
    pub(crate) fn new(pool: &str) -> Self {
        describe();
        let count = |name| Count::new(name, pool);
        Self {
            calls: HotCount::new("flowbalancer_pool_calls_total", pool),
            successes: metrics::counter!(
                "flowbalancer_pool_successes_total",
                "pool" => pool.to_string()
            ),
            failures: FAILURE_KINDS.map(|kind| Count {
                value: AtomicU64::new(0),
                metric: metrics::counter!(
                    "flowbalancer_pool_failures_total",
                    "pool" => pool.to_string(),
                    "kind" => kind
                ),
            }),
            retries: count("flowbalancer_pool_retries_total"),
            cancels: count("flowbalancer_pool_cancels_total"),
            started: count("flowbalancer_pool_workers_started_total"),
            start_failures: count("flowbalancer_pool_worker_start_failures_total"),
            replacements: count("flowbalancer_pool_worker_replacements_total"),
            recycles: count("flowbalancer_pool_worker_recycles_total"),
            overflow_retired: count("flowbalancer_pool_overflow_retired_total"),
            affinity_hits: count("flowbalancer_pool_affinity_hits_total"),
            affinity_misses: count("flowbalancer_pool_affinity_misses_total"),
            affinity_spills: count("flowbalancer_pool_affinity_spills_total"),
            affinity_rebinds: count("flowbalancer_pool_affinity_rebinds_total"),
            transitions: std::sync::Arc::new(WorkerState::ALL.map(|to| {
                metrics::counter!(
                    "flowbalancer_pool_worker_transitions_total",
                    "pool" => pool.to_string(),
                    "to" => to.name()
                )
            })),
            in_flight: metrics::gauge!("flowbalancer_pool_in_flight", "pool" => pool.to_string()),
            queue_depth: metrics::gauge!("flowbalancer_pool_queue_depth", "pool" => pool.to_string()),
            latency: metrics::histogram!(
                "flowbalancer_pool_call_duration_seconds",
                "pool" => pool.to_string()
            ),
        }
    }

    pub(crate) fn failure(&self, kind: &str) {
        if let Some(i) = FAILURE_KINDS.iter().position(|k| *k == kind) {
            self.failures[i].bump();
        }
    }

    pub(crate) fn failures_by_kind(&self) -> BTreeMap<&'static str, u64> {
        FAILURE_KINDS
            .iter()
            .zip(&self.failures)
            .map(|(k, c)| (*k, c.load()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Describes the pool's metrics to the recorder (units and help texts).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "flowbalancer_pool_calls_total",
        "Calls admitted by the pool."
    );
    describe_counter!(
        "flowbalancer_pool_successes_total",
        "Calls answered with a result."
    );
    describe_counter!(
        "flowbalancer_pool_failures_total",
        "Failed calls by kind (timeout, crashed, bad_params, …); health_check counts failed checks."
    );
    describe_counter!(
        "flowbalancer_pool_retries_total",
        "Transient failures retried on another worker."
    );
    describe_counter!(
        "flowbalancer_pool_cancels_total",
        "Calls given up on while a worker ran them (cancelled at the worker)."
    );
    describe_counter!(
        "flowbalancer_pool_workers_started_total",
        "Workers started."
    );
    describe_counter!(
        "flowbalancer_pool_worker_start_failures_total",
        "Worker starts that failed."
    );
    describe_counter!(
        "flowbalancer_pool_worker_replacements_total",
        "Workers replaced after a crash, a hang, a protocol violation or failed health checks."
    );
    describe_counter!(
        "flowbalancer_pool_worker_recycles_total",
        "Workers replaced after their call count or age."
    );
    describe_counter!(
        "flowbalancer_pool_overflow_retired_total",
        "Overflow workers retired after idling."
    );
    describe_counter!(
        "flowbalancer_pool_worker_transitions_total",
        "Worker state transitions, by the state entered."
    );
    describe_gauge!(
        "flowbalancer_pool_in_flight",
        "Calls running on the pool's workers."
    );
    describe_gauge!(
        "flowbalancer_pool_queue_depth",
        "Callers waiting for a worker."
    );
    describe_histogram!(
        "flowbalancer_pool_call_duration_seconds",
        Unit::Seconds,
        "Latency of successful calls, admission queue included."
    );
}

/// Workers by life state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct WorkerCounts {
    /// Starting.
    pub initializing: usize,
    /// Idle.
    pub ready: usize,
    /// Running calls.
    pub busy: usize,
    /// Failing health checks.
    pub degraded: usize,
    /// Being retired (recycling, scaling down).
    pub terminating: usize,
}

/// Session affinity counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct AffinityStats {
    /// Calls that found their session's worker free.
    pub hits: u64,
    /// Calls of sessions without a binding (a new binding was made).
    pub misses: u64,
    /// Hint mode: the bound worker was busy and another one served.
    pub spills: u64,
    /// Bindings dropped because the worker left.
    pub rebinds: u64,
    /// Live bindings.
    pub bound_sessions: usize,
}

/// A pool's state and counters at one instant, readable while calls run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// The pool's name.
    pub name: String,
    /// Workers by state.
    pub workers: WorkerCounts,
    /// Workers with no call running.
    pub idle: usize,
    /// Workers with at least one call running.
    pub busy: usize,
    /// Calls running now.
    pub in_flight: usize,
    /// Callers waiting for a worker.
    pub queue_depth: usize,
    /// Calls admitted.
    pub calls: u64,
    /// Calls answered with a result.
    pub successes: u64,
    /// Failures by kind (`timeout`, `crashed`, `bad_params`, …; `health_check` counts failed
    /// checks, not calls).
    pub failures: BTreeMap<&'static str, u64>,
    /// Transient failures retried on another worker.
    pub retries: u64,
    /// Calls given up on (deadline, caller gone) while a worker ran them; each was cancelled
    /// at the worker, whose slot stayed taken until it answered or was replaced.
    pub cancels: u64,
    /// Workers started.
    pub started: u64,
    /// Worker starts that failed.
    pub start_failures: u64,
    /// Workers removed because they crashed, hung, broke the protocol or failed health checks.
    pub replacements: u64,
    /// Workers replaced after their call count or age.
    pub recycles: u64,
    /// Overflow workers retired after idling.
    pub overflow_retired: u64,
    /// Session affinity.
    pub affinity: AffinityStats,
    /// Call latency (successful calls).
    pub latency: LatencySummary,
}
