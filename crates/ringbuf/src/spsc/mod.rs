//! A bounded single-producer single-consumer ring.
//!
//! [`channel`] splits a ring into a [`Producer`] and a [`Consumer`], each owned by one thread at
//! a time (both are `Send`, neither is `Clone`). Each side owns its own position and keeps a
//! cached copy of the other side's, so a push or pop touches shared memory only to publish its
//! own progress, and reads the other side's position only when the cached copy says the ring
//! looks full (or empty). Operations are wait-free: no loop, no compare-exchange.
//!
//! Batch operations live in their own module: slices for `T: Copy`
//! ([`Producer::push_slice`], [`Consumer::pop_slice`]) and iterators for owned items
//! ([`Producer::push_iter`], [`Consumer::pop_iter`]); a batch publishes its progress with a
//! single store.
//!
//! ```
//! let (mut producer, mut consumer) = flowbalancer_ringbuf::spsc::channel::<u32>(4)?;
//! let writer = std::thread::spawn(move || {
//!     for i in 0..100 {
//!         let mut item = i;
//!         while let Err(back) = producer.push(item) {
//!             item = back;
//!             std::thread::yield_now();
//!         }
//!     }
//! });
//! let mut received = Vec::new();
//! while received.len() < 100 {
//!     match consumer.pop() {
//!         Some(item) => received.push(item),
//!         None => std::thread::yield_now(),
//!     }
//! }
//! writer.join().unwrap();
//! assert_eq!(received, (0..100).collect::<Vec<_>>());
//! # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
//! ```

mod batch;
mod owner;

pub use batch::PopIter;

use std::fmt;
use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::error::CapacityError;
use crate::loom::cell::UnsafeCell;
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use owner::{Abandon, Owner};

/// The ring both sides share. Positions count every item ever pushed (`tail`) and popped
/// (`head`); a `u64` does not wrap in practice.
///
/// The slot of a position is the position masked by `mask`: the number of slots is the
/// capacity rounded up to a power of two, so no side keeps a slot index beside its position.
/// That is one register fewer on each side's hot path, which in a caller's loop is the
/// difference between keeping the position in a register and spilling it to the stack on every
/// item. At most `capacity` items are in the ring at once, so two positions in it are never
/// `slots.len()` apart and never share a slot.
struct Shared<T> {
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// `slots.len() - 1`, with `slots.len()` a power of two.
    mask: usize,
    /// How many items the ring holds at most (at most `slots.len()`).
    capacity: u64,
    /// Set by the first end to be dropped; the second frees the ring (see [`owner`]).
    abandoned: AtomicBool,
}

impl<T> Abandon for Shared<T> {
    fn abandoned(&self) -> &AtomicBool {
        &self.abandoned
    }
}

// SAFETY: the producer only writes slots between `tail` and `head + capacity`, the consumer
// only reads slots between `head` and `tail`; each position moves with Release/Acquire, so a
// slot is never accessed by both sides at once. Items cross threads, hence `T: Send`.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: see above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The index in `slots` of `position`.
    #[inline(always)]
    fn index_of(&self, position: u64) -> usize {
        // Truncating the position is fine: only its low bits, those under `mask`, are kept.
        position as usize & self.mask
    }

    /// The slot of `position`.
    ///
    /// Unchecked indexing, proven in bounds: a bounds check on the hot path brings a panic path,
    /// whose unwinding drops the end in place, so the compiler keeps the end's positions in
    /// memory instead of registers and stores every update (two extra stores per item,
    /// measured on the single-item path).
    #[inline(always)]
    fn slot_at(&self, position: u64) -> &UnsafeCell<MaybeUninit<T>> {
        let index = self.index_of(position);
        debug_assert!(index < self.slots.len());
        // SAFETY: `index` is `position & mask`, so `index <= mask`; `channel` sets `mask` to
        // `slots.len() - 1` with `slots.len() >= 1` (it refuses a capacity of 0 and rounds
        // up), and nothing changes either afterwards (`slots` is a boxed slice, `mask` a field
        // behind a shared reference). So `index <= slots.len() - 1 < slots.len()`.
        unsafe { self.slots.get_unchecked(index) }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if !std::mem::needs_drop::<T>() {
            return;
        }
        // Both ends published their final positions when they were dropped (`Producer::drop`,
        // `Consumer::drop`), before setting or finding the `abandoned` flag; the flag's
        // Release/Acquire exchange makes those stores visible here. So every position in
        // head..tail holds an item pushed and never taken, and no position outside it does,
        // whatever iterators were forgotten.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut rest = Remaining {
            ring: self,
            next: head,
            end: tail,
        };
        rest.drop_all();
    }
}

