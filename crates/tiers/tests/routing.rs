//! Routing, fallback, deadlines, breakers, budgets and metrics, with scriptable tiers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flowbalancer_pool::{ErrorKind, Payload, PoolError, Request, Response, WorkerError, WorkerId};
use flowbalancer_tiers::{
    BreakerConfig, BreakerState, CallOptions, Outcome, RetryBudget, RouteError, Router, SkipReason,
    Tier,
};
use serde_json::json;

/// What a scripted tier does with a call.
#[derive(Clone, Copy)]
enum Behaviour {
    Ok,
    Crash,
    Hang,
    Overloaded,
    BadParams,
}

struct Scripted {
    name: &'static str,
    behaviour: Arc<parking_lot::Mutex<Behaviour>>,
    methods: Option<Vec<&'static str>>,
    calls: Arc<AtomicU32>,
}

impl Scripted {
    fn new(
        name: &'static str,
        behaviour: Behaviour,
    ) -> (Self, Arc<parking_lot::Mutex<Behaviour>>, Arc<AtomicU32>) {
        let behaviour = Arc::new(parking_lot::Mutex::new(behaviour));
        let calls = Arc::new(AtomicU32::new(0));
        (
            Self {
                name,
                behaviour: Arc::clone(&behaviour),
                methods: None,
                calls: Arc::clone(&calls),
            },
            behaviour,
            calls,
        )
    }

    fn offering(mut self, methods: Vec<&'static str>) -> Self {
        self.methods = Some(methods);
        self
    }
}

impl Tier for Scripted {
    type Error = PoolError;

    fn call(
        &self,
        request: Request,
    ) -> impl std::future::Future<Output = Result<Response, PoolError>> + Send + '_ {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let behaviour = *self.behaviour.lock();
        let name = self.name;
        Box::pin(async move {
            let worker = WorkerId(7);
            match behaviour {
                Behaviour::Ok => Ok(Response {
                    payload: Payload::json(
                        json!({ "tier": name, "method": request.method.as_ref() }),
                    ),
                    worker,
                    attempts: 1,
                    rebound: false,
                }),
                Behaviour::Crash => Err(PoolError::Crashed {
                    worker,
                    message: "exit 1".into(),
                }),
                Behaviour::Hang => std::future::pending().await,
                Behaviour::Overloaded => Err(PoolError::Overloaded {
                    pool: name.into(),
                    waiting: 9,
                    capacity: 9,
                }),
                Behaviour::BadParams => Err(PoolError::Call {
                    worker,
                    error: WorkerError::new(ErrorKind::BadParams, "missing `text`"),
                }),
            }
        })
    }

    fn offers(&self, method: &str) -> Option<bool> {
        self.methods.as_ref().map(|m| m.contains(&method))
    }
}

fn options() -> CallOptions {
    CallOptions::default()
}

