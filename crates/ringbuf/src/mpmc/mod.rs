//! The bounded multi-producer multi-consumer queue.

mod batch;
mod close;
mod position;

use std::fmt;
use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::backoff::Backoff;
use crate::error::CapacityError;
use crate::loom::cell::UnsafeCell;
use crate::loom::sync::atomic::{AtomicU64, Ordering, fence};
use position::Positions;

/// The largest capacity a queue accepts: positions keep the index in the low bits of a `u64`
/// and need room for a lap counter above it, below the tail's closed mark (bit 63, see
/// [`close`](Queue::close)).
const MAX_CAPACITY: usize = 1 << 60;

/// One cell of the ring.
///
/// `sequence` says who may touch `value` next, for the position `p` the slot serves:
/// `p` — empty, the producer of `p` may write; `p + 1` — holds the item pushed at `p`, its
/// consumer may read; `p + one_lap` — read, free for the producer of the next lap.
struct Slot<T> {
    sequence: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A bounded, lock-free multi-producer multi-consumer queue.
///
/// Any number of threads push and pop through a shared reference (`Queue` is `Sync` when `T` is
/// `Send`; wrap it in an `Arc` to share it). Items come out in the order their pushes claimed a
/// place.
///
/// * [`push`](Queue::push) hands the item back when the queue is full; it never waits for a
///   consumer.
/// * [`force_push`](Queue::force_push) makes room by removing the oldest item and returns it:
///   a ring that keeps the most recent `capacity` items.
/// * [`push_batch`](Queue::push_batch) and [`pop_batch`](Queue::pop_batch) claim a run of
///   slots with one atomic step and then copy the run.
/// * [`close`](Queue::close) refuses every later push; once a closed queue
///   [`is_empty`](Queue::is_empty), it is drained for good, with no push half done.
///
/// # Algorithm and progress
///
/// Slots carry a sequence number (Dmitry Vyukov's bounded MPMC design): a producer claims the
/// tail with one compare-exchange, writes the item, then publishes the slot by storing its
/// sequence; consumers do the same at the head. Head and tail sit on their own cache lines;
/// neighbouring positions share lines, as in crossbeam's `ArrayQueue` (spreading them over
/// lines measured slower, see `Positions::slot_of`).
///
/// `push`, `pop` and the batch operations never wait for another thread: each looks at the
/// one slot where it would act, and a slot that is not ready for it is an immediate answer.
/// So `pop` returns `None` when the item at the head is not published yet: the queue is
/// empty, or the producer that claimed that position has not finished writing it (even if
/// later positions, claimed by other producers, are already written). Likewise `push` hands
/// the item back when the slot at the tail still holds the item of the previous lap: the
/// queue is full, or a consumer that claimed the oldest item has not finished moving it out.
/// Both cases last a few instructions, unless that thread is preempted; the item is then
/// there for the next call. Deciding from the slot alone keeps each side off the other
/// side's position (crossbeam's `ArrayQueue` reads it to tell the cases apart and spins in
/// the second, which costs a cache-line transfer on every call that finds the queue empty or
/// full). Items are never lost or reordered either way, and [`is_empty`](Queue::is_empty) and
/// [`is_full`](Queue::is_full) count claimed positions, so they report such an item as
/// present.
///
/// Only contention makes a call loop: a lost compare-exchange retries with a short spin, and
/// [`force_push`](Queue::force_push), which must make room, spins (a growing pause, never a
/// yield) while the slot it needs is half way through another thread's hands.
///
/// # Memory ordering
///
/// Every change of the head or the tail (the claims of every push and pop, single or
/// batched, and `force_push`'s eviction) is a `SeqCst` operation, and
/// [`is_empty`](Queue::is_empty) and [`is_full`](Queue::is_full) read both with `SeqCst`
/// loads. A caller can therefore build a wake-up protocol on them without fences: after a
/// push, a `SeqCst` load of "is someone waiting?" and, on the waiting side, a `SeqCst` store
/// of "I am waiting" before re-checking `is_empty()`, cannot both miss the other (the
/// `flowbalancer-bus` channels rely on this). On x86 these orderings cost nothing over
/// acquire/release.
///
/// # Examples
///
/// ```
/// use flowbalancer_ringbuf::Queue;
///
/// let queue = Queue::new(2)?;
/// assert_eq!(queue.push(1), Ok(()));
/// assert_eq!(queue.push(2), Ok(()));
/// assert_eq!(queue.push(3), Err(3)); // full: the item comes back
/// assert_eq!(queue.force_push(3), Some(1)); // overwrite the oldest
/// assert_eq!(queue.pop(), Some(2));
/// assert_eq!(queue.pop(), Some(3));
/// assert_eq!(queue.pop(), None);
/// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
/// ```
pub struct Queue<T> {
    /// The next position to pop.
    head: CachePadded<AtomicU64>,
    /// The next position to push.
    tail: CachePadded<AtomicU64>,
    /// A head position some producer read for [`len_above`](Queue::len_above): never ahead
    /// of the real head. Read by producers, written rarely.
    head_seen: CachePadded<AtomicU64>,
    positions: Positions,
    slots: Box<[Slot<T>]>,
}

// SAFETY: items move between threads through the queue, so `T: Send` is required and enough;
// every access to a slot's value is serialised by its sequence number (one owner at a time).
unsafe impl<T: Send> Send for Queue<T> {}
// SAFETY: as above: a shared `&Queue` only lets threads move `T`s in and out, never share one.
unsafe impl<T: Send> Sync for Queue<T> {}

impl<T> Queue<T> {
    /// Creates a queue that holds at most `capacity` items.
    ///
    /// Any capacity from 1 up works, without a division on any path.
    ///
    /// # Errors
    ///
    /// [`CapacityError::Zero`] for a capacity of 0 and [`CapacityError::TooLarge`] past 2^60.
    pub fn new(capacity: usize) -> Result<Self, CapacityError> {
        if capacity == 0 {
            return Err(CapacityError::Zero);
        }
        if capacity > MAX_CAPACITY {
            return Err(CapacityError::TooLarge {
                requested: capacity,
            });
        }
        let positions = Positions::new(capacity);
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(capacity)
            .map_err(|_| CapacityError::TooLarge {
                requested: capacity,
            })?;
        // Slot `i` starts out free for its first-lap position, which is `i` (the first lap
        // counts 0, 1, … capacity − 1, and `slot_of` is the position's low part).
        slots.extend((0..capacity).map(|index| Slot {
            sequence: AtomicU64::new(index as u64),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }));
        Ok(Self {
            head: CachePadded::new(AtomicU64::new(0)),
            tail: CachePadded::new(AtomicU64::new(0)),
            head_seen: CachePadded::new(AtomicU64::new(0)),
            positions,
            slots: slots.into_boxed_slice(),
        })
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The number of items in the queue at one instant (others may change it right after).
    pub fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(Ordering::SeqCst);
            let head = self.head.load(Ordering::SeqCst);
            // A consistent pair: the tail did not move while the head was read.
            if self.tail.load(Ordering::SeqCst) == tail {
                let tail = close::position_of(tail);
                let len = self.positions.distance(head, tail) as usize;
                return len.min(self.capacity());
            }
        }
    }

