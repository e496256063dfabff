//! Batch operations of the SPSC ring: one shared store per batch.

use std::fmt;
use std::mem::MaybeUninit;

use crate::loom::cell::{copy_from_cells, copy_into_cells};
use crate::loom::sync::atomic::Ordering;

use super::{Consumer, Producer};

impl<T: Copy> Producer<T> {
    /// Copies as many items from the front of `items` as fit and returns how many were pushed.
    ///
    /// ```
    /// let (mut producer, mut consumer) = flowbalancer_ringbuf::spsc::channel::<u8>(4)?;
    /// assert_eq!(producer.push_slice(b"hello"), 4);
    /// let mut out = [0u8; 8];
    /// assert_eq!(consumer.pop_slice(&mut out), 4);
    /// assert_eq!(&out[..4], b"hell");
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    pub fn push_slice(&mut self, items: &[T]) -> usize {
        let count = self.reserve(items.len());
        if count == 0 {
            // Nothing to publish: a store to the shared position here would only take its
            // cache line away from the consumer, on every retry of a full ring.
            return 0;
        }
        let slots = &self.shared.slots;
        let start = self.shared.index_of(self.tail);
        // The run wraps at most once (`count` is at most the capacity, at most `slots.len()`):
        // [start, slots.len()) then [0, rest).
        let first = count.min(slots.len() - start);
        let (head_part, tail_part) = items[..count].split_at(first);
        // SAFETY: `reserve` found `count` free slots from our position: the consumer is done
        // with them (head read with Acquire) and does not read them before we publish.
        unsafe {
            copy_into_cells(&slots[start..start + first], head_part);
            copy_into_cells(&slots[..tail_part.len()], tail_part);
        }
        self.advance(count);
        self.publish();
        count
    }
}

impl<T> Producer<T> {
    /// Pushes items taken from `items` until the ring is full or the iterator ends, and returns
    /// how many were pushed. Items the ring had no room for stay in the iterator.
    ///
    /// Items are published (made visible to the consumer) after each run of at most 256, so a
    /// consumer sees progress during a long iterator; if the iterator panics, what was written
    /// is published as it unwinds.
    ///
    /// ```
    /// let (mut producer, mut consumer) = flowbalancer_ringbuf::spsc::channel(2)?;
    /// let mut words = vec!["a".to_string(), "b".into(), "c".into()].into_iter();
    /// assert_eq!(producer.push_iter(&mut words), 2);
    /// assert_eq!(words.next().as_deref(), Some("c"));
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    pub fn push_iter<I: Iterator<Item = T>>(&mut self, items: &mut I) -> usize {
        let free = self.reserve(usize::MAX);
        if free == 0 {
            // As in `push_slice`: no store to the shared position on a full ring.
            return 0;
        }
        let mut pushed = 0;
        // The free slots in contiguous runs of at most `PUBLISH_EVERY`, each published once
        // it is written, so a consumer sees progress during a long iterator.
        while pushed < free {
            let run = (free - pushed)
                .min(self.shared.slots.len() - self.shared.index_of(self.tail))
                .min(PUBLISH_EVERY);
            let written = self.fill_run(run, items);
            pushed += written;
            if written < run {
                break;
            }
        }
        pushed
    }

    /// Writes up to `run` items from `items` into the slots from our position, which must be
    /// free and contiguous (`run` at most the free slots, and at most the slots from our
    /// position's to the end of the array), then moves our position on and publishes it: when
    /// the run is full, when the iterator ends, or when it panics. Returns how many were
    /// written.
    #[inline]
    fn fill_run<I: Iterator<Item = T>>(&mut self, run: usize, items: &mut I) -> usize {
        let start = self.shared.index_of(self.tail);
        let mut batch = PublishOnDrop {
            producer: self,
            written: 0,
        };
        for slot in &batch.producer.shared.slots[start..start + run] {
            let Some(item) = items.next() else { break };
            slot.with_mut(|cell| {
                // SAFETY: the slot is free: it lies in the run the caller found free (`tail -
                // head < capacity` with a head read with Acquire, so the consumer is done
                // with it), and the consumer does not read it until we publish a tail past it.
                unsafe { cell.write(MaybeUninit::new(item)) }
            });
            batch.written += 1;
        }
        batch.written
        // `batch` drops here: our position moves past what was written and is published.
    }

