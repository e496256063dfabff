//! The bus with real tasks on tokio: policies, close, cancellation, stats, topics.

use std::time::Duration;

use flowbalancer_bus::{
    Bus, BusError, Overflow, QueueConfig, SendBatchError, SendError, SendOutcome, TopicRecvError,
    TryRecvError, channel,
};
use tokio::time::timeout;

/// Generous: a wait this long means a lost wake-up. Miri's clock advances with the work it
/// interprets, so it gets far more.
const LONG: Duration = Duration::from_secs(if cfg!(miri) { 3600 } else { 10 });

#[tokio::test]
async fn block_waits_for_space_and_try_send_returns_full() {
    let (tx, rx) = channel::<u32>(QueueConfig::new(2)).unwrap();
    tx.send(1).await.unwrap();
    tx.send(2).await.unwrap();
    assert_eq!(tx.try_send(3), Err(SendError::Full(3)));
    let blocked = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(3).await }
    });
    tokio::task::yield_now().await;
    assert!(!blocked.is_finished(), "send waits while the queue is full");
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(
        timeout(LONG, blocked).await.unwrap().unwrap(),
        Ok(SendOutcome::Queued)
    );
    assert_eq!(rx.recv_batch(10).await, vec![2, 3]);
}

#[tokio::test]
async fn drop_newest_counts_and_keeps_the_old() {
    let (tx, rx) = channel::<u32>(QueueConfig::new(2).overflow(Overflow::DropNewest)).unwrap();
    for i in 0..5 {
        let outcome = tx.send(i).await.unwrap();
        assert_eq!(
            outcome,
            if i < 2 {
                SendOutcome::Queued
            } else {
                SendOutcome::DroppedNewest
            }
        );
    }
    let sent = tx.try_send_batch(vec![10, 11]).unwrap();
    assert_eq!((sent.queued, sent.dropped_newest), (0, 2));
    assert_eq!(rx.recv_batch(10).await, vec![0, 1]);
    let bus_stats = stats_of(&tx);
    assert_eq!(bus_stats.dropped.newest, 5);
    assert_eq!(bus_stats.dropped.total(), 5);
}

#[tokio::test]
async fn drop_oldest_evicts_and_counts() {
    let (tx, rx) = channel::<u32>(QueueConfig::new(3).overflow(Overflow::DropOldest)).unwrap();
    for i in 0..5 {
        tx.send(i).await.unwrap();
    }
    let sent = tx.send_batch(vec![5, 6]).await.unwrap();
    assert_eq!((sent.queued, sent.evicted_oldest), (2, 2));
    assert_eq!(rx.recv_batch(10).await, vec![4, 5, 6]);
    let stats = stats_of(&tx);
    assert_eq!(stats.dropped.oldest, 4);
    // Every queued message counts as sent; evicted ones are not received.
    assert_eq!((stats.sent, stats.received, stats.depth), (7, 3, 0));
}

