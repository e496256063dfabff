//! Bounded lock-free queues for moving work between threads.
//!
//! * [`Queue`] — a multi-producer multi-consumer queue with batch operations
//!   ([`Queue::push_batch`], [`Queue::pop_batch`]), overwrite-the-oldest
//!   ([`Queue::force_push`]) and a close that no racing push slips past ([`Queue::close`]), for
//!   any capacity from 1 up.
//! * [`spsc`] — a single-producer single-consumer ring, wait-free, with slice and iterator
//!   batches.
//!
//! Both are bounded: memory is allocated once at creation, a full queue refuses (or, with
//! `force_push`, overwrites) instead of growing. Items still inside when a queue is dropped are
//! dropped exactly once.
//!
//! What they deliberately do not do: block. There is no waiting `send`/`recv` here; the
//! `flowbalancer-bus` crate builds async waiting, wake-ups and backpressure on top.
//!
//! Every atomic, cell and yield goes through a small `loom` shim, so the very code shipped is
//! model-checked: `RUSTFLAGS="--cfg loom" cargo test -p flowbalancer-ringbuf --release --test
//! loom` (or `cargo xtask loom`).
//!
//! ```
//! use std::sync::Arc;
//! use flowbalancer_ringbuf::Queue;
//!
//! let queue = Arc::new(Queue::new(1024)?);
//! let producers: Vec<_> = (0..2)
//!     .map(|p| {
//!         let queue = Arc::clone(&queue);
//!         std::thread::spawn(move || {
//!             for i in 0..100u64 {
//!                 let mut item = p * 1000 + i;
//!                 while let Err(back) = queue.push(item) {
//!                     item = back;
//!                     std::thread::yield_now();
//!                 }
//!             }
//!         })
//!     })
//!     .collect();
//! for producer in producers {
//!     producer.join().unwrap();
//! }
//! let mut all = Vec::new();
//! queue.pop_batch(&mut all, usize::MAX);
//! assert_eq!(all.len(), 200);
//! # Ok::<(), flowbalancer_ringbuf::CapacityError>(())
//! ```

mod backoff;
mod error;
mod loom;
mod mpmc;
pub mod spsc;

pub use error::CapacityError;
pub use mpmc::Queue;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