#[tokio::test]
async fn route_precedence_exact_then_longest_prefix_then_default() {
    let (hot, ..) = Scripted::new("hot", Behaviour::Ok);
    let (warm, ..) = Scripted::new("warm", Behaviour::Ok);
    let (cold, ..) = Scripted::new("cold", Behaviour::Ok);
    let router = Router::builder()
        .tier("hot", hot)
        .tier("warm", warm)
        .tier("cold", cold)
        .route_prefix("text.", "warm")
        .route_prefix("text.heavy.", "cold")
        .route("text.upper", "hot")
        .default_tier("warm")
        .build()
        .unwrap();
    for (method, tier) in [
        ("text.upper", "hot"),
        ("text.heavy.summarize", "cold"),
        ("text.lower", "warm"),
        ("anything", "warm"),
    ] {
        assert_eq!(
            router
                .call(method, json!({}), options())
                .await
                .unwrap()
                .tier,
            tier,
            "{method}"
        );
    }
    assert!(
        Router::builder()
            .tier("a", Scripted::new("a", Behaviour::Ok).0)
            .route("m", "nope")
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn falls_back_in_order_and_records_every_attempt() {
    let (hot, ..) = Scripted::new("hot", Behaviour::Crash);
    let (warm, ..) = Scripted::new("warm", Behaviour::Overloaded);
    let (cold, ..) = Scripted::new("cold", Behaviour::Ok);
    let router = Router::builder()
        .tier("hot", hot)
        .tier("warm", warm)
        .tier("cold", cold)
        .build()
        .unwrap();
    let routed = router.call("m", json!({}), options()).await.unwrap();
    assert_eq!(routed.tier, "cold");
    assert_eq!(routed.attempts.len(), 2);
    assert!(
        matches!(&routed.attempts[0].outcome, Outcome::Failed { kind, .. } if kind == "crashed")
    );
    assert!(
        matches!(&routed.attempts[1].outcome, Outcome::Skipped { reason: SkipReason::Unavailable { kind, .. } } if kind == "overloaded")
    );
    let stats = router.stats();
    assert_eq!(
        (
            stats[0].fallbacks_out,
            stats[2].fallbacks_in,
            stats[1].skips
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn all_tiers_failed_carries_every_attempt_and_reads_well() {
    let (hot, ..) = Scripted::new("hot", Behaviour::Crash);
    let (warm, ..) = Scripted::new("warm", Behaviour::Overloaded);
    let (cold, ..) = Scripted::new("cold", Behaviour::Crash);
    let router = Router::builder()
        .tier("hot", hot)
        .tier("warm", warm)
        .tier("cold", cold)
        .build()
        .unwrap();
    let error = router.call("m", json!({}), options()).await.unwrap_err();
    let RouteError::AllTiersFailed { method, attempts } = &error else {
        panic!("{error}")
    };
    assert_eq!((method.as_str(), attempts.len()), ("m", 3));
    let text = error.to_string();
    assert!(
        text.starts_with("all tiers failed for \"m\": hot → warm → cold; hot: crashed"),
        "{text}"
    );
    assert!(text.contains("warm: skipped (overloaded)"), "{text}");
    let json = error.to_json();
    assert_eq!(json["kind"], "all_tiers_failed");
    assert_eq!(json["attempts"][0]["tier"], "hot");
    assert_eq!(json["attempts"][0]["outcome"], "failed");
    assert_eq!(
        json["attempts"][1]["reason"]["unavailable"]["kind"],
        "overloaded"
    );
    assert!(json["attempts"][2]["elapsed_ms"].is_number());
}

#[tokio::test]
async fn caller_errors_do_not_fall_back() {
    let (hot, _, hot_calls) = Scripted::new("hot", Behaviour::BadParams);
    let (cold, _, cold_calls) = Scripted::new("cold", Behaviour::Ok);
    let router = Router::builder()
        .tier("hot", hot)
        .tier("cold", cold)
        .build()
        .unwrap();
    match router.call("m", json!({}), options()).await {
        Err(RouteError::Rejected { tier, error, .. }) => {
            assert_eq!(tier, "hot");
            assert_eq!(error.kind(), "bad_params");
            assert!(matches!(
                error.downcast_ref::<PoolError>(),
                Some(PoolError::Call { .. })
            ));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (
            hot_calls.load(Ordering::SeqCst),
            cold_calls.load(Ordering::SeqCst)
        ),
        (1, 0)
    );
    assert_eq!(router.stats()[0].breaker, BreakerState::Closed);
}

#[tokio::test]
async fn a_method_no_tier_offers_is_refused_without_trying_any() {
    let (hot, _, hot_calls) = Scripted::new("hot", Behaviour::Ok);
    let (cold, _, cold_calls) = Scripted::new("cold", Behaviour::Ok);
    let router = Router::builder()
        .tier("hot", hot.offering(vec!["echo"]))
        .tier("cold", cold.offering(vec!["fib"]))
        .route("fib", "hot")
        .build()
        .unwrap();
    assert!(matches!(
        router.call("nope", json!({}), options()).await,
        Err(RouteError::UnknownMethod { .. })
    ));
    assert_eq!(
        hot_calls.load(Ordering::SeqCst) + cold_calls.load(Ordering::SeqCst),
        0
    );
    // `fib` is routed to hot, which does not offer it: cold serves it directly.
    assert_eq!(
        router.call("fib", json!({}), options()).await.unwrap().tier,
        "cold"
    );
    assert_eq!(router.chain("fib"), ["cold"]);
}

#[tokio::test(start_paused = true)]
async fn one_deadline_bounds_the_whole_chain() {
    let (hot, ..) = Scripted::new("hot", Behaviour::Hang);
    let (warm, ..) = Scripted::new("warm", Behaviour::Hang);
    let router = Router::builder()
        .tier("hot", hot)
        .tier("warm", warm)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let error = router
        .call(
            "m",
            json!({}),
            options().timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(100),
        "not 100 ms per tier"
    );
    match &error {
        RouteError::DeadlineExceeded { attempts, .. } => {
            assert_eq!(attempts.len(), 1);
            assert!(matches!(attempts[0].outcome, Outcome::TimedOut { .. }));
        }
        other => panic!("{other}"),
    }
    assert!(
        error.to_string().contains("hot: timed out after 100ms"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_half_opens_and_closes() {
    let (hot, hot_behaviour, hot_calls) = Scripted::new("hot", Behaviour::Crash);
    let (cold, ..) = Scripted::new("cold", Behaviour::Ok);
    let config = BreakerConfig::default()
        .consecutive_failures(3)
        .base_cooldown(Duration::from_secs(1));
    let router = Router::builder()
        .tier("hot", hot)
        .tier("cold", cold)
        .breaker(config)
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            router.call("m", json!({}), options()).await.unwrap().tier,
            "cold"
        );
    }
    assert_eq!(router.stats()[0].breaker, BreakerState::Open);
    let routed = router.call("m", json!({}), options()).await.unwrap();
    assert!(matches!(
        routed.attempts[0].outcome,
        Outcome::Skipped {
            reason: SkipReason::BreakerOpen
        }
    ));
    assert_eq!(hot_calls.load(Ordering::SeqCst), 3, "skipped while open");
    // After the cooldown, one probe; it fails: open again for twice as long.
    tokio::time::advance(Duration::from_millis(1001)).await;
    router.call("m", json!({}), options()).await.unwrap();
    assert_eq!(hot_calls.load(Ordering::SeqCst), 4);
    assert_eq!(router.stats()[0].breaker, BreakerState::Open);
    tokio::time::advance(Duration::from_millis(1500)).await;
    router.call("m", json!({}), options()).await.unwrap();
    assert_eq!(
        hot_calls.load(Ordering::SeqCst),
        4,
        "the second cooldown is longer (2 s)"
    );
    // Healthy again: the probe succeeds and closes it.
    *hot_behaviour.lock() = Behaviour::Ok;
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_eq!(
        router.call("m", json!({}), options()).await.unwrap().tier,
        "hot"
    );
    let stats = router.stats();
    assert_eq!(stats[0].breaker, BreakerState::Closed);
    assert!(
        stats[0].breaker_transitions >= 5,
        "{}",
        stats[0].breaker_transitions
    );
}

#[tokio::test]
async fn the_last_usable_tier_is_never_opened() {
    let (only, _, calls) = Scripted::new("only", Behaviour::Crash);
    let router = Router::builder()
        .tier("only", only)
        .breaker(BreakerConfig::default().consecutive_failures(2))
        .build()
        .unwrap();
    for _ in 0..10 {
        assert!(matches!(
            router.call("m", json!({}), options()).await,
            Err(RouteError::AllTiersFailed { .. })
        ));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10, "never skipped");
    assert_eq!(router.stats()[0].breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_limits_fallbacks() {
    let (hot, ..) = Scripted::new("hot", Behaviour::Crash);
    let (cold, _, cold_calls) = Scripted::new("cold", Behaviour::Ok);
    let router = Router::builder()
        .tier("hot", hot)
        .tier("cold", cold)
        .breaker(
            BreakerConfig::default()
                .consecutive_failures(u32::MAX)
                .min_calls(u32::MAX),
        )
        .retry_budget(RetryBudget::default().ratio(0.2).min_per_second(0.0))
        .build()
        .unwrap();
    let mut exhausted = 0;
    for _ in 0..100 {
        if let Err(RouteError::AllTiersFailed { attempts, .. }) =
            router.call("m", json!({}), options()).await
        {
            assert!(matches!(
                attempts.last().unwrap().outcome,
                Outcome::Skipped {
                    reason: SkipReason::RetryBudgetExhausted
                }
            ));
            exhausted += 1;
        }
    }
    let fallbacks = cold_calls.load(Ordering::SeqCst);
    assert_eq!(fallbacks + exhausted, 100);
    assert!(
        (15..=25).contains(&fallbacks),
        "about 20 % of calls fell back: {fallbacks}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_are_readable_during_concurrent_calls() {
    let (hot, ..) = Scripted::new("hot", Behaviour::Ok);
    let router = Router::builder().tier("hot", hot).build().unwrap();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move {
                for _ in 0..5_000 {
                    router
                        .call("m", json!({}), CallOptions::default())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut last = 0;
    while !callers.iter().all(|c| c.is_finished()) {
        let calls = router.stats()[0].calls;
        assert!(calls >= last, "monotonic while running");
        last = calls;
        tokio::task::yield_now().await;
    }
    for c in callers {
        c.await.unwrap();
    }
    let stats = &router.stats()[0];
    assert_eq!(
        (stats.calls, stats.successes, stats.latency.count),
        (20_000, 20_000, 20_000)
    );
}

/// A tier that takes `delay` and then fails with a crash, or hangs.
struct Slow {
    delay: Duration,
    hang: bool,
}

impl Tier for Slow {
    type Error = PoolError;

    fn call(
        &self,
        _request: Request,
    ) -> impl std::future::Future<Output = Result<Response, PoolError>> + Send + '_ {
        let (delay, hang) = (self.delay, self.hang);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if hang {
                std::future::pending::<()>().await;
            }
            Err(PoolError::Crashed {
                worker: WorkerId(1),
                message: "slow crash".into(),
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_fallback_tier_running_out_of_the_leftover_deadline_is_not_blamed() {
    // hot fails after 900 ms of a 1 s chain; warm then gets 100 ms and hangs through them.
    let router = Router::builder()
        .tier(
            "hot",
            Slow {
                delay: Duration::from_millis(900),
                hang: false,
            },
        )
        .tier(
            "warm",
            Slow {
                delay: Duration::ZERO,
                hang: true,
            },
        )
        .tier(
            "cold",
            Slow {
                delay: Duration::ZERO,
                hang: true,
            },
        )
        .breaker(BreakerConfig::default().consecutive_failures(1))
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let error = router.call("m", json!({}), options()).await.unwrap_err();
    assert!(
        matches!(error, RouteError::DeadlineExceeded { .. }),
        "{error}"
    );
    let stats = router.stats();
    assert_eq!(
        stats[0].breaker,
        BreakerState::Open,
        "hot failed on its own"
    );
    assert_eq!(
        stats[1].breaker,
        BreakerState::Closed,
        "warm had 100 ms left: not blamed"
    );
    // Next time hot is skipped and warm gets the whole second: now a hang is its own fault.
    router.call("m", json!({}), options()).await.unwrap_err();
    assert_eq!(router.stats()[1].breaker, BreakerState::Open);
}

/// A tier whose first call waits at a barrier shared with another tier's first call, then
/// crashes: failures of two tiers land at the same moment. Later calls crash at once.
struct Together(Arc<tokio::sync::Barrier>, AtomicU32);

impl Tier for Together {
    type Error = PoolError;

    fn call(
        &self,
        _request: Request,
    ) -> impl std::future::Future<Output = Result<Response, PoolError>> + Send + '_ {
        let barrier = Arc::clone(&self.0);
        let first = self.1.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            if first {
                barrier.wait().await;
            }
            Err(PoolError::Crashed {
                worker: WorkerId(2),
                message: "crash".into(),
            })
        })
    }
}

/// The decision to open is taken under one router-wide lock, so this holds by construction;
/// the race it guards against is a few instructions wide, and this stress test (300 rounds)
/// rarely hits it without the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tiers_failing_at_once_never_both_open() {
    for round in 0..300 {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        // `x` goes a → b, `y` goes b → a: each call's first failure is in a different tier.
        let router = Router::builder()
            .tier("a", Together(Arc::clone(&barrier), AtomicU32::new(0)))
            .tier("b", Together(Arc::clone(&barrier), AtomicU32::new(0)))
            .route_with_fallback("y", "b", ["a"])
            .breaker(BreakerConfig::default().consecutive_failures(1))
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let router = Arc::new(router);
        let x = tokio::spawn({
            let router = Arc::clone(&router);
            async move { router.call("x", json!({}), options()).await }
        });
        let y = tokio::spawn({
            let router = Arc::clone(&router);
            async move { router.call("y", json!({}), options()).await }
        });
        let _ = x.await.unwrap();
        let _ = y.await.unwrap();
        let open = router
            .stats()
            .iter()
            .filter(|t| t.breaker == BreakerState::Open)
            .count();
        assert!(open <= 1, "round {round}: both tiers opened");
    }
}

#[tokio::test]
async fn a_call_given_up_mid_attempt_counts_as_a_call_neither_served_nor_failed() {
    let (hot, behaviour, tier_calls) = Scripted::new("hot", Behaviour::Hang);
    let router = Router::builder()
        .tier("hot", hot)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // The caller gives up long before the chain's deadline: the call future is dropped.
    let call = router.call("m", json!({}), options());
    let given_up = tokio::time::timeout(Duration::from_millis(20), call).await;
    assert!(given_up.is_err(), "the tier hangs: {given_up:?}");
    assert_eq!(tier_calls.load(Ordering::SeqCst), 1);
    let stats = &router.stats()[0];
    assert_eq!(
        (
            stats.calls,
            stats.successes,
            stats.failures.values().sum::<u64>()
        ),
        (1, 0, 0),
        "a given-up call is a call, neither served nor failed: {stats:?}"
    );
    // Served calls add to the same count.
    *behaviour.lock() = Behaviour::Ok;
    router.call("m", json!({}), options()).await.unwrap();
    assert_eq!(
        (router.stats()[0].calls, router.stats()[0].successes),
        (2, 1)
    );
}

/// Opens `hot`'s breaker, lets the cooldown pass, gives up on the half-open probe mid-call,
/// and checks that the next call may probe `hot` again (and is served by it).
async fn given_up_probe_is_returned(router: &Router, hot: &parking_lot::Mutex<Behaviour>) {
    for _ in 0..3 {
        assert_eq!(
            router.call("m", json!({}), options()).await.unwrap().tier,
            "cold"
        );
    }
    let hot_stats = |router: &Router| router.stats().into_iter().find(|t| t.name == "hot");
    assert_eq!(hot_stats(router).unwrap().breaker, BreakerState::Open);
    tokio::time::advance(Duration::from_millis(1001)).await;
    *hot.lock() = Behaviour::Hang;
    let probe = router.call("m", json!({}), options());
    assert!(
        tokio::time::timeout(Duration::from_millis(20), probe)
            .await
            .is_err(),
        "the probe hangs"
    );
    assert_eq!(hot_stats(router).unwrap().breaker, BreakerState::HalfOpen);
    *hot.lock() = Behaviour::Ok;
    assert_eq!(
        router.call("m", json!({}), options()).await.unwrap().tier,
        "hot",
        "the given-up probe was returned: the next call probes again"
    );
    assert_eq!(hot_stats(router).unwrap().breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_given_up_mid_call_lets_the_next_call_probe_first_tier_or_later() {
    let config = || {
        BreakerConfig::default()
            .consecutive_failures(3)
            .base_cooldown(Duration::from_secs(1))
    };
    // The probed tier first in the chain, then second, after a tier that is always
    // unavailable (skipped, never counted against its breaker).
    for front in [false, true] {
        let mut builder = Router::builder();
        if front {
            builder = builder.tier("front", Scripted::new("front", Behaviour::Overloaded).0);
        }
        let (hot, hot_behaviour, _) = Scripted::new("hot", Behaviour::Crash);
        let router = builder
            .tier("hot", hot)
            .tier("cold", Scripted::new("cold", Behaviour::Ok).0)
            .breaker(config())
            .build()
            .unwrap();
        given_up_probe_is_returned(&router, &hot_behaviour).await;
    }
}
