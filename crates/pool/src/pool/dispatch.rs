//! Handing workers to calls: the admission queue, least-loaded choice, session affinity, and
//! the guards that always give a worker back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use tokio::time::Instant;

use tokio::sync::oneshot;

use super::Inner;
use crate::config::{AffinityMode, saturating_after};
use crate::error::PoolError;
use crate::request::WorkerId;
use crate::state::{StateMachine, WorkerState};
use crate::worker::Worker;

/// A worker and its id; shared by the pool's table and the calls running on it.
///
/// Its call counts are atomics so that a call's release usually needs no pool lock (see
/// [`Inner::release`]): `in_flight` goes up only under the lock, and down with or without it.
pub(crate) struct Slot<W> {
    pub(crate) id: WorkerId,
    pub(crate) worker: W,
    /// Calls running on it, and a health check's reservation.
    in_flight: AtomicUsize,
    /// Calls it has finished (recycling after N calls).
    calls: AtomicU64,
    /// Whether a release may skip the bookkeeping under the lock: mirrors
    /// [`Entry::needs_bookkeeping`], kept up to date under the lock.
    quiet: AtomicBool,
}

impl<W> Slot<W> {
    pub(crate) fn new(id: WorkerId, worker: W) -> Self {
        Self {
            id,
            worker,
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            quiet: AtomicBool::new(false),
        }
    }

    /// Calls running on it (and a health check's reservation).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Reserves it for a health check (under the pool's lock; not a call).
    pub(crate) fn reserve(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends a health check's reservation (under the pool's lock).
    pub(crate) fn unreserve(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

/// The pool's view of one worker.
pub(crate) struct Entry<W> {
    pub(crate) slot: Arc<Slot<W>>,
    pub(crate) machine: StateMachine,
    pub(crate) started: Instant,
    pub(crate) last_used: Instant,
    pub(crate) health_failures: u32,
    pub(crate) overflow: bool,
    /// Not given new calls: waiting for its replacement (recycling) or to go (scaling down).
    pub(crate) retiring: bool,
    /// Retiring because it is being recycled: its sessions and strict waiters move to the
    /// replacement once that is ready.
    pub(crate) recycling: bool,
    pub(crate) recycle_after_calls: Option<u64>,
    pub(crate) recycle_at: Option<Instant>,
    /// `Exclusive` affinity: the session that owns this worker.
    pub(crate) owner: Option<Arc<str>>,
    /// `Exclusive` affinity: its session ended while calls ran; retire it once idle.
    pub(crate) session_ended: bool,
}

impl<W: Worker> Entry<W> {
    /// Can take one more call now.
    pub(crate) fn available(&self, max_in_flight: usize) -> bool {
        self.slot.worker.is_alive()
            && !self.retiring
            && self.in_flight() < max_in_flight
            && matches!(self.machine.state(), WorkerState::Ready | WorkerState::Busy)
    }

    /// Calls running on it (and a health check's reservation).
    pub(crate) fn in_flight(&self) -> usize {
        self.slot.in_flight()
    }

    /// Calls it has finished.
    pub(crate) fn calls(&self) -> u64 {
        self.slot.calls.load(Ordering::Relaxed)
    }

    /// Its state as reported: the pool keeps a serving worker's machine at `Ready` and shows
    /// it `Busy` while calls run (the per-call flip is counted, not recorded: see
    /// [`Inner::take`]).
    pub(crate) fn shown_state(&self) -> WorkerState {
        match self.machine.state() {
            WorkerState::Ready if self.in_flight() > 0 => WorkerState::Busy,
            state => state,
        }
    }

    pub(crate) fn recycle_due(&self, now: Instant) -> bool {
        self.recycle_after_calls.is_some_and(|n| self.calls() >= n)
            || self.recycle_at.is_some_and(|at| now >= at)
    }

    /// Whether the end of a call on it needs work under the lock beyond the counts: the
    /// last-use time of an overflow worker, a recycling check, retiring it.
    fn needs_bookkeeping(&self) -> bool {
        self.overflow
            || self.retiring
            || self.session_ended
            || self.recycle_after_calls.is_some()
            || self.recycle_at.is_some()
    }

    /// Publishes [`needs_bookkeeping`](Self::needs_bookkeeping) to lock-free releases. Called
    /// under the lock after any change to what it reads, before looking at `in_flight` (a
    /// release lowers `in_flight` before it reads the flag: one of the two sees the other).
    pub(crate) fn refresh_quiet(&self) {
        self.slot
            .quiet
            .store(!self.needs_bookkeeping(), Ordering::SeqCst);
    }
}

/// What a waiting caller is handed: a worker, or (strict affinity) word that the session's
/// worker has left the pool.
pub(crate) type Handed<W> = Result<Handoff<W>, WorkerId>;

/// A caller waiting for a worker.
pub(crate) struct Waiter<W: Worker> {
    pub(crate) tx: oneshot::Sender<Handed<W>>,
    /// Strict affinity: only this worker will do.
    pub(crate) for_worker: Option<WorkerId>,
    /// `Exclusive` affinity: the new session that will own the worker handed over.
    pub(crate) claim: Option<Arc<str>>,
}

pub(crate) struct Binding {
    pub(crate) worker: WorkerId,
    pub(crate) expires: Instant,
}

/// Why a start was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartReason {
    /// To reach the pool's size (first start, lazy start, scale up, a failed start retried).
    Fill,
    /// An overflow worker for load above the size.
    Overflow,
    /// To replace a removed worker.
    Replace,
    /// To replace worker `old`, which is retiring.
    Recycle(WorkerId),
}

/// Everything under the pool's lock.
pub(crate) struct State<W: Worker> {
    pub(crate) entries: Vec<Entry<W>>,
    pub(crate) waiters: VecDeque<Waiter<W>>,
    pub(crate) starting: usize,
    pub(crate) recycling: usize,
    pub(crate) sessions: HashMap<Arc<str>, Binding>,
    pub(crate) target_size: usize,
    pub(crate) last_start_error: Option<String>,
    pub(crate) failed_starts_in_a_row: u32,
    pub(crate) quick_crashes_in_a_row: u32,
    /// The tools the most recently started worker announced.
    pub(crate) tools: Arc<Vec<crate::request::ToolSpec>>,
    /// Tower callers waiting in `poll_ready` for room (woken when a worker is offered to the
    /// queue and at shutdown).
    pub(crate) ready_wakers: Vec<std::task::Waker>,
}

impl<W: Worker> State<W> {
    pub(crate) fn new(target_size: usize) -> Self {
        Self {
            entries: Vec::new(),
            waiters: VecDeque::new(),
            starting: 0,
            recycling: 0,
            sessions: HashMap::new(),
            target_size,
            last_start_error: None,
            failed_starts_in_a_row: 0,
            quick_crashes_in_a_row: 0,
            tools: Arc::new(Vec::new()),
            ready_wakers: Vec::new(),
        }
    }

