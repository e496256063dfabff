//! The sending side of a queue.

use std::fmt;

use super::{Overflow, Shared};
use crate::error::{SendBatchError, SendError};
use crate::loom::sync::Arc;
use crate::loom::sync::atomic::Ordering;
use crate::waiters::Waiter;

/// What became of a message that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendOutcome {
    /// The message is in the queue.
    Queued,
    /// The queue was full and the policy is [`Overflow::DropNewest`]: this message was dropped.
    DroppedNewest,
    /// The queue was full and the policy is [`Overflow::DropOldest`]: this message is in the
    /// queue and the oldest one was dropped to make room.
    EvictedOldest,
}

/// What a batch send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BatchSent {
    /// Messages of the batch now in the queue.
    pub queued: usize,
    /// Messages of the batch dropped because the queue was full ([`Overflow::DropNewest`]).
    pub dropped_newest: usize,
    /// Older messages dropped to make room for this batch ([`Overflow::DropOldest`]).
    pub evicted_oldest: usize,
}

/// Sends messages into a queue. Clone it for more producers; when the last sender is dropped,
/// receivers drain what is queued and then see the end.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    pub(super) fn first(shared: Arc<Shared<T>>) -> Self {
        shared.senders.add_unchecked();
        Self { shared }
    }

    /// A new sender on an existing queue, unless its senders are gone for good.
    pub(crate) fn attach(shared: Arc<Shared<T>>) -> Option<Self> {
        shared.senders.add().then_some(Self { shared })
    }

    /// Sends `message`. With [`Overflow::Block`] this waits while the queue is full; the other
    /// policies never wait (see [`try_send`](Self::try_send)).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] with the message when the queue was closed or every receiver is
    /// gone; [`SendError::Full`] with the message under [`Overflow::Reject`].
    ///
    /// Cancel safety: if the future is dropped while waiting, the message was not sent (it is
    /// dropped with the future) and the sender's place in the wait list is given up.
    pub async fn send(&self, message: T) -> Result<SendOutcome, SendError<T>> {
        if self.shared.config.overflow != Overflow::Block {
            super::cooperate().await;
            return self.try_send(message);
        }
        let shared = &*self.shared;
        let mut message = message;
        super::cooperate().await;
        let mut waiter = Waiter::new(&shared.senders_waiting);
        loop {
            if shared.sends_fail() {
                return Err(SendError::Closed(message));
            }
            match shared.queue.push(message) {
                Ok(()) => {
                    shared.after_send(1);
                    return Ok(SendOutcome::Queued);
                }
                Err(back) if shared.queue.is_closed() => return Err(SendError::Closed(back)),
                Err(back) => message = back,
            }
            waiter
                .until(|| !shared.queue.is_full() || shared.sends_fail())
                .await;
        }
    }

    /// Sends `message` without waiting, applying the overflow policy when the queue is full.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] when closed; [`SendError::Full`] when full under
    /// [`Overflow::Block`] or [`Overflow::Reject`]. Both carry the message back.
    pub fn try_send(&self, message: T) -> Result<SendOutcome, SendError<T>> {
        let shared = &*self.shared;
        if shared.sends_fail() {
            return Err(SendError::Closed(message));
        }
        match shared.config.overflow {
            Overflow::DropOldest => {
                let outcome = match shared.queue.force_push_unless_closed(message) {
                    Err(back) => return Err(SendError::Closed(back)),
                    Ok(None) => SendOutcome::Queued,
                    Ok(Some(evicted)) => {
                        shared
                            .counters
                            .dropped_oldest
                            .fetch_add(1, Ordering::Relaxed);
                        drop(evicted);
                        SendOutcome::EvictedOldest
                    }
                };
                shared.after_send(1);
                Ok(outcome)
            }
            policy => match shared.queue.push(message) {
                Ok(()) => {
                    shared.after_send(1);
                    Ok(SendOutcome::Queued)
                }
                Err(back) if shared.queue.is_closed() => Err(SendError::Closed(back)),
                Err(back) => match policy {
                    Overflow::DropNewest => {
                        shared
                            .counters
                            .dropped_newest
                            .fetch_add(1, Ordering::Relaxed);
                        drop(back);
                        Ok(SendOutcome::DroppedNewest)
                    }
                    Overflow::Reject => {
                        shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
                        Err(SendError::Full(back))
                    }
                    _ => Err(SendError::Full(back)),
                },
            },
        }
    }

    /// Sends a batch, in order, claiming runs of slots at once. With [`Overflow::Block`] this
    /// waits until every message is queued; the other policies never wait.
    ///
    /// # Errors
    ///
    /// [`SendBatchError::Closed`] (what was not sent comes back) when the queue closes;
    /// [`SendBatchError::Full`] under [`Overflow::Reject`] for the messages that did not fit.
    pub async fn send_batch(&self, messages: Vec<T>) -> Result<BatchSent, SendBatchError<T>> {
        if self.shared.config.overflow != Overflow::Block {
            super::cooperate().await;
            return self.try_send_batch(messages);
        }
        let shared = &*self.shared;
        let mut messages = messages;
        let mut sent = BatchSent::default();
        super::cooperate().await;
        let mut waiter = Waiter::new(&shared.senders_waiting);
        loop {
            if shared.sends_fail() {
                return Err(SendBatchError::Closed {
                    queued: sent.queued,
                    unsent: messages,
                });
            }
            let n = shared.queue.push_batch(&mut messages);
            sent.queued += n;
            shared.after_send(n);
            if messages.is_empty() {
                return Ok(sent);
            }
            if shared.queue.is_closed() {
                return Err(SendBatchError::Closed {
                    queued: sent.queued,
                    unsent: messages,
                });
            }
            waiter
                .until(|| !shared.queue.is_full() || shared.sends_fail())
                .await;
        }
    }

    /// Sends a batch without waiting, applying the overflow policy to what does not fit.
    ///
    /// # Errors
    ///
    /// [`SendBatchError::Closed`] when closed; [`SendBatchError::Full`] with the messages that
    /// did not fit under [`Overflow::Block`] and [`Overflow::Reject`].
    pub fn try_send_batch(&self, messages: Vec<T>) -> Result<BatchSent, SendBatchError<T>> {
        let shared = &*self.shared;
        if shared.sends_fail() {
            return Err(SendBatchError::Closed {
                queued: 0,
                unsent: messages,
            });
        }
        let mut messages = messages;
        let mut sent = BatchSent {
            queued: shared.queue.push_batch(&mut messages),
            ..BatchSent::default()
        };
        match shared.config.overflow {
            _ if messages.is_empty() => {}
            _ if shared.queue.is_closed() => {
                shared.after_send(sent.queued);
                return Err(SendBatchError::Closed {
                    queued: sent.queued,
                    unsent: messages,
                });
            }
            Overflow::DropNewest => {
                sent.dropped_newest = messages.len();
                shared
                    .counters
                    .dropped_newest
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
                messages.clear();
            }
            Overflow::DropOldest => {
                let mut rest = std::mem::take(&mut messages).into_iter();
                for message in rest.by_ref() {
                    match shared.queue.force_push_unless_closed(message) {
                        Ok(evicted) => {
                            sent.evicted_oldest += usize::from(evicted.is_some());
                            sent.queued += 1;
                        }
                        Err(back) => {
                            // Closed meanwhile: this message and the rest come back.
                            messages.push(back);
                            break;
                        }
                    }
                }
                messages.extend(rest);
                shared
                    .counters
                    .dropped_oldest
                    .fetch_add(sent.evicted_oldest as u64, Ordering::Relaxed);
                if !messages.is_empty() {
                    shared.after_send(sent.queued);
                    return Err(SendBatchError::Closed {
                        queued: sent.queued,
                        unsent: messages,
                    });
                }
            }
            Overflow::Reject | Overflow::Block => {
                if shared.config.overflow == Overflow::Reject {
                    shared
                        .counters
                        .rejected
                        .fetch_add(messages.len() as u64, Ordering::Relaxed);
                }
                shared.after_send(sent.queued);
                return Err(SendBatchError::Full {
                    queued: sent.queued,
                    unsent: messages,
                });
            }
        }
        shared.after_send(sent.queued);
        Ok(sent)
    }

    /// This queue's counters (its name is empty here; [`Bus::stats`](crate::Bus) names it).
    pub fn stats(&self) -> crate::QueueStats {
        self.shared.stats("", std::any::type_name::<T>())
    }

    /// Closes the queue for everyone: sends fail from now on, receivers drain what is left.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether sends now fail (closed, or every receiver is gone).
    pub fn is_closed(&self) -> bool {
        self.shared.sends_fail()
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

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.add_unchecked();
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.remove() {
            // The last sender: parked receivers must see the end.
            self.shared.receivers_waiting.notify_all();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("queue", &self.shared)
            .finish()
    }
}
