//! Failures and what the pool does about them.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{TestFactory, request, worker_of};
use flowbalancer_pool::{ErrorKind, FailureClass, Pool, PoolError, StartMode, WorkerState};

async fn pool(factory: &TestFactory, size: usize) -> Pool<common::TestWorker> {
    Pool::builder(factory.clone())
        .name("test")
        .size(size)
        .call_timeout(Duration::from_secs(1))
        .queue_timeout(Duration::from_secs(5))
        .health_interval(None)
        .build()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn crash_fails_only_that_call_and_the_worker_is_replaced() {
    let factory = TestFactory::default();
    let pool = pool(&factory, 1).await;
    let first = worker_of(&pool.call(request("whoami")).await.unwrap());
    let error = pool.call(request("crash")).await.unwrap_err();
    assert!(matches!(error, PoolError::Crashed { .. }), "{error}");
    assert_eq!(error.class(), FailureClass::Failed);
    // The replacement serves the next call.
    let next = worker_of(&pool.call(request("whoami")).await.unwrap());
    assert_ne!(next, first, "a new worker");
    let stats = pool.stats();
    assert_eq!((stats.replacements, stats.failures["crashed"]), (1, 1));
    assert_eq!(factory.shared.killed.lock().as_slice(), [first]);
}

#[tokio::test(start_paused = true)]
async fn hang_times_out_and_the_worker_is_killed_and_replaced() {
    let factory = TestFactory::default();
    let pool = pool(&factory, 1).await;
    let hung = worker_of(&pool.call(request("whoami")).await.unwrap());
    let error = pool.call(request("hang")).await.unwrap_err();
    assert_eq!(
        error,
        PoolError::Timeout {
            worker: flowbalancer_pool::WorkerId(hung),
            after: Duration::from_secs(1)
        }
    );
    assert!(factory.shared.killed.lock().contains(&hung));
    assert_ne!(
        worker_of(&pool.call(request("whoami")).await.unwrap()),
        hung
    );
}

#[tokio::test(start_paused = true)]
async fn protocol_violation_replaces_the_worker() {
    let factory = TestFactory::default();
    let pool = pool(&factory, 1).await;
    assert!(matches!(
        pool.call(request("garbage")).await,
        Err(PoolError::ProtocolViolation { .. })
    ));
    assert!(pool.call(request("echo")).await.is_ok());
    assert_eq!(pool.stats().replacements, 1);
}

#[tokio::test(start_paused = true)]
async fn caller_errors_return_at_once_and_keep_the_worker() {
    let factory = TestFactory::default();
    let pool = pool(&factory, 1).await;
    let before = worker_of(&pool.call(request("whoami")).await.unwrap());
    for method in ["bad", "nope"] {
        match pool.call(request(method)).await.unwrap_err() {
            PoolError::Call { error, .. } => assert!(error.kind.is_caller_error()),
            other => panic!("{other}"),
        }
    }
    assert_eq!(
        pool.call(request("nope")).await.unwrap_err().class(),
        FailureClass::Caller
    );
    assert_eq!(
        worker_of(&pool.call(request("whoami")).await.unwrap()),
        before
    );
    assert_eq!(pool.stats().replacements, 0);
}

#[tokio::test(start_paused = true)]
async fn transient_failure_is_retried_on_another_worker() {
    let factory = TestFactory::default();
    let pool = pool(&factory, 2).await;
    let ids: Vec<u64> = pool.workers().iter().map(|w| w.id.0).collect();
    factory.shared.flaky_worker.store(ids[0], Ordering::SeqCst);
    for _ in 0..4 {
        let response = pool.call(request("flaky")).await.unwrap();
        assert_eq!(worker_of(&response), ids[1]);
    }
    assert!(pool.stats().retries >= 1);
    // With every worker flaky, the budget runs out and the error is returned.
    let report = pool.scale_to(1).await;
    assert_eq!(report.retired, 1);
    let remaining = pool.workers()[0].id.0;
    factory
        .shared
        .flaky_worker
        .store(remaining, Ordering::SeqCst);
    match pool.call(request("flaky")).await {
        Err(PoolError::Call { error, .. }) => assert_eq!(error.kind, ErrorKind::Transient),
        other => panic!("expected the transient error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn failing_health_checks_degrade_then_replace() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory.clone())
        .size(1)
        .health_interval(Some(Duration::from_secs(30)))
        .health_failures_before_removal(3)
        .build()
        .await
        .unwrap();
    let id = pool.workers()[0].id;
    factory.shared.unhealthy.lock().insert(id.0);
    tokio::time::sleep(Duration::from_secs(31)).await;
    let workers = pool.workers();
    assert_eq!(workers[0].state, WorkerState::Degraded);
    assert_eq!(workers[0].health, flowbalancer_pool::Health::Unhealthy);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let workers = pool.workers();
    assert_eq!(workers.len(), 1);
    assert_ne!(workers[0].id, id, "replaced after three failed checks");
    assert_eq!(pool.stats().failures["health_check"], 3);
    assert!(pool.call(request("echo")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_degraded_worker_recovers_when_checks_pass_again() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory.clone())
        .size(1)
        .health_interval(Some(Duration::from_secs(10)))
        .build()
        .await
        .unwrap();
    let id = pool.workers()[0].id;
    factory.shared.unhealthy.lock().insert(id.0);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(pool.workers()[0].state, WorkerState::Degraded);
    factory.shared.unhealthy.lock().clear();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let worker = &pool.workers()[0];
    assert_eq!((worker.id, worker.state), (id, WorkerState::Ready));
    let reasons: Vec<&str> = worker.history.iter().map(|t| t.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("health check failed")),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"health check passed"), "{reasons:?}");
}

#[tokio::test(start_paused = true)]
async fn no_worker_can_start_fails_fast() {
    let factory = TestFactory::default();
    factory
        .shared
        .failing_starts
        .store(u32::MAX, Ordering::SeqCst);
    let error = Pool::builder(factory.clone())
        .size(3)
        .build()
        .await
        .unwrap_err();
    match error {
        PoolError::NoWorkers { last_error, .. } => {
            assert!(last_error.contains("python3: not found"))
        }
        other => panic!("{other}"),
    }
}

#[tokio::test(start_paused = true)]
async fn failed_starts_are_retried_with_backoff() {
    let factory = TestFactory::default();
    factory.shared.failing_starts.store(2, Ordering::SeqCst);
    let pool = Pool::builder(factory.clone())
        .size(3)
        .restart_backoff(Duration::from_millis(100))
        .health_interval(None)
        .build()
        .await
        .unwrap();
    assert_eq!(
        pool.workers().len(),
        1,
        "built with the one worker that started"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pool.workers().len(), 3, "the failed starts were retried");
    assert_eq!(pool.stats().start_failures, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_trying_build_waits_for_its_workers_at_most_start_wait() {
    let factory = TestFactory::default();
    factory.shared.starts_held.send_replace(true);
    let build = Pool::builder(factory.clone())
        .size(2)
        .start(StartMode::EagerKeepTrying)
        .start_wait(Some(Duration::from_millis(50)))
        .build();
    // Without the wait, the build would wait for the held starts for ever.
    let pool = tokio::time::timeout(Duration::from_secs(30), build)
        .await
        .expect("the build returned while its starts were held")
        .expect("built");
    assert!(!pool.has_live_worker());
    assert_eq!(pool.stats().workers.initializing, 2);

    // The starts go on in the background: released, the workers join the pool.
    factory.shared.starts_held.send_replace(false);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.stats().workers.ready < 2 {
        let stats = pool.stats();
        assert!(
            std::time::Instant::now() < deadline,
            "the workers did not join: {:?}",
            stats.workers
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answer = pool.call(request("echo")).await.expect("served");
    assert_eq!(answer.payload.to_json(), serde_json::json!({}));
    // Maintenance did not start more while the first starts were under way.
    assert_eq!(factory.shared.starts.load(Ordering::SeqCst), 2);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn lazy_pool_starts_on_the_first_call() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory.clone())
        .size(2)
        .start(StartMode::Lazy)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    assert_eq!(factory.shared.starts.load(Ordering::SeqCst), 0);
    assert!(pool.call(request("echo")).await.is_ok());
    assert!(factory.shared.starts.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(start_paused = true)]
async fn recycling_after_n_calls_replaces_one_worker_at_a_time() {
    let factory = TestFactory::default();
    let pool = Pool::builder(factory.clone())
        .size(1)
        .recycle_after_calls(Some(5))
        .recycle_jitter(0.0)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let first = worker_of(&pool.call(request("whoami")).await.unwrap());
    for _ in 0..4 {
        pool.call(request("echo")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let next = worker_of(&pool.call(request("whoami")).await.unwrap());
    assert_ne!(next, first);
    assert_eq!(pool.stats().recycles, 1);
    assert!(
        factory.shared.shut_down.lock().contains(&first),
        "recycled gracefully"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_in_flight_calls_and_refuses_new_ones() {
    let factory = TestFactory::default();
    let pool = pool(&factory, 1).await;
    let running = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.call(flowbalancer_pool::Request::new(
                "sleep",
                serde_json::json!({"ms": 200}),
            ))
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let report = pool.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert!(
        running.await.unwrap().is_ok(),
        "the in-flight call finished"
    );
    assert!(matches!(
        pool.call(request("echo")).await,
        Err(PoolError::ShuttingDown { .. })
    ));
    assert_eq!(factory.shared.shut_down.lock().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_keeps_failing_to_start_is_warned_of_at_each_doubling_only() {
    let (_guard, events) = common::capture_events();
    let factory = TestFactory::default();
    let pool = Pool::builder(factory.clone())
        .size(1)
        .restart_backoff(Duration::from_millis(10))
        .health_interval(None)
        .build()
        .await
        .unwrap();
    // The worker dies, and its replacement fails to start 20 times before one starts.
    factory.shared.failing_starts.store(20, Ordering::SeqCst);
    let _ = pool.call(request("crash")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    while pool.workers().len() != 1 || factory.shared.failing_starts.load(Ordering::SeqCst) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never replaced");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let failures: Vec<tracing::Level> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.message == "worker failed to start")
        .map(|e| e.level)
        .collect();
    assert_eq!(failures.len(), 20, "{failures:?}");
    let warned: Vec<usize> = (1..=failures.len())
        .filter(|&n| failures[n - 1] == tracing::Level::WARN)
        .collect();
    assert_eq!(warned, [1, 2, 4, 8, 16], "{failures:?}");
    assert_eq!(pool.stats().start_failures, 20);
}
