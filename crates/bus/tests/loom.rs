//! Loom models of the bus's wake-up protocol. A lost wake-up shows up as a deadlock, which
//! loom reports. Run with `cargo xtask loom`.
#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use flowbalancer_bus::{QueueConfig, channel};
use loom::future::block_on;
use loom::thread;

#[test]
fn parked_receiver_is_woken_by_a_send() {
    loom::model(|| {
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
    loom::model(|| {
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
    loom::model(|| {
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
    loom::model(|| {
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
