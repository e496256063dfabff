//! Exclusive affinity: each session owns a worker that nobody else uses; the pool grows for
//! new sessions up to `size + max_overflow`; an ended or expired session's worker is retired
//! and the pool refills; a session whose worker died is told so.

mod common;

use std::time::Duration;

use common::{TestFactory, request, worker_of};
use flowbalancer_pool::{AffinityMode, Pool, PoolError};

fn pool_builder() -> flowbalancer_pool::PoolBuilder<TestFactory> {
    Pool::builder(TestFactory::default())
        .size(2)
        .max_overflow(1)
        .max_in_flight(4)
        .affinity(AffinityMode::Exclusive)
        .queue_timeout(Duration::from_millis(300))
        .health_interval(None)
}

async fn whoami(pool: &Pool<common::TestWorker>, session: &str) -> Result<u64, PoolError> {
    pool.call(request("whoami").with_session(session))
        .await
        .map(|r| worker_of(&r))
}

#[tokio::test]
async fn each_session_owns_its_worker_and_the_pool_grows_for_new_sessions() {
    let pool = pool_builder().build().await.unwrap();
    let a = whoami(&pool, "a").await.unwrap();
    let b = whoami(&pool, "b").await.unwrap();
    assert_ne!(a, b, "two sessions, two workers");
    for _ in 0..5 {
        assert_eq!(whoami(&pool, "a").await.unwrap(), a);
        assert_eq!(whoami(&pool, "b").await.unwrap(), b);
    }
    // A third session: both workers are owned, so an overflow worker starts for it.
    let c = whoami(&pool, "c").await.unwrap();
    assert!(c != a && c != b, "c got {c}, a {a}, b {b}");
    // A fourth finds the pool at size + max_overflow: it waits, then times out.
    let d = whoami(&pool, "d").await;
    assert!(matches!(d, Err(PoolError::QueueTimeout { .. })), "{d:?}");
    pool.shutdown().await;
}

#[tokio::test]
async fn an_ended_session_retires_its_worker_and_the_pool_refills() {
    let pool = pool_builder().build().await.unwrap();
    let a = whoami(&pool, "a").await.unwrap();
    assert!(pool.end_session("a"));
    assert!(!pool.end_session("a"), "already ended");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pool.workers().iter().any(|w| w.id.0 == a) || pool.workers().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "not refilled: {:?}",
            pool.workers()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A new session with the same name starts fresh, on another worker.
    let again = whoami(&pool, "a").await.unwrap();
    assert_ne!(again, a, "the old worker (and its state) is gone");
    pool.shutdown().await;
}

#[tokio::test]
async fn a_session_whose_worker_died_is_told() {
    let pool = pool_builder().build().await.unwrap();
    let _ = whoami(&pool, "a").await.unwrap();
    let crashed = pool.call(request("crash").with_session("a")).await;
    assert!(
        matches!(crashed, Err(PoolError::Crashed { .. })),
        "{crashed:?}"
    );
    let after = whoami(&pool, "a").await;
    assert!(
        matches!(after, Err(PoolError::SessionWorkerLost { .. })),
        "{after:?}"
    );
    // The session can start over.
    assert!(whoami(&pool, "a").await.is_ok());
    pool.shutdown().await;
}

#[tokio::test]
async fn expired_sessions_give_their_workers_back() {
    let pool = pool_builder()
        .session_ttl(Duration::from_millis(100))
        .session_cleanup_interval(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let a = whoami(&pool, "a").await.unwrap();
    let b = whoami(&pool, "b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ids: Vec<u64> = pool.workers().iter().map(|w| w.id.0).collect();
    assert!(
        !ids.contains(&a) && !ids.contains(&b),
        "expired sessions' workers retired: {ids:?}"
    );
    assert!(whoami(&pool, "c").await.is_ok());
    pool.shutdown().await;
}

#[tokio::test]
async fn a_hint_never_piles_a_sessions_calls_on_one_busy_worker() {
    // Workers that take several calls at once: the session's worker is preferred only while
    // it is no busier than another.
    let pool = Pool::builder(TestFactory::default())
        .size(2)
        .max_in_flight(4)
        .affinity(AffinityMode::Hint)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let home = whoami(&pool, "s").await.unwrap();
    assert_eq!(
        whoami(&pool, "s").await.unwrap(),
        home,
        "idle: the session's worker"
    );
    let long = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.call(
                flowbalancer_pool::Request::new("sleep", serde_json::json!({"ms": 300}))
                    .with_session("s"),
            )
            .await
            .map(|r| worker_of(&r))
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let other = whoami(&pool, "s").await.unwrap();
    assert_ne!(
        other, home,
        "the session's worker is busier than the other: the call spills"
    );
    assert_eq!(long.await.unwrap().unwrap(), home);
    assert_eq!(
        whoami(&pool, "s").await.unwrap(),
        home,
        "back to the session's worker"
    );
    pool.shutdown().await;
}
