//! The pool's hard edges: strict-affinity waiters whose worker leaves, a planned recycle that
//! moves sessions without an error, durations at `Duration::MAX`, and an invalid jitter.

mod common;

use std::time::Duration;

use common::{TestFactory, request, worker_of};
use flowbalancer_pool::{AffinityMode, Pool, PoolError, Request};
use serde_json::json;

fn sleep_request(ms: u64) -> Request {
    Request::new("sleep", json!({ "ms": ms }))
}

#[tokio::test(start_paused = true)]
async fn strict_waiters_learn_at_once_that_their_worker_died() {
    let pool = Pool::builder(TestFactory::default())
        .size(2)
        .affinity(AffinityMode::StrictQueue)
        .queue_timeout(Duration::from_secs(60))
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
    // The session's worker is busy for a while, then crashes; a second call of the session
    // waits strictly for it meanwhile.
    let crashing = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.call(sleep_request(100).with_session("s")).await.ok();
            pool.call(request("crash").with_session("s")).await
        }
    });
    tokio::task::yield_now().await;
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move {
            let started = tokio::time::Instant::now();
            let result = pool.call(request("whoami").with_session("s")).await;
            (result, started.elapsed())
        }
    });
    let _ = crashing.await.unwrap();
    let (result, waited) = waiting.await.unwrap();
    match result {
        // It either got the worker between the two calls (served), or learnt it was lost.
        Ok(response) => assert_eq!(worker_of(&response), bound),
        Err(PoolError::SessionWorkerLost { worker, .. }) => {
            assert_eq!(worker.0, bound);
            assert!(
                waited < Duration::from_secs(60),
                "told at once, not after the queue timeout"
            );
        }
        Err(other) => panic!("unexpected {other:?}"),
    }
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_strict_waiter_is_failed_when_its_worker_is_removed_while_it_waits() {
    let pool = Pool::builder(TestFactory::default())
        .size(1)
        .affinity(AffinityMode::StrictQueue)
        .queue_timeout(Duration::from_secs(60))
        .call_timeout(Duration::from_millis(200))
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
    // `hang` times out after 200 ms: the worker is killed and removed while the next call of
    // the session waits for it.
    let hanging = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call(request("hang").with_session("s")).await }
    });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    match pool.call(request("whoami").with_session("s")).await {
        Err(PoolError::SessionWorkerLost { worker, .. }) => assert_eq!(worker.0, bound),
        other => panic!("expected SessionWorkerLost, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not the 60 s queue timeout: {:?}",
        started.elapsed()
    );
    assert!(matches!(
        hanging.await.unwrap(),
        Err(PoolError::Timeout { .. })
    ));
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_planned_recycle_moves_the_session_to_the_replacement_without_an_error() {
    let pool = Pool::builder(TestFactory::default())
        .size(1)
        .affinity(AffinityMode::StrictQueue)
        .recycle_after_calls(Some(3))
        .recycle_jitter(0.0)
        .queue_timeout(Duration::from_secs(60))
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let first = worker_of(
        &pool
            .call(request("whoami").with_session("s"))
            .await
            .unwrap(),
    );
    let mut workers = vec![first];
    for _ in 0..6 {
        let response = pool
            .call(request("whoami").with_session("s"))
            .await
            .expect("a recycle never fails a session's call");
        workers.push(worker_of(&response));
    }
    workers.dedup();
    assert!(workers.len() >= 2, "recycled at least once: {workers:?}");
    assert_eq!(pool.stats().affinity.rebinds, 0, "moved, not lost");
    pool.shutdown().await;
}

#[tokio::test]
async fn duration_max_everywhere_means_no_limit() {
    let pool = Pool::builder(TestFactory::default())
        .size(1)
        .call_timeout(Duration::MAX)
        .queue_timeout(Duration::MAX)
        .cancel_grace(Duration::MAX)
        .drain_grace(Duration::MAX)
        .session_ttl(Duration::MAX)
        .overflow_idle_ttl(Duration::MAX)
        .restart_backoff(Duration::MAX)
        .restart_backoff_max(Duration::MAX)
        .recycle_after_age(Some(Duration::MAX))
        .health_interval(Some(Duration::MAX))
        .health_timeout(Duration::MAX)
        .build()
        .await
        .unwrap();
    let far = std::time::Instant::now()
        .checked_add(Duration::from_secs(3600))
        .unwrap();
    for _ in 0..3 {
        pool.call(request("echo").with_session("s").with_deadline(far))
            .await
            .unwrap();
    }
    // Failed calls with the largest limits answer normally too.
    assert!(matches!(
        pool.call(request("bad")).await,
        Err(PoolError::Call { .. })
    ));
    pool.call(request("echo")).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), pool.shutdown())
        .await
        .expect("a drain grace of Duration::MAX with nothing in flight ends at once");
    assert!(report.failures.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_nan_or_out_of_range_jitter_is_refused() {
    for jitter in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        match Pool::builder(TestFactory::default())
            .recycle_jitter(jitter)
            .build()
            .await
        {
            Err(PoolError::InvalidConfig { message, .. }) => {
                assert!(message.contains("recycle_jitter"), "{message}")
            }
            other => panic!("jitter {jitter}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_zero_call_timeout_is_refused() {
    match Pool::builder(TestFactory::default())
        .call_timeout(Duration::ZERO)
        .build()
        .await
    {
        Err(PoolError::InvalidConfig { message, .. }) => {
            assert!(message.contains("call_timeout"), "{message}")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