#[tokio::test]
async fn reject_returns_the_message() {
    let (tx, rx) = channel::<String>(QueueConfig::new(1).overflow(Overflow::Reject)).unwrap();
    tx.send("a".into()).await.unwrap();
    assert_eq!(
        tx.send("b".into()).await,
        Err(SendError::Full("b".to_string()))
    );
    match tx.send_batch(vec!["c".into(), "d".into()]).await {
        Err(SendBatchError::Full { queued: 0, unsent }) => assert_eq!(unsent, ["c", "d"]),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(stats_of(&tx).dropped.rejected, 3);
    assert_eq!(rx.recv().await.as_deref(), Some("a"));
}

#[tokio::test]
async fn receivers_drain_then_see_the_end_when_senders_leave() {
    let (tx, rx) = channel::<u32>(QueueConfig::new(8)).unwrap();
    let tx2 = tx.clone();
    tx.send_batch(vec![1, 2, 3]).await.unwrap();
    drop(tx);
    assert!(!rx.is_closed(), "one sender is still alive");
    tx2.send(4).await.unwrap();
    let parked = tokio::spawn({
        let rx = rx.clone();
        async move {
            let mut all = Vec::new();
            while let Some(v) = rx.recv().await {
                all.push(v);
            }
            all
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(tx2);
    let all = timeout(LONG, parked).await.unwrap().unwrap();
    assert_eq!(all, [1, 2, 3, 4]);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    assert_eq!(rx.recv_batch(5).await, Vec::<u32>::new());
}

#[tokio::test]
async fn sends_fail_with_the_message_when_receivers_leave() {
    let (tx, rx) = channel::<u32>(QueueConfig::new(1)).unwrap();
    tx.send(1).await.unwrap();
    let parked = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(2).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(rx);
    assert_eq!(
        timeout(LONG, parked).await.unwrap().unwrap(),
        Err(SendError::Closed(2))
    );
    assert_eq!(tx.send(3).await, Err(SendError::Closed(3)));
    assert!(tx.is_closed());
}

#[tokio::test]
async fn explicit_close_fails_sends_and_lets_receivers_drain() {
    let (tx, rx) = channel::<u32>(QueueConfig::new(4)).unwrap();
    tx.send_batch(vec![1, 2]).await.unwrap();
    rx.close();
    assert_eq!(tx.try_send(3), Err(SendError::Closed(3)));
    assert_eq!(rx.recv().await, Some(1));
    let mut out = Vec::new();
    assert_eq!(rx.try_recv_batch(&mut out, 10), Ok(1));
    assert_eq!(rx.recv().await, None);
}

#[tokio::test]
async fn cancelled_send_loses_nothing_and_leaves_no_waker() {
    let (tx, rx) = channel::<u32>(QueueConfig::new(1)).unwrap();
    tx.send(1).await.unwrap();
    // A send parked on the full queue, then cancelled.
    assert!(
        timeout(Duration::from_millis(20), tx.send(2))
            .await
            .is_err()
    );
    let stats = stats_of(&tx);
    assert_eq!(
        stats.waiting_senders, 0,
        "the cancelled send left the wait list"
    );
    assert_eq!(stats.depth, 1, "the cancelled message was not queued");
    assert_eq!(rx.recv().await, Some(1));
    tx.send(3).await.unwrap();
    assert_eq!(rx.recv().await, Some(3));
}

#[tokio::test]
async fn cancelled_recv_batch_loses_nothing_and_leaves_no_waker() {
    let (tx, rx) = channel::<u32>(QueueConfig::new(4)).unwrap();
    assert!(
        timeout(Duration::from_millis(20), rx.recv_batch(4))
            .await
            .is_err()
    );
    assert_eq!(stats_of(&tx).waiting_receivers, 0);
    tx.send_batch(vec![1, 2]).await.unwrap();
    assert_eq!(rx.recv_batch(4).await, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_receiver_never_swallows_a_wake_up() {
    // Each round is a fresh race; Miri interprets every step, so it runs a few.
    for _ in 0..if cfg!(miri) { 3 } else { 200 } {
        let (tx, rx) = channel::<u32>(QueueConfig::new(4)).unwrap();
        let survivor = tokio::spawn({
            let rx = rx.clone();
            async move { rx.recv().await }
        });
        let doomed = tokio::spawn({
            let rx = rx.clone();
            async move { rx.recv().await }
        });
        tokio::task::yield_now().await;
        tx.send(9).await.unwrap();
        doomed.abort();
        match doomed.await {
            // The doomed receiver got it before the abort: the survivor needs another one.
            Ok(Some(9)) => {
                tx.send(9).await.unwrap();
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
        assert_eq!(timeout(LONG, survivor).await.unwrap().unwrap(), Some(9));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_producers_two_consumers_exact_counts() {
    let (tx, rx) = channel::<u64>(QueueConfig::new(if cfg!(miri) { 8 } else { 64 })).unwrap();
    let per = if cfg!(miri) { 150 } else { 50_000u64 };
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut batch = Vec::new();
                for i in 0..per {
                    let v = p * per + i;
                    if p % 2 == 0 {
                        tx.send(v).await.unwrap();
                    } else {
                        batch.push(v);
                        if batch.len() == 100 {
                            tx.send_batch(std::mem::take(&mut batch)).await.unwrap();
                        }
                    }
                }
                if !batch.is_empty() {
                    tx.send_batch(batch).await.unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumers: Vec<_> = (0..2)
        .map(|c| {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                if c == 0 {
                    while let Some(v) = rx.recv().await {
                        seen.push(v);
                    }
                } else {
                    loop {
                        let batch = rx.recv_batch(256).await;
                        if batch.is_empty() {
                            break;
                        }
                        seen.extend(batch);
                    }
                }
                seen
            })
        })
        .collect();
    for p in producers {
        timeout(LONG, p).await.unwrap().unwrap();
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(timeout(LONG, c).await.unwrap().unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..4 * per).collect::<Vec<_>>());
}

#[tokio::test]
async fn registry_refuses_mismatches_with_typed_errors() {
    let bus = Bus::new();
    let config = QueueConfig::new(8);
    let (_tx, _rx) = bus.queue::<u32>("q", config).unwrap();
    assert!(matches!(
        bus.queue::<String>("q", config),
        Err(BusError::TypeMismatch { .. })
    ));
    assert!(matches!(
        bus.queue::<u32>("q", QueueConfig::new(9)),
        Err(BusError::ConfigMismatch { .. })
    ));
    assert!(matches!(
        bus.topic::<u32>("q", 4),
        Err(BusError::KindMismatch { .. })
    ));
    assert!(matches!(
        bus.queue::<u32>("zero", QueueConfig::new(0)),
        Err(BusError::Capacity { .. })
    ));
    assert!(matches!(
        bus.topic::<u32>("t0", 0),
        Err(BusError::Capacity { .. })
    ));
    let _topic = bus.topic::<u32>("t", 4).unwrap();
    assert!(matches!(
        bus.topic::<u32>("t", 5),
        Err(BusError::TopicCapacityMismatch { .. })
    ));
    assert!(matches!(
        bus.queue::<u32>("t", config),
        Err(BusError::KindMismatch { .. })
    ));
    let message = bus.queue::<String>("q", config).unwrap_err().to_string();
    assert!(
        message.contains("u32") && message.contains("String"),
        "{message}"
    );
}

#[tokio::test]
async fn named_queue_is_shared_and_reborn_after_close() {
    let bus = Bus::new();
    let config = QueueConfig::new(8);
    let tx = bus.sender::<u32>("jobs", config).unwrap();
    tx.send(1).await.unwrap(); // no receiver yet: queued, not failed
    let rx = bus.receiver::<u32>("jobs", config).unwrap();
    assert_eq!(rx.recv().await, Some(1));
    rx.close();
    let (tx2, rx2) = bus.queue::<u32>("jobs", config).unwrap();
    tx2.send(2).await.unwrap();
    assert_eq!(
        rx2.recv().await,
        Some(2),
        "a closed queue is replaced by a fresh one"
    );
    assert!(tx.is_closed());
    assert!(bus.remove("jobs"));
    assert!(tx2.is_closed());
}

#[tokio::test]
async fn stats_report_depth_high_water_and_handles() {
    let bus = Bus::new();
    let (tx, rx) = bus.queue::<u32>("s", QueueConfig::new(16)).unwrap();
    let _tx2 = tx.clone();
    tx.send_batch((0..10).collect()).await.unwrap();
    rx.recv_batch(4).await;
    let stats = bus.stats();
    let q = &stats.queues[0];
    assert_eq!((q.sent, q.received, q.depth, q.high_water), (10, 4, 6, 10));
    assert_eq!((q.senders, q.receivers), (2, 1));
    assert!(!q.closed);
}

#[tokio::test]
async fn topic_subscribers_see_everything_and_laggers_are_told() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>("news", 4).unwrap();
    assert_eq!(topic.publish(0), 0, "no subscriber yet");
    let mut fast = topic.subscribe();
    let mut slow = topic.subscribe();
    for i in 1..=3 {
        assert_eq!(topic.publish(i), 2);
        assert_eq!(fast.recv().await, Ok(i));
    }
    for i in 4..=10 {
        topic.publish(i); // never waits, even though `slow` is behind
    }
    assert_eq!(slow.recv().await, Err(TopicRecvError::Lagged(6)));
    let mut rest = Vec::new();
    while let Ok(v) = slow.try_recv() {
        rest.push(v);
    }
    assert_eq!(rest, [7, 8, 9, 10], "the oldest kept messages, in order");
    let stats = bus.stats().topics[0].clone();
    assert_eq!(
        (
            stats.published,
            stats.unseen,
            stats.lagged,
            stats.subscribers
        ),
        (11, 1, 6, 2)
    );
    let same = bus.topic::<u32>("news", 4).unwrap();
    same.publish(11);
    assert_eq!(
        fast.recv().await,
        Err(TopicRecvError::Lagged(4)),
        "missed 4..=7"
    );
    assert_eq!(fast.recv().await, Ok(8));
}

fn stats_of<T: Send + 'static>(tx: &flowbalancer_bus::Sender<T>) -> flowbalancer_bus::QueueStats {
    tx.stats()
}

/// A task that sends or receives in a loop that never has to wait still yields now and then
/// (tokio's cooperative budget), so the other tasks on its thread get to run.
#[cfg(feature = "tokio-coop")]
#[tokio::test(flavor = "current_thread")]
async fn busy_senders_and_receivers_let_other_tasks_run() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    // Above the ~512 operations after which a busy task yields (tokio's 128 units, one per 4
    // operations), with room to spare; smaller under Miri, where every message is slow.
    const CAPACITY: usize = if cfg!(miri) { 768 } else { 2048 };
    let (tx, rx) =
        channel::<usize>(QueueConfig::new(CAPACITY).overflow(Overflow::DropOldest)).unwrap();

    // DropOldest: a send never waits.
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut sends = 0;
    while !ran.load(Ordering::SeqCst) {
        tx.send(sends).await.unwrap();
        sends += 1;
        assert!(
            sends < 4 * CAPACITY,
            "the other task never ran while sending"
        );
    }

    // A full queue: a receive never waits until it is drained.
    while tx.len() < CAPACITY {
        tx.try_send(0).unwrap();
    }
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut receives = 0;
    while !ran.load(Ordering::SeqCst) {
        assert!(
            receives < CAPACITY,
            "the other task never ran while receiving"
        );
        rx.recv().await.unwrap();
        receives += 1;
    }
}

/// Rounds of a sender thread sending until the queue closes while this task closes it and
/// drains: every message the sender was told went in is received (or, under
/// [`Overflow::DropOldest`], was reported evicted), and none after. Before the queue's own
/// close mark, a send could pass its "closed?" check, the receiver end at "closed and empty",
/// and the send then report `Queued` for a message nobody would take.
async fn sends_racing_close_are_received_or_refused(overflow: Overflow) {
    let rounds = if cfg!(miri) { 5 } else { 4000 };
    for round in 0..rounds {
        let (tx, rx) = channel::<u32>(QueueConfig::new(4).overflow(overflow)).unwrap();
        let sender = std::thread::spawn(move || {
            let (mut accepted, mut evicted) = (0u32, 0u32);
            loop {
                match tx.try_send(accepted) {
                    Ok(SendOutcome::Queued) => accepted += 1,
                    Ok(SendOutcome::EvictedOldest) => {
                        accepted += 1;
                        evicted += 1;
                    }
                    Err(SendError::Full(_)) => std::thread::yield_now(),
                    Err(SendError::Closed(message)) => {
                        assert_eq!(message, accepted, "the refused message comes back");
                        return (accepted, evicted);
                    }
                    other => panic!("round {round}: unexpected {other:?}"),
                }
            }
        });
        let mut received = Vec::new();
        // Take a varying number of messages, so the sender is mid-stream (not parked on a
        // full queue) when the close comes.
        for _ in 0..round % 13 {
            if let Ok(message) = rx.try_recv() {
                received.push(message);
            }
            tokio::task::yield_now().await;
        }
        rx.close();
        while let Some(message) = timeout(LONG, rx.recv()).await.expect("drained in time") {
            received.push(message);
        }
        let (accepted, evicted) = sender.join().unwrap();
        assert_eq!(
            received.len() as u32,
            accepted - evicted,
            "round {round}: {accepted} accepted, {evicted} evicted, {} received",
            received.len()
        );
        assert!(
            received.windows(2).all(|pair| pair[0] < pair[1]),
            "round {round}: in order"
        );
        if evicted == 0 {
            assert!(received.iter().copied().eq(0..accepted), "round {round}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_sends_racing_close_are_received_or_refused() {
    sends_racing_close_are_received_or_refused(Overflow::Block).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicting_sends_racing_close_are_received_or_refused() {
    sends_racing_close_are_received_or_refused(Overflow::DropOldest).await;
}
