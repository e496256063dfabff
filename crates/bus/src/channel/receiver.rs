//! The receiving side of a queue.

use std::fmt;

use super::Shared;
use crate::error::TryRecvError;
use crate::loom::sync::Arc;
use crate::waiters::Waiter;

/// Receives messages from a queue. Clones share the work: each message goes to one receiver.
/// When the last receiver is dropped, sends fail and hand their message back.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    pub(super) fn first(shared: Arc<Shared<T>>) -> Self {
        shared.receivers.add_unchecked();
        Self { shared }
    }

    /// A new receiver on an existing queue, unless its receivers are gone for good.
    pub(crate) fn attach(shared: Arc<Shared<T>>) -> Option<Self> {
        shared.receivers.add().then_some(Self { shared })
    }

    /// Waits for the next message; `None` once the queue is closed (or every sender is gone)
    /// and drained.
    ///
    /// Cancel safety: a `recv` dropped while waiting takes no message, and a wake-up it was
    /// given passes on to the next waiting receiver.
    pub async fn recv(&self) -> Option<T> {
        let shared = &*self.shared;
        super::cooperate().await;
        let mut waiter = Waiter::new(&shared.receivers_waiting);
        loop {
            // Read "ended" before popping: a message sent before the end is then seen.
            let ended = shared.no_more_sends();
            if let Some(message) = shared.queue.pop() {
                shared.after_receive(1);
                return Some(message);
            }
            if shared.drained(ended) {
                return None;
            }
            waiter
                .until(|| !shared.queue.is_empty() || shared.no_more_sends())
                .await;
        }
    }

    /// Waits for at least one message, then returns up to `max` (at least 1) without waiting
    /// for more. An empty vector means the queue is closed and drained.
    pub async fn recv_batch(&self, max: usize) -> Vec<T> {
        let mut out = Vec::new();
        self.recv_batch_into(&mut out, max).await;
        out
    }

    /// Like [`recv_batch`](Self::recv_batch), appending to `out`; returns how many were
    /// appended (0 only at the end).
    pub async fn recv_batch_into(&self, out: &mut Vec<T>, max: usize) -> usize {
        let shared = &*self.shared;
        super::cooperate().await;
        let max = max.max(1);
        let mut waiter = Waiter::new(&shared.receivers_waiting);
        loop {
            let ended = shared.no_more_sends();
            let n = shared.queue.pop_batch(out, max);
            if n > 0 {
                shared.after_receive(n);
                return n;
            }
            if shared.drained(ended) {
                return 0;
            }
            waiter
                .until(|| !shared.queue.is_empty() || shared.no_more_sends())
                .await;
        }
    }

    /// Takes the next message if there is one.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] while open (or while a message accepted just before the close
    /// is still being written), [`TryRecvError::Closed`] once closed and drained.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let shared = &*self.shared;
        let ended = shared.no_more_sends();
        match shared.queue.pop() {
            Some(message) => {
                shared.after_receive(1);
                Ok(message)
            }
            None if shared.drained(ended) => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Appends up to `max` messages to `out` without waiting; returns how many.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing was there, [`TryRecvError::Closed`] once closed
    /// and drained.
    pub fn try_recv_batch(&self, out: &mut Vec<T>, max: usize) -> Result<usize, TryRecvError> {
        let shared = &*self.shared;
        let ended = shared.no_more_sends();
        match shared.queue.pop_batch(out, max) {
            0 if shared.drained(ended) => Err(TryRecvError::Closed),
            0 => Err(TryRecvError::Empty),
            n => {
                shared.after_receive(n);
                Ok(n)
            }
        }
    }

    /// This queue's counters (its name is empty here; [`Bus::stats`](crate::Bus) names it).
    pub fn stats(&self) -> crate::QueueStats {
        self.shared.stats("", std::any::type_name::<T>())
    }

    /// Closes the queue for everyone: sends fail from now on; receivers still drain what is
    /// queued.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether no message will arrive any more (closed, or every sender is gone); queued
    /// messages may still be waiting to be received.
    pub fn is_closed(&self) -> bool {
        self.shared.no_more_sends()
    }

    /// Messages in the queue right now.
    pub fn len(&self) -> usize {
        self.shared.queue.len()
    }

    /// Whether the queue is empty right now.
    pub fn is_empty(&self) -> bool {
        self.shared.queue.is_empty()
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.shared.queue.capacity()
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.add_unchecked();
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.shared.receivers.remove() {
            // The last receiver: sends fail from now on, a send racing this drop included
            // (the ring's mark stops it unless it already claimed its place), and parked
            // senders must see it now.
            self.shared.queue.close();
            self.shared.senders_waiting.notify_all();
        }
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("queue", &self.shared)
            .finish()
    }
}
