//! Counters of queues and topics, readable while messages flow.

use crate::channel::Overflow;

/// Messages dropped by a queue, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DropCounts {
    /// New messages dropped because the queue was full ([`Overflow::DropNewest`]).
    pub newest: u64,
    /// Queued messages dropped to make room ([`Overflow::DropOldest`]).
    pub oldest: u64,
    /// Messages refused with an error ([`Overflow::Reject`]).
    pub rejected: u64,
}

impl DropCounts {
    /// All drops together.
    pub fn total(&self) -> u64 {
        self.newest + self.oldest + self.rejected
    }
}

/// One queue's counters at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue's name (empty for a standalone [`channel`](crate::channel)).
    pub name: String,
    /// The message type.
    pub message_type: &'static str,
    /// The most messages the queue holds.
    pub capacity: usize,
    /// What a send does when full.
    pub overflow: Overflow,
    /// Messages that went in (including those that evicted an older one).
    pub sent: u64,
    /// Messages taken out by receivers.
    pub received: u64,
    /// Messages dropped, by reason.
    pub dropped: DropCounts,
    /// Messages queued right now.
    pub depth: usize,
    /// The most messages ever queued at once.
    pub high_water: usize,
    /// Live senders.
    pub senders: usize,
    /// Live receivers.
    pub receivers: usize,
    /// Senders parked on a full queue.
    pub waiting_senders: usize,
    /// Receivers parked on an empty queue.
    pub waiting_receivers: usize,
    /// Closed, or one side gone for good.
    pub closed: bool,
}

/// One topic's counters at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic's name.
    pub name: String,
    /// The message type.
    pub message_type: &'static str,
    /// Messages kept for slow subscribers.
    pub capacity: usize,
    /// Messages published.
    pub published: u64,
    /// Messages published while nobody subscribed (nobody will ever see them).
    pub unseen: u64,
    /// Messages subscribers missed because they lagged, summed over subscribers.
    pub lagged: u64,
    /// Live subscribers.
    pub subscribers: usize,
}

/// Every queue and topic of a bus.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BusStats {
    /// The queues, by name.
    pub queues: Vec<QueueStats>,
    /// The topics, by name.
    pub topics: Vec<TopicStats>,
}
