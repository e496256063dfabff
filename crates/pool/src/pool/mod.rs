//! The pool: building it, calling through it, stats, scaling, shutdown.

mod call;
mod dispatch;
mod release;
mod service;
mod table;
mod workers;

pub use service::PoolFuture;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flowbalancer_lifecycle::{CloseReport, Limits, Scope};
use parking_lot::Mutex;

use crate::config::{AffinityMode, PoolConfig, StartMode};
use crate::error::PoolError;
use crate::histogram::LatencyHistogram;
use crate::request::{ToolSpec, WorkerId};
use crate::state::{Health, Transition, WorkerState};
use crate::stats::{AffinityStats, Counters, PoolStats, WorkerCounts};
use crate::worker::{StartContext, StartError, Worker, WorkerFactory};
use dispatch::State;

type StartFuture<W> = Pin<Box<dyn Future<Output = Result<W, StartError>> + Send>>;
type Factory<W> = Arc<dyn Fn(StartContext) -> StartFuture<W> + Send + Sync>;

pub(crate) struct Inner<W: Worker> {
    pub(crate) config: PoolConfig,
    factory: Factory<W>,
    pub(crate) state: Mutex<State<W>>,
    pub(crate) counters: Counters,
    latency: LatencyHistogram,
    /// Owns the pool's tasks and the workers' processes: closed at shutdown, cleaned up
    /// synchronously if the pool is dropped without it.
    scope: Scope,
    next_worker: AtomicU64,
    shutting_down: AtomicBool,
    /// A caller waits for a worker: releases must take the lock and offer their worker (see
    /// `Inner::release`).
    demand: AtomicBool,
}

impl<W: Worker> Inner<W> {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub(crate) fn shutting_down_error(&self) -> PoolError {
        PoolError::ShuttingDown {
            pool: self.config.name.clone(),
        }
    }

    fn check_admitting(&self) -> Result<(), PoolError> {
        if self.is_shutting_down() {
            self.counters.failure("shutting_down");
            Err(self.shutting_down_error())
        } else {
            Ok(())
        }
    }
}

/// A pool of workers that survives its workers.
///
/// Calls go to the session's worker (affinity) or the least-loaded free worker; when none is
/// free they wait in a bounded admission queue. Every call is answered exactly once, with a
/// result or a typed [`PoolError`], and the pool acts on every failure:
///
/// | failure | the caller gets | the worker |
/// |---|---|---|
/// | bad params, unknown method, handler error | the worker's error, at once | stays |
/// | transient | a retry on another worker (budget: `transient_retries`) | stays |
/// | call timeout | [`PoolError::Timeout`] | killed and replaced |
/// | crash (exit, EOF) | [`PoolError::Crashed`] | replaced, with backoff if it keeps crashing |
/// | protocol violation | [`PoolError::ProtocolViolation`] | killed and replaced |
/// | failing health checks | — | degraded (no new calls), replaced after N failures |
///
/// Cloning a `Pool` is cheap (shared). Dropping the last clone without
/// [`shutdown`](Pool::shutdown) still kills every worker process (the pool's lifecycle scope).
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use flowbalancer_pool::{in_process, Pool, Request};
/// use serde_json::json;
///
/// let pool = Pool::builder(in_process(|request| async move { Ok(request.payload) }))
///     .name("echo")
///     .size(2)
///     .build()
///     .await?;
/// let response = pool.call(Request::new("echo", json!({"text": "hi"}))).await?;
/// assert_eq!(response.payload.as_json(), Some(&json!({"text": "hi"})));
/// assert_eq!(pool.stats().successes, 1);
/// pool.shutdown().await;
/// # Ok::<(), flowbalancer_pool::PoolError>(())
/// # }).unwrap();
/// ```
pub struct Pool<W: Worker> {
    inner: Arc<Inner<W>>,
}

impl<W: Worker> Clone for Pool<W> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<W: Worker> std::fmt::Debug for Pool<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.config.name)
            .finish()
    }
}

/// Configures and builds a [`Pool`]; see [`PoolConfig`] for every setting and its default.
pub struct PoolBuilder<F: WorkerFactory> {
    factory: F,
    config: PoolConfig,
    parent: Option<flowbalancer_lifecycle::ScopeHandle>,
}

impl<F: WorkerFactory> std::fmt::Debug for PoolBuilder<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("config", &self.config)
            .finish()
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $name: $ty) -> Self {
                self.config.$name = $name;
                self
            }
        )*
    };
}

