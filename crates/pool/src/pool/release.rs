//! A call's end: its worker given back (usually without the pool's lock), then offered to
//! the callers waiting for one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

use super::Inner;
use super::dispatch::{Handoff, Outcome, Slot, State};
use crate::state::WorkerState;
use crate::worker::Worker;

impl<W: Worker> Inner<W> {
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
}
