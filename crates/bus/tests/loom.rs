//! Loom models of the bus's wake-up protocol. A lost wake-up shows up as a deadlock, which
//! loom reports. Run with `cargo xtask loom`.
#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use flowbalancer_bus::{Overflow, QueueConfig, SendError, SendOutcome, TryRecvError, channel};
use loom::future::block_on;
use loom::thread;

/// Checks `f` under every interleaving with at most `preemptions` preemptions: the bound lives
/// in the model; `LOOM_MAX_PREEMPTIONS` can lower it (never raise it).
fn model<F>(preemptions: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    model_with_branches(preemptions, loom::model::Builder::new().max_branches, f);
}

/// As [`model`], allowing `max_branches` branches per execution: a consumer that reaches a
/// slot whose producer was preempted between claiming and publishing spins (yielding) until
/// it is published, and every yield is a branch.
fn model_with_branches<F>(preemptions: usize, max_branches: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    builder.max_branches = max_branches;
    let bound = builder
        .preemption_bound
        .map_or(preemptions, |env| env.min(preemptions));
    builder.preemption_bound = Some(bound);
    builder.check(f);
}

#[test]
fn parked_receiver_is_woken_by_a_send() {
    model(3, || {
        let (tx, rx) = channel::<u32>(QueueConfig::new(1)).unwrap();
        let sender = thread::spawn(move || {
            tx.try_send(7).unwrap();
            tx // keep the queue open: the receiver must be woken by the send itself
        });
        assert_eq!(block_on(rx.recv()), Some(7));
        drop(sender.join().unwrap());
    });
}

#[test]
fn parked_sender_is_woken_by_a_receive() {
    model(3, || {
        let (tx, rx) = channel::<u32>(QueueConfig::new(1)).unwrap();
        tx.try_send(1).unwrap();
        let sender = thread::spawn(move || {
            block_on(tx.send(2)).unwrap();
            tx
        });
        assert_eq!(block_on(rx.recv()), Some(1));
        assert_eq!(block_on(rx.recv()), Some(2));
        drop(sender.join().unwrap());
    });
}

#[test]
fn last_sender_leaving_wakes_the_receiver() {
    model(3, || {
        let (tx, rx) = channel::<u32>(QueueConfig::new(1)).unwrap();
        let sender = thread::spawn(move || {
            tx.try_send(1).unwrap();
            drop(tx);
        });
        assert_eq!(block_on(rx.recv()), Some(1));
        assert_eq!(block_on(rx.recv()), None);
        sender.join().unwrap();
    });
}

#[test]
fn cancelled_receiver_passes_its_wake_up_on() {
    model(3, || {
        let (tx, rx) = channel::<u32>(QueueConfig::new(1)).unwrap();
        let other = rx.clone();
        let waiter = thread::spawn(move || block_on(other.recv()));
        {
            // A receiver that parks (before or after `waiter`), may be the one the send
            // notifies, and is dropped without being polled again.
            let mut cancelled = pin!(rx.recv());
            let mut cx = Context::from_waker(Waker::noop());
            assert_eq!(cancelled.as_mut().poll(&mut cx), Poll::Pending);
            tx.try_send(5).unwrap();
        }
        assert_eq!(
            waiter.join().unwrap(),
            Some(5),
            "the wake-up reached the live receiver"
        );
        drop(tx);
    });
}

#[test]
fn close_wakes_a_parked_receiver() {
    model(3, || {
        let (tx, rx) = channel::<u32>(QueueConfig::new(1)).unwrap();
        let closer = thread::spawn(move || {
            tx.close();
            tx // still alive: only the close can end the receiver's wait
        });
        assert_eq!(block_on(rx.recv()), None);
        drop(closer.join().unwrap());
    });
}