impl<F: WorkerFactory> PoolBuilder<F> {
    setters! {
        /// Workers kept running (default 4).
        size: usize,
        /// Extra workers under load (default 0).
        max_overflow: usize,
        /// Idle time after which an overflow worker retires (default 30 s).
        overflow_idle_ttl: Duration,
        /// Eager (default) or lazy start.
        start: StartMode,
        /// With [`StartMode::EagerKeepTrying`]: how long `build` waits for the first workers
        /// (default `None`: until every first start has finished); the starts still going
        /// then finish in the background.
        start_wait: Option<Duration>,
        /// Callers that may wait for a worker (default 1024).
        queue_capacity: usize,
        /// How long a caller waits for a worker (default 5 s).
        queue_timeout: Duration,
        /// How long a call may run before its worker is killed and replaced (default 30 s;
        /// more than 0, or `build` fails with `InvalidConfig`).
        call_timeout: Duration,
        /// How long a worker has to answer a call given up on before it is killed and replaced
        /// (default 2 s).
        cancel_grace: Duration,
        /// Calls per worker at once (default 1).
        max_in_flight: usize,
        /// Transient failures retried on another worker (default 1).
        transient_retries: u32,
        /// Health-check interval (default 30 s; `None`: never).
        health_interval: Option<Duration>,
        /// How long a health check may take (default 5 s).
        health_timeout: Duration,
        /// Failed checks in a row before a worker is replaced (default 3).
        health_failures_before_removal: u32,
        /// Recycle a worker after this many calls (default: never).
        recycle_after_calls: Option<u64>,
        /// Recycle a worker after this age (default: never).
        recycle_after_age: Option<Duration>,
        /// ± fraction applied to each worker's recycle thresholds (default 0.1).
        recycle_jitter: f64,
        /// Workers recycled at once (default 1).
        max_recycling: usize,
        /// First restart delay after a failed start or a quick crash (default 100 ms).
        restart_backoff: Duration,
        /// Largest restart delay (default 10 s).
        restart_backoff_max: Duration,
        /// Workers started at once by `scale_to` (default 16).
        spawn_batch: usize,
        /// Session affinity mode (default hint).
        affinity: AffinityMode,
        /// A session binding expires after this long unused (default 5 min).
        session_ttl: Duration,
        /// How often expired bindings are removed (default 1 min).
        session_cleanup_interval: Duration,
        /// How long shutdown lets in-flight calls finish (default 10 s).
        drain_grace: Duration,
        /// Transitions kept per worker (default 32).
        history_limit: usize,
    }

    /// The pool's name, for logs, errors and stats.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }

    /// Makes the pool's lifecycle scope a child of `parent`, so closing (or dropping) the
    /// parent also stops this pool's workers. The parent's limits apply.
    pub fn parent_scope(mut self, parent: flowbalancer_lifecycle::ScopeHandle) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Builds the pool. With eager start, all workers start at once and this waits until
    /// every start has finished.
    ///
    /// # Errors
    ///
    /// [`PoolError::NoWorkers`] when eager start got no worker running at all (with the last
    /// start error). A size of 0 with no overflow is refused the same way.
    /// [`PoolError::InvalidConfig`] for a recycle jitter outside `[0, 1]` or a zero
    /// `call_timeout`.
    pub async fn build(self) -> Result<Pool<F::Worker>, PoolError> {
        let mut config = self.config;
        config.max_in_flight = config.max_in_flight.max(1);
        config.spawn_batch = config.spawn_batch.max(1);
        if let Err(message) = config.validate() {
            return Err(PoolError::InvalidConfig {
                pool: config.name,
                message,
            });
        }
        if config.size == 0 && config.max_overflow == 0 {
            return Err(PoolError::NoWorkers {
                pool: config.name,
                last_error: "the pool has size 0 and no overflow".into(),
            });
        }
        let factory = Arc::new(self.factory);
        let start: Factory<F::Worker> = Arc::new(move |context| {
            let factory = Arc::clone(&factory);
            Box::pin(async move { factory.start(context).await })
        });
        // The pool counts its own workers; the scope only has to own them.
        let scope =
            match &self.parent {
                Some(parent) => parent.child(format!("pool:{}", config.name)).map_err(|e| {
                    PoolError::NoWorkers {
                        pool: config.name.clone(),
                        last_error: e.to_string(),
                    }
                })?,
                None => Scope::builder()
                    .name(format!("pool:{}", config.name))
                    .grace(Duration::from_secs(2))
                    .limits(Limits::unlimited())
                    .build(),
            };
        let counters = Counters::new(&config.name);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(config.size)),
            config,
            factory: start,
            counters,
            latency: LatencyHistogram::new(),
            scope,
            next_worker: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            demand: AtomicBool::new(false),
        });
        let pool = Pool { inner };
        pool.inner.start_maintenance();
        let eager = matches!(
            pool.inner.config.start,
            StartMode::Eager | StartMode::EagerKeepTrying
        );
        if eager && pool.inner.config.size > 0 {
            let size = pool.inner.config.size;
            if pool.inner.config.start == StartMode::EagerKeepTrying {
                pool.first_fill(size).await;
                return Ok(pool);
            }
            pool.inner.grow_to(size, size).await;
            let error = {
                let state = pool.inner.state.lock();
                state
                    .entries
                    .is_empty()
                    .then(|| pool.inner.no_workers(&state))
            };
            if let Some(error) = error {
                pool.shutdown().await;
                return Err(error);
            }
        }
        Ok(pool)
    }
}