/// The items left in a ring being dropped. Dropping it drops those not dropped yet, so an item
/// whose `Drop` panics does not leak the ones after it (the same guarantee as `Vec`).
struct Remaining<'a, T> {
    ring: &'a Shared<T>,
    next: u64,
    end: u64,
}

impl<T> Remaining<'_, T> {
    fn drop_all(&mut self) {
        while self.next < self.end {
            let slot = self.ring.slot_at(self.next);
            // Advance first: if this item's drop panics, the guard's own drop resumes after it.
            self.next += 1;
            slot.with_mut(|cell| {
                // SAFETY: the ring is being dropped (no end is left), and `next` walked
                // head..tail, which holds exactly the items pushed and never taken (see
                // `Shared::drop`); `next` moved past this one before the call, so it is
                // dropped once even if its drop unwinds.
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

/// Creates a ring that holds up to `capacity` items and returns its two ends.
///
/// The ring allocates `capacity` rounded up to a power of two slots (so a capacity that is a
/// power of two costs nothing extra, and any other at most twice): each side then finds its
/// slot by masking its position, with no slot index to keep. [`Producer::capacity`] and
/// [`Consumer::capacity`] report `capacity` itself, and the ring never holds more.
///
/// # Errors
///
/// [`CapacityError::Zero`] for a capacity of 0, [`CapacityError::TooLarge`] when the slots do
/// not fit in memory.
pub fn channel<T>(capacity: usize) -> Result<(Producer<T>, Consumer<T>), CapacityError> {
    if capacity == 0 {
        return Err(CapacityError::Zero);
    }
    let too_large = CapacityError::TooLarge {
        requested: capacity,
    };
    let slot_count = capacity.checked_next_power_of_two().ok_or(too_large)?;
    let mut slots = Vec::new();
    slots.try_reserve_exact(slot_count).map_err(|_| too_large)?;
    slots.extend((0..slot_count).map(|_| UnsafeCell::new(MaybeUninit::uninit())));
    let (producer_end, consumer_end) = Owner::pair(Shared {
        head: CachePadded::new(AtomicU64::new(0)),
        tail: CachePadded::new(AtomicU64::new(0)),
        slots: slots.into_boxed_slice(),
        mask: slot_count - 1,
        capacity: capacity as u64,
        abandoned: AtomicBool::new(false),
    });
    let producer = Producer {
        shared: producer_end,
        tail: 0,
        cached_head: 0,
    };
    let consumer = Consumer {
        shared: consumer_end,
        head: 0,
        cached_tail: 0,
        deferred: false,
    };
    Ok((producer, consumer))
}

/// The writing end of an SPSC ring.
pub struct Producer<T> {
    shared: Owner<Shared<T>>,
    /// Our position (the shared `tail` lags it only inside a batch).
    tail: u64,
    /// The consumer's position when we last looked: never ahead of the real one.
    cached_head: u64,
}

/// The reading end of an SPSC ring.
pub struct Consumer<T> {
    shared: Owner<Shared<T>>,
    /// Our position (the shared `head` lags it only inside a batch or a `PopIter`).
    head: u64,
    /// The producer's position when we last looked: never ahead of the real one.
    cached_tail: u64,
    /// Set while a [`PopIter`] may hold back the publication of items it took: when one is
    /// forgotten, the shared `head` lags `head`, and the producer may see the ring full
    /// while we see it empty. The next refresh publishes it.
    deferred: bool,
}

impl<T> Producer<T> {
    /// Pushes `value`, or gives it back in `Err` when the ring is full.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.free_cached() == 0 && self.refresh_free() == 0 {
            return Err(value);
        }
        self.write(value);
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// How many items can be pushed right now (the consumer may free more meanwhile).
    pub fn slots(&mut self) -> usize {
        self.refresh_free() as usize
    }

    /// Whether the ring is full right now.
    pub fn is_full(&mut self) -> bool {
        self.refresh_free() == 0
    }

    /// The most items the ring holds (the capacity given to [`channel`]).
    pub fn capacity(&self) -> usize {
        // Came from a `usize` in `channel`.
        self.shared.capacity as usize
    }

    /// Whether the consumer has been dropped (pushed items would never be read).
    pub fn is_abandoned(&self) -> bool {
        self.shared.other_is_gone()
    }

    #[inline(always)]
    fn free_cached(&self) -> u64 {
        self.shared.capacity - (self.tail - self.cached_head)
    }

    #[inline]
    fn refresh_free(&mut self) -> u64 {
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.free_cached()
    }

    /// Moves our position `count` slots on, without publishing.
    #[inline(always)]
    fn advance(&mut self, count: usize) {
        self.tail += count as u64;
    }

    /// Writes one item at our position and moves it on, without publishing.
    /// The caller has checked that a slot is free.
    #[inline(always)]
    fn write(&mut self, value: T) {
        self.shared.slot_at(self.tail).with_mut(|cell| {
            // SAFETY: the slot at our position is free. Its last item (if any) had position
            // `tail - slots.len()`, and `tail - head < capacity <= slots.len()` with a head read
            // with Acquire, so that position is below the head: the consumer finished with it.
            // The consumer does not read the slot again until we publish a tail past it.
            unsafe { cell.write(MaybeUninit::new(value)) }
        });
        self.tail += 1;
    }
}

impl<T> Consumer<T> {
    /// Pops the oldest item, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.available_cached() == 0 && self.refresh_available() == 0 {
            return None;
        }
        let value = self.read();
        self.shared.head.store(self.head, Ordering::Release);
        Some(value)
    }

    /// How many items can be popped right now (the producer may add more meanwhile).
    pub fn slots(&mut self) -> usize {
        self.refresh_available() as usize
    }

    /// Whether the ring is empty right now.
    pub fn is_empty(&mut self) -> bool {
        self.refresh_available() == 0
    }

    /// The most items the ring holds (the capacity given to [`channel`]).
    pub fn capacity(&self) -> usize {
        // Came from a `usize` in `channel`.
        self.shared.capacity as usize
    }

    /// Whether the producer has been dropped (once the ring is empty, nothing more comes).
    pub fn is_abandoned(&self) -> bool {
        self.shared.other_is_gone()
    }

    #[inline(always)]
    fn available_cached(&self) -> u64 {
        self.cached_tail - self.head
    }

    #[inline]
    fn refresh_available(&mut self) -> u64 {
        if self.deferred {
            self.publish_deferred();
        }
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.available_cached()
    }

    /// Publishes what a forgotten [`PopIter`] took (see `deferred`).
    #[cold]
    fn publish_deferred(&mut self) {
        self.shared.head.store(self.head, Ordering::Release);
        self.deferred = false;
    }

    /// Moves our position `count` slots on, without publishing.
    #[inline(always)]
    fn advance(&mut self, count: usize) {
        self.head += count as u64;
    }

    /// Reads one item at our position and moves it on, without publishing.
    /// The caller has checked that an item is there.
    #[inline(always)]
    fn read(&mut self) -> T {
        // `with_mut`: moving the item out leaves the slot logically uninitialised, a write as
        // far as loom's race detection is concerned.
        let value = self.shared.slot_at(self.head).with_mut(|cell| {
            // SAFETY: `head < tail` with a tail read with Acquire: the producer wrote and
            // published this slot, and will not touch it again until we publish a head past it.
            // Our local `head` moves past the slot right below, and it is published (at the
            // latest when the consumer is dropped) before anything else can read the slot
            // again, so the item is moved out once.
            unsafe { cell.read().assume_init() }
        });
        self.head += 1;
        value
    }
}

impl<T> Drop for Producer<T> {
    // Inlined, so a caller that keeps this end in a local can keep its positions in
    // registers: an out-of-line `drop(&mut self)` takes the local's address, and the compiler
    // then stores every position update to memory, two extra stores per item.
    #[inline]
    fn drop(&mut self) {
        // Every call publishes what it wrote before it returns or unwinds (`push_iter` through
        // a guard), so this store changes nothing today; it keeps the ring's own drop, which
        // drops the items from head to the published tail, independent of that.
        self.shared.tail.store(self.tail, Ordering::Release);
    }
}

impl<T> Drop for Consumer<T> {
    // Inlined, so a caller that keeps this end in a local can keep its positions in
    // registers: an out-of-line `drop(&mut self)` takes the local's address, and the compiler
    // then stores every position update to memory, two extra stores per item.
    #[inline]
    fn drop(&mut self) {
        // Publish items taken but not yet published (a forgotten `PopIter`): they were moved
        // out, so the ring's drop must not drop them again.
        self.shared.head.store(self.head, Ordering::Release);
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("pushed", &self.tail)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("popped", &self.head)
            .finish_non_exhaustive()
    }
}
