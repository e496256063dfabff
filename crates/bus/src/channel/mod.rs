//! A bounded async MPMC channel on the ring: the queues of the bus.

mod receiver;
mod sender;

pub use receiver::Receiver;
pub use sender::{BatchSent, SendOutcome, Sender};

use std::fmt;

use flowbalancer_ringbuf::{CapacityError, Queue};

use crate::loom::sync::Arc;
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::stats::{DropCounts, QueueStats};
use crate::waiters::WaitList;

/// What a send does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// `send().await` waits for space; `try_send` returns [`SendError::Full`] with the message.
    ///
    /// [`SendError::Full`]: crate::SendError::Full
    #[default]
    Block,
    /// The new message is dropped (and counted); the send reports
    /// [`SendOutcome::DroppedNewest`].
    DropNewest,
    /// The oldest queued message is dropped (and counted) to make room; the send reports
    /// [`SendOutcome::EvictedOldest`].
    DropOldest,
    /// The send fails with [`SendError::Full`] carrying the message (and is counted).
    ///
    /// [`SendError::Full`]: crate::SendError::Full
    Reject,
}

/// How a queue is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct QueueConfig {
    /// The most messages the queue holds (at least 1).
    pub capacity: usize,
    /// What a send does when the queue is full.
    pub overflow: Overflow,
}

impl Default for QueueConfig {
    /// 1024 messages, [`Overflow::Block`].
    fn default() -> Self {
        Self {
            capacity: 1024,
            overflow: Overflow::Block,
        }
    }
}

impl QueueConfig {
    /// A config with `capacity` and the [`Overflow::Block`] policy.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            overflow: Overflow::Block,
        }
    }

    /// The same config with another overflow policy.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }
}

/// Creates a standalone queue (outside any [`Bus`](crate::Bus)) and returns its first sender
/// and receiver.
///
/// # Errors
///
/// A capacity of 0 (or too large to allocate).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use flowbalancer_bus::{channel, QueueConfig};
///
/// let (tx, rx) = channel::<u32>(QueueConfig::new(16))?;
/// tx.send(1).await?;
/// tx.send_batch(vec![2, 3]).await?;
/// drop(tx); // the last sender: receivers drain, then see the end
/// assert_eq!(rx.recv_batch(10).await, vec![1, 2, 3]);
/// assert_eq!(rx.recv().await, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub fn channel<T>(config: QueueConfig) -> Result<(Sender<T>, Receiver<T>), CapacityError> {
    let shared = Arc::new(Shared::new(config)?);
    Ok((Sender::first(Arc::clone(&shared)), Receiver::first(shared)))
}

/// Bus operations per unit of tokio's cooperative budget.
///
/// tokio gives a task 128 units per poll. One unit per message made a task that sends or
/// receives in a loop yield every 128 messages, and on the multi-threaded runtime each yield
/// also wakes an idle worker to come and steal: a profile of one producer and one consumer
/// showed that wake-up traffic at a fifth of the producer's time. One unit per
/// `OPERATIONS_PER_UNIT` operations still bounds how long a busy task runs without yielding
/// (about 128 × this many messages), at a fraction of the wake-ups.
#[cfg(all(feature = "tokio-coop", not(loom)))]
const OPERATIONS_PER_UNIT: u8 = 4;

#[cfg(all(feature = "tokio-coop", not(loom)))]
thread_local! {
    /// Operations on this thread since the last unit was spent.
    static UNCHARGED: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Spends the executor's cooperative budget (tokio's, with the `tokio-coop` feature): one
/// unit every [`OPERATIONS_PER_UNIT`] operations, so after enough operations in a row the task
/// yields once and the tasks it woke get to run, even on the same worker thread.
#[inline]
pub(crate) async fn cooperate() {
    #[cfg(all(feature = "tokio-coop", not(loom)))]
    {
        let charge = UNCHARGED.with(|uncharged| {
            let count = uncharged.get() + 1;
            let charge = count >= OPERATIONS_PER_UNIT;
            uncharged.set(if charge { 0 } else { count });
            charge
        });
        if charge {
            tokio::task::coop::consume_budget().await;
        }
    }
}

/// A handle count that turns into "gone for good" when its last handle leaves.
#[derive(Debug)]
pub(crate) struct Handles(AtomicUsize);

const GONE: usize = usize::MAX;

