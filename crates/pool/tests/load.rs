//! Queueing, overflow, affinity, cancellation, and many concurrent callers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestFactory, request, worker_of};
use flowbalancer_pool::{AffinityMode, Pool, PoolError, Request};
use serde_json::json;

fn sleep_request(ms: u64) -> Request {
    Request::new("sleep", json!({ "ms": ms }))
}

#[tokio::test(start_paused = true)]
async fn full_admission_queue_is_overloaded_and_waits_are_bounded() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory)
        .size(1)
        .queue_capacity(2)
        .queue_timeout(Duration::from_millis(500))
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let busy = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call(sleep_request(10_000)).await }
    });
    tokio::task::yield_now().await;
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(request("echo")).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(pool.stats().queue_depth, 2);
    match pool.call(request("echo")).await {
        Err(PoolError::Overloaded {
            waiting: 2,
            capacity: 2,
            ..
        }) => {}
        other => panic!("expected Overloaded, got {other:?}"),
    }
    for q in queued {
        assert!(matches!(
            q.await.unwrap(),
            Err(PoolError::QueueTimeout { .. })
        ));
    }
    busy.abort();
    let stats = pool.stats();
    assert_eq!(
        (
            stats.failures["overloaded"],
            stats.failures["queue_timeout"]
        ),
        (1, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn overflow_grows_under_load_and_retires_when_idle() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory)
        .size(1)
        .max_overflow(2)
        .overflow_idle_ttl(Duration::from_secs(5))
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(sleep_request(1_000)).await })
        })
        .collect();
    let mut served_by = Vec::new();
    for call in calls {
        served_by.push(worker_of(&call.await.unwrap().unwrap()));
    }
    served_by.sort_unstable();
    served_by.dedup();
    assert_eq!(
        served_by.len(),
        3,
        "three workers served three concurrent calls"
    );
    assert_eq!(pool.workers().len(), 3);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        pool.workers().len(),
        1,
        "overflow workers retired after idling"
    );
    assert_eq!(pool.stats().overflow_retired, 2);
}

#[tokio::test(start_paused = true)]
async fn hint_affinity_sticks_and_spills_when_busy() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory)
        .size(3)
        .affinity(AffinityMode::Hint)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let bound = worker_of(
        &pool
            .call(request("whoami").with_session("s1"))
            .await
            .unwrap(),
    );
    for _ in 0..5 {
        assert_eq!(
            worker_of(
                &pool
                    .call(request("whoami").with_session("s1"))
                    .await
                    .unwrap()
            ),
            bound
        );
    }
    // Make the bound worker busy: the session spills to another one.
    let blocker = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call(sleep_request(1_000).with_session("s1")).await }
    });
    tokio::task::yield_now().await;
    let spilled = worker_of(
        &pool
            .call(request("whoami").with_session("s1"))
            .await
            .unwrap(),
    );
    assert_ne!(spilled, bound);
    blocker.await.unwrap().unwrap();
    assert_eq!(
        worker_of(
            &pool
                .call(request("whoami").with_session("s1"))
                .await
                .unwrap()
        ),
        bound
    );
    let affinity = pool.stats().affinity;
    assert_eq!(
        (affinity.misses, affinity.spills, affinity.bound_sessions),
        (1, 1, 1)
    );
    assert!(affinity.hits >= 6);
}

#[tokio::test(start_paused = true)]
async fn strict_queue_waits_for_the_sessions_worker() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory)
        .size(2)
        .affinity(AffinityMode::StrictQueue)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let bound = worker_of(
        &pool
            .call(request("whoami").with_session("s"))
            .await
            .unwrap(),
    );
    let blocker = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call(sleep_request(300).with_session("s")).await }
    });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let response = pool
        .call(request("whoami").with_session("s"))
        .await
        .unwrap();
    assert_eq!(worker_of(&response), bound, "waited for its own worker");
    assert!(started.elapsed() >= Duration::from_millis(250));
    blocker.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn strict_fail_fast_refuses_when_the_worker_is_busy() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory)
        .size(2)
        .affinity(AffinityMode::StrictFailFast)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    pool.call(request("echo").with_session("s")).await.unwrap();
    let blocker = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call(sleep_request(300).with_session("s")).await }
    });
    tokio::task::yield_now().await;
    assert!(matches!(
        pool.call(request("echo").with_session("s")).await,
        Err(PoolError::SessionBusy { .. })
    ));
    blocker.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn losing_the_sessions_worker_is_reported_in_strict_mode_and_rebinds() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory.clone())
        .size(2)
        .affinity(AffinityMode::StrictQueue)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let bound = worker_of(
        &pool
            .call(request("whoami").with_session("s"))
            .await
            .unwrap(),
    );
    // The session's worker crashes.
    assert!(matches!(
        pool.call(request("crash").with_session("s")).await,
        Err(PoolError::Crashed { .. })
    ));
    match pool.call(request("whoami").with_session("s")).await {
        Err(PoolError::SessionWorkerLost { worker, .. }) => assert_eq!(worker.0, bound),
        other => panic!("expected SessionWorkerLost, got {other:?}"),
    }
    // The binding was dropped: the next call binds anew.
    let rebound = worker_of(
        &pool
            .call(request("whoami").with_session("s"))
            .await
            .unwrap(),
    );
    assert_ne!(rebound, bound);
    assert_eq!(pool.stats().affinity.rebinds, 1);
}

