//! A batched async message bus on a lock-free ring.
//!
//! * **Named queues** ([`Bus::queue`]): bounded MPMC queues carrying plain `T`, with
//!   [`Sender`]s and [`Receiver`]s that clone (receivers share the work). Backpressure is a
//!   per-queue [`Overflow`] policy: `Block` (wait for space), `DropNewest`, `DropOldest`,
//!   `Reject`; every drop is counted by reason.
//! * **Batches**: [`Receiver::recv_batch`] waits for at least one message and then takes up to
//!   `max` at once; [`Sender::send_batch`] claims runs of slots in one step.
//! * **Close**: when every sender is gone, receivers drain and then see the end; when every
//!   receiver is gone, sends fail and hand the message back; `close()` does it explicitly.
//! * **Broadcast topics** ([`Bus::topic`]): every subscriber sees every message in order; a
//!   slow subscriber lags and is told how many it missed; the publisher never waits.
//! * **Stats** ([`Bus::stats`]): sent, received, dropped by reason, depth, high-water mark,
//!   live senders and receivers — readable while messages flow.
//!
//! Futures work on any executor (they use only `std::task::Waker`). The wake-up protocol —
//! a parked receiver is always woken by a send, a parked sender by a receive, and a cancelled
//! future never swallows a wake-up — is model-checked with loom (`cargo xtask loom`).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use flowbalancer_bus::{Bus, QueueConfig};
//!
//! let bus = Bus::new();
//! let (tx, rx) = bus.queue::<u64>("events", QueueConfig::new(65_536))?;
//! let producer = tokio::spawn(async move {
//!     for chunk in (0..1000u64).collect::<Vec<_>>().chunks(100) {
//!         tx.send_batch(chunk.to_vec()).await.unwrap();
//!     }
//! });
//! let mut total = 0;
//! loop {
//!     let batch = rx.recv_batch(256).await;
//!     if batch.is_empty() {
//!         break; // every sender gone and the queue drained
//!     }
//!     total += batch.len();
//! }
//! producer.await.unwrap();
//! assert_eq!(total, 1000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod channel;
mod envelope;
mod error;
mod loom;
mod stats;
mod waiters;

#[cfg(not(loom))]
mod bus;
#[cfg(not(loom))]
mod topic;

#[cfg(not(loom))]
pub use bus::Bus;
pub use channel::{BatchSent, Overflow, QueueConfig, Receiver, SendOutcome, Sender, channel};
pub use envelope::Envelope;
pub use error::{BusError, SendBatchError, SendError, TryRecvError};
pub use stats::{BusStats, DropCounts, QueueStats, TopicStats};
#[cfg(not(loom))]
pub use topic::{Subscriber, Topic, TopicRecvError};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