impl Handles {
    fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// Adds a handle, unless the last one already left.
    fn add(&self) -> bool {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            if current == GONE || current == GONE - 1 {
                return false;
            }
            match self.0.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Adds a handle while another is known to be alive (a clone), or on a fresh count.
    fn add_unchecked(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    /// Removes a handle; `true` when it was the last (the count is now gone for good).
    fn remove(&self) -> bool {
        if self.0.fetch_sub(1, Ordering::AcqRel) != 1 {
            return false;
        }
        // Nobody may add between our decrement and this: then the new handle keeps it open.
        self.0
            .compare_exchange(0, GONE, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    fn is_gone(&self) -> bool {
        self.0.load(Ordering::SeqCst) == GONE
    }

    fn live(&self) -> usize {
        match self.0.load(Ordering::Relaxed) {
            GONE => 0,
            n => n,
        }
    }
}

/// Counters of the rare events. Sent and received messages are not counted here: they are
/// the queue's own positions (`Queue::pushed`, `Queue::popped`), so a send or a receive pays
/// for no counter of its own.
#[derive(Debug, Default)]
struct Counters {
    high_water: AtomicU64,
    dropped_newest: AtomicU64,
    dropped_oldest: AtomicU64,
    rejected: AtomicU64,
}

/// The state every sender and receiver of one queue shares.
pub(crate) struct Shared<T> {
    queue: Queue<T>,
    config: QueueConfig,
    /// Receivers parked on an empty queue.
    receivers_waiting: WaitList,
    /// Senders parked on a full queue (`Overflow::Block`).
    senders_waiting: WaitList,
    senders: Handles,
    receivers: Handles,
    closed: AtomicBool,
    counters: Counters,
}

impl<T> Shared<T> {
    pub(crate) fn new(config: QueueConfig) -> Result<Self, CapacityError> {
        Ok(Self {
            queue: Queue::new(config.capacity)?,
            config,
            receivers_waiting: WaitList::new(),
            senders_waiting: WaitList::new(),
            senders: Handles::new(),
            receivers: Handles::new(),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    /// No message will be added any more: closed, or every sender left.
    fn no_more_sends(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.senders.is_gone()
    }

    /// A send must fail: closed, or every receiver left.
    fn sends_fail(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.receivers.is_gone()
    }

    /// Closed, or one side is gone for good.
    pub(crate) fn is_closed(&self) -> bool {
        self.no_more_sends() || self.sends_fail()
    }

    /// Closes the queue: sends fail from now on, receivers drain what is left.
    ///
    /// The ring is closed first: its mark in the tail stops every push that has not claimed
    /// a position yet, so a send that passed its `sends_fail` check just before this still
    /// either gets in (and counts as queued until received) or gets its message back. The
    /// flag after it is what senders and receivers check cheaply; whoever sees it set sees
    /// the ring closed too.
    pub(crate) fn close(&self) {
        self.queue.close();
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.receivers_waiting.notify_all();
            self.senders_waiting.notify_all();
        }
    }

    /// Whether a receiver that found nothing to take has reached the end: no message can be
    /// added any more (`ended`, read before the attempt) and none is held, not even one a
    /// send claimed a place for and is still writing (the ring counts those; a `pop` does
    /// not return them until they are written).
    fn drained(&self, ended: bool) -> bool {
        ended && self.queue.is_empty()
    }

    /// Bookkeeping after `n` messages went in.
    fn after_send(&self, n: usize) {
        if n == 0 {
            return;
        }
        // The high-water mark is a statistic: no retry loop, and the consumers' position is
        // read only when the queue may have passed the mark (reading it after every send
        // would take the consumers' cache line from them each time).
        let high_water = self.counters.high_water.load(Ordering::Relaxed);
        if let Some(depth) = self
            .queue
            .len_above(usize::try_from(high_water).unwrap_or(usize::MAX))
        {
            self.counters
                .high_water
                .fetch_max(depth as u64, Ordering::Relaxed);
        }
        self.receivers_waiting.notify(n);
    }

    /// Bookkeeping after `n` messages came out.
    fn after_receive(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.senders_waiting.notify(n);
    }

    pub(crate) fn stats(&self, name: &str, type_name: &'static str) -> QueueStats {
        let c = &self.counters;
        QueueStats {
            name: name.to_string(),
            message_type: type_name,
            capacity: self.config.capacity,
            overflow: self.config.overflow,
            sent: self.queue.pushed(),
            received: self
                .queue
                .popped()
                .saturating_sub(c.dropped_oldest.load(Ordering::Relaxed)),
            dropped: DropCounts {
                newest: c.dropped_newest.load(Ordering::Relaxed),
                oldest: c.dropped_oldest.load(Ordering::Relaxed),
                rejected: c.rejected.load(Ordering::Relaxed),
            },
            depth: self.queue.len(),
            high_water: c.high_water.load(Ordering::Relaxed) as usize,
            senders: self.senders.live(),
            receivers: self.receivers.live(),
            waiting_senders: self.senders_waiting.len(),
            waiting_receivers: self.receivers_waiting.len(),
            closed: self.is_closed(),
        }
    }

    pub(crate) fn config(&self) -> QueueConfig {
        self.config
    }
}

impl<T> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("len", &self.queue.len())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}
