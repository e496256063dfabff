//! Broadcast topics: every subscriber sees every message, in order; a slow subscriber lags
//! (and is told how many it missed) instead of holding the publisher back.
//!
//! Built on `tokio::sync::broadcast`, which does exactly this and works on any executor; this
//! module adds the counters the bus reports.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::stats::TopicStats;

/// A subscriber could not receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicRecvError {
    /// The subscriber fell behind and missed this many messages; the next `recv` returns the
    /// oldest message still kept.
    #[error("subscriber lagged: {0} messages missed")]
    Lagged(u64),
    /// Every publisher is gone and the subscriber has seen everything.
    #[error("topic closed")]
    Closed,
    /// Nothing new right now (`try_recv` only).
    #[error("no new message")]
    Empty,
}

#[derive(Debug)]
pub(crate) struct TopicCounters {
    capacity: usize,
    published: AtomicU64,
    unseen: AtomicU64,
    lagged: AtomicU64,
}

/// The publishing side of a topic. Clone it for more publishers.
pub struct Topic<T> {
    sender: broadcast::Sender<T>,
    counters: Arc<TopicCounters>,
}

impl<T: Clone> Topic<T> {
    /// A topic keeping the last `capacity` messages for slow subscribers. `capacity` must be
    /// between 1 and `usize::MAX / 2`; the bus checks it.
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self {
            sender,
            counters: Arc::new(TopicCounters {
                capacity,
                published: AtomicU64::new(0),
                unseen: AtomicU64::new(0),
                lagged: AtomicU64::new(0),
            }),
        }
    }

    /// Publishes `message` to every current subscriber and returns how many there are. Never
    /// waits. With no subscriber the message is counted as unseen and dropped.
    pub fn publish(&self, message: T) -> usize {
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        match self.sender.send(message) {
            Ok(subscribers) => subscribers,
            Err(_) => {
                self.counters.unseen.fetch_add(1, Ordering::Relaxed);
                0
            }
        }
    }

    /// A new subscriber, which sees every message published from now on.
    pub fn subscribe(&self) -> Subscriber<T> {
        Subscriber {
            receiver: self.sender.subscribe(),
            counters: Arc::clone(&self.counters),
        }
    }

    /// Live subscribers.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    pub(crate) fn stats(&self, name: &str, message_type: &'static str) -> TopicStats {
        let c = &self.counters;
        TopicStats {
            name: name.to_string(),
            message_type,
            capacity: c.capacity,
            published: c.published.load(Ordering::Relaxed),
            unseen: c.unseen.load(Ordering::Relaxed),
            lagged: c.lagged.load(Ordering::Relaxed),
            subscribers: self.sender.receiver_count(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.counters.capacity
    }
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<T> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("capacity", &self.counters.capacity)
            .field("subscribers", &self.sender.receiver_count())
            .finish()
    }
}

/// Receives every message of a topic, in order.
pub struct Subscriber<T> {
    receiver: broadcast::Receiver<T>,
    counters: Arc<TopicCounters>,
}

impl<T: Clone> Subscriber<T> {
    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// [`TopicRecvError::Lagged`] when messages were missed (call again to go on from the
    /// oldest kept), [`TopicRecvError::Closed`] when every publisher is gone.
    pub async fn recv(&mut self) -> Result<T, TopicRecvError> {
        let result = self.receiver.recv().await;
        self.map(result.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => TopicRecvError::Lagged(n),
            broadcast::error::RecvError::Closed => TopicRecvError::Closed,
        }))
    }

    /// The next message if there is one.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), plus [`TopicRecvError::Empty`].
    pub fn try_recv(&mut self) -> Result<T, TopicRecvError> {
        let result = self.receiver.try_recv();
        self.map(result.map_err(|e| match e {
            broadcast::error::TryRecvError::Lagged(n) => TopicRecvError::Lagged(n),
            broadcast::error::TryRecvError::Closed => TopicRecvError::Closed,
            broadcast::error::TryRecvError::Empty => TopicRecvError::Empty,
        }))
    }

    fn map(&self, result: Result<T, TopicRecvError>) -> Result<T, TopicRecvError> {
        if let Err(TopicRecvError::Lagged(n)) = result {
            self.counters.lagged.fetch_add(n, Ordering::Relaxed);
        }
        result
    }
}

impl<T> fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("pending", &self.receiver.len())
            .finish()
    }
}
