//! Handing workers to calls: the admission queue, least-loaded choice, session affinity, and
//! the guards that always give a worker back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

use tokio::sync::oneshot;

use super::Inner;
pub(crate) use super::table::{Binding, Entry, Slot, StartReason, State, Waiter};
use crate::config::{AffinityMode, saturating_after};
use crate::error::PoolError;
use crate::request::WorkerId;
use crate::state::WorkerState;
use crate::worker::Worker;

/// A worker handed to a waiting caller. If the caller is gone by the time it arrives (timed
/// out, cancelled), dropping the handoff gives the worker back: none is ever lost.
pub(crate) struct Handoff<W: Worker> {
    pub(super) inner: Arc<Inner<W>>,
    pub(super) slot: Arc<Slot<W>>,
    pub(super) armed: bool,
}

impl<W: Worker> Handoff<W> {
    fn into_checkout(mut self) -> Checkout<'static, W> {
        self.armed = false;
        Checkout {
            inner: PoolRef::Owned(Arc::clone(&self.inner)),
            slot: Arc::clone(&self.slot),
            armed: true,
        }
    }

    /// Disarms it: the caller of `offer` undoes the reservation itself, under the lock it
    /// already holds.
    pub(super) fn defuse(mut self) {
        self.armed = false;
    }
}

impl<W: Worker> Drop for Handoff<W> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.release(&self.slot, Outcome::Unused);
        }
    }
}

/// How a call on a checked-out worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A result, or an error that is the caller's or the handler's.
    Done,
    /// A transient failure: the worker is fine.
    Transient,
    /// Checked out but no call ran (a handoff nobody took, a deadline already past).
    Unused,
    /// The call's future was dropped mid-flight (the caller was cancelled).
    Cancelled,
    /// The worker must go: it hung, crashed or broke the protocol.
    Discard(Discard),
}

/// Why a worker is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discard {
    Timeout,
    Crashed,
    ProtocolViolation,
    HealthChecks,
    /// A call given up on was not answered within the cancel grace.
    CancelIgnored,
}

impl Discard {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Discard::Timeout => "call timed out",
            Discard::Crashed => "worker crashed",
            Discard::ProtocolViolation => "protocol violation",
            Discard::HealthChecks => "failed health checks",
            Discard::CancelIgnored => "a cancelled call was not answered within the cancel grace",
        }
    }
}

/// The pool a checkout gives its worker back to: borrowed for a call that runs inside the
/// caller's future (no shared reference count to bump, a cache line fewer that every call on
/// every core writes), owned for one that may outlive it.
enum PoolRef<'a, W: Worker> {
    Borrowed(&'a Arc<Inner<W>>),
    Owned(Arc<Inner<W>>),
}

impl<W: Worker> std::ops::Deref for PoolRef<'_, W> {
    type Target = Arc<Inner<W>>;

    fn deref(&self) -> &Arc<Inner<W>> {
        match self {
            PoolRef::Borrowed(inner) => inner,
            PoolRef::Owned(inner) => inner,
        }
    }
}

/// A worker checked out for one call. Dropping it without [`finish`](Self::finish) — the
/// caller's future was cancelled — gives the worker back.
pub(crate) struct Checkout<'a, W: Worker> {
    inner: PoolRef<'a, W>,
    pub(super) slot: Arc<Slot<W>>,
    pub(super) armed: bool,
}

impl<W: Worker> Checkout<'_, W> {
    pub(crate) fn slot(&self) -> &Arc<Slot<W>> {
        &self.slot
    }

    /// The same checkout, able to outlive the caller (for a call handed to a settling task).
    pub(crate) fn into_owned(mut self) -> Checkout<'static, W> {
        self.armed = false;
        Checkout {
            inner: PoolRef::Owned(Arc::clone(&self.inner)),
            slot: Arc::clone(&self.slot),
            armed: true,
        }
    }

    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.armed = false;
        self.inner.release(&self.slot, outcome);
    }
}

impl<W: Worker> Drop for Checkout<'_, W> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.release(&self.slot, Outcome::Cancelled);
        }
    }
}

/// A checkout and what the caller should know about its session.
pub(crate) struct Granted<'a, W: Worker> {
    pub(crate) checkout: Checkout<'a, W>,
    pub(crate) rebound: bool,
    /// The call waited in the admission queue for its worker.
    pub(crate) queued: bool,
}