    /// The number of items, from one cheap sample of the head and the tail: no retry loop, so
    /// under contention it may be slightly stale, but it is always between 0 and the capacity.
    /// For statistics (depth gauges, high-water marks) on a hot path; use [`len`](Self::len)
    /// when a consistent snapshot matters.
    ///
    /// ```
    /// let queue = flowbalancer_ringbuf::Queue::new(4)?;
    /// queue.push(1).unwrap();
    /// assert_eq!(queue.len_hint(), 1);
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    #[inline]
    pub fn len_hint(&self) -> usize {
        let tail = close::position_of(self.tail.load(Ordering::Relaxed));
        let head = self.head.load(Ordering::Relaxed);
        self.sampled_len(head, tail).unwrap_or(0)
    }

    /// The length from a head and a tail read separately, or `None` when they do not make
    /// one: a head read after the tail may be ahead of it (then the distance wraps to a huge
    /// number). One past the capacity is a full queue with a `force_push` between claiming
    /// the tail and evicting the oldest item through the head.
    #[inline(always)]
    fn sampled_len(&self, head: u64, tail: u64) -> Option<usize> {
        let distance = self.positions.distance(head, tail);
        let capacity = self.capacity() as u64;
        (distance <= capacity + 1).then(|| distance.min(capacity) as usize)
    }

    /// How many items were ever pushed (by any push, `force_push` included): the producers'
    /// position as a count, so counting costs the producers nothing.
    ///
    /// ```
    /// let queue = flowbalancer_ringbuf::Queue::new(2)?;
    /// for i in 0..5 {
    ///     queue.force_push(i);
    /// }
    /// queue.pop();
    /// assert_eq!((queue.pushed(), queue.popped()), (5, 4)); // 3 evicted, 1 popped
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    pub fn pushed(&self) -> u64 {
        self.positions
            .distance(0, close::position_of(self.tail.load(Ordering::SeqCst)))
    }