    /// Whether some worker can take one more call now.
    pub(crate) fn has_free_worker(&self, max_in_flight: usize, unowned: bool) -> bool {
        self.least_loaded(max_in_flight, &[], unowned).is_some()
    }

    /// Wakes the tower callers waiting for room.
    pub(crate) fn wake_ready(&mut self) {
        for waker in self.ready_wakers.drain(..) {
            waker.wake();
        }
    }

    pub(crate) fn find(&self, id: WorkerId) -> Option<usize> {
        self.entries.iter().position(|e| e.slot.id == id)
    }

    /// The available worker with the fewest calls running, avoiding `avoid` when possible
    /// (with `unowned`, only workers no session owns).
    fn least_loaded(
        &self,
        max_in_flight: usize,
        avoid: &[WorkerId],
        unowned: bool,
    ) -> Option<usize> {
        let candidates = || {
            self.entries
                .iter()
                .enumerate()
                .filter(move |(_, e)| e.available(max_in_flight) && (!unowned || e.owner.is_none()))
        };
        let best = |avoiding: bool| {
            candidates()
                .filter(|(_, e)| !avoiding || !avoid.contains(&e.slot.id))
                .min_by_key(|(_, e)| e.in_flight())
                .map(|(i, _)| i)
        };
        best(true).or_else(|| best(false))
    }

    /// Workers running or starting, not counting the retiring ones.
    pub(crate) fn live(&self) -> usize {
        self.entries.iter().filter(|e| !e.retiring).count() + self.starting
    }
}

/// A worker handed to a waiting caller. If the caller is gone by the time it arrives (timed
/// out, cancelled), dropping the handoff gives the worker back: none is ever lost.
pub(crate) struct Handoff<W: Worker> {
    inner: Arc<Inner<W>>,
    slot: Arc<Slot<W>>,
    armed: bool,
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
    fn defuse(mut self) {
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
    slot: Arc<Slot<W>>,
    armed: bool,
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
    fn take<'a>(self: &'a Arc<Self>, state: &mut State<W>, index: usize) -> Checkout<'a, W> {
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