impl<W: Worker> Inner<W> {
    /// Reserves one call on entry `index` (under the lock).
    ///
    /// The worker's machine stays `Ready` while it serves: `Busy` is shown from its running
    /// calls, and the flip is counted in the transition metrics (not kept in its history,
    /// which is for the transitions worth reading) so that a release can do its part
    /// without the lock.
    pub(super) fn take<'a>(
        self: &'a Arc<Self>,
        state: &mut State<W>,
        index: usize,
    ) -> Checkout<'a, W> {
        let entry = &state.entries[index];
        if entry.slot.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.counters.transitions[WorkerState::Busy.index()].increment(1);
        }
        self.counters.in_flight.increment(1.0);
        Checkout {
            inner: PoolRef::Borrowed(self),
            slot: Arc::clone(&entry.slot),
            armed: true,
        }
    }

    /// Finds a worker for a call: the session's worker, else the least loaded, else a place
    /// in the admission queue (bounded) until one is handed over.
    pub(crate) async fn checkout<'a>(
        self: &'a Arc<Self>,
        session: Option<&Arc<str>>,
        deadline: Option<std::time::Instant>,
        avoid: &[WorkerId],
    ) -> Result<Granted<'a, W>, PoolError> {
        let mut rebound = false;
        let receiver = {
            let mut state = self.state.lock();
            self.check_admitting()?;
            self.remove_dead(&mut state);
            let mut wanted: Option<WorkerId> = None;
            if let Some(session) = session {
                let mut bound = self.bound_worker(&mut state, session)?;
                if let Bound::Free(index) = bound
                    && self.config.affinity == AffinityMode::Hint
                    && state
                        .least_loaded(self.config.max_in_flight, avoid, false)
                        .is_some_and(|least| {
                            state.entries[least].in_flight() < state.entries[index].in_flight()
                        })
                {
                    // A hint, not a tie: when the session's worker runs more calls than
                    // another free worker (a worker taking many calls at once), the call goes
                    // to the less loaded one.
                    bound = Bound::Busy(state.entries[index].slot.id);
                }
                match bound {
                    Bound::Free(index) => {
                        self.counters.affinity_hits.bump();
                        let worker = state.entries[index].slot.id;
                        self.touch_binding(&mut state, session, worker);
                        return Ok(Granted {
                            checkout: self.take(&mut state, index),
                            rebound,
                            queued: false,
                        });
                    }
                    Bound::Busy(worker) => match self.config.affinity {
                        AffinityMode::Hint => self.counters.affinity_spills.bump(),
                        AffinityMode::StrictQueue | AffinityMode::Exclusive => {
                            wanted = Some(worker);
                        }
                        AffinityMode::StrictFailFast => {
                            self.counters.failure("session_busy");
                            return Err(PoolError::SessionBusy {
                                session: session.to_string(),
                                worker,
                            });
                        }
                    },
                    Bound::Lost => rebound = true,
                    Bound::None => self.counters.affinity_misses.bump(),
                }
            }
            let exclusive = self.config.affinity == AffinityMode::Exclusive;
            let max_in_flight = self.config.max_in_flight;
            // Two looks: the second after telling lock-free releases that a caller is about
            // to wait (see `release`), since a call that ended after the first look lowered
            // its worker's count without this lock.
            for look in 0..2 {
                let free = match wanted {
                    None => state.least_loaded(max_in_flight, avoid, exclusive),
                    // Strict affinity: only the session's worker will do (busy at the first
                    // look, which is why it is wanted).
                    Some(worker) if look == 1 => state
                        .find(worker)
                        .filter(|&i| state.entries[i].available(max_in_flight)),
                    Some(_) => None,
                };
                if let Some(index) = free {
                    if look == 1 {
                        self.publish_demand(&state);
                    }
                    if let Some(session) = session
                        && (wanted.is_some() || !state.sessions.contains_key(session))
                    {
                        let worker = state.entries[index].slot.id;
                        self.touch_binding(&mut state, session, worker);
                        if exclusive && wanted.is_none() {
                            state.entries[index].owner = Some(Arc::clone(session));
                        }
                    }
                    return Ok(Granted {
                        checkout: self.take(&mut state, index),
                        rebound,
                        queued: false,
                    });
                }
                if look == 0 {
                    self.demand.store(true, Ordering::SeqCst);
                }
            }
            // Nothing free: grow if allowed, then queue.
            self.grow_for_demand(&mut state);
            // No worker at all and the last start failed (a backend that is down): fail now,
            // so the router tries the next tier instead of waiting out the queue bound.
            if state.entries.is_empty() && (state.starting == 0 || state.failed_starts_in_a_row > 0)
            {
                self.publish_demand(&state);
                self.counters.failure("no_workers");
                return Err(self.no_workers(&state));
            }
            state.waiters.retain(|w| !w.tx.is_closed());
            self.counters.queue_depth.set(state.waiters.len() as f64);
            if state.waiters.len() >= self.config.queue_capacity {
                self.publish_demand(&state);
                self.counters.failure("overloaded");
                return Err(PoolError::Overloaded {
                    pool: self.config.name.clone(),
                    waiting: state.waiters.len(),
                    capacity: self.config.queue_capacity,
                });
            }
            let (tx, rx) = oneshot::channel();
            let claim = match (exclusive, wanted, session) {
                (true, None, Some(session)) => Some(Arc::clone(session)),
                _ => None,
            };
            state.waiters.push_back(Waiter {
                tx,
                for_worker: wanted,
                claim,
            });
            self.counters.queue_depth.set(state.waiters.len() as f64);
            rx
        };
        let started = Instant::now();
        let mut wait = self.config.queue_timeout;
        if let Some(deadline) = deadline {
            wait = wait.min(deadline.saturating_duration_since(std::time::Instant::now()));
        }
        match tokio::time::timeout(wait, receiver).await {
            Ok(Ok(Err(worker))) => {
                self.counters.failure("session_worker_lost");
                Err(PoolError::SessionWorkerLost {
                    session: session.map(|s| s.to_string()).unwrap_or_default(),
                    worker,
                })
            }
            Ok(Ok(Ok(handoff))) => {
                let checkout = handoff.into_checkout();
                if let Some(session) = session {
                    let mut state = self.state.lock();
                    self.touch_binding(&mut state, session, checkout.slot().id);
                }
                Ok(Granted {
                    checkout,
                    rebound,
                    queued: true,
                })
            }
            // The pool dropped our place: it is shutting down or has no worker left.
            Ok(Err(_)) => {
                let state = self.state.lock();
                if self.is_shutting_down() {
                    Err(self.shutting_down_error())
                } else {
                    self.counters.failure("no_workers");
                    Err(self.no_workers(&state))
                }
            }
            Err(_) => {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    self.counters.failure("deadline_exceeded");
                    Err(PoolError::DeadlineExceeded)
                } else {
                    self.counters.failure("queue_timeout");
                    Err(PoolError::QueueTimeout {
                        pool: self.config.name.clone(),
                        waited: started.elapsed(),
                    })
                }
            }
        }
    }

    /// Workers that died while idle go now, instead of failing the next call given to them
    /// (at a checkout, and on every maintenance tick, which then refills the pool).
    pub(super) fn remove_dead(self: &Arc<Self>, state: &mut State<W>) {
        while let Some(index) = state
            .entries
            .iter()
            .position(|e| e.in_flight() == 0 && !e.slot.worker.is_alive())
        {
            self.remove_worker(state, index, Discard::Crashed);
        }
    }

    pub(super) fn touch_binding(&self, state: &mut State<W>, session: &Arc<str>, worker: WorkerId) {
        state.sessions.insert(
            Arc::clone(session),
            Binding {
                worker,
                expires: saturating_after(Instant::now(), self.config.session_ttl),
            },
        );
    }

    /// What the session's binding says, dropping it when its worker left or it expired.
    fn bound_worker(&self, state: &mut State<W>, session: &Arc<str>) -> Result<Bound, PoolError> {
        let Some(binding) = state.sessions.get(session) else {
            return Ok(Bound::None);
        };
        let worker = binding.worker;
        if binding.expires <= Instant::now() {
            state.sessions.remove(session);
            return Ok(Bound::None);
        }
        match state.find(worker) {
            // Being recycled: the session moves to the replacement once it is ready, so the
            // session's calls wait for it (strict) or go elsewhere meanwhile (hint).
            Some(index) if state.entries[index].recycling => Ok(Bound::Busy(worker)),
            Some(index) if !state.entries[index].retiring => {
                if state.entries[index].available(self.config.max_in_flight) {
                    Ok(Bound::Free(index))
                } else if state.entries[index].machine.state() == WorkerState::Degraded {
                    // A degraded worker takes no calls: treat like a lost one.
                    self.lose_binding(state, session, worker)
                } else {
                    Ok(Bound::Busy(worker))
                }
            }
            _ => self.lose_binding(state, session, worker),
        }
    }

    fn lose_binding(
        &self,
        state: &mut State<W>,
        session: &Arc<str>,
        worker: WorkerId,
    ) -> Result<Bound, PoolError> {
        state.sessions.remove(session);
        self.counters.affinity_rebinds.bump();
        tracing::debug!(pool = %self.config.name, session = %session, %worker, "session's worker left; binding dropped");
        match self.config.affinity {
            AffinityMode::Hint => Ok(Bound::Lost),
            AffinityMode::StrictQueue | AffinityMode::StrictFailFast | AffinityMode::Exclusive => {
                self.counters.failure("session_worker_lost");
                Err(PoolError::SessionWorkerLost {
                    session: session.to_string(),
                    worker,
                })
            }
        }
    }

    pub(crate) fn no_workers(&self, state: &State<W>) -> PoolError {
        PoolError::NoWorkers {
            pool: self.config.name.clone(),
            last_error: state
                .last_start_error
                .clone()
                .unwrap_or_else(|| "no worker was started".into()),
        }
    }

    /// Worker `old` is being replaced by `new` on purpose (recycling): its sessions and the
    /// callers waiting for it strictly move to `new`.
    pub(crate) fn rebind(&self, state: &mut State<W>, old: WorkerId, new: WorkerId) {
        for binding in state.sessions.values_mut() {
            if binding.worker == old {
                binding.worker = new;
            }
        }
        for waiter in &mut state.waiters {
            if waiter.for_worker == Some(old) {
                waiter.for_worker = Some(new);
            }
        }
    }

    /// Worker `gone` left the pool for good: callers waiting strictly for it learn it at once
    /// (`SessionWorkerLost`) instead of waiting out their queue timeout.
    pub(crate) fn fail_strict_waiters(&self, state: &mut State<W>, gone: WorkerId) {
        let mut kept = VecDeque::with_capacity(state.waiters.len());
        for waiter in state.waiters.drain(..) {
            if waiter.for_worker == Some(gone) {
                let _ = waiter.tx.send(Err(gone));
            } else {
                kept.push_back(waiter);
            }
        }
        state.waiters = kept;
        self.counters.queue_depth.set(state.waiters.len() as f64);
        state.wake_ready();
    }

    /// Expired session bindings go (with exclusive affinity, their workers too).
    pub(crate) fn expire_sessions(self: &Arc<Self>, state: &mut State<W>) {
        let now = Instant::now();
        let expired: Vec<Arc<str>> = state
            .sessions
            .iter()
            .filter(|(_, binding)| binding.expires <= now)
            .map(|(session, _)| Arc::clone(session))
            .collect();
        for session in expired {
            self.end_session(state, &session);
        }
    }

    /// Forgets `session`; with exclusive affinity, retires the worker it owned (now, or when
    /// its last call ends). Returns whether the session was known.
    pub(crate) fn end_session(self: &Arc<Self>, state: &mut State<W>, session: &str) -> bool {
        let known = state.sessions.remove(session).is_some();
        if let Some(index) = state
            .entries
            .iter()
            .position(|e| e.owner.as_deref() == Some(session))
        {
            // Marked first, then checked: a call ending meanwhile either sees the mark (and
            // retires the worker) or is seen here as ended.
            let entry = &mut state.entries[index];
            entry.session_ended = true;
            entry.retiring = true;
            entry.refresh_quiet();
            if entry.in_flight() == 0 {
                self.retire_owned(state, index);
            }
        }
        known
    }
}

enum Bound {
    None,
    Free(usize),
    Busy(WorkerId),
    Lost,
}