    /// The number of free slots, up to `wanted`, looking at the consumer's position only when
    /// the cached one does not show enough room.
    #[inline]
    fn reserve(&mut self, wanted: usize) -> usize {
        let mut free = self.free_cached();
        if free < wanted as u64 {
            free = self.refresh_free();
        }
        free.min(wanted as u64) as usize
    }

    #[inline(always)]
    fn publish(&self) {
        self.shared.tail.store(self.tail, Ordering::Release);
    }
}

/// How many items `push_iter` writes at most before it publishes them.
const PUBLISH_EVERY: usize = 256;

/// Moves the producer's position past the `written` items of a run and publishes it when
/// dropped, unwinding included: no item written is left unpublished (or leaked) when an
/// iterator panics; see [`Producer::push_iter`].
struct PublishOnDrop<'a, T> {
    producer: &'a mut Producer<T>,
    written: usize,
}

impl<T> Drop for PublishOnDrop<'_, T> {
    fn drop(&mut self) {
        // `written` is at most the run, which the caller of `fill_run` keeps within the free
        // slots: only written items are published.
        self.producer.advance(self.written);
        self.producer.publish();
    }
}

impl<T: Copy> Consumer<T> {
    /// Copies up to `out.len()` items into the front of `out` and returns how many were popped.
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize {
        let count = self.available(out.len());
        if count == 0 {
            // As in `push_slice`: no store to the shared position on an empty ring.
            return 0;
        }
        let slots = &self.shared.slots;
        let start = self.shared.index_of(self.head);
        // As in `push_slice`: [start, slots.len()) then [0, rest).
        let first = count.min(slots.len() - start);
        let (head_part, tail_part) = out[..count].split_at_mut(first);
        // SAFETY: `available` found `count` published items from our position (tail read with
        // Acquire); the producer does not write them again before we publish our head.
        unsafe {
            copy_from_cells(&slots[start..start + first], head_part);
            copy_from_cells(&slots[..tail_part.len()], tail_part);
        }
        self.advance(count);
        self.publish();
        count
    }
}

impl<T> Consumer<T> {
    /// Moves up to `max` items to the end of `out` and returns how many were popped.
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let count = self.available(max);
        if count == 0 {
            // As in `pop_slice`: no store to the shared position on an empty ring.
            return 0;
        }
        out.reserve(count);
        for _ in 0..count {
            let value = self.read();
            out.push(value);
        }
        self.publish();
        count
    }

    /// An iterator over up to `max` items, popped as it is advanced. The consumer's position
    /// is published once, when the iterator is dropped; items not taken stay in the ring.
    ///
    /// ```
    /// let (mut producer, mut consumer) = flowbalancer_ringbuf::spsc::channel(8)?;
    /// for i in 0..5 {
    ///     producer.push(i).unwrap();
    /// }
    /// let firsts: Vec<i32> = consumer.pop_iter(3).collect();
    /// assert_eq!(firsts, [0, 1, 2]);
    /// assert_eq!(consumer.pop(), Some(3));
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    pub fn pop_iter(&mut self, max: usize) -> PopIter<'_, T> {
        let remaining = self.available(max);
        // Until the iterator is dropped, our shared position may lag the items taken; if it
        // is forgotten, the next look at an empty ring publishes it (`refresh_available`).
        self.deferred = true;
        PopIter {
            consumer: self,
            remaining,
        }
    }

    #[inline]
    fn available(&mut self, wanted: usize) -> usize {
        let mut available = self.available_cached();
        if available < wanted as u64 {
            available = self.refresh_available();
        }
        available.min(wanted as u64) as usize
    }

    #[inline(always)]
    fn publish(&self) {
        self.shared.head.store(self.head, Ordering::Release);
    }
}

/// Pops items as it is iterated; see [`Consumer::pop_iter`].
pub struct PopIter<'a, T> {
    consumer: &'a mut Consumer<T>,
    remaining: usize,
}

impl<T> Iterator for PopIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.consumer.read())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<T> ExactSizeIterator for PopIter<'_, T> {}

impl<T> Drop for PopIter<'_, T> {
    fn drop(&mut self) {
        self.consumer.publish();
        self.consumer.deferred = false;
    }
}

impl<T> fmt::Debug for PopIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PopIter")
            .field("remaining", &self.remaining)
            .finish()
    }
}
