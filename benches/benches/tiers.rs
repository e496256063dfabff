//! The router's own cost: routing and bookkeeping per call over a no-op tier, against calling
//! the same tier directly, and the cost of one fallback (a failing tier, then the no-op one);
//! then the same overhead in interleaved rounds (written to the bench report).

use criterion::{Criterion, Throughput, criterion_group};
use flowbalancer_pool::{Payload, PoolError, Request, Response, WorkerId};
use flowbalancer_tiers::{BreakerConfig, Router, Tier};
use serde_json::json;

struct NoOp;
impl Tier for NoOp {
    type Error = PoolError;

    fn call(
        &self,
        request: Request,
    ) -> impl std::future::Future<Output = Result<Response, PoolError>> + Send + '_ {
        // A tier's future need not be boxed: the router boxes it once.
        std::future::ready(Ok(Response {
            payload: request.payload,
            worker: WorkerId(0),
            attempts: 1,
            rebound: false,
        }))
    }
}

struct Failing;
impl Tier for Failing {
    type Error = PoolError;

    fn call(
        &self,
        _request: Request,
    ) -> impl std::future::Future<Output = Result<Response, PoolError>> + Send + '_ {
        Box::pin(async move {
            Err(PoolError::Crashed {
                worker: WorkerId(1),
                message: "down".into(),
            })
        })
    }
}

/// A single-threaded runtime, a router whose one tier is the no-op tier, and a call's params:
/// what the criterion bench and the interleaved rounds both measure with.
fn no_op_setup() -> (tokio::runtime::Runtime, Router, Payload) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let router = Router::builder()
        .tier("hot", NoOp)
        .route("echo", "hot")
        .build()
        .expect("router");
    (rt, router, Payload::json(json!({"text": "hi"})))
}

fn bench(c: &mut Criterion) {
    let (rt, router, params) = no_op_setup();
    let direct = NoOp;
    let fallback = Router::builder()
        .tier("hot", Failing)
        .tier("cold", NoOp)
        // A breaker that never opens: every call pays for the failed attempt.
        .breaker(
            BreakerConfig::default()
                .consecutive_failures(u32::MAX)
                .min_calls(u32::MAX),
        )
        .build()
        .expect("router");

    let mut group = c.benchmark_group("tiers_overhead");
    group.throughput(Throughput::Elements(1));
    group.bench_function("direct no-op tier call", |b| {
        b.iter(|| {
            rt.block_on(direct.call(Request::new("echo", params.clone())))
                .expect("ok")
        })
    });
    group.bench_function("flowbalancer router.call, no-op tier", |b| {
        b.iter(|| {
            rt.block_on(router.call_request(Request::new("echo", params.clone()), None))
                .expect("ok")
        })
    });
    group.bench_function("router.call with one fallback", |b| {
        b.iter(|| {
            rt.block_on(fallback.call_request(Request::new("echo", params.clone()), None))
                .expect("ok")
        })
    });
    group.finish();
}

/// The tower `Service` path (`poll_ready` then `call`, which boxes the call's future) against
/// calling the same pool, and the same router, directly.
fn tower(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let params = Payload::json(json!({"text": "hi"}));
    let pool = rt
        .block_on(
            flowbalancer_pool::Pool::builder(flowbalancer_pool::in_process(|r| async move {
                Ok(r.payload)
            }))
            .size(1)
            .health_interval(None)
            .build(),
        )
        .expect("pool");
    let router = Router::builder()
        .tier("hot", pool.clone())
        .build()
        .expect("router");
    let mut group = c.benchmark_group("tower_service_overhead");
    group.throughput(Throughput::Elements(1));
    group.bench_function("direct pool.call", |b| {
        b.iter(|| {
            rt.block_on(pool.call(Request::new("echo", params.clone())))
                .expect("ok")
        })
    });
    group.bench_function("pool as tower Service", |b| {
        let mut service = pool.clone();
        b.iter(|| {
            rt.block_on(ready_then_call(&mut service, &params))
                .expect("ok")
        })
    });
    group.bench_function("direct router.call_request", |b| {
        b.iter(|| {
            rt.block_on(router.call_request(Request::new("echo", params.clone()), None))
                .expect("ok")
        })
    });
    group.bench_function("router as tower Service", |b| {
        let mut service = router.clone();
        b.iter(|| {
            rt.block_on(ready_then_call(&mut service, &params))
                .expect("ok")
        })
    });
    group.finish();
}

/// One call the tower way: wait for `poll_ready`, then `call`.
async fn ready_then_call<S: tower_service::Service<Request>>(
    service: &mut S,
    params: &Payload,
) -> Result<S::Response, S::Error> {
    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(Request::new("echo", params.clone())).await
}

/// Routing's overhead in interleaved rounds: each round times a turn of direct no-op tier calls
/// and a turn of `router.call`s to the same tier back to back (alternating which goes first),
/// so both see the same machine state; the report gives the median of the per-round
/// differences with their spread. Criterion's two means are taken seconds apart, and this
/// machine's phases move them by more than the goal's margin.
fn routing_rounds() {
    use flowbalancer_benches::{harness, interleaved, median_and_spread};
    use std::time::{Duration, Instant};

    if !harness::selected("tiers_rounds", "rounds") {
        return;
    }
    let (rounds, calls) = if harness::quick() {
        (5, 200_000)
    } else {
        (15, 1_000_000)
    };
    let (rt, router, params) = no_op_setup();
    let direct = NoOp;
    let per_call = |elapsed: Duration| elapsed.as_nanos() as f64 / f64::from(calls);
    let time_direct = || {
        let start = Instant::now();
        for _ in 0..calls {
            let response = rt.block_on(direct.call(Request::new("echo", params.clone())));
            std::hint::black_box(response.expect("ok"));
        }
        per_call(start.elapsed())
    };
    let time_routed = || {
        let start = Instant::now();
        for _ in 0..calls {
            let routed =
                rt.block_on(router.call_request(Request::new("echo", params.clone()), None));
            std::hint::black_box(routed.expect("ok"));
        }
        per_call(start.elapsed())
    };
    let (mut overheads, mut directs, mut routeds) = (Vec::new(), Vec::new(), Vec::new());
    for (direct_ns, routed_ns) in interleaved(rounds, time_direct, time_routed) {
        overheads.push(routed_ns - direct_ns);
        directs.push(direct_ns);
        routeds.push(routed_ns);
    }
    let (overhead, low, high) = median_and_spread(&mut overheads);
    let (direct_ns, ..) = median_and_spread(&mut directs);
    let (routed_ns, ..) = median_and_spread(&mut routeds);
    harness::report(
        "tiers-rounds.md",
        &format!(
            "## Routing overhead in interleaved rounds\n\n{rounds} rounds of {calls} calls per \
             turn (direct no-op tier calls and `router.call`s to the same tier, back to back, \
             alternating which goes first). Overhead = routed − direct, per call.\n\n\
             | median direct | median routed | median overhead | spread (min – max) | goal |\n\
             |---:|---:|---:|---|---|\n\
             | {direct_ns:.0} ns | {routed_ns:.0} ns | {overhead:.0} ns | {low:.0} – {high:.0} ns | < 200 ns |\n\n"
        ),
    );
}

criterion_group!(benches, bench, tower);

fn main() {
    benches();
    routing_rounds();
    Criterion::default().configure_from_args().final_summary();
}
