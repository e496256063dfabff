//! Items with `Drop`: every item is dropped exactly once, wherever it ends up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowbalancer_ringbuf::{Queue, spsc};

/// Counts its drops; panics if dropped twice.
struct Tracked {
    id: usize,
    dropped: Arc<Vec<AtomicUsize>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let before = self.dropped[self.id].fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "item {} dropped twice", self.id);
    }
}

fn counters(n: usize) -> Arc<Vec<AtomicUsize>> {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

fn all_dropped_once(dropped: &[AtomicUsize]) {
    for (id, count) in dropped.iter().enumerate() {
        assert_eq!(count.load(Ordering::SeqCst), 1, "item {id}");
    }
}

#[test]
fn mpmc_drops_every_item_once() {
    let n = 40;
    let dropped = counters(n);
    let item = |id| Tracked {
        id,
        dropped: Arc::clone(&dropped),
    };
    {
        let queue = Queue::new(7).unwrap();
        let mut next = 0;
        for _ in 0..5 {
            queue.push(item(next)).ok().unwrap();
            next += 1;
        }
        drop(queue.pop()); // item 0 dropped by us
        let mut batch: Vec<Tracked> = (next..next + 6).map(item).collect();
        next += 6;
        assert_eq!(queue.push_batch(&mut batch), 3);
        drop(batch); // 3 items that did not fit
        while next < 30 {
            drop(queue.force_push(item(next))); // evicted items dropped here
            next += 1;
        }
        let mut out = Vec::new();
        queue.pop_batch(&mut out, 2);
        drop(out);
        match queue.push(item(next)) {
            Ok(()) => {}
            Err(back) => drop(back),
        }
        next += 1;
        for id in next..n {
            drop(queue.force_push(item(id)));
        }
        // The rest is dropped with the queue.
    }
    all_dropped_once(&dropped);
}

#[test]
fn spsc_drops_every_item_once() {
    let n = 8;
    let dropped = counters(n);
    let item = |id| Tracked {
        id,
        dropped: Arc::clone(&dropped),
    };
    {
        let (mut tx, mut rx) = spsc::channel(5).unwrap();
        let mut iter = (0..n).map(item);
        assert_eq!(tx.push_iter(&mut iter), 5);
        {
            let mut popped = rx.pop_iter(3);
            drop(popped.next()); // one taken, two left in the iterator's range
        }
        assert_eq!(tx.push_iter(&mut iter), 1);
        drop(rx.pop());
        let unpushed: Vec<Tracked> = iter.collect();
        assert_eq!(unpushed.len(), 2);
        drop(unpushed);
        drop(tx);
        assert!(rx.is_abandoned());
        // The rest is dropped with the consumer.
    }
    all_dropped_once(&dropped);
}
