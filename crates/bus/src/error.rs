//! Errors of the bus.

use std::fmt;

use flowbalancer_ringbuf::CapacityError;

use crate::channel::QueueConfig;

/// Creating or looking up a named queue or topic failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The name exists with another message type.
    #[error("{kind} {name:?} carries messages of type {existing}, not {requested}")]
    TypeMismatch {
        /// `"queue"` or `"topic"`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The type it was created with.
        existing: &'static str,
        /// The type asked for.
        requested: &'static str,
    },
    /// The queue exists with another configuration.
    #[error("queue {name:?} exists with {existing:?}, not {requested:?}")]
    ConfigMismatch {
        /// The name asked for.
        name: String,
        /// The config it was created with.
        existing: QueueConfig,
        /// The config asked for.
        requested: QueueConfig,
    },
    /// The topic exists with another capacity.
    #[error("topic {name:?} exists with capacity {existing}, not {requested}")]
    TopicCapacityMismatch {
        /// The name asked for.
        name: String,
        /// The capacity it was created with.
        existing: usize,
        /// The capacity asked for.
        requested: usize,
    },
    /// The name is taken by the other kind (a queue asked for as a topic, or the reverse).
    #[error("{name:?} is a {existing}, not a {requested}")]
    KindMismatch {
        /// The name asked for.
        name: String,
        /// What it is.
        existing: &'static str,
        /// What was asked for.
        requested: &'static str,
    },
    /// The capacity cannot be used.
    #[error("{name:?}: {source}")]
    Capacity {
        /// The name asked for.
        name: String,
        /// Why.
        source: CapacityError,
    },
}

/// A message could not be sent; the message comes back.
#[derive(PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The queue is full ([`Overflow::Reject`](crate::Overflow::Reject), or `try_send` under
    /// [`Overflow::Block`](crate::Overflow::Block)).
    #[error("queue is full")]
    Full(T),
    /// The queue is closed or has no receiver any more.
    #[error("queue is closed")]
    Closed(T),
}

impl<T> SendError<T> {
    /// The message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(message) | SendError::Closed(message) => message,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// Part of a batch could not be sent; what was not sent comes back, in order.
#[derive(PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendBatchError<T> {
    /// The queue had room for only `queued` messages.
    #[error("queue is full: {queued} queued, {} not sent", unsent.len())]
    Full {
        /// Messages of the batch that were queued.
        queued: usize,
        /// The rest of the batch.
        unsent: Vec<T>,
    },
    /// The queue closed (or lost its receivers) after `queued` messages.
    #[error("queue is closed: {queued} queued, {} not sent", unsent.len())]
    Closed {
        /// Messages of the batch that were queued.
        queued: usize,
        /// The rest of the batch.
        unsent: Vec<T>,
    },
}

impl<T> fmt::Debug for SendBatchError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, queued, unsent) = match self {
            SendBatchError::Full { queued, unsent } => ("Full", queued, unsent.len()),
            SendBatchError::Closed { queued, unsent } => ("Closed", queued, unsent.len()),
        };
        write!(
            f,
            "{kind} {{ queued: {queued}, unsent: {unsent} messages }}"
        )
    }
}

/// `try_recv` found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing queued right now.
    #[error("queue is empty")]
    Empty,
    /// Closed (or every sender gone) and drained: nothing will come.
    #[error("queue is closed and drained")]
    Closed,
}
