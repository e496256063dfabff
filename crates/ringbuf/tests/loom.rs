//! Loom models of the queues: every interleaving (up to `LOOM_MAX_PREEMPTIONS`) of small
//! scenarios. Run with `cargo xtask loom` (`RUSTFLAGS="--cfg loom"`, release mode).
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering};

use flowbalancer_ringbuf::{Queue, spsc};
use loom::sync::Arc;
use loom::thread;

/// Pops until `n` items have been seen, yielding while the queue is empty.
fn pop_n(queue: &Queue<u32>, n: usize) -> Vec<u32> {
    let mut seen = Vec::new();
    while seen.len() < n {
        match queue.pop() {
            Some(v) => seen.push(v),
            None => thread::yield_now(),
        }
    }
    seen
}

#[test]
fn two_producers_one_consumer_each_item_once() {
    loom::model(|| {
        let queue = Arc::new(Queue::new(2).unwrap());
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let queue = Arc::clone(&queue);
                thread::spawn(move || {
                    let mut item = p + 1;
                    while let Err(back) = queue.push(item) {
                        item = back;
                        thread::yield_now();
                    }
                })
            })
            .collect();
        let mut seen = pop_n(&queue, 2);
        for p in producers {
            p.join().unwrap();
        }
        seen.sort_unstable();
        assert_eq!(seen, [1, 2]);
        assert_eq!(queue.pop(), None);
    });
}

#[test]
fn force_push_racing_pop_loses_and_duplicates_nothing() {
    loom::model(|| {
        let queue = Arc::new(Queue::new(1).unwrap());
        queue.push(10).unwrap();
        let pusher = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || queue.force_push(11))
        };
        let popped = queue.pop();
        let evicted = pusher.join().unwrap();
        let mut all: Vec<u32> = popped.into_iter().chain(evicted).collect();
        while let Some(v) = queue.pop() {
            all.push(v);
        }
        all.sort_unstable();
        assert_eq!(
            all,
            [10, 11],
            "each item popped, evicted or left exactly once"
        );
        // An evicted item is always the oldest.
        assert_ne!(evicted, Some(11));
    });
}

#[test]
fn two_force_pushers_on_a_full_queue() {
    loom::model(|| {
        let queue = Arc::new(Queue::new(1).unwrap());
        queue.push(10).unwrap();
        let other = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || queue.force_push(11))
        };
        let mine = queue.force_push(12);
        let theirs = other.join().unwrap();
        let mut all: Vec<u32> = mine.into_iter().chain(theirs).collect();
        all.extend(queue.pop());
        all.sort_unstable();
        assert_eq!(all, [10, 11, 12]);
    });
}

#[test]
fn push_batch_racing_pop_batch() {
    loom::model(|| {
        let queue = Arc::new(Queue::new(2).unwrap());
        let producer = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || {
                let mut items = vec![1, 2, 3];
                while !items.is_empty() {
                    if queue.push_batch(&mut items) == 0 {
                        thread::yield_now();
                    }
                }
            })
        };
        let mut out = Vec::new();
        while out.len() < 3 {
            if queue.pop_batch(&mut out, 2) == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(out, [1, 2, 3], "one producer's batch arrives in order");
    });
}

struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn dropping_a_non_empty_queue_drops_each_item_once() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let queue = Arc::new(Queue::new(2).unwrap());
        let pusher = {
            let (queue, drops) = (Arc::clone(&queue), Arc::clone(&drops));
            thread::spawn(move || {
                // Whatever happens to the item, it is dropped exactly once.
                let _ = queue.force_push(Counted(Arc::clone(&drops)));
            })
        };
        let _ = queue.push(Counted(Arc::clone(&drops)));
        drop(queue.pop());
        pusher.join().unwrap();
        drop(queue);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn spsc_single_items_in_order() {
    loom::model(|| {
        let (mut tx, mut rx) = spsc::channel(2).unwrap();
        let producer = thread::spawn(move || {
            for i in 0..3u32 {
                let mut item = i;
                while let Err(back) = tx.push(item) {
                    item = back;
                    thread::yield_now();
                }
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 3 {
            match rx.pop() {
                Some(v) => seen.push(v),
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(seen, [0, 1, 2]);
        assert!(rx.is_abandoned());
    });
}

#[test]
fn spsc_batches_in_order() {
    loom::model(|| {
        let (mut tx, mut rx) = spsc::channel(2).unwrap();
        let producer = thread::spawn(move || {
            let items = [1u32, 2, 3];
            let mut sent = 0;
            while sent < items.len() {
                let n = tx.push_slice(&items[sent..]);
                if n == 0 {
                    thread::yield_now();
                }
                sent += n;
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let before = seen.len();
            seen.extend(rx.pop_iter(2));
            if seen.len() == before {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(seen, [1, 2, 3]);
    });
}