impl<W: Worker> Pool<W> {
    /// Starts the first `size` workers, waiting at most `start_wait` for them: the fill runs
    /// as a task of the pool's scope, so a start still going when the wait ends finishes (and
    /// its worker joins the pool) in the background.
    async fn first_fill(&self, size: usize) {
        let inner = Arc::clone(&self.inner);
        let fill = async move {
            inner.grow_to(size, size).await;
        };
        let Some(wait) = self.inner.config.start_wait else {
            fill.await;
            return;
        };
        match self.inner.scope.spawn(fill) {
            Ok(task) => {
                if tokio::time::timeout(wait, task).await.is_err() {
                    tracing::debug!(pool = %self.inner.config.name, ?wait, "the first workers are still starting; they join the pool when they are up");
                }
            }
            // The scope is closing: nothing may start any more.
            Err(error) => {
                tracing::warn!(pool = %self.inner.config.name, %error, "the first workers cannot start");
            }
        }
    }

    /// Configures a pool whose workers `factory` starts.
    pub fn builder<F: WorkerFactory<Worker = W>>(factory: F) -> PoolBuilder<F> {
        PoolBuilder {
            factory,
            config: PoolConfig::default(),
            parent: None,
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The configuration in force.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// The tools the workers announced (from the most recently started worker).
    pub fn tools(&self) -> Vec<ToolSpec> {
        self.inner.state.lock().tools.as_ref().clone()
    }

    /// The tool named `name`, if the workers announced it: only that tool is copied.
    pub fn tool(&self, name: &str) -> Option<ToolSpec> {
        let tools = Arc::clone(&self.inner.state.lock().tools);
        tools.iter().find(|t| t.name == name).cloned()
    }

    /// Whether the workers announced `method`: `None` when they announced nothing. Cheap: no
    /// tool is copied.
    pub fn offers(&self, method: &str) -> Option<bool> {
        let tools = Arc::clone(&self.inner.state.lock().tools);
        (!tools.is_empty()).then(|| tools.iter().any(|t| t.name == method))
    }

    /// Asks the live workers again for their tools (after a worker said its tool list
    /// changed) and keeps their union, each name once (the newest worker's definition first).
    /// Returns whether the pool's tools changed.
    pub fn refresh_tools(&self) -> bool {
        let mut state = self.inner.state.lock();
        let mut union: Vec<ToolSpec> = Vec::new();
        for entry in state.entries.iter().rev().filter(|e| !e.retiring) {
            for tool in entry.slot.worker.tools() {
                if !union.iter().any(|t| t.name == tool.name) {
                    union.push(tool);
                }
            }
        }
        if union.is_empty() || union == *state.tools {
            return false;
        }
        state.tools = Arc::new(union);
        true
    }

    /// Ends a session: its binding goes, and with [`AffinityMode::Exclusive`] the worker it
    /// owned is retired (at once, or when its last call ends) and the pool refills. Returns
    /// whether the pool knew the session.
    ///
    /// [`AffinityMode::Exclusive`]: crate::AffinityMode::Exclusive
    pub fn end_session(&self, session: &str) -> bool {
        let mut state = self.inner.state.lock();
        self.inner.end_session(&mut state, session)
    }

    /// Whether at least one worker is running and not retiring.
    pub fn has_live_worker(&self) -> bool {
        self.inner.state.lock().entries.iter().any(|e| !e.retiring)
    }

    /// Why the last worker start failed, if one did and no start has succeeded since.
    pub fn last_start_error(&self) -> Option<String> {
        let state = self.inner.state.lock();
        (state.failed_starts_in_a_row > 0)
            .then(|| state.last_start_error.clone())
            .flatten()
    }

    /// Counters and states at this instant; cheap enough to poll while calls run.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let (workers, idle, busy, in_flight, queue_depth, bound_sessions) = {
            let state = inner.state.lock();
            let mut counts = WorkerCounts {
                initializing: state.starting,
                ..WorkerCounts::default()
            };
            let (mut idle, mut busy, mut in_flight) = (0, 0, 0);
            for entry in &state.entries {
                match entry.shown_state() {
                    _ if entry.retiring => counts.terminating += 1,
                    WorkerState::Ready => counts.ready += 1,
                    WorkerState::Busy => counts.busy += 1,
                    WorkerState::Degraded => counts.degraded += 1,
                    WorkerState::Initializing => counts.initializing += 1,
                    WorkerState::Terminating | WorkerState::Terminated => counts.terminating += 1,
                }
                if entry.in_flight() == 0 {
                    idle += 1;
                } else {
                    busy += 1;
                }
                in_flight += entry.in_flight();
            }
            let depth = state.waiters.iter().filter(|w| !w.tx.is_closed()).count();
            (counts, idle, busy, in_flight, depth, state.sessions.len())
        };
        let c = &inner.counters;
        let load = |n: &crate::stats::Count| n.load();
        PoolStats {
            name: inner.config.name.clone(),
            workers,
            idle,
            busy,
            in_flight,
            queue_depth,
            calls: c.calls.load(),
            successes: inner.latency.count(),
            failures: c.failures_by_kind(),
            retries: load(&c.retries),
            cancels: load(&c.cancels),
            started: load(&c.started),
            start_failures: load(&c.start_failures),
            replacements: load(&c.replacements),
            recycles: load(&c.recycles),
            overflow_retired: load(&c.overflow_retired),
            affinity: AffinityStats {
                hits: load(&c.affinity_hits),
                misses: load(&c.affinity_misses),
                spills: load(&c.affinity_spills),
                rebinds: load(&c.affinity_rebinds),
                bound_sessions,
            },
            latency: inner.latency.summary(),
        }
    }

