//! The pool's table of workers, as the lock holds it: each worker's slot and entry, the
//! callers waiting for a worker, session bindings.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use tokio::time::Instant;

use tokio::sync::oneshot;

use super::dispatch::Handoff;
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
    pub(super) in_flight: AtomicUsize,
    /// Calls it has finished (recycling after N calls).
    pub(super) calls: AtomicU64,
    /// Whether a release may skip the bookkeeping under the lock: mirrors
    /// [`Entry::needs_bookkeeping`], kept up to date under the lock.
    pub(super) quiet: AtomicBool,
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
    pub(super) fn least_loaded(
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
