//! Soundness under every safe use: forgotten iterators, panics in `Drop` and in iterators,
//! zero-sized types. Every item is dropped exactly once, or handed back; none is read twice.
//! These run under Miri too (`cargo xtask miri`), which also checks for UB and leaks.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowbalancer_ringbuf::{Queue, spsc};

/// Counts its drops per id; a second drop of one id is reported by `assert_once`.
#[derive(Debug)]
struct Tracked {
    id: usize,
    drops: Arc<Vec<AtomicUsize>>,
    /// Panics in `Drop` (after counting itself).
    explode: bool,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops[self.id].fetch_add(1, Ordering::SeqCst);
        if self.explode && !std::thread::panicking() {
            panic!("item {} panics in drop", self.id);
        }
    }
}

struct Items {
    drops: Arc<Vec<AtomicUsize>>,
}

impl Items {
    fn new(n: usize) -> Self {
        Self {
            drops: Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect()),
        }
    }

    fn item(&self, id: usize) -> Tracked {
        Tracked {
            id,
            drops: Arc::clone(&self.drops),
            explode: false,
        }
    }

    fn exploding(&self, id: usize) -> Tracked {
        Tracked {
            id,
            drops: Arc::clone(&self.drops),
            explode: true,
        }
    }

    fn count(&self, id: usize) -> usize {
        self.drops[id].load(Ordering::SeqCst)
    }

    fn assert_each_dropped_once(&self) {
        let counts: Vec<usize> = (0..self.drops.len()).map(|id| self.count(id)).collect();
        assert!(
            counts.iter().all(|&c| c == 1),
            "every item dropped exactly once, got {counts:?}"
        );
    }
}

#[test]
fn spsc_forgotten_pop_iter_then_both_ends_dropped() {
    // The reported unsoundness: the item taken through a forgotten iterator was dropped again
    // by the ring, which then read freed memory.
    let items = Items::new(3);
    let (mut tx, mut rx) = spsc::channel(4).unwrap();
    for id in 0..3 {
        tx.push(items.item(id)).unwrap();
    }
    let mut iter = rx.pop_iter(3);
    let taken = iter.next().unwrap();
    std::mem::forget(iter);
    assert_eq!(taken.id, 0);
    drop(taken);
    assert_eq!(items.count(0), 1);
    drop(tx);
    drop(rx);
    items.assert_each_dropped_once();
}

#[test]
fn spsc_forgotten_pop_iter_then_consumer_goes_on() {
    let items = Items::new(6);
    let (mut tx, mut rx) = spsc::channel(4).unwrap();
    for id in 0..4 {
        tx.push(items.item(id)).unwrap();
    }
    let mut iter = rx.pop_iter(4);
    let first = iter.next().unwrap();
    let second = iter.next().unwrap();
    std::mem::forget(iter);
    assert_eq!((first.id, second.id), (0, 1));
    // The consumer never sees the taken items again.
    assert_eq!(rx.pop().map(|t| t.id), Some(2));
    // The producer gets the slots back once the consumer publishes (on its next pop).
    tx.push(items.item(4)).unwrap();
    assert_eq!(rx.pop().map(|t| t.id), Some(3));
    tx.push(items.item(5)).unwrap();
    drop((first, second));
    drop(rx);
    drop(tx);
    items.assert_each_dropped_once();
}

#[test]
fn spsc_forgotten_pop_iter_that_emptied_a_full_ring_does_not_wedge_it() {
    // The iterator took every item and was forgotten: the producer still sees the ring full
    // and the consumer sees it empty. Looking at the empty ring must give the room back.
    let (mut tx, mut rx) = spsc::channel::<u32>(2).unwrap();
    tx.push(1).unwrap();
    tx.push(2).unwrap();
    let mut iter = rx.pop_iter(2);
    assert_eq!((iter.next(), iter.next()), (Some(1), Some(2)));
    std::mem::forget(iter);
    assert_eq!(tx.push(3), Err(3));
    assert_eq!(rx.pop(), None);
    tx.push(3).unwrap();
    assert_eq!(rx.pop(), Some(3));

    // The same through the batch calls.
    let (mut tx, mut rx) = spsc::channel::<u32>(2).unwrap();
    assert_eq!(tx.push_slice(&[1, 2]), 2);
    let mut iter = rx.pop_iter(2);
    assert_eq!((iter.next(), iter.next()), (Some(1), Some(2)));
    std::mem::forget(iter);
    assert_eq!(tx.push_slice(&[3, 4]), 0);
    let mut out = [0; 2];
    assert_eq!(rx.pop_slice(&mut out), 0);
    assert_eq!(tx.push_slice(&[3, 4]), 2);
    assert_eq!(rx.pop_slice(&mut out), 2);
    assert_eq!(out, [3, 4]);
}

#[test]
fn spsc_forgotten_pop_iter_with_the_producer_dropped_first() {
    let items = Items::new(2);
    let (mut tx, mut rx) = spsc::channel(2).unwrap();
    tx.push(items.item(0)).unwrap();
    tx.push(items.item(1)).unwrap();
    drop(tx);
    let mut iter = rx.pop_iter(2);
    drop(iter.next());
    std::mem::forget(iter);
    drop(rx);
    items.assert_each_dropped_once();
}