    /// Each worker: id, state, health, calls running, calls done, and its transition history.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let state = self.inner.state.lock();
        state
            .entries
            .iter()
            .map(|e| WorkerInfo {
                id: e.slot.id,
                state: e.shown_state(),
                health: e.machine.health(),
                in_flight: e.in_flight(),
                calls: e.calls(),
                overflow: e.overflow,
                history: e.machine.history().iter().cloned().collect(),
            })
            .collect()
    }

    /// Grows or shrinks the pool to `size` workers. Growth happens in waves of `spawn_batch`
    /// concurrent starts; shrinking retires idle workers now and busy ones when they finish.
    pub async fn scale_to(&self, size: usize) -> ScaleReport {
        self.inner.state.lock().target_size = size;
        let retired = self.inner.shrink_to(size);
        let (started, failed) = self
            .inner
            .grow_to(size, self.inner.config.spawn_batch)
            .await;
        ScaleReport {
            started,
            failed,
            retired,
        }
    }

    /// Stops admitting calls (new and queued callers get `ShuttingDown`), lets in-flight calls
    /// finish within the drain grace period, shuts every worker down, and closes the pool's
    /// scope (which kills anything left). Returns the scope's report.
    pub async fn shutdown(&self) -> CloseReport {
        self.inner.shutdown().await
    }
}

/// One worker as `Pool::workers` shows it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Its id.
    pub id: WorkerId,
    /// Its life state.
    pub state: WorkerState,
    /// Its health.
    pub health: Health,
    /// Calls running on it.
    pub in_flight: usize,
    /// Calls it has run.
    pub calls: u64,
    /// Started as overflow.
    pub overflow: bool,
    /// Its last transitions, oldest first.
    pub history: Vec<Transition>,
}

/// What `scale_to` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ScaleReport {
    /// Workers started.
    pub started: usize,
    /// Starts that failed (retried in the background with backoff).
    pub failed: usize,
    /// Workers retired.
    pub retired: usize,
}