    /// Workers that died while idle go now, instead of failing the next call given to them.
    fn remove_dead(self: &Arc<Self>, state: &mut State<W>) {
        while let Some(index) = state
            .entries
            .iter()
            .position(|e| e.in_flight() == 0 && !e.slot.worker.is_alive())
        {
            self.remove_worker(state, index, Discard::Crashed);
        }
    }

    fn touch_binding(&self, state: &mut State<W>, session: &Arc<str>, worker: WorkerId) {
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

    /// Gives a worker back after a call (or an unused reservation), then decides its fate:
    /// removed, recycled, or offered to waiting callers.
    ///
    /// The common case takes no lock: the call is counted and the worker's running calls
    /// lowered with atomics, and when nobody waits for a worker (`demand`) and the worker
    /// needs no bookkeeping (`quiet`), that is all. Both flags are read after the decrement,
    /// and whoever sets them under the lock does so before it looks at `in_flight`, so a
    /// caller about to queue, or a worker about to retire, is never missed.
    pub(crate) fn release(self: &Arc<Self>, slot: &Arc<Slot<W>>, outcome: Outcome) {
        if outcome != Outcome::Unused {
            slot.calls.fetch_add(1, Ordering::Relaxed);
        }
        let discard = matches!(outcome, Outcome::Discard(_));
        if !discard {
            self.lower_in_flight(slot);
            if slot.quiet.load(Ordering::SeqCst) && !self.demand.load(Ordering::SeqCst) {
                return;
            }
        }
        let mut state = self.state.lock();
        let Some(index) = state.find(slot.id) else {
            return; // already removed (health checks, shutdown)
        };
        if discard {
            self.lower_in_flight(slot);
        }
        // Reading the clock costs more than the rest of a release on some machines: only
        // overflow workers (idle TTL) need the time of their last call.
        if state.entries[index].overflow {
            state.entries[index].last_used = Instant::now();
        }
        if let Outcome::Discard(why) = outcome {
            self.remove_worker(&mut state, index, why);
            return;
        }
        if state.entries[index].session_ended && state.entries[index].in_flight() == 0 {
            self.retire_owned(&mut state, index);
            return;
        }
        let entry = &state.entries[index];
        if entry.in_flight() == 0
            && !entry.retiring
            && (entry.recycle_after_calls.is_some() || entry.recycle_at.is_some())
            && entry.recycle_due(Instant::now())
            && state.recycling < self.config.max_recycling
        {
            self.start_recycle(&mut state, index);
            return;
        }
        self.offer(&mut state, index);
        self.publish_demand(&state);
    }

    /// One call fewer on `slot` (never below zero), counted in the metrics.
    fn lower_in_flight(&self, slot: &Slot<W>) {
        if let Ok(before) = slot
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            self.counters.in_flight.decrement(1.0);
            if before == 1 {
                self.counters.transitions[WorkerState::Ready.index()].increment(1);
            }
        }
    }

    /// Tells lock-free releases whether a caller waits for a worker (queued, or a tower
    /// caller in `poll_ready`). Called under the lock after the waiters change; set to true
    /// before a caller decides to wait (see [`release`](Self::release)).
    pub(crate) fn publish_demand(&self, state: &State<W>) {
        let waiting = !state.waiters.is_empty() || !state.ready_wakers.is_empty();
        self.demand.store(waiting, Ordering::SeqCst);
    }

    /// Hands entry `index` to waiting callers while it has room.
    pub(crate) fn offer(self: &Arc<Self>, state: &mut State<W>, index: usize) {
        state.wake_ready();
        loop {
            let entry = &state.entries[index];
            if !entry.available(self.config.max_in_flight) {
                return;
            }
            let id = entry.slot.id;
            // An owned worker (exclusive affinity) goes only to its session's callers.
            let owned = entry.owner.is_some();
            let Some(position) = state.waiters.iter().position(|w| match w.for_worker {
                Some(wanted) => wanted == id,
                None => !owned,
            }) else {
                return;
            };
            let Some(waiter) = state.waiters.remove(position) else {
                return;
            };
            self.counters.queue_depth.set(state.waiters.len() as f64);
            if let Some(session) = &waiter.claim {
                self.touch_binding(state, session, id);
                state.entries[index].owner = Some(Arc::clone(session));
            }
            let mut checkout = self.take(state, index);
            checkout.armed = false;
            let handoff = Handoff {
                inner: Arc::clone(self),
                slot: Arc::clone(&checkout.slot),
                armed: true,
            };
            if let Err(Ok(returned)) = waiter.tx.send(Ok(handoff)) {
                // That caller is gone: undo the reservation here, under our lock.
                returned.defuse();
                let slot = Arc::clone(&state.entries[index].slot);
                self.lower_in_flight(&slot);
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
