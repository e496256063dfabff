//! Many threads, exact counts: 4 producers × 4 consumers over 10^6 items (a few hundred under
//! Miri). Every wait loop has a deadline: past it the test fails and prints its counts instead
//! of hanging CI.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flowbalancer_ringbuf::{Queue, spsc};

const PRODUCERS: u64 = 4;
const CONSUMERS: usize = 4;
const PER_PRODUCER: u64 = if cfg!(miri) { 60 } else { 250_000 };
const TOTAL: u64 = PRODUCERS * PER_PRODUCER;
/// Far above a normal run (a second or two), low enough to fail a wedged run quickly.
const LIMIT: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 120 });

/// A deadline shared by every thread of one test. When one thread sees it pass, all stop.
#[derive(Clone)]
struct Deadline {
    at: Instant,
    expired: Arc<AtomicBool>,
}

impl Deadline {
    fn new() -> Self {
        Self {
            at: Instant::now() + LIMIT,
            expired: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the deadline passed (here or on another thread).
    fn passed(&self) -> bool {
        if self.expired.load(Ordering::Relaxed) {
            return true;
        }
        if Instant::now() >= self.at {
            self.expired.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Fails the test with `counts` when the deadline passed.
    fn check(&self, counts: impl FnOnce() -> String) {
        assert!(!self.passed(), "no progress within {LIMIT:?}: {}", counts());
    }
}

fn run(capacity: usize, batched: bool) {
    let queue = Arc::new(Queue::new(capacity).unwrap());
    let taken = Arc::new(AtomicU64::new(0));
    let deadline = Deadline::new();
    let seen: Vec<Vec<u64>> = std::thread::scope(|s| {
        for p in 0..PRODUCERS {
            let queue = Arc::clone(&queue);
            let deadline = deadline.clone();
            s.spawn(move || {
                let mut batch = Vec::new();
                for i in 0..PER_PRODUCER {
                    let item = p * PER_PRODUCER + i;
                    if batched && p % 2 == 0 {
                        batch.push(item);
                        if batch.len() == 17 || i + 1 == PER_PRODUCER {
                            while !batch.is_empty() {
                                if queue.push_batch(&mut batch) == 0 {
                                    if deadline.passed() {
                                        return;
                                    }
                                    std::thread::yield_now();
                                }
                            }
                        }
                    } else {
                        let mut item = item;
                        while let Err(back) = queue.push(item) {
                            item = back;
                            if deadline.passed() {
                                return;
                            }
                            std::thread::yield_now();
                        }
                    }
                }
            });
        }
        let handles: Vec<_> = (0..CONSUMERS)
            .map(|c| {
                let queue = Arc::clone(&queue);
                let taken = Arc::clone(&taken);
                let deadline = deadline.clone();
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut out = Vec::new();
                    while taken.load(Ordering::SeqCst) < TOTAL {
                        let got = if batched && c % 2 == 0 {
                            out.clear();
                            let n = queue.pop_batch(&mut out, 13);
                            mine.extend_from_slice(&out);
                            n
                        } else {
                            match queue.pop() {
                                Some(v) => {
                                    mine.push(v);
                                    1
                                }
                                None => 0,
                            }
                        };
                        if got == 0 {
                            deadline.check(|| {
                                format!(
                                    "consumer {c}: {} of {TOTAL} taken, {} in the queue",
                                    taken.load(Ordering::SeqCst),
                                    queue.len()
                                )
                            });
                            std::thread::yield_now();
                        } else {
                            taken.fetch_add(got as u64, Ordering::SeqCst);
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a consumer failed (see its message)"))
            .collect()
    });
    let mut count = vec![0u8; TOTAL as usize];
    let mut sum = 0u64;
    for mine in &seen {
        // Each consumer sees each producer's items in the order they were pushed.
        let mut last = vec![None; PRODUCERS as usize];
        for &v in mine {
            count[v as usize] += 1;
            sum += v;
            let p = (v / PER_PRODUCER) as usize;
            assert!(last[p] < Some(v), "producer {p}'s items out of order");
            last[p] = Some(v);
        }
    }
    assert_eq!(sum, TOTAL * (TOTAL - 1) / 2);
    assert!(count.iter().all(|&c| c == 1), "every item exactly once");
    assert!(queue.is_empty());
}

#[test]
fn four_by_four_single_items() {
    run(if cfg!(miri) { 8 } else { 64 }, false);
}

#[test]
fn four_by_four_batches_non_power_of_two() {
    run(100, true);
}

#[test]
fn four_by_four_tiny_queue() {
    run(3, true);
}

#[test]
fn spsc_million_items_in_order() {
    let (mut tx, mut rx) = spsc::channel::<u64>(if cfg!(miri) { 10 } else { 1000 }).unwrap();
    let deadline = Deadline::new();
    let producer_deadline = deadline.clone();
    let producer = std::thread::spawn(move || {
        let deadline = producer_deadline;
        let mut next = 0u64;
        let mut buffer = [0u64; 37];
        while next < TOTAL {
            if next.is_multiple_of(2) {
                let mut item = next;
                while let Err(back) = tx.push(item) {
                    item = back;
                    if deadline.passed() {
                        return;
                    }
                    std::thread::yield_now();
                }
                next += 1;
            } else {
                let n = (TOTAL - next).min(37) as usize;
                for (k, slot) in buffer[..n].iter_mut().enumerate() {
                    *slot = next + k as u64;
                }
                let pushed = tx.push_slice(&buffer[..n]);
                next += pushed as u64;
                if pushed == 0 {
                    if deadline.passed() {
                        return;
                    }
                    std::thread::yield_now();
                }
            }
        }
    });
    let mut expected = 0u64;
    let mut out = Vec::new();
    while expected < TOTAL {
        out.clear();
        if rx.pop_into(&mut out, 50) == 0 {
            deadline.check(|| format!("{expected} of {TOTAL} items received"));
            std::thread::yield_now();
        }
        for &v in &out {
            assert_eq!(v, expected);
            expected += 1;
        }
    }
    producer.join().unwrap();
    assert_eq!(rx.pop(), None);
}

#[test]
fn force_push_under_contention_loses_nothing() {
    // Producers overwrite; every item is either popped or evicted, exactly once.
    let queue = Arc::new(Queue::new(8).unwrap());
    let per = if cfg!(miri) { 100 } else { 50_000u64 };
    let (popped, evicted): (Vec<u64>, Vec<u64>) = std::thread::scope(|s| {
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let queue = Arc::clone(&queue);
                s.spawn(move || {
                    let mut evicted = Vec::new();
                    for i in 0..per {
                        if let Some(old) = queue.force_push(p * per + i) {
                            evicted.push(old);
                        }
                    }
                    evicted
                })
            })
            .collect();
        let consumer = {
            let queue = Arc::clone(&queue);
            s.spawn(move || {
                let mut popped = Vec::new();
                for _ in 0..per {
                    if let Some(v) = queue.pop() {
                        popped.push(v);
                    }
                }
                popped
            })
        };
        let evicted = producers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (consumer.join().unwrap(), evicted)
    });
    let mut all: Vec<u64> = popped.into_iter().chain(evicted).collect();
    while let Some(v) = queue.pop() {
        all.push(v);
    }
    all.sort_unstable();
    assert_eq!(all, (0..2 * per).collect::<Vec<_>>());
}
