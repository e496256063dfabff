//! An optional wrapper that gives a message an id, a correlation id and a timestamp.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A message with an id (unique in this process), an optional correlation id (the id of the
/// message it answers) and the time it was made. Queues carry plain `T`; use `Envelope<T>`
/// as the message type when you want these.
///
/// ```
/// use flowbalancer_bus::Envelope;
///
/// let request = Envelope::new("ping");
/// let reply = Envelope::reply_to(&request, "pong");
/// assert_eq!(reply.correlation_id, Some(request.id));
/// assert_ne!(reply.id, request.id);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<T> {
    /// Unique in this process, increasing.
    pub id: u64,
    /// The id of the message this one answers, if any.
    pub correlation_id: Option<u64>,
    /// When the envelope was made.
    pub timestamp: SystemTime,
    /// The message.
    pub payload: T,
}

impl<T> Envelope<T> {
    /// Wraps `payload` with a fresh id and the current time.
    pub fn new(payload: T) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            correlation_id: None,
            timestamp: SystemTime::now(),
            payload,
        }
    }

    /// Wraps `payload` as the answer to `request`.
    pub fn reply_to<U>(request: &Envelope<U>, payload: T) -> Self {
        Self {
            correlation_id: Some(request.id),
            ..Self::new(payload)
        }
    }

    /// Maps the payload, keeping id, correlation id and timestamp.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Envelope<U> {
        Envelope {
            id: self.id,
            correlation_id: self.correlation_id,
            timestamp: self.timestamp,
            payload: f(self.payload),
        }
    }
}
