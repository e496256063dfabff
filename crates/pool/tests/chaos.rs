//! Chaos: 10,000 calls over 8 real Python workers, mixing calls that hang past their deadline,
//! calls cancelled at the worker, callers that walk away, and workers that kill themselves
//! with SIGKILL. Every call is answered exactly once with its own answer; afterwards no
//! worker is wedged (plain calls are served promptly) and, after shutdown, no process or
//! zombie is left.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowbalancer_pool::{Pool, PoolError, ProcessFactory, ProcessSpec, Request};
use serde_json::json;
use tokio::sync::Semaphore;

const CALLS: usize = 10_000;
const CONCURRENCY: usize = 32;

/// What one call of the mix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Sleeps in C past its 100 ms deadline: cancelled, not interruptible, the worker is
    /// killed after the grace.
    Hang,
    /// A busy Python loop past its 50 ms deadline: the cancel interrupts it.
    Spin,
    /// The caller walks away after 50 ms from an async tool that never ends.
    Walkaway,
    /// The worker kills itself with SIGKILL.
    Suicide,
    /// A plain echo that must come back with its own text.
    Echo,
}

fn kind_of(i: usize) -> Kind {
    match i % 100 {
        0 | 1 => Kind::Hang,
        2 | 3 => Kind::Spin,
        4 | 5 => Kind::Walkaway,
        6 => Kind::Suicide,
        _ => Kind::Echo,
    }
}

fn marked_processes(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    found
}

/// Zombie children of this test process.
fn our_zombies() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            zombies.push(pid);
        }
    }
    zombies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_through_hangs_cancels_and_kills() {
    let marker = format!("chaos-{}", std::process::id());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../workers/python/examples/basic_worker.py");
    let spec = ProcessSpec::new(
        "python3",
        [
            script.display().to_string(),
            "--faults".into(),
            format!("--marker={marker}"),
        ],
    );
    let pool = Pool::builder(ProcessFactory::new(spec))
        .name("chaos")
        .size(8)
        .cancel_grace(Duration::from_millis(300))
        .call_timeout(Duration::from_secs(10))
        .queue_capacity(CALLS)
        .queue_timeout(Duration::from_secs(60))
        .restart_backoff(Duration::from_millis(10))
        .restart_backoff_max(Duration::from_millis(100))
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let permit = Arc::clone(&limit).acquire_owned().await.unwrap();
        let pool = pool.clone();
        calls.spawn(async move {
            let _permit = permit;
            let kind = kind_of(i);
            let after = |ms| Instant::now() + Duration::from_millis(ms);
            let outcome = match kind {
                Kind::Hang => pool
                    .call(Request::new("hang", json!({})).with_deadline(after(100)))
                    .await
                    .map(|r| r.payload.to_json()),
                Kind::Spin => pool
                    .call(Request::new("spin", json!({})).with_deadline(after(50)))
                    .await
                    .map(|r| r.payload.to_json()),
                Kind::Walkaway => {
                    let call = pool.call(Request::new("async_hang", json!({})));
                    match tokio::time::timeout(Duration::from_millis(50), call).await {
                        Ok(result) => result.map(|r| r.payload.to_json()),
                        Err(_) => Err(PoolError::DeadlineExceeded),
                    }
                }
                Kind::Suicide => pool
                    .call(Request::new("suicide", json!({})))
                    .await
                    .map(|r| r.payload.to_json()),
                Kind::Echo => pool
                    .call(Request::new("echo", json!({ "text": format!("call {i}") })))
                    .await
                    .map(|r| r.payload.to_json()),
            };
            (i, kind, outcome)
        });
    }
    let mut answered = vec![0u8; CALLS];
    let mut echo_failures = Vec::new();
    while let Some(done) = calls.join_next().await {
        let (i, kind, outcome) = done.expect("no call task panicked");
        answered[i] += 1;
        match (kind, outcome) {
            (Kind::Echo, Ok(value)) => {
                assert_eq!(
                    value,
                    json!({ "text": format!("call {i}") }),
                    "its own answer"
                )
            }
            (Kind::Echo, Err(error)) => echo_failures.push((i, error)),
            (Kind::Hang | Kind::Spin | Kind::Walkaway, Err(PoolError::DeadlineExceeded)) => {}
            (Kind::Suicide, Err(PoolError::Crashed { .. })) => {}
            (kind, other) => panic!("call {i} ({kind:?}): unexpected {other:?}"),
        }
    }
    assert!(
        answered.iter().all(|&n| n == 1),
        "every call answered exactly once"
    );
    // A plain call racing a worker's SIGKILL may land on it just before it dies: it fails as
    // `Crashed`. Nothing else may fail.
    assert!(
        echo_failures
            .iter()
            .all(|(_, e)| matches!(e, PoolError::Crashed { .. })),
        "{echo_failures:?}"
    );
    assert!(echo_failures.len() < CALLS / 100, "{echo_failures:?}");

    // No worker is wedged: plain calls are served promptly.
    let mut latencies = Vec::new();
    for i in 0..200 {
        let started = Instant::now();
        pool.call(Request::new("echo", json!({ "text": i.to_string() })))
            .await
            .expect("a plain call after the chaos");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        p99 < Duration::from_millis(50),
        "p99 of plain calls {p99:?}"
    );
    // Calls whose deadline passed while they queued never reached a worker; the others were
    // cancelled at their worker. Every SIGKILLed worker was replaced.
    let stats = pool.stats();
    assert!(stats.cancels > 0, "{stats:?}");
    assert!(stats.replacements >= (CALLS / 100) as u64, "{stats:?}");

    pool.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = marked_processes(&marker);
        let zombies = our_zombies();
        if left.is_empty() && zombies.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {left:?}, zombies: {zombies:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
