//! Pool counters and the snapshot `Pool::stats` returns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::histogram::LatencySummary;

/// The failure kinds counted, by their `PoolError::kind_name`.
pub(crate) const FAILURE_KINDS: [&str; 16] = [
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

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) successes: AtomicU64,
    pub(crate) failures: [AtomicU64; FAILURE_KINDS.len()],
    pub(crate) retries: AtomicU64,
    /// Calls given up on while the worker ran them (deadline, caller gone).
    pub(crate) cancels: AtomicU64,
    pub(crate) started: AtomicU64,
    pub(crate) start_failures: AtomicU64,
    pub(crate) replacements: AtomicU64,
    pub(crate) recycles: AtomicU64,
    pub(crate) overflow_retired: AtomicU64,
    pub(crate) affinity_hits: AtomicU64,
    pub(crate) affinity_misses: AtomicU64,
    pub(crate) affinity_spills: AtomicU64,
    pub(crate) affinity_rebinds: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failure(&self, kind: &str) {
        if let Some(i) = FAILURE_KINDS.iter().position(|k| *k == kind) {
            Self::bump(&self.failures[i]);
        }
    }

    pub(crate) fn failures_by_kind(&self) -> BTreeMap<&'static str, u64> {
        FAILURE_KINDS
            .iter()
            .zip(&self.failures)
            .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Workers by life state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
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
