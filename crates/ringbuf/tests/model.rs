//! Property tests: single-threaded operation sequences against a `VecDeque` model.

use std::collections::VecDeque;

use flowbalancer_ringbuf::{Queue, spsc};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    ForcePush(u32),
    Pop,
    PushBatch(Vec<u32>),
    PopBatch(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u32>().prop_map(Op::Push),
        any::<u32>().prop_map(Op::ForcePush),
        Just(Op::Pop),
        proptest::collection::vec(any::<u32>(), 0..12).prop_map(Op::PushBatch),
        (0usize..12).prop_map(Op::PopBatch),
    ]
}

/// Operations per generated case (fewer under Miri, which interprets each one).
const OPS: usize = if cfg!(miri) { 40 } else { 200 };

proptest! {
    // Miri runs a few cases (each op is interpreted); the native run explores 512.
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 512 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mpmc_matches_vecdeque(capacity in 1usize..20, ops in proptest::collection::vec(op(), 0..OPS)) {
        let queue = Queue::new(capacity).unwrap();
        let mut model = VecDeque::new();
        // Items ever pushed and taken out, as `pushed` and `popped` count them.
        let (mut pushed, mut popped) = (0u64, 0u64);
        for op in ops {
            match op {
                Op::Push(v) => {
                    let expected = if model.len() < capacity { model.push_back(v); pushed += 1; Ok(()) } else { Err(v) };
                    prop_assert_eq!(queue.push(v), expected);
                }
                Op::ForcePush(v) => {
                    let evicted = if model.len() == capacity { popped += 1; model.pop_front() } else { None };
                    model.push_back(v);
                    pushed += 1;
                    prop_assert_eq!(queue.force_push(v), evicted);
                }
                Op::Pop => {
                    let expected = model.pop_front();
                    popped += u64::from(expected.is_some());
                    prop_assert_eq!(queue.pop(), expected);
                }
                Op::PushBatch(mut items) => {
                    let fits = (capacity - model.len()).min(items.len());
                    model.extend(items[..fits].iter().copied());
                    pushed += fits as u64;
                    let rest = items[fits..].to_vec();
                    prop_assert_eq!(queue.push_batch(&mut items), fits);
                    prop_assert_eq!(items, rest);
                }
                Op::PopBatch(max) => {
                    let mut out = vec![7];
                    let n = queue.pop_batch(&mut out, max);
                    let expected: Vec<u32> = std::iter::once(7)
                        .chain(model.drain(..max.min(model.len())))
                        .collect();
                    popped += (expected.len() - 1) as u64;
                    prop_assert_eq!(n, expected.len() - 1);
                    prop_assert_eq!(out, expected);
                }
            }
            prop_assert_eq!((queue.pushed(), queue.popped()), (pushed, popped));
            let len = model.len();
            for floor in [0, len.saturating_sub(1), len, capacity] {
                prop_assert_eq!(queue.len_above(floor), (len > floor).then_some(len), "floor {}", floor);
            }
            prop_assert_eq!(queue.len(), model.len());
            prop_assert_eq!(queue.is_empty(), model.is_empty());
            prop_assert_eq!(queue.is_full(), model.len() == capacity);
        }
    }

    #[test]
    fn spsc_matches_vecdeque(capacity in 1usize..20, ops in proptest::collection::vec(op(), 0..OPS)) {
        let (mut tx, mut rx) = spsc::channel(capacity).unwrap();
        let mut model = VecDeque::new();
        for op in ops {
            match op {
                Op::Push(v) | Op::ForcePush(v) => {
                    let expected = if model.len() < capacity { model.push_back(v); Ok(()) } else { Err(v) };
                    prop_assert_eq!(tx.push(v), expected);
                }
                Op::Pop => prop_assert_eq!(rx.pop(), model.pop_front()),
                Op::PushBatch(items) => {
                    let fits = (capacity - model.len()).min(items.len());
                    model.extend(items[..fits].iter().copied());
                    if items.len() % 2 == 0 {
                        prop_assert_eq!(tx.push_slice(&items), fits);
                    } else {
                        let mut iter = items.clone().into_iter();
                        prop_assert_eq!(tx.push_iter(&mut iter), fits);
                        prop_assert_eq!(iter.collect::<Vec<_>>(), items[fits..].to_vec());
                    }
                }
                Op::PopBatch(max) => {
                    let expected: Vec<u32> = model.drain(..max.min(model.len())).collect();
                    let got: Vec<u32> = match max % 3 {
                        0 => rx.pop_iter(max).collect(),
                        1 => { let mut out = Vec::new(); rx.pop_into(&mut out, max); out }
                        _ => { let mut out = vec![0; max]; let n = rx.pop_slice(&mut out); out.truncate(n); out }
                    };
                    prop_assert_eq!(got, expected);
                }
            }
            prop_assert_eq!(tx.slots(), capacity - model.len());
            prop_assert_eq!(rx.slots(), model.len());
        }
    }
}