#[test]
fn close_wakes_a_parked_sender() {
    model(3, || {
        let (tx, rx) = channel::<u32>(QueueConfig::new(1)).unwrap();
        tx.try_send(1).unwrap();
        let sender = thread::spawn(move || {
            let result = block_on(tx.send(2));
            (result, tx)
        });
        rx.close();
        let (result, tx) = sender.join().unwrap();
        // Either the send got in before the close, or it is refused with its message back.
        match result {
            Ok(_) => {}
            Err(SendError::Closed(2)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        drop((tx, rx));
    });
}

#[test]
fn one_batch_send_wakes_two_parked_receivers() {
    // Bound 1: both receivers parked before the batch (`notify(2)` must wake both), or one
    // retrying while the sender is preempted half way through publishing. At bound 2 both may
    // retry at once (the queue counts the claimed run, so they do not park), and loom then
    // also explores schedules that alternate between the two for ever and never run the
    // sender: a switch away from a thread that yields costs no preemption, so those executions
    // have no end (tokio-rs/loom#53; a diagnostic counted 400 pauses alternating between the two
    // receivers, the sender never scheduled). No real scheduler is that unfair. See
    // docs/reliability.md.
    model_with_branches(1, 20_000, || {
        let (tx, rx) = channel::<u32>(QueueConfig::new(2)).unwrap();
        let receivers: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || block_on(rx.recv()))
            })
            .collect();
        // One batch of two: `notify(2)` must wake both parked receivers, not one.
        assert_eq!(tx.try_send_batch(vec![1, 2]).unwrap().queued, 2);
        let mut got: Vec<Option<u32>> = receivers.into_iter().map(|r| r.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [Some(1), Some(2)], "notify(n) woke both receivers");
        drop((tx, rx));
    });
}

#[test]
fn two_parked_senders_both_get_in() {
    // Three threads that all park: one preemption already covers every order in which the
    // two senders register and the receiver frees a slot (two take minutes).
    model(1, || {
        let (tx, rx) = channel::<u32>(QueueConfig::new(1)).unwrap();
        tx.try_send(1).unwrap();
        let other = tx.clone();
        let first = thread::spawn(move || {
            block_on(other.send(2)).unwrap();
            other
        });
        let second = thread::spawn(move || {
            block_on(tx.send(3)).unwrap();
            tx
        });
        let mut got: Vec<u32> = (0..3).map(|_| block_on(rx.recv()).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3]);
        drop((first.join().unwrap(), second.join().unwrap()));
    });
}

#[test]
fn a_send_racing_close_is_received_or_refused() {
    // The send checks "closed" and then pushes; the close and a receiver's "closed and
    // drained" answer may both fall in between. A send told `Queued` must still reach the
    // receiver, which must not stop before it has it.
    model(3, || {
        let (tx, rx) = channel::<u32>(QueueConfig::new(2)).unwrap();
        let sender = thread::spawn(move || {
            let result = tx.try_send(7);
            (result, tx) // kept alive: only the close ends the queue
        });
        rx.close();
        let mut received = Vec::new();
        while let Some(message) = block_on(rx.recv()) {
            received.push(message);
        }
        let (result, tx) = sender.join().unwrap();
        match result {
            Ok(SendOutcome::Queued) => assert_eq!(received, [7], "queued, then received"),
            Err(SendError::Closed(7)) => assert!(received.is_empty(), "refused, not received"),
            other => panic!("unexpected {other:?}"),
        }
        drop(tx);
    });
}

#[test]
fn a_drop_oldest_send_racing_close_is_received_or_refused() {
    // The same race through `force_push` on a full queue, with a receiver polling
    // `try_recv`: an evicting send either lands before the close or comes back.
    model(3, || {
        let config = QueueConfig::new(1).overflow(Overflow::DropOldest);
        let (tx, rx) = channel::<u32>(config).unwrap();
        tx.try_send(1).unwrap();
        let sender = thread::spawn(move || {
            let result = tx.try_send(2);
            (result, tx)
        });
        rx.close();
        let mut received = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(message) => received.push(message),
                Err(TryRecvError::Closed) => break,
                Err(_) => thread::yield_now(),
            }
        }
        let (result, tx) = sender.join().unwrap();
        match result {
            Ok(SendOutcome::EvictedOldest) => assert_eq!(received, [2]),
            // The receiver took 1 before the send could evict it.
            Ok(SendOutcome::Queued) => assert_eq!(received, [1, 2]),
            Err(SendError::Closed(2)) => assert_eq!(received, [1]),
            other => panic!("unexpected {other:?}"),
        }
        drop(tx);
    });
}
