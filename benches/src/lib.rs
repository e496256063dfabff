//! Shared harness for the side-by-side benchmarks: run producers and consumers over any queue
//! with the same waiting strategy, so only the queue differs between implementations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A bounded queue with non-blocking push and pop, as the MPMC benches drive it.
pub trait TryQueue<T>: Send + Sync {
    /// Pushes, or hands the item back when full.
    fn try_push(&self, item: T) -> Result<(), T>;
    /// Pops, or `None` when empty.
    fn try_pop(&self) -> Option<T>;
}

impl<T: Send> TryQueue<T> for flowbalancer_ringbuf::Queue<T> {
    fn try_push(&self, item: T) -> Result<(), T> {
        self.push(item)
    }
    fn try_pop(&self) -> Option<T> {
        self.pop()
    }
}

/// The wait between failed attempts, the same for every implementation: exponential
/// spinning (1, 2, 4 … 64 pause instructions), then yielding. Retrying at once makes the
/// failing side steal the other side's cache lines on every attempt, and the figures then
/// swing by 10× between runs depending on whether the queue settled full or empty.
#[derive(Debug, Default)]
pub struct Wait(u32);

impl Wait {
    /// One failed attempt.
    #[inline]
    pub fn retry(&mut self) {
        if self.0 <= 6 {
            for _ in 0..1u32 << self.0 {
                std::hint::spin_loop();
            }
            self.0 += 1;
        } else {
            std::thread::yield_now();
        }
    }

    /// After a success.
    #[inline]
    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

/// Pins the calling thread to core `index` modulo the number of cores, so producer and
/// consumer threads of a bench land on different cores run after run (without it, the
/// scheduler sometimes stacks both on one core and the figures swing by 5×).
pub fn pin(index: usize) {
    if let Some(cores) = core_affinity::get_core_ids()
        && !cores.is_empty()
    {
        core_affinity::set_for_current(cores[index % cores.len()]);
    }
}

/// Moves `items` u64 values through `queue` from `producers` threads to `consumers` threads
/// and returns the elapsed time. Checks the sum so no implementation can cheat.
pub fn run_mpmc<Q: TryQueue<u64> + 'static>(
    queue: Arc<Q>,
    producers: usize,
    consumers: usize,
    items: u64,
) -> Duration {
    let per_producer = items / producers as u64;
    let total = per_producer * producers as u64;
    let consumed = AtomicU64::new(0);
    let start = Instant::now();
    let sum = std::thread::scope(|s| {
        for p in 0..producers {
            let queue = Arc::clone(&queue);
            s.spawn(move || {
                pin(p);
                let mut wait = Wait::default();
                for i in 0..per_producer {
                    let mut item = p as u64 * per_producer + i;
                    loop {
                        match queue.try_push(item) {
                            Ok(()) => break,
                            Err(back) => {
                                item = back;
                                wait.retry();
                            }
                        }
                    }
                    wait.reset();
                }
            });
        }
        let consumed = &consumed;
        let handles: Vec<_> = (0..consumers)
            .map(|c| {
                let queue = Arc::clone(&queue);
                s.spawn(move || {
                    pin(c + 1);
                    let mut wait = Wait::default();
                    let mut sum = 0u64;
                    let mut unflushed = 0;
                    loop {
                        match queue.try_pop() {
                            Some(v) => {
                                sum = sum.wrapping_add(v);
                                unflushed += 1;
                                wait.reset();
                            }
                            None => {
                                // Only when the queue looks empty: publish our count and stop
                                // once every item has been taken by someone.
                                let seen =
                                    consumed.fetch_add(unflushed, Ordering::AcqRel) + unflushed;
                                unflushed = 0;
                                if seen >= total {
                                    break;
                                }
                                wait.retry();
                            }
                        }
                    }
                    sum
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .fold(0u64, u64::wrapping_add)
    });
    let elapsed = start.elapsed();
    assert_eq!(sum, total * (total - 1) / 2, "items lost or duplicated");
    elapsed
}

/// Runs `run` for `iters` iterations and returns the summed time (criterion's `iter_custom`).
pub fn repeat(iters: u64, mut run: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| run()).sum()
}
