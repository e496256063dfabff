//! Batch operations: claim a run of slots with one compare-exchange, then move the run.

use crate::backoff::Backoff;
use crate::loom::sync::atomic::Ordering;

use super::{Queue, close};

impl<T> Queue<T> {
    /// Moves as many items as fit from the front of `items` into the queue, in order, and
    /// returns how many moved; the rest stay in `items`.
    ///
    /// The run of free slots is claimed with one atomic step, so the items land next to each
    /// other in the queue even with other producers around. The items are published one by
    /// one as they are moved in, and consumers that reach the run meanwhile take those
    /// already published and find nothing at the first one not yet published (see "Algorithm
    /// and progress" on [`Queue`]).
    ///
    /// ```
    /// let queue = flowbalancer_ringbuf::Queue::new(3)?;
    /// let mut items = vec![1, 2, 3, 4, 5];
    /// assert_eq!(queue.push_batch(&mut items), 3);
    /// assert_eq!(items, [4, 5]);
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    pub fn push_batch(&self, items: &mut Vec<T>) -> usize {
        let wanted = items.len().min(self.capacity()) as u64;
        if wanted == 0 {
            return 0;
        }
        let Some((tail, count)) = self.claim_tail_run(wanted) else {
            return 0;
        };
        let mut position = tail;
        for value in items.drain(..count as usize) {
            self.publish(position, value);
            position = self.positions.next(position);
        }
        count as usize
    }

    /// Moves up to `max` items from the head of the queue to the end of `out`, in order, and
    /// returns how many moved (0 when the queue is empty, or its head item is still being
    /// written). Takes a run of published items at the head, and never waits for more.
    ///
    /// ```
    /// let queue = flowbalancer_ringbuf::Queue::new(8)?;
    /// for i in 0..5 {
    ///     queue.push(i).unwrap();
    /// }
    /// let mut out = Vec::new();
    /// assert_eq!(queue.pop_batch(&mut out, 3), 3);
    /// assert_eq!(queue.pop_batch(&mut out, 10), 2);
    /// assert_eq!(out, [0, 1, 2, 3, 4]);
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    pub fn pop_batch(&self, out: &mut Vec<T>, max: usize) -> usize {
        let wanted = max.min(self.capacity());
        if wanted == 0 {
            return 0;
        }
        // Make room before claiming: once a run is claimed, its slots must be read and freed,
        // or the threads that reach them next spin forever. So the only step that can panic
        // (allocation) happens first, and the claim is capped to the room made.
        let head = self.head.load(Ordering::Relaxed);
        let tail = close::position_of(self.tail.load(Ordering::Relaxed));
        let estimate = (self.positions.distance(head, tail) as usize).clamp(1, wanted);
        out.reserve(estimate);
        let room = out.capacity() - out.len();
        let Some((head, count)) = self.claim_head_run(wanted.min(room) as u64) else {
            return 0;
        };
        let mut position = head;
        for _ in 0..count {
            // Cannot reallocate: `count <= room`.
            out.push(self.take(position));
            position = self.positions.next(position);
        }
        count as usize
    }

    /// Claims up to `wanted` consecutive free positions at the tail: `(first, count)`, or
    /// `None` when the queue is full or closed.
    #[inline(always)]
    pub(super) fn claim_tail_run(&self, wanted: u64) -> Option<(u64, u64)> {
        let mut backoff = Backoff::new();
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let sequence = self.slot(tail).sequence.load(Ordering::Acquire);
            let lag = sequence.wrapping_sub(tail) as i64;
            if lag == 0 {
                // Count the run of slots free for their positions. A slot that is free for
                // position p stays so until p's producer writes it, and the compare-exchange
                // below makes us that producer for the whole run.
                let mut count = 1;
                let mut position = self.positions.next(tail);
                while count < wanted
                    && self.slot(position).sequence.load(Ordering::Acquire) == position
                {
                    count += 1;
                    position = self.positions.next(position);
                }
                match self.tail.compare_exchange_weak(
                    tail,
                    position,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some((tail, count)),
                    Err(current) => {
                        tail = current;
                        backoff.spin();
                    }
                }
            } else if lag < 0 {
                // The slot still holds the item pushed one lap earlier (its sequence is
                // `tail - one_lap + 1`): the queue is full, or a consumer has claimed that
                // item and is still moving it out. Either way there is no slot to write now,
                // and the answer comes from the slot alone: reading the head here (to tell
                // the two apart and spin in the second case, as crossbeam's `ArrayQueue`
                // does) takes the consumers' cache line from them on every push that finds
                // the queue full. In A/B runs on the project's 2-core VM (the same harness,
                // interleaved), leaving it out here and in `claim_head_run` cut the median
                // time per run by 1.0× to 2.2× at one producer and one consumer and by 2.0×
                // to 3.2× at two and two (see docs/performance.md).
                return None;
            } else {
                // A closed queue's tail carries the mark (bit 63), so its lag lands in one of
                // the two branches that give up: `lag == 0` is impossible (sequences stay
                // below bit 63), and a negative lag returns above.
                if close::is_marked(tail) {
                    return None;
                }
                // Our tail is stale: another producer claimed it. Back off before reading the
                // contended tail again (measured: retrying at once halved 2p2c throughput).
                backoff.snooze();
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Claims up to `wanted` consecutive published positions at the head: `(first, count)`,
    /// or `None` when the queue is empty.
    #[inline(always)]
    pub(super) fn claim_head_run(&self, wanted: u64) -> Option<(u64, u64)> {
        let mut backoff = Backoff::new();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let sequence = self.slot(head).sequence.load(Ordering::Acquire);
            let lag = sequence.wrapping_sub(head.wrapping_add(1)) as i64;
            if lag == 0 {
                let mut count = 1;
                let mut position = self.positions.next(head);
                while count < wanted
                    && self.slot(position).sequence.load(Ordering::Acquire)
                        == position.wrapping_add(1)
                {
                    count += 1;
                    position = self.positions.next(position);
                }
                match self.head.compare_exchange_weak(
                    head,
                    position,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some((head, count)),
                    Err(current) => {
                        head = current;
                        backoff.spin();
                    }
                }
            } else if lag < 0 {
                // Nothing published at the head yet (the sequence is still `head`): the queue
                // is empty, or a producer has claimed this position and is still writing it.
                // The answer comes from the slot alone, without reading the tail (see
                // `claim_tail_run`).
                return None;
            } else {
                // Our head is stale: another consumer claimed it (see `claim_tail_run`).
                backoff.snooze();
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }
}