#[test]
fn spsc_push_iter_whose_iterator_panics_loses_nothing() {
    let items = Items::new(5);
    let (mut tx, mut rx) = spsc::channel(8).unwrap();
    let mut next = 0;
    let mut source = std::iter::from_fn(|| {
        if next == 3 {
            panic!("the iterator fails after three items");
        }
        next += 1;
        Some(items.item(next - 1))
    });
    let result = catch_unwind(AssertUnwindSafe(|| tx.push_iter(&mut source)));
    assert!(result.is_err());
    // The items written before the panic were published as it unwound...
    assert_eq!(rx.slots(), 3);
    // ...and reach the consumer, in order.
    tx.push(items.item(3)).unwrap();
    let ids: Vec<usize> = std::iter::from_fn(|| rx.pop()).map(|t| t.id).collect();
    assert_eq!(ids, [0, 1, 2, 3]);
    tx.push(items.item(4)).unwrap();
    drop(tx);
    drop(rx);
    items.assert_each_dropped_once();
}

#[test]
fn spsc_push_iter_panic_then_producer_dropped() {
    let items = Items::new(2);
    let (mut tx, rx) = spsc::channel(4).unwrap();
    let mut calls = 0;
    let mut source = std::iter::from_fn(|| {
        calls += 1;
        if calls == 3 {
            panic!("boom");
        }
        Some(items.item(calls - 1))
    });
    assert!(catch_unwind(AssertUnwindSafe(|| tx.push_iter(&mut source))).is_err());
    drop(tx);
    // The ring drops the two written items, though `push_iter` never got to publish them.
    drop(rx);
    items.assert_each_dropped_once();
}

#[test]
fn spsc_item_panicking_in_drop_does_not_leak_the_rest() {
    let items = Items::new(4);
    let (mut tx, rx) = spsc::channel(4).unwrap();
    tx.push(items.item(0)).unwrap();
    tx.push(items.exploding(1)).unwrap();
    tx.push(items.item(2)).unwrap();
    tx.push(items.item(3)).unwrap();
    drop(tx);
    let result = catch_unwind(AssertUnwindSafe(move || drop(rx)));
    assert!(result.is_err(), "the item's panic reaches the dropper");
    items.assert_each_dropped_once();
}

#[test]
fn mpmc_item_panicking_in_drop_does_not_leak_the_rest() {
    let items = Items::new(5);
    let queue = Queue::new(4).unwrap();
    queue.push(items.item(0)).unwrap();
    drop(queue.pop());
    for id in 1..5 {
        let item = if id == 2 {
            items.exploding(id)
        } else {
            items.item(id)
        };
        queue.push(item).unwrap();
    }
    let result = catch_unwind(AssertUnwindSafe(move || drop(queue)));
    assert!(result.is_err());
    items.assert_each_dropped_once();
}

#[test]
fn mpmc_pop_batch_into_a_vec_with_room_takes_no_more_than_fits() {
    // The claim is capped to the room reserved before it: a full queue and a small estimate
    // still hand over every item, in order, over several calls.
    let queue = Queue::new(5).unwrap();
    for i in 0..5u32 {
        queue.push(i).unwrap();
    }
    let mut out = Vec::with_capacity(2);
    let mut total = 0;
    while total < 5 {
        let n = queue.pop_batch(&mut out, usize::MAX);
        assert!(n > 0);
        total += n;
    }
    assert_eq!(out, [0, 1, 2, 3, 4]);
    assert_eq!(queue.pop_batch(&mut out, 3), 0);
}

static ZST_DROPS: AtomicUsize = AtomicUsize::new(0);

/// A zero-sized item that counts its drops (one global counter: used by one test only).
#[derive(Debug)]
struct Zst;

impl Drop for Zst {
    fn drop(&mut self) {
        ZST_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn zero_sized_items_in_both_queues() {
    assert_eq!(std::mem::size_of::<Zst>(), 0);
    let queue = Queue::new(3).unwrap();
    queue.push(Zst).unwrap();
    queue.push(Zst).unwrap();
    assert!(queue.push(Zst).is_ok());
    assert!(queue.push(Zst).is_err()); // returned and dropped: 1
    drop(queue.force_push(Zst)); // evicts one: 2
    let mut out = Vec::new();
    assert_eq!(queue.pop_batch(&mut out, 2), 2);
    drop(out); // 4
    let mut batch = vec![Zst, Zst, Zst];
    assert_eq!(queue.push_batch(&mut batch), 2);
    drop(batch); // 5
    drop(queue); // 3 left inside: 8
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), 8);

    let (mut tx, mut rx) = spsc::channel(2).unwrap();
    let mut source = std::iter::repeat_with(|| Zst).take(3);
    assert_eq!(tx.push_iter(&mut source), 2);
    drop(source.next()); // 9 (the one left over)
    let mut iter = rx.pop_iter(1);
    drop(iter.next()); // 10
    std::mem::forget(iter);
    drop(tx);
    drop(rx); // 1 left: 11
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), 11);

    let (mut tx, mut rx) = spsc::channel::<()>(4).unwrap();
    assert_eq!(tx.push_slice(&[(), (), ()]), 3);
    let mut out = [(); 8];
    assert_eq!(rx.pop_slice(&mut out), 3);
}