#[test]
fn zero_capacity_is_an_error() {
    assert_eq!(
        Queue::<u8>::new(0).unwrap_err(),
        flowbalancer_ringbuf::CapacityError::Zero
    );
    assert!(spsc::channel::<u8>(0).is_err());
    // Rounding up to a power of two overflows for the first, the second has no room.
    for too_large in [usize::MAX, usize::MAX / 2 + 2] {
        assert_eq!(
            spsc::channel::<u8>(too_large).unwrap_err(),
            flowbalancer_ringbuf::CapacityError::TooLarge {
                requested: too_large
            }
        );
    }
    assert!(Queue::<u8>::new(usize::MAX).is_err());
    assert!(
        Queue::<u8>::new(0)
            .unwrap_err()
            .to_string()
            .contains("at least 1"),
        "the error says what is wrong"
    );
}

#[test]
fn capacity_one_and_non_powers_of_two_wrap_many_laps() {
    let capacities: &[usize] = if cfg!(miri) {
        &[1, 3, 8]
    } else {
        &[1, 3, 5, 100, 1000]
    };
    for &capacity in capacities {
        let queue = Queue::new(capacity).unwrap();
        for lap in 0..if cfg!(miri) { 3 } else { 50u64 } {
            for i in 0..capacity as u64 {
                queue.push(lap * 10_000 + i).unwrap();
            }
            assert!(queue.is_full());
            assert_eq!(queue.push(0), Err(0));
            for i in 0..capacity as u64 {
                assert_eq!(queue.pop(), Some(lap * 10_000 + i));
            }
            assert!(queue.is_empty());
        }
    }
}

#[test]
fn zero_sized_items() {
    let queue = Queue::new(3).unwrap();
    for _ in 0..3 {
        queue.push(()).unwrap();
    }
    assert_eq!(queue.push(()), Err(()));
    assert_eq!(queue.force_push(()), Some(()));
    assert_eq!(queue.len(), 3);
    let mut out = Vec::new();
    assert_eq!(queue.pop_batch(&mut out, 10), 3);
    assert_eq!(queue.pop(), None);

    let (mut tx, mut rx) = spsc::channel(2).unwrap();
    tx.push(()).unwrap();
    tx.push(()).unwrap();
    assert_eq!(tx.push(()), Err(()));
    assert_eq!(rx.pop(), Some(()));
}

#[test]
fn queue_is_send_and_sync_for_send_items() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Queue<String>>();
    assert_send_sync::<Queue<std::cell::Cell<u8>>>(); // Cell is Send, not Sync
    assert_send::<spsc::Producer<String>>();
    assert_send::<spsc::Consumer<String>>();
}

/// `push_iter` fills the ring in several published runs (it publishes every 256 items) and
/// across the wrap, and the consumer then takes every item, in order.
#[test]
fn spsc_push_iter_long_runs_across_the_wrap() {
    // Neither is a power of two, so the ring has more slots than its capacity (512 and 1024);
    // both are close enough to it that the second run crosses the end of the slots.
    let capacity = if cfg!(miri) { 480 } else { 1000 };
    let (mut tx, mut rx) = spsc::channel::<usize>(capacity).unwrap();
    let pushed_first = capacity * 3 / 10;
    assert_eq!(tx.push_iter(&mut (0..pushed_first)), pushed_first);
    let popped_first = capacity * 3 / 20;
    for expected in 0..popped_first {
        assert_eq!(rx.pop(), Some(expected));
    }
    // Free: everything but the items still in the ring; the run crosses the end of the slots.
    let mut rest = pushed_first..pushed_first + capacity;
    let free = capacity - (pushed_first - popped_first);
    assert_eq!(tx.push_iter(&mut rest), free);
    assert_eq!(
        rest.next(),
        Some(pushed_first + free),
        "unpushed items stay in the iterator"
    );
    let mut expected = popped_first;
    while let Some(value) = rx.pop() {
        assert_eq!(value, expected);
        expected += 1;
    }
    assert_eq!(expected, pushed_first + free);
}

/// A capacity that is not a power of two (the ring then has more slots than that): the ring
/// holds exactly the capacity, item by item and in slices, through many wraps of its slots.
#[test]
fn spsc_holds_exactly_a_capacity_that_is_not_a_power_of_two() {
    let capacity = 5;
    let (mut tx, mut rx) = spsc::channel::<u64>(capacity).unwrap();
    assert_eq!((tx.capacity(), rx.capacity()), (capacity, capacity));
    let (mut next_in, mut next_out) = (0u64, 0u64);
    for round in 0..if cfg!(miri) { 20 } else { 200 } {
        // Fill: single items on even rounds, one slice on odd ones; never more than 5.
        if round % 2 == 0 {
            while tx.push(next_in).is_ok() {
                next_in += 1;
            }
        } else {
            let items: Vec<u64> = (next_in..next_in + 8).collect();
            next_in += tx.push_slice(&items) as u64;
        }
        assert_eq!(next_in - next_out, capacity as u64, "round {round}");
        assert_eq!(tx.push(u64::MAX), Err(u64::MAX));
        assert_eq!(rx.slots(), capacity);
        // Drain a different amount each round, so the positions drift across the slot array.
        let take = 1 + round % capacity;
        let mut out = vec![0; take];
        assert_eq!(rx.pop_slice(&mut out), take);
        for value in out {
            assert_eq!(value, next_out);
            next_out += 1;
        }
    }
    while let Some(value) = rx.pop() {
        assert_eq!(value, next_out);
        next_out += 1;
    }
    assert_eq!(next_out, next_in);
}