#[tokio::test(start_paused = true)]
async fn hint_mode_rebinds_silently_and_says_so() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory)
        .size(2)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    pool.call(request("crash").with_session("s"))
        .await
        .unwrap_err();
    let response = pool
        .call(request("whoami").with_session("s"))
        .await
        .unwrap();
    assert!(response.rebound, "the caller is told its session moved");
}

#[tokio::test(start_paused = true)]
async fn session_bindings_expire() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory)
        .size(2)
        .session_ttl(Duration::from_secs(60))
        .session_cleanup_interval(Duration::from_secs(10))
        .health_interval(None)
        .build()
        .await
        .unwrap();
    pool.call(request("echo").with_session("s")).await.unwrap();
    assert_eq!(pool.stats().affinity.bound_sessions, 1);
    tokio::time::sleep(Duration::from_secs(75)).await;
    assert_eq!(
        pool.stats().affinity.bound_sessions,
        0,
        "expired and cleaned up"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_callers_never_lose_a_worker() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory)
        .size(2)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    for round in 0..50u64 {
        // Callers cancelled while running and while queued.
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.call(sleep_request(100)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(round % 7 * 10)).await;
        for call in calls {
            call.abort();
        }
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stats = pool.stats();
    assert_eq!(
        (stats.idle, stats.in_flight, stats.queue_depth),
        (2, 0, 0),
        "{stats:?}"
    );
    // Both workers still take calls.
    let both = tokio::join!(pool.call(sleep_request(50)), pool.call(sleep_request(50)));
    assert_ne!(worker_of(&both.0.unwrap()), worker_of(&both.1.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_each_answered_exactly_once() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory)
        .size(8)
        .max_in_flight(4)
        .queue_capacity(2_000)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let calls: Vec<_> = (0..1_000u64)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let method = match i % 10 {
                    0 => "bad",
                    1 => "sleep",
                    _ => "echo",
                };
                (
                    i,
                    pool.call(Request::new(method, json!({ "i": i, "ms": 1 })))
                        .await,
                )
            })
        })
        .collect();
    let mut answered = vec![0u8; 1_000];
    let (mut ok, mut caller_errors) = (0, 0);
    for call in calls {
        let (i, result) = call.await.unwrap();
        answered[i as usize] += 1;
        match result {
            Ok(response) if i % 10 > 1 => {
                assert_eq!(
                    response.payload.as_json().unwrap()["i"],
                    json!(i),
                    "its own answer"
                );
                ok += 1;
            }
            Ok(_) => ok += 1,
            Err(PoolError::Call { .. }) if i % 10 == 0 => caller_errors += 1,
            Err(other) => panic!("call {i}: {other}"),
        }
    }
    assert!(answered.iter().all(|&n| n == 1));
    assert_eq!((ok, caller_errors), (900, 100));
    let stats = pool.stats();
    assert_eq!(
        (stats.calls, stats.successes, stats.in_flight),
        (1_000, 900, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn scale_to_grows_in_waves_and_shrinks() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory.clone())
        .size(1)
        .spawn_batch(10)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let report = pool.scale_to(100).await;
    assert_eq!((report.started, report.failed), (99, 0));
    assert_eq!(pool.workers().len(), 100);
    let report = pool.scale_to(10).await;
    assert_eq!(report.retired, 90);
    assert_eq!(pool.workers().len(), 10);
    let shared = Arc::clone(&factory.shared);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        shared.shut_down.lock().len(),
        90,
        "retired workers were shut down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_from_many_threads_add_up_and_per_call_flips_stay_out_of_the_history() {
    let pool = Pool::builder(flowbalancer_pool::in_process(
        |r| async move { Ok(r.payload) },
    ))
    .size(2)
    .max_in_flight(4)
    .health_interval(None)
    .build()
    .await
    .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    pool.call(Request::new("echo", json!({ "i": i })))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = pool.stats();
    assert_eq!((stats.calls, stats.successes), (2000, 2000));
    assert_eq!(stats.latency.count, 2000);
    for worker in pool.workers() {
        // Started, then nothing per call: the history keeps the transitions worth reading.
        assert!(
            worker
                .history
                .iter()
                .all(|t| !matches!(t.to, flowbalancer_pool::WorkerState::Busy)),
            "{:?}",
            worker.history
        );
        assert_eq!(worker.state, flowbalancer_pool::WorkerState::Ready);
    }
}

/// Releases usually take no lock; a caller about to queue must still get every worker that
/// frees. One worker, one call at a time, 32 callers on two threads: a missed hand-over
/// would leave a caller waiting with the worker idle, and its queue timeout would fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_caller_is_missed_when_releases_skip_the_lock() {
    for max_in_flight in [1, 2] {
        let pool = Pool::builder(flowbalancer_pool::in_process(|r| async move {
            tokio::task::yield_now().await;
            Ok(r.payload)
        }))
        .size(1)
        .max_in_flight(max_in_flight)
        .queue_capacity(64)
        .queue_timeout(Duration::from_secs(5))
        .health_interval(None)
        .build()
        .await
        .unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for i in 0..300 {
                        pool.call(Request::new("echo", json!({ "i": i }))).await?;
                    }
                    Ok::<(), PoolError>(())
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let stats = pool.stats();
        assert_eq!(stats.successes, 32 * 300, "{stats:?}");
        assert_eq!(stats.in_flight, 0);
        assert_eq!(stats.queue_depth, 0);
    }
}