    /// How many items were ever taken out (pops, and the oldest items `force_push` removed):
    /// the consumers' position as a count.
    pub fn popped(&self) -> u64 {
        self.positions.distance(0, self.head.load(Ordering::SeqCst))
    }

    /// The number of items if it may be above `floor`; `None` when the queue surely held at
    /// most `floor` items.
    ///
    /// For a producer-side high-water mark on a hot path: a producer that samples the length
    /// after every push reads the consumers' position each time, and so takes their cache
    /// line away from them. This judges from the head position as a producer last read it,
    /// which is never ahead of the real one (so it can only overestimate), and reads the real
    /// head only when that old position says the queue may hold more than `floor`. Like
    /// [`len_hint`](Self::len_hint), the result may be slightly stale under contention and is
    /// always between 0 and the capacity.
    ///
    /// ```
    /// let queue = flowbalancer_ringbuf::Queue::new(8)?;
    /// for i in 0..3 {
    ///     queue.push(i).unwrap();
    /// }
    /// assert_eq!(queue.len_above(0), Some(3));
    /// assert_eq!(queue.len_above(3), None);
    /// queue.pop();
    /// assert_eq!(queue.len_above(1), Some(2));
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    #[inline]
    pub fn len_above(&self, floor: usize) -> Option<usize> {
        let tail = close::position_of(self.tail.load(Ordering::Relaxed));
        let seen = self.head_seen.load(Ordering::Relaxed);
        // `seen` is at most the real head, so this is at least the real length (or huge, when
        // another producer stored a head read after our tail: then read the head too).
        if self.positions.distance(seen, tail) <= floor as u64 {
            return None;
        }
        let head = self.head.load(Ordering::Relaxed);
        self.head_seen.store(head, Ordering::Relaxed);
        self.sampled_len(head, tail).filter(|&len| len > floor)
    }

    /// Whether the queue held no item at one instant. An item whose push has claimed its
    /// position counts as held even while it is still being written (then `pop` may return
    /// `None` although this returns `false`), so on a [closed](Queue::close) queue `is_empty`
    /// means drained: no item is there and none can come.
    pub fn is_empty(&self) -> bool {
        let head = self.head.load(Ordering::SeqCst);
        let tail = close::position_of(self.tail.load(Ordering::SeqCst));
        head == tail
    }

    /// Whether the queue was full at one instant.
    pub fn is_full(&self) -> bool {
        let tail = close::position_of(self.tail.load(Ordering::SeqCst));
        let head = self.head.load(Ordering::SeqCst);
        self.sampled_len(head, tail) == Some(self.capacity())
    }

    /// The slot that serves `position`.
    ///
    /// `position` must be one the queue produced: the head, the tail, or a position reached
    /// from them with [`Positions::next`]/[`Positions::advance`]. Every call site passes such a
    /// position; the bounds argument is in the SAFETY comment below.
    #[inline(always)]
    fn slot(&self, position: u64) -> &Slot<T> {
        let index = self.positions.slot_of(position);
        debug_assert!(index < self.slots.len());
        // SAFETY: `index < self.slots.len()` (= `capacity`), by these two facts:
        // 1. Every position the queue holds has a low part (`position & (one_lap - 1)`) below
        //    `capacity`. Head and tail start at 0 and are only ever stored with values from
        //    `Positions::next`/`advance` (the compare-exchanges and the store in `force_push`),
        //    and `advance(p, n)` with `n <= capacity` keeps the low part below `capacity`:
        //    either it is `low + n < capacity`, or `low + n - capacity`, which is below `n`
        //    (as `low < capacity`) and so below `capacity`. Positions passed here are head,
        //    tail, or reached from them by `next`/`advance` (never `sequence` values or
        //    `oldest`, which are only compared).
        // 2. `slot_of` returns the low part itself.
        unsafe { self.slots.get_unchecked(index) }
    }

    /// Adds `value` at the tail, or gives it back in `Err` when the queue is full (or its
    /// oldest item is still being moved out by the consumer that claimed it; see "Algorithm
    /// and progress" on [`Queue`]).
    ///
    /// ```
    /// let queue = flowbalancer_ringbuf::Queue::new(1)?;
    /// queue.push("a").unwrap();
    /// assert_eq!(queue.push("b"), Err("b"));
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    pub fn push(&self, value: T) -> Result<(), T> {
        match self.claim_tail() {
            Some(tail) => {
                self.publish(tail, value);
                Ok(())
            }
            None => Err(value),
        }
    }

