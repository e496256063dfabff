//! Closing a queue: a mark in the tail that stops every later push.
//!
//! A consumer that wants to know "no item is here and none will come" cannot learn it from a
//! flag of its own beside the queue: a producer may check the flag, the queue then close and a
//! consumer find it empty, and only then the producer push, leaving an item nobody will take.
//! The mark lives in the tail itself, the word every push must compare-exchange to claim a
//! position, so a push either claimed its position before the close (and the position counts
//! as held until its item is taken) or sees the mark and gives its item back. That makes
//! "closed and [`is_empty`](Queue::is_empty)" mean drained, with nothing in flight.
//!
//! The mark costs the hot path nothing: a marked tail fails the claim's compare-exchange like
//! any changed tail, and is only tested on the branches that already give up or retry.

use crate::loom::sync::atomic::Ordering;

use super::Queue;

/// The closed mark: the top bit of the tail. Positions stay below it (a lap counter reaching
/// bit 63 takes 2^63 operations, about three centuries at a billion a second).
const CLOSED: u64 = 1 << 63;

/// The position a tail word holds, without the mark.
#[inline(always)]
pub(super) fn position_of(tail: u64) -> u64 {
    tail & !CLOSED
}

/// Whether a tail word carries the closed mark.
#[inline(always)]
pub(super) fn is_marked(tail: u64) -> bool {
    tail & CLOSED != 0
}

impl<T> Queue<T> {
    /// Closes the queue: from now on every push ([`push`](Queue::push),
    /// [`push_batch`](Queue::push_batch), [`force_push`](Queue::force_push)) gives its items
    /// back, while pops go on taking what is inside. Returns `true` for the call that closed
    /// it, `false` when it was closed already.
    ///
    /// A push that claimed its position before the close still completes, and that position
    /// counts as held until its item is popped, so once a closed queue
    /// [`is_empty`](Queue::is_empty) it is drained for good: every item pushed was taken, and
    /// no push is half done. This is what an async channel needs to end its receivers without
    /// leaving a message behind.
    ///
    /// ```
    /// let queue = flowbalancer_ringbuf::Queue::new(4)?;
    /// queue.push(1).unwrap();
    /// assert!(queue.close());
    /// assert!(!queue.close(), "only the first call closes");
    /// assert_eq!(queue.push(2), Err(2));
    /// assert!(queue.is_closed() && !queue.is_empty());
    /// assert_eq!(queue.pop(), Some(1));
    /// assert!(queue.is_empty(), "closed and empty: drained, nothing more can come");
    /// # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
    /// ```
    pub fn close(&self) -> bool {
        !is_marked(self.tail.fetch_or(CLOSED, Ordering::SeqCst))
    }

    /// Whether the queue was [closed](Queue::close).
    pub fn is_closed(&self) -> bool {
        is_marked(self.tail.load(Ordering::SeqCst))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_closed_queue_refuses_every_push_and_keeps_its_items() {
        let queue = Queue::new(3).expect("capacity");
        queue.push(1).expect("room");
        queue.push(2).expect("room");
        assert!(queue.close());
        assert!(queue.is_closed());
        assert_eq!(queue.push(3), Err(3));
        let mut batch = vec![4, 5];
        assert_eq!(queue.push_batch(&mut batch), 0);
        assert_eq!(batch, [4, 5]);
        assert_eq!(queue.force_push(6), Some(6), "the item itself comes back");
        assert_eq!(queue.force_push_unless_closed(7), Err(7));
        assert_eq!((queue.len(), queue.len_hint(), queue.pushed()), (2, 2, 2));
        assert!(!queue.is_full() && !queue.is_empty());
        let mut out = Vec::new();
        assert_eq!(queue.pop_batch(&mut out, 10), 2);
        assert_eq!(out, [1, 2]);
        assert!(queue.is_empty());
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn a_full_queue_closes_too_and_its_items_are_dropped_once() {
        use std::sync::Arc;
        let marker = Arc::new(());
        let queue = Queue::new(2).expect("capacity");
        // Past one lap, so the tail's lap bits are set under the mark.
        for _ in 0..5 {
            let _ = queue.force_push(Arc::clone(&marker));
        }
        assert!(queue.is_full());
        assert!(queue.close());
        assert!(queue.is_full(), "still full: closing moves nothing");
        assert_eq!(queue.len(), 2);
        assert!(queue.push(Arc::clone(&marker)).is_err());
        drop(queue);
        assert_eq!(
            Arc::strong_count(&marker),
            1,
            "every item dropped exactly once"
        );
    }
}
