//! Pools and routers as tower Services: layers around a pool, honest `poll_ready`, a layered
//! pool as a router tier, and the router itself as a Service.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use flowbalancer_pool::{ErrorKind, Pool, PoolError, Request, Response, WorkerError, in_process};
use flowbalancer_tiers::{Router, ServiceTier};
use serde_json::json;
use tower::retry::Policy;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// Retries a call up to `left` more times when the pool says another attempt may succeed.
#[derive(Clone)]
struct RetryRetryable {
    left: u32,
}

impl Policy<Request, Response, PoolError> for RetryRetryable {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _request: &mut Request,
        result: &mut Result<Response, PoolError>,
    ) -> Option<Self::Future> {
        match result {
            Err(error)
                if self.left > 0 && error.class() == flowbalancer_pool::FailureClass::Failed =>
            {
                self.left -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &Request) -> Option<Request> {
        Some(request.clone())
    }
}

/// A pool whose "flaky" calls fail as crashed the first `fail_first` times, whose "hang" calls
/// never answer, and whose other calls echo.
async fn pool(
    fail_first: u32,
    size: usize,
) -> (Pool<impl flowbalancer_pool::Worker>, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let pool = Pool::builder(in_process(move |request: Request| {
        let seen = Arc::clone(&seen);
        async move {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            match request.method.as_ref() {
                "flaky" if n < fail_first => Err(WorkerError::new(ErrorKind::Crashed, "flaked")),
                "hang" => std::future::pending().await,
                _ => Ok(request.payload),
            }
        }
    }))
    .size(size)
    .health_interval(None)
    .cancel_grace(Duration::from_millis(50))
    .build()
    .await
    .expect("pool");
    (pool, calls)
}

#[tokio::test]
async fn a_service_builder_stack_around_a_pool_times_out_limits_and_retries() {
    let (pool, calls) = pool(2, 2).await;
    let mut stack = ServiceBuilder::new()
        .timeout(Duration::from_millis(300))
        .concurrency_limit(2)
        .retry(RetryRetryable { left: 3 })
        .service(pool.clone());

    // Retry: the first two attempts crash, the third answers.
    let response = stack
        .ready()
        .await
        .expect("ready")
        .call(Request::new("flaky", json!({"n": 1})))
        .await
        .expect("retried until it answered");
    assert_eq!(response.payload.as_json(), Some(&json!({"n": 1})));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Timeout: a hanging call ends with tower's Elapsed, and the pool gets its worker back
    // (the call is cancelled at the worker).
    let error: BoxError = stack
        .ready()
        .await
        .expect("ready")
        .call(Request::new("hang", json!({})))
        .await
        .expect_err("timed out");
    assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");

    // Concurrency limit and plain calls: 20 calls through clones of the stack all answer.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut service = stack.clone();
        tasks.push(tokio::spawn(async move {
            service
                .ready()
                .await?
                .call(Request::new("echo", json!(i)))
                .await
                .map(|r| r.payload.as_json().cloned())
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.expect("join").expect("answered"), Some(json!(i)));
    }
    let stats = pool.stats();
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    pool.shutdown().await;
}

#[tokio::test]
async fn poll_ready_waits_while_every_worker_and_queue_place_is_taken_and_wakes_when_one_frees() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = Arc::clone(&gate);
    let mut pool = Pool::builder(in_process(move |request: Request| {
        let held = Arc::clone(&held);
        async move {
            held.acquire().await.expect("gate").forget();
            Ok(request.payload)
        }
    }))
    .size(1)
    .queue_capacity(1)
    .health_interval(None)
    .build()
    .await
    .expect("pool");

    // One call runs, one waits in the queue: now there is no room.
    let spawn_call = |method: &'static str, n: i32| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.call(Request::new(method, json!(n))).await })
    };
    let running = spawn_call("a", 1);
    wait_until(|| pool.stats().in_flight == 1).await;
    let queued = spawn_call("b", 2);
    wait_until(|| pool.stats().queue_depth == 1).await;
    let mut ready = std::pin::pin!(std::future::poll_fn(|cx| pool.poll_ready(cx)));
    assert!(
        matches!(futures_poll(&mut ready), Poll::Pending),
        "ready with a busy worker and a full queue"
    );

    // The running call answers: the queued one gets the worker, and the queue has room again.
    gate.add_permits(1);
    tokio::time::timeout(Duration::from_secs(5), &mut ready)
        .await
        .expect("woken when room came back")
        .expect("ready");
    gate.add_permits(1);
    assert_eq!(
        running.await.expect("join").expect("a").payload.as_json(),
        Some(&json!(1))
    );
    assert_eq!(
        queued.await.expect("join").expect("b").payload.as_json(),
        Some(&json!(2))
    );

    // Shutting down: poll_ready says so.
    pool.shutdown().await;
    let error = std::future::poll_fn(|cx| pool.poll_ready(cx))
        .await
        .expect_err("shutting down");
    assert_eq!(error.kind_name(), "shutting_down");
}

#[tokio::test]
async fn a_layered_pool_is_a_router_tier_and_its_timeouts_fall_back() {
    let (slow, _) = pool(0, 1).await;
    let fallback = Pool::builder(in_process(
        |request: Request| async move { Ok(request.payload) },
    ))
    .size(1)
    .health_interval(None)
    .build()
    .await
    .expect("pool");
    let layered = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .service(slow.clone());
    let mut router = Router::builder()
        .tier("layered", ServiceTier::new(layered))
        .tier("fallback", fallback.clone())
        .build()
        .expect("router");

    let routed = router
        .ready()
        .await
        .expect("ready")
        .call(Request::new("echo", json!("x")))
        .await
        .expect("served");
    assert_eq!(routed.tier, "layered");

    // tower's Elapsed is a retryable failure of the layered tier: the call falls back.
    let routed = router
        .ready()
        .await
        .expect("ready")
        .call(Request::new("hang", json!("y")))
        .await
        .expect("the fallback tier served it");
    assert_eq!(routed.tier, "fallback");
    assert_eq!(routed.payload().as_json(), Some(&json!("y")));
    let attempts = routed.attempts;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].tier, "layered");
    let json = serde_json::to_value(&attempts[0]).expect("json");
    assert_eq!(json["outcome"], "failed", "{json}");
    assert_eq!(json["kind"], "service", "{json}");
    slow.shutdown().await;
    fallback.shutdown().await;
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn futures_poll<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    std::pin::Pin::new(future).poll(&mut cx)
}
