//! Starting, replacing, recycling, health-checking, scaling and shutting down workers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use flowbalancer_lifecycle::CloseReport;

use super::dispatch::{Discard, Entry, Slot, StartReason, State};
use super::{Inner, StartFuture};
use crate::config::{saturating_after, scaled};
use crate::request::WorkerId;
use crate::state::{Health, StateMachine, WorkerState};
use crate::worker::{StartContext, StartError, Worker};

/// A worker that dies this soon after starting counts as a quick crash (restart backoff).
const QUICK_CRASH: Duration = Duration::from_secs(1);

impl<W: Worker> Inner<W> {
    fn new_id(&self) -> WorkerId {
        WorkerId(self.next_worker.fetch_add(1, Ordering::Relaxed))
    }

    fn start_future(&self, id: WorkerId) -> StartFuture<W> {
        (self.factory)(StartContext {
            id,
            scope: self.scope.handle(),
        })
    }

    /// Starts one worker in the background, after `delay`. The task holds the pool only
    /// weakly, so a dropped pool is not kept alive by its retries.
    pub(crate) fn spawn_start(
        self: &Arc<Self>,
        state: &mut State<W>,
        reason: StartReason,
        delay: Duration,
    ) {
        if self.is_shutting_down() {
            return;
        }
        state.starting += 1;
        let id = self.new_id();
        let start = self.start_future(id);
        let weak = Arc::downgrade(self);
        let spawned = self.scope.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let result = start.await;
            match weak.upgrade() {
                Some(inner) => inner.on_started(id, result, reason),
                None => {
                    if let Ok(worker) = result {
                        worker.kill();
                    }
                }
            }
        });
        if let Err(error) = spawned {
            state.starting -= 1;
            tracing::warn!(pool = %self.config.name, %error, "could not spawn a worker start");
        }
    }

    /// Records a finished start: a new ready worker, or a failure with its retry.
    pub(crate) fn on_started(
        self: &Arc<Self>,
        id: WorkerId,
        result: Result<W, StartError>,
        reason: StartReason,
    ) {
        let mut state = self.state.lock();
        state.starting = state.starting.saturating_sub(1);
        let worker = match result {
            Ok(worker) => worker,
            Err(error) => {
                self.start_failed(&mut state, error, reason);
                return;
            }
        };
        if self.is_shutting_down() {
            drop(state);
            worker.kill();
            return;
        }
        state.failed_starts_in_a_row = 0;
        self.counters.started.bump();
        let tools = worker.tools();
        if !tools.is_empty() {
            state.tools = Arc::new(tools);
        }
        let mut machine = StateMachine::new(self.config.history_limit)
            .with_owner(format!("{}/{id}", self.config.name))
            .counted_in(std::sync::Arc::clone(&self.counters.transitions));
        let _ = machine.transition(WorkerState::Ready, format!("started ({reason:?})"));
        let now = Instant::now();
        let jitter = |value: f64| {
            let spread = self.config.recycle_jitter.clamp(0.0, 1.0);
            value * (1.0 + spread * (2.0 * unit_random(id.0) - 1.0))
        };
        let entry = Entry {
            slot: Arc::new(Slot::new(id, worker)),
            machine,
            started: now,
            last_used: now,
            health_failures: 0,
            overflow: reason == StartReason::Overflow,
            retiring: false,
            recycling: false,
            owner: None,
            session_ended: false,
            recycle_after_calls: self
                .config
                .recycle_after_calls
                .map(|n| jitter(n as f64).round().max(1.0) as u64),
            recycle_at: self
                .config
                .recycle_after_age
                .map(|age| saturating_after(now, scaled(age, jitter(1.0)))),
        };
        entry.refresh_quiet();
        state.entries.push(entry);
        tracing::info!(pool = %self.config.name, worker = %id, ?reason, "worker ready");
        if let StartReason::Recycle(old) = reason {
            state.recycling = state.recycling.saturating_sub(1);
            if let Some(index) = state.find(old) {
                self.counters.recycles.bump();
                self.rebind(&mut state, old, id);
                self.retire(&mut state, index, "recycled");
            }
        }
        if let Some(index) = state.find(id) {
            self.offer(&mut state, index);
        }
    }

    fn start_failed(
        self: &Arc<Self>,
        state: &mut State<W>,
        error: StartError,
        reason: StartReason,
    ) {
        if self.is_shutting_down() {
            // A start cut short by the shutdown itself: nothing to report or retry.
            tracing::debug!(pool = %self.config.name, %error, "worker start ended by the shutdown");
            return;
        }
        self.counters.start_failures.bump();
        state.failed_starts_in_a_row += 1;
        let in_a_row = state.failed_starts_in_a_row;
        // The first failure in a row, and each time the count doubles, is a warning: a server
        // that cannot start is said at once and then recalled less and less often, instead of
        // at every retry of the backoff. The others are at debug.
        if in_a_row.is_power_of_two() {
            tracing::warn!(pool = %self.config.name, %error, ?reason, failures_in_a_row = in_a_row, "worker failed to start");
        } else {
            tracing::debug!(pool = %self.config.name, %error, ?reason, failures_in_a_row = in_a_row, "worker failed to start");
        }
        state.last_start_error = Some(error.to_string());
        if let StartReason::Recycle(old) = reason {
            state.recycling = state.recycling.saturating_sub(1);
            if let Some(index) = state.find(old) {
                // Keep serving; try again later.
                let entry = &mut state.entries[index];
                entry.retiring = false;
                entry.recycling = false;
                entry.recycle_at = Some(saturating_after(
                    Instant::now(),
                    self.config.backoff(state.failed_starts_in_a_row),
                ));
                entry.recycle_after_calls = entry
                    .recycle_after_calls
                    .map(|n| n.saturating_add(n.max(1)));
                entry.refresh_quiet();
            }
            return;
        }
        if state.entries.is_empty() {
            // No worker at all and a start just failed (a backend that is down): waiting
            // callers fail fast instead of waiting out the queue bound (dropping their places
            // tells them so), and the router moves on; starts go on in the background.
            state.waiters.clear();
            self.counters.queue_depth.set(0.0);
        }
        if reason != StartReason::Overflow && state.live() < state.target_size {
            let delay = self.config.backoff(state.failed_starts_in_a_row);
            self.spawn_start(state, StartReason::Fill, delay);
        }
    }

    /// Removes entry `index` because it failed, and starts its replacement.
    pub(crate) fn remove_worker(
        self: &Arc<Self>,
        state: &mut State<W>,
        index: usize,
        why: Discard,
    ) {
        let mut entry = state.entries.remove(index);
        self.counters.in_flight.decrement(entry.in_flight() as f64);
        self.fail_strict_waiters(state, entry.slot.id);
        let _ = entry
            .machine
            .transition(WorkerState::Terminating, why.reason());
        self.counters.replacements.bump();
        tracing::warn!(pool = %self.config.name, worker = %entry.slot.id, reason = why.reason(), calls = entry.calls(), "worker removed; replacing it");
        let delay = if entry.started.elapsed() < QUICK_CRASH {
            state.quick_crashes_in_a_row += 1;
            self.config.backoff(state.quick_crashes_in_a_row)
        } else {
            state.quick_crashes_in_a_row = 0;
            Duration::ZERO
        };
        entry.slot.worker.kill();
        self.finish_off(entry.slot);
        if !entry.overflow && state.live() < state.target_size {
            self.spawn_start(state, StartReason::Replace, delay);
        }
    }

    /// Takes entry `index` out of service gracefully (recycled, idle overflow, scaled down).
    fn retire(self: &Arc<Self>, state: &mut State<W>, index: usize, reason: &'static str) {
        let mut entry = state.entries.remove(index);
        self.counters.in_flight.decrement(entry.in_flight() as f64);
        self.fail_strict_waiters(state, entry.slot.id);
        let _ = entry.machine.transition(WorkerState::Terminating, reason);
        tracing::info!(pool = %self.config.name, worker = %entry.slot.id, reason, "worker retired");
        self.finish_off(entry.slot);
    }

    /// Retires a worker whose session (exclusive affinity) ended, and refills the pool.
    pub(crate) fn retire_owned(self: &Arc<Self>, state: &mut State<W>, index: usize) {
        let overflow = state.entries[index].overflow;
        self.retire(state, index, "its session ended");
        if !overflow && state.live() < state.target_size {
            self.spawn_start(state, StartReason::Replace, Duration::ZERO);
        }
    }

    /// Shuts a removed worker down in the background (its `Terminated` moment).
    fn finish_off(&self, slot: Arc<Slot<W>>) {
        let name = self.config.name.clone();
        let timeout = self.config.health_timeout;
        let _ = self.scope.spawn(async move {
            if tokio::time::timeout(timeout, slot.worker.shutdown())
                .await
                .is_err()
            {
                slot.worker.kill();
            }
            tracing::debug!(pool = %name, worker = %slot.id, "worker terminated");
        });
    }

    /// Marks idle entry `index` for recycling and starts its replacement.
    pub(crate) fn start_recycle(self: &Arc<Self>, state: &mut State<W>, index: usize) {
        let entry = &mut state.entries[index];
        entry.retiring = true;
        entry.recycling = true;
        entry.refresh_quiet();
        let old = entry.slot.id;
        state.recycling += 1;
        tracing::info!(pool = %self.config.name, worker = %old, "recycling worker");
        self.spawn_start(state, StartReason::Recycle(old), Duration::ZERO);
    }

    /// No worker free: start one if the pool is below its size, or an overflow worker if it
    /// may grow. Never starts more than the waiting callers need.
    pub(crate) fn grow_for_demand(self: &Arc<Self>, state: &mut State<W>) {
        if self.is_shutting_down() || state.starting > state.waiters.len() {
            return;
        }
        let live = state.live();
        if live < state.target_size {
            if state.failed_starts_in_a_row == 0 || state.starting == 0 {
                let delay = self.config.backoff(state.failed_starts_in_a_row);
                self.spawn_start(state, StartReason::Fill, delay);
            }
        } else if live < state.target_size + self.config.max_overflow {
            self.spawn_start(state, StartReason::Overflow, Duration::ZERO);
        }
    }

    /// Starts workers until `size` are live, `batch` at a time, waiting for each wave.
    /// Returns (started, failed).
    pub(crate) async fn grow_to(self: &Arc<Self>, size: usize, batch: usize) -> (usize, usize) {
        let (mut started, mut failed) = (0, 0);
        loop {
            let wave: Vec<(WorkerId, StartFuture<W>)> = {
                let mut state = self.state.lock();
                let live = state.live();
                if live >= size || self.is_shutting_down() {
                    break;
                }
                let n = (size - live).min(batch.max(1));
                state.starting += n;
                (0..n)
                    .map(|_| {
                        let id = self.new_id();
                        (id, self.start_future(id))
                    })
                    .collect()
            };
            let mut handles = Vec::with_capacity(wave.len());
            for (id, start) in wave {
                match self.scope.spawn(start) {
                    Ok(handle) => handles.push((id, handle)),
                    Err(error) => {
                        let mut state = self.state.lock();
                        state.starting -= 1;
                        state.last_start_error = Some(error.to_string());
                        failed += 1;
                    }
                }
            }
            let mut wave_failed = 0;
            for (id, handle) in handles {
                let result = handle.await.unwrap_or_else(|join| {
                    Err(StartError {
                        worker: id,
                        message: format!("start task failed: {join}"),
                    })
                });
                if result.is_ok() {
                    started += 1;
                } else {
                    wave_failed += 1;
                }
                self.on_started(id, result, StartReason::Fill);
            }
            failed += wave_failed;
            if wave_failed > 0 && started == 0 {
                break; // nothing starts: retries continue in the background with backoff
            }
        }
        (started, failed)
    }

    /// Retires idle workers beyond `size`; busy ones are marked and retired by maintenance.
    pub(crate) fn shrink_to(self: &Arc<Self>, size: usize) -> usize {
        let mut state = self.state.lock();
        let mut retired = 0;
        while state.entries.iter().filter(|e| !e.retiring).count() > size {
            let idle = state
                .entries
                .iter()
                .rposition(|e| !e.retiring && e.in_flight() == 0);
            match idle {
                Some(index) => {
                    self.retire(&mut state, index, "scaled down");
                    retired += 1;
                }
                None => break,
            }
        }
        retired
    }

    /// Starts the maintenance task: health checks, overflow retirement, age recycling,
    /// session expiry, and refilling the pool after failed replacements.
    pub(crate) fn start_maintenance(self: &Arc<Self>) {
        let config = &self.config;
        let mut tick = config
            .session_cleanup_interval
            .min(config.overflow_idle_ttl)
            .min(Duration::from_secs(1));
        if let Some(health) = config.health_interval {
            tick = tick.min(health);
        }
        if let Some(age) = config.recycle_after_age {
            tick = tick.min(age / 4);
        }
        let tick = tick.max(Duration::from_millis(5));
        let weak: Weak<Self> = Arc::downgrade(self);
        let closing = self.scope.handle().token();
        let spawned = self.scope.spawn(async move {
            let mut last_health = Instant::now();
            let mut last_sessions = Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(tick) => {}
                    () = closing.cancelled() => break,
                }
                let Some(inner) = weak.upgrade() else { break };
                if inner.is_shutting_down() {
                    break;
                }
                let now = Instant::now();
                if let Some(interval) = inner.config.health_interval
                    && now.duration_since(last_health) >= interval
                {
                    last_health = now;
                    inner.health_round().await;
                }
                let mut state = inner.state.lock();
                if now.duration_since(last_sessions) >= inner.config.session_cleanup_interval {
                    last_sessions = now;
                    inner.expire_sessions(&mut state);
                }
                inner.tidy(&mut state, now);
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(pool = %self.config.name, %error, "no maintenance task (no runtime?)");
        }
    }

    /// Removes workers that died while idle, retires idle overflow workers past their TTL and
    /// workers past their target size, recycles aged idle workers, and refills the pool when
    /// it fell below its size.
    fn tidy(self: &Arc<Self>, state: &mut State<W>, now: Instant) {
        // A worker that died with no call in flight would otherwise stay until the next call
        // or health round, and the pool would run short meanwhile.
        self.remove_dead(state);
        let ttl = self.config.overflow_idle_ttl;
        while let Some(index) = state.entries.iter().position(|e| {
            e.overflow
                && !e.retiring
                && e.in_flight() == 0
                && now.duration_since(e.last_used) >= ttl
        }) {
            self.counters.overflow_retired.bump();
            self.retire(state, index, "idle overflow");
        }
        let regular = state
            .entries
            .iter()
            .filter(|e| !e.retiring && !e.overflow)
            .count();
        if regular > state.target_size
            && let Some(index) = state
                .entries
                .iter()
                .rposition(|e| !e.retiring && !e.overflow && e.in_flight() == 0)
        {
            self.retire(state, index, "scaled down");
        }
        if state.recycling < self.config.max_recycling
            && let Some(index) = state
                .entries
                .iter()
                .position(|e| !e.retiring && e.in_flight() == 0 && e.recycle_due(now))
        {
            self.start_recycle(state, index);
        }
        if state.live() < state.target_size && state.starting == 0 {
            let delay = self.config.backoff(state.failed_starts_in_a_row);
            self.spawn_start(state, StartReason::Fill, delay);
        }
    }

    /// Health-checks every idle worker at once; failures degrade, repeated failures replace.
    async fn health_round(self: &Arc<Self>) {
        let slots: Vec<Arc<Slot<W>>> = {
            let mut state = self.state.lock();
            state
                .entries
                .iter_mut()
                .filter(|e| {
                    !e.retiring
                        && e.in_flight() == 0
                        && matches!(
                            e.machine.state(),
                            WorkerState::Ready | WorkerState::Degraded
                        )
                })
                .map(|e| {
                    e.slot.reserve(); // reserved: no call runs during the check
                    self.counters.in_flight.increment(1.0);
                    Arc::clone(&e.slot)
                })
                .collect()
        };
        let timeout = self.config.health_timeout;
        let mut checks = Vec::with_capacity(slots.len());
        for slot in slots {
            let checked = Arc::clone(&slot);
            let check = self.scope.spawn(async move {
                match tokio::time::timeout(timeout, checked.worker.health_check()).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                }
            });
            checks.push((slot, check));
        }
        for (slot, check) in checks {
            let result = match check {
                Ok(handle) => handle.await.unwrap_or_else(|e| Err(e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            let mut state = self.state.lock();
            let Some(index) = state.find(slot.id) else {
                continue;
            };
            let threshold = self.config.health_failures_before_removal.max(1);
            let entry = &mut state.entries[index];
            if entry.in_flight() > 0 {
                entry.slot.unreserve();
                self.counters.in_flight.decrement(1.0);
            }
            match result {
                Ok(()) => {
                    entry.health_failures = 0;
                    entry.machine.set_health(Health::Healthy);
                    if entry.machine.state() == WorkerState::Degraded {
                        let _ = entry
                            .machine
                            .transition(WorkerState::Ready, "health check passed");
                        tracing::info!(pool = %self.config.name, worker = %slot.id, "worker recovered");
                    }
                    self.offer(&mut state, index);
                }
                Err(error) => {
                    self.counters.failure("health_check");
                    entry.health_failures += 1;
                    entry.machine.set_health(Health::Unhealthy);
                    let failures = entry.health_failures;
                    if entry.machine.state() == WorkerState::Ready {
                        let _ = entry.machine.transition(
                            WorkerState::Degraded,
                            format!("health check failed: {error}"),
                        );
                    }
                    tracing::warn!(pool = %self.config.name, worker = %slot.id, failures, %error, "health check failed");
                    if failures >= threshold {
                        self.remove_worker(&mut state, index, Discard::HealthChecks);
                    }
                }
            }
        }
    }

    pub(crate) async fn shutdown(self: &Arc<Self>) -> CloseReport {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return CloseReport::default();
        }
        tracing::info!(pool = %self.config.name, "pool shutting down");
        {
            let mut state = self.state.lock();
            state.waiters.clear();
            self.counters.queue_depth.set(0.0);
            state.wake_ready();
        }
        let deadline = saturating_after(Instant::now(), self.config.drain_grace);
        loop {
            let busy = self.state.lock().entries.iter().any(|e| e.in_flight() > 0);
            if !busy || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let entries: Vec<Entry<W>> = std::mem::take(&mut self.state.lock().entries);
        let timeout = self.config.health_timeout;
        let mut stops = Vec::new();
        for mut entry in entries {
            let _ = entry
                .machine
                .transition(WorkerState::Terminating, "pool shutdown");
            let slot = entry.slot;
            stops.push(tokio::spawn(async move {
                if tokio::time::timeout(timeout, slot.worker.shutdown())
                    .await
                    .is_err()
                {
                    slot.worker.kill();
                }
            }));
        }
        for stop in stops {
            let _ = stop.await;
        }
        self.scope.close().await
    }
}

/// A number in [0, 1) derived from `seed` (splitmix64): jitter without a random crate.
fn unit_random(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