    /// Adds `value` at the tail; when the queue is full, removes the oldest item to make room
    /// and returns it.
    ///
    /// Every item that goes in comes out exactly once: by `pop`, by being returned here, or by
    /// being dropped with the queue. On a [closed](Queue::close) queue nothing goes in and
    /// `value` itself comes back; [`force_push_unless_closed`](Queue::force_push_unless_closed)
    /// tells the two apart.
    pub fn force_push(&self, value: T) -> Option<T> {
        match self.force_push_unless_closed(value) {
            Ok(evicted) => evicted,
            Err(value) => Some(value),
        }
    }

    /// [`force_push`](Queue::force_push) for a queue that may be [closed](Queue::close):
    /// `Ok(None)` when `value` went in, `Ok(Some(oldest))` when it went in and the oldest item
    /// was removed to make room, `Err(value)` when the queue is closed.
    ///
    /// ```
    /// let queue = flowbalancer_ringbuf::Queue::new(1)?;
    /// assert_eq!(queue.force_push_unless_closed("a"), Ok(None));
    /// assert_eq!(queue.force_push_unless_closed("b"), Ok(Some("a")));
    /// queue.close();
    /// assert_eq!(queue.force_push_unless_closed("c"), Err("c"));
    /// assert_eq!(queue.pop(), Some("b"));
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Err(value)` when the queue is closed.
    pub fn force_push_unless_closed(&self, value: T) -> Result<Option<T>, T> {
        let mut backoff = Backoff::new();
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if close::is_marked(tail) {
                return Err(value);
            }
            let sequence = self.slot(tail).sequence.load(Ordering::Acquire);
            let lag = sequence.wrapping_sub(tail) as i64;
            // What claiming the tail will mean: `None`, a plain push into a free slot;
            // `Some(oldest)`, the queue is full and the tail's slot holds the published item of
            // `oldest`, which the push evicts.
            let evict = if lag == 0 {
                None
            } else if lag < 0 {
                fence(Ordering::SeqCst);
                let head = self.head.load(Ordering::Relaxed);
                let oldest = tail.wrapping_sub(self.positions.one_lap());
                if head == oldest && sequence == oldest.wrapping_add(1) {
                    Some(oldest)
                } else {
                    // Not full (a consumer is half way through taking the slot's old item),
                    // or the oldest item not yet published: each is a few instructions from
                    // done, so spin, never yield (a yield in such a wait, as an earlier
                    // version of `push` had, made four threads on two cores run up to 14×
                    // slower than crossbeam's `ArrayQueue`, which spins here too).
                    backoff.spin();
                    tail = self.tail.load(Ordering::Relaxed);
                    continue;
                }
            } else {
                // Our tail is stale: another producer claimed it (see `claim_tail_run`).
                backoff.snooze();
                tail = self.tail.load(Ordering::Relaxed);
                continue;
            };
            // Claim the tail before anything else moves, eviction included: a concurrent
            // `close` then either comes after this push or stops it (the compare-exchange
            // fails on the marked tail), and a consumer never sees the queue empty while the
            // new item is on its way.
            match self.tail.compare_exchange_weak(
                tail,
                self.positions.next(tail),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(match evict {
                        None => {
                            self.publish(tail, value);
                            None
                        }
                        Some(oldest) => self.replace_oldest(tail, oldest, value),
                    });
                }
                Err(current) => {
                    tail = current;
                    backoff.spin();
                }
            }
        }
    }

    /// Puts `value` at the claimed position `tail`, whose slot still holds the item of
    /// `oldest`, one lap earlier (published, and at the head when the tail was claimed). Takes
    /// that item as a consumer would and returns it; when a consumer claims it first, waits
    /// for that consumer to free the slot and returns `None`.
    fn replace_oldest(&self, tail: u64, oldest: u64, value: T) -> Option<T> {
        let slot = self.slot(tail);
        // Strong: a spurious failure would send us to wait for a consumer that never came.
        // The head was `oldest` before we claimed the tail and only moves forward, so a
        // failure means a consumer claimed the oldest item.
        if self
            .head
            .compare_exchange(
                oldest,
                self.positions.next(oldest),
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            let evicted = slot.value.with_mut(|cell| {
                // SAFETY: the slot's sequence was `oldest + 1` (read with Acquire before the
                // claims): it holds the published item of `oldest`. We won the head for
                // `oldest`, so no consumer reads it, and we own the tail position `tail`, so
                // no producer writes it (its sequence is not `tail` until we store it below).
                // We read the old item out and write the new one in its place.
                unsafe {
                    let old = cell.read().assume_init();
                    cell.write(MaybeUninit::new(value));
                    old
                }
            });
            slot.sequence.store(tail.wrapping_add(1), Ordering::Release);
            return Some(evicted);
        }
        // The consumer stores `oldest + one_lap`, which is `tail`, once the item is out.
        let mut backoff = Backoff::new();
        while slot.sequence.load(Ordering::Acquire) != tail {
            backoff.spin();
        }
        self.publish(tail, value);
        None
    }

    /// Removes the item at the head, or returns `None` when there is none to take now: the
    /// queue is empty, or the item at the head is still being written by the producer that
    /// claimed its position (see "Algorithm and progress" on [`Queue`]).
    pub fn pop(&self) -> Option<T> {
        let head = self.claim_head()?;
        Some(self.take(head))
    }

    /// Claims the tail position for one push, or `None` when the queue is full.
    #[inline(always)]
    fn claim_tail(&self) -> Option<u64> {
        self.claim_tail_run(1).map(|(tail, _)| tail)
    }

    /// Claims the head position for one pop, or `None` when the queue is empty.
    #[inline(always)]
    fn claim_head(&self) -> Option<u64> {
        self.claim_head_run(1).map(|(head, _)| head)
    }

    /// Writes `value` into the claimed position `tail` and publishes it to consumers.
    #[inline(always)]
    fn publish(&self, tail: u64, value: T) {
        let slot = self.slot(tail);
        slot.value.with_mut(|cell| {
            // SAFETY: the caller claimed `tail`, whose slot was free for it (sequence == tail),
            // and no other thread touches the slot until the sequence store below.
            unsafe { cell.write(MaybeUninit::new(value)) }
        });
        slot.sequence.store(tail.wrapping_add(1), Ordering::Release);
    }

    /// Reads the item at the claimed position `head` and frees its slot for the next lap.
    #[inline(always)]
    fn take(&self, head: u64) -> T {
        let slot = self.slot(head);
        // `with_mut`: moving the item out is a write as far as loom's race detection goes.
        let value = slot.value.with_mut(|cell| {
            // SAFETY: the caller claimed `head`, whose item was published (sequence ==
            // head + 1, read with Acquire); we move it out exactly once and free the slot.
            unsafe { cell.read().assume_init() }
        });
        slot.sequence.store(
            head.wrapping_add(self.positions.one_lap()),
            Ordering::Release,
        );
        value
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        if !std::mem::needs_drop::<T>() {
            return;
        }
        let mut rest = Remaining {
            queue: self,
            next: self.head.load(Ordering::Relaxed),
            end: close::position_of(self.tail.load(Ordering::Relaxed)),
        };
        rest.drop_all();
    }
}

/// The items left in a queue being dropped. Dropping it drops those not dropped yet, so an item
/// whose `Drop` panics does not leak the ones after it (the same guarantee as `Vec`).
struct Remaining<'a, T> {
    queue: &'a Queue<T>,
    next: u64,
    end: u64,
}

impl<T> Remaining<'_, T> {
    fn drop_all(&mut self) {
        while self.next != self.end {
            let slot = self.queue.slot(self.next);
            // Advance first: if this item's drop panics, the guard's own drop resumes after it.
            self.next = self.queue.positions.next(self.next);
            slot.value.with_mut(|cell| {
                // SAFETY: the queue is being dropped (`&mut self` in `Queue::drop`), so no
                // operation is in flight and every claimed position was published; every
                // position from head to tail holds an item that was never read. `next` moved
                // past this one before the call, so it is dropped once even if its drop unwinds.
                unsafe { (*cell).assume_init_drop() }
            });
        }
    }
}

impl<T> Drop for Remaining<'_, T> {
    fn drop(&mut self) {
        // Only reached with items left when an item's drop panicked in `drop_all`.
        self.drop_all();
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_sampled_length_reads_a_force_push_half_way_as_full() {
        let queue: Queue<u32> = Queue::new(3).expect("capacity");
        let p = queue.positions;
        let full_tail = p.advance(0, 3);
        assert_eq!(queue.sampled_len(0, full_tail), Some(3));
        // A `force_push` has claimed the tail and not yet moved the head.
        assert_eq!(queue.sampled_len(0, p.next(full_tail)), Some(3));
        assert_eq!(queue.sampled_len(p.next(0), p.next(full_tail)), Some(3));
        // A head read after the tail, and ahead of it: no length.
        assert_eq!(queue.sampled_len(p.advance(0, 2), p.next(0)), None);
        assert_eq!(queue.sampled_len(p.next(0), p.next(0)), Some(0));
    }
}
