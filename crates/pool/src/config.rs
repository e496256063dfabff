//! Pool configuration and its builder.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How sessions stick to workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AffinityMode {
    /// Prefer the session's worker; when it is busy, use another one (the binding stays).
    #[default]
    Hint,
    /// Wait for the session's worker (in the admission queue, within its wait bound).
    StrictQueue,
    /// Fail at once with `SessionBusy` when the session's worker is busy.
    StrictFailFast,
    /// Each session gets a worker of its own, which no other session or session-less call
    /// uses (a stateful server: a browser, a shell). The session's calls wait for it; a new
    /// session takes an unowned worker, or one started on demand up to `size + max_overflow`.
    /// When the session ends ([`Pool::end_session`](crate::Pool::end_session)) or expires, its
    /// worker is retired (its state goes with it) and the pool refills. A session whose worker
    /// died gets `SessionWorkerLost`.
    Exclusive,
}

/// When workers start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StartMode {
    /// All `size` workers start at once when the pool is built; the build waits until every
    /// start has finished and fails fast if none succeeded.
    #[default]
    Eager,
    /// Workers start on demand, when calls arrive.
    Lazy,
    /// Like `Eager`, but a pool none of whose workers started is still built: starts go on in
    /// the background with backoff, and calls fail with `NoWorkers` (naming the last start
    /// error) until one is running. For a gateway in front of several backends, where one
    /// broken backend must not keep the others from serving.
    EagerKeepTrying,
}

/// Everything a pool can be told. Built by [`PoolBuilder`](crate::PoolBuilder); every field
/// has a default.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Used in logs, errors and stats.
    pub name: String,
    /// Workers kept running.
    pub size: usize,
    /// Extra workers started under load, retired after `overflow_idle_ttl` idle.
    pub max_overflow: usize,
    /// How long an overflow worker may stay idle.
    pub overflow_idle_ttl: Duration,
    /// Eager or lazy start.
    pub start: StartMode,
    /// With [`StartMode::EagerKeepTrying`]: how long `build` waits for the first workers
    /// (`None`, the default: until every first start has finished). Past it, `build` returns
    /// and the starts go on in the background; a worker that comes up later joins the pool.
    pub start_wait: Option<Duration>,
    /// Callers that may wait for a worker; one more gets `Overloaded`.
    pub queue_capacity: usize,
    /// How long a caller waits for a worker before `QueueTimeout`.
    pub queue_timeout: Duration,
    /// How long one call may run before the worker is killed and replaced.
    pub call_timeout: Duration,
    /// How long a worker has to answer a call the pool gave up on (the caller's deadline, the
    /// caller gone) after being asked to cancel it. Its slot stays taken meanwhile; past this,
    /// the worker is killed and replaced. `Duration::MAX`: wait for the answer forever.
    pub cancel_grace: Duration,
    /// Calls one worker runs at once (pipelining).
    pub max_in_flight: usize,
    /// Transient failures retried on another worker, per call.
    pub transient_retries: u32,
    /// How often idle workers are health-checked (`None`: never).
    pub health_interval: Option<Duration>,
    /// How long a health check may take.
    pub health_timeout: Duration,
    /// Consecutive failed checks before a worker is removed and replaced.
    pub health_failures_before_removal: u32,
    /// Replace a worker after this many calls.
    pub recycle_after_calls: Option<u64>,
    /// Replace a worker after this age.
    pub recycle_after_age: Option<Duration>,
    /// Spread recycling: each worker's thresholds vary by ± this fraction.
    pub recycle_jitter: f64,
    /// Workers recycled at the same time.
    pub max_recycling: usize,
    /// First delay before restarting after a failed start or a quick crash.
    pub restart_backoff: Duration,
    /// The largest such delay.
    pub restart_backoff_max: Duration,
    /// Workers started at once by `scale_to`.
    pub spawn_batch: usize,
    /// Session affinity mode.
    pub affinity: AffinityMode,
    /// A session binding expires after this long unused.
    pub session_ttl: Duration,
    /// How often expired bindings are removed.
    pub session_cleanup_interval: Duration,
    /// How long shutdown lets in-flight calls finish.
    pub drain_grace: Duration,
    /// Transitions kept per worker.
    pub history_limit: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            name: "pool".into(),
            size: 4,
            max_overflow: 0,
            overflow_idle_ttl: Duration::from_secs(30),
            start: StartMode::Eager,
            start_wait: None,
            queue_capacity: 1024,
            queue_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(2),
            max_in_flight: 1,
            transient_retries: 1,
            health_interval: Some(Duration::from_secs(30)),
            health_timeout: Duration::from_secs(5),
            health_failures_before_removal: 3,
            recycle_after_calls: None,
            recycle_after_age: None,
            recycle_jitter: 0.1,
            max_recycling: 1,
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(10),
            spawn_batch: 16,
            affinity: AffinityMode::Hint,
            session_ttl: Duration::from_secs(300),
            session_cleanup_interval: Duration::from_secs(60),
            drain_grace: Duration::from_secs(10),
            history_limit: 32,
        }
    }
}

impl PoolConfig {
    /// The restart delay after `failures` consecutive failures (exponential, capped; the
    /// arithmetic saturates, so any configured duration is safe).
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.restart_backoff
            .saturating_mul(factor)
            .min(self.restart_backoff_max)
    }

    /// Checks what a builder cannot: the recycle jitter is a fraction in `[0, 1]`, and a call
    /// may run for some time.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.recycle_jitter) {
            return Err(format!(
                "recycle_jitter must be a fraction between 0 and 1, got {}",
                self.recycle_jitter
            ));
        }
        if self.call_timeout.is_zero() {
            return Err(
                "call_timeout must be more than 0: every call would time out at once".into(),
            );
        }
        Ok(())
    }
}

/// `now + duration`, saturating: a duration too large for the clock (`Duration::MAX`, say)
/// means "no limit" and gives a time far in the future instead of a panic.
pub(crate) fn saturating_after<I>(now: I, duration: Duration) -> I
where
    I: Copy + CheckedAdd,
{
    now.checked_add_duration(duration)
        .or_else(|| now.checked_add_duration(FAR_FUTURE))
        .unwrap_or(now)
}

/// A hundred years: "never" for deadlines computed from `Duration::MAX`.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Instants that can be moved on without panicking (std's and tokio's).
pub(crate) trait CheckedAdd: Sized {
    fn checked_add_duration(self, duration: Duration) -> Option<Self>;
}

impl CheckedAdd for std::time::Instant {
    fn checked_add_duration(self, duration: Duration) -> Option<Self> {
        self.checked_add(duration)
    }
}

impl CheckedAdd for tokio::time::Instant {
    fn checked_add_duration(self, duration: Duration) -> Option<Self> {
        self.checked_add(duration)
    }
}

/// `duration × factor` for a non-negative finite factor, saturating at `Duration::MAX`.
pub(crate) fn scaled(duration: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor.max(0.0)).unwrap_or(Duration::MAX)
}
