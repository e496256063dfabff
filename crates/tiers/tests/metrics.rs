//! The pools and the router report through the `metrics` facade: checked with metrics-util's
//! debugging recorder, against the stats they keep themselves. One test per binary: it
//! installs the process-wide recorder.

use std::time::Duration;

use flowbalancer_pool::{ErrorKind, Pool, ToolSpec, WorkerError, in_process};
use flowbalancer_tiers::{CallOptions, RouteError, Router};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;

fn tool(name: &str) -> ToolSpec {
    ToolSpec::new(name, "", json!({"type": "object"}))
}

type Snapshot = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The value of the metric `name` whose labels include every pair of `labels`.
fn value<'a>(
    snapshot: &'a Snapshot,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    snapshot
        .iter()
        .find(|(key, ..)| {
            let key = key.key();
            key.name() == name
                && labels.iter().all(|(k, v)| {
                    key.labels()
                        .any(|label| label.key() == *k && label.value() == *v)
                })
        })
        .map(|(.., value)| value)
}

fn counter(snapshotter: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(snapshotter, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_and_router_report_calls_failures_fallbacks_gauges_and_latency() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let hot = Pool::builder(
        in_process(|request| async move {
            match request.method.as_ref() {
                "echo" => Ok(request.payload),
                "flaky" => Err(WorkerError::new(ErrorKind::Crashed, "died")),
                _ => Err(WorkerError::new(ErrorKind::BadParams, "no")),
            }
        })
        .with_tools(vec![tool("echo"), tool("flaky"), tool("picky")]),
    )
    .name("hot")
    .size(1)
    .health_interval(None)
    .build()
    .await
    .expect("hot");
    let cold = Pool::builder(
        in_process(|request| async move { Ok(request.payload) }).with_tools(vec![tool("flaky")]),
    )
    .name("cold")
    .size(1)
    .health_interval(None)
    .build()
    .await
    .expect("cold");
    let router = Router::builder()
        .tier("hot", hot.clone())
        .tier("cold", cold.clone())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("router");

    for i in 0..3 {
        let routed = router
            .call("echo", json!(i), CallOptions::default())
            .await
            .expect("echo");
        assert_eq!(routed.tier, "hot");
    }
    let routed = router
        .call("flaky", json!({}), CallOptions::default())
        .await
        .expect("fell back");
    assert_eq!(routed.tier, "cold");
    let rejected = router
        .call("picky", json!({}), CallOptions::default())
        .await;
    assert!(
        matches!(rejected, Err(RouteError::Rejected { .. })),
        "{rejected:?}"
    );
    // Let the crashed worker's replacement start.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hot.stats().workers.ready + hot.stats().workers.busy < 1 {
        assert!(std::time::Instant::now() < deadline, "{:?}", hot.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // One snapshot: the debugging recorder hands counters and histograms over (and resets
    // them) on each snapshot.
    let snapshot = snapshotter.snapshot().into_vec();
    // The pools' counters match their own stats.
    for (pool, stats) in [("hot", hot.stats()), ("cold", cold.stats())] {
        let labels = [("pool", pool)];
        let count = |name: &str| counter(&snapshot, name, &labels);
        assert_eq!(
            count("flowbalancer_pool_calls_total"),
            stats.calls,
            "{pool}"
        );
        assert_eq!(
            count("flowbalancer_pool_successes_total"),
            stats.successes,
            "{pool}"
        );
        assert_eq!(
            count("flowbalancer_pool_workers_started_total"),
            stats.started,
            "{pool}"
        );
        assert_eq!(
            count("flowbalancer_pool_worker_replacements_total"),
            stats.replacements,
            "{pool}"
        );
        for (kind, n) in &stats.failures {
            assert_eq!(
                counter(
                    &snapshot,
                    "flowbalancer_pool_failures_total",
                    &[("pool", pool), ("kind", kind)]
                ),
                *n,
                "{pool} {kind}"
            );
        }
        assert_eq!(
            value(&snapshot, "flowbalancer_pool_in_flight", &labels),
            Some(&DebugValue::Gauge(0.0.into())),
            "{pool}"
        );
        assert_eq!(
            value(&snapshot, "flowbalancer_pool_queue_depth", &labels),
            Some(&DebugValue::Gauge(0.0.into())),
            "{pool}"
        );
        match value(
            &snapshot,
            "flowbalancer_pool_call_duration_seconds",
            &labels,
        ) {
            Some(DebugValue::Histogram(samples)) => {
                assert_eq!(samples.len() as u64, stats.successes, "{pool}")
            }
            other => panic!("{pool} latency: {other:?}"),
        }
    }
    let hot_stats = hot.stats();
    assert_eq!(hot_stats.calls, 5);
    assert_eq!(hot_stats.failures.get("crashed"), Some(&1));
    assert_eq!(hot_stats.failures.get("bad_params"), Some(&1));
    // Worker transitions: two workers of hot entered ready (the first and its replacement).
    assert!(
        counter(
            &snapshot,
            "flowbalancer_pool_worker_transitions_total",
            &[("pool", "hot"), ("to", "terminating")]
        ) >= 1
    );
    assert!(
        counter(
            &snapshot,
            "flowbalancer_pool_worker_transitions_total",
            &[("pool", "hot"), ("to", "ready")]
        ) >= 2
    );

    // The router's counters match its stats.
    for stats in router.stats() {
        let labels = [("tier", stats.name.as_str())];
        let count = |name: &str| counter(&snapshot, name, &labels);
        assert_eq!(count("flowbalancer_tier_calls_total"), stats.calls);
        assert_eq!(count("flowbalancer_tier_successes_total"), stats.successes);
        assert_eq!(
            count("flowbalancer_tier_fallbacks_in_total"),
            stats.fallbacks_in
        );
        assert_eq!(
            count("flowbalancer_tier_fallbacks_out_total"),
            stats.fallbacks_out
        );
        for (kind, n) in &stats.failures {
            assert_eq!(
                counter(
                    &snapshot,
                    "flowbalancer_tier_failures_total",
                    &[("tier", &stats.name), ("kind", kind)]
                ),
                *n
            );
        }
        match value(
            &snapshot,
            "flowbalancer_tier_call_duration_seconds",
            &labels,
        ) {
            Some(DebugValue::Histogram(samples)) => {
                assert_eq!(samples.len() as u64, stats.successes)
            }
            other => panic!("{} latency: {other:?}", stats.name),
        }
    }
    let tiers = router.stats();
    assert_eq!((tiers[0].calls, tiers[0].fallbacks_out), (5, 1));
    assert_eq!((tiers[1].calls, tiers[1].fallbacks_in), (1, 1));
    assert_eq!(tiers[0].failures.get("crashed"), Some(&1));
    hot.shutdown().await;
    cold.shutdown().await;
}
