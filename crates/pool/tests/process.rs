//! Real worker processes (Python and the Rust example binary): the happy path and every kind
//! of worker death.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flowbalancer_pool::{
    ErrorKind, Pool, PoolError, ProcessFactory, ProcessSpec, ProcessWorker, Request,
};
use serde_json::{Value, json};

fn python_spec(marker: &str) -> ProcessSpec {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../workers/python/examples/basic_worker.py");
    assert!(script.exists(), "{} is missing", script.display());
    assert!(
        std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "these tests need python3 on PATH"
    );
    ProcessSpec::new(
        "python3",
        [
            script.display().to_string(),
            "--faults".into(),
            format!("--marker={}", unique(marker)),
        ],
    )
}

fn rust_spec(marker: &str) -> ProcessSpec {
    ProcessSpec::new(
        env!("CARGO_BIN_EXE_flowbalancer-example-worker"),
        [
            "--faults".to_string(),
            format!("--marker={}", unique(marker)),
        ],
    )
}

/// The pid of the worker that serves a `pid` call.
async fn pid_of(pool: &Pool<ProcessWorker>) -> u64 {
    pool.call(call("pid", json!({})))
        .await
        .unwrap()
        .payload
        .as_json()
        .unwrap()
        .as_u64()
        .unwrap()
}

async fn pool(spec: ProcessSpec, size: usize) -> Pool<ProcessWorker> {
    Pool::builder(ProcessFactory::new(spec))
        .name("proc")
        .size(size)
        .call_timeout(Duration::from_secs(3))
        .queue_timeout(Duration::from_secs(20))
        .health_interval(None)
        .restart_backoff(Duration::from_millis(20))
        .build()
        .await
        .unwrap()
}

fn call(method: &str, params: Value) -> Request {
    Request::new(method, params)
}

/// A marker no other process on the machine carries (test binaries' own command lines hold
/// test names, which can contain words like "hang").
fn unique(marker: &str) -> String {
    format!("fbtest-{marker}-{}", std::process::id())
}

/// Processes whose command line carries `marker` (live or zombie).
fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&unique(marker)) {
            let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            found.push((pid, state));
        }
    }
    found
}

/// After shutdown: no process of ours is left, running or zombie.
async fn assert_all_gone(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_with(marker);
        // A zombie's cmdline is empty, so also check our children's states.
        let zombies = our_zombie_children();
        if left.is_empty() && zombies.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {left:?}, zombies: {zombies:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn our_zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] == "Z" && fields[1].parse::<u32>() == Ok(me) {
            zombies.push(pid);
        }
    }
    zombies
}

fn kill9(pid: u64) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_python_and_rust() {
    for (spec, marker) in [
        (python_spec("happy-py"), "happy-py"),
        (rust_spec("happy-rs"), "happy-rs"),
    ] {
        let pool = pool(spec, 2).await;
        let tools: Vec<String> = pool.tools().into_iter().map(|t| t.name).collect();
        for expected in ["echo", "word_count", "sleep", "fib"] {
            assert!(tools.contains(&expected.to_string()), "{marker}: {tools:?}");
        }
        let echo = pool
            .call(call("echo", json!({"text": "héllo"})))
            .await
            .unwrap();
        assert_eq!(echo.payload.as_json().unwrap()["text"], "héllo");
        let words = pool
            .call(call("word_count", json!({"text": "a b  c"})))
            .await
            .unwrap();
        assert_eq!(words.payload.as_json().unwrap()["words"], 3);
        match pool.call(call("echo", json!({}))).await {
            Err(PoolError::Call { error, .. }) => assert_eq!(error.kind, ErrorKind::BadParams),
            other => panic!("{marker}: {other:?}"),
        }
        match pool.call(call("nope", json!({}))).await {
            Err(PoolError::Call { error, .. }) => assert_eq!(error.kind, ErrorKind::UnknownMethod),
            other => panic!("{marker}: {other:?}"),
        }
        assert!(pool.shutdown().await.is_clean());
        assert_all_gone(marker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_exceptions_become_handler_errors_with_a_traceback() {
    let pool = pool(python_spec("exc"), 1).await;
    match pool.call(call("explode", json!({}))).await {
        Err(PoolError::Call { error, .. }) => {
            assert_eq!(error.kind, ErrorKind::Handler);
            let data = error.data.unwrap();
            assert_eq!(data["exception"], "RuntimeError");
            assert!(data["traceback"].as_str().unwrap().contains("kaboom"));
        }
        other => panic!("{other:?}"),
    }
    let answer = pool
        .call(call("async_echo", json!({"text": "async"})))
        .await
        .unwrap();
    assert_eq!(answer.payload.as_json().unwrap(), &json!("async"));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_mid_call_fails_that_call_and_the_next_succeeds() {
    let pool = pool(python_spec("kill9"), 1).await;
    let pid = pid_of(&pool).await;
    let in_flight = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call(call("sleep", json!({"ms": 5000}))).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    kill9(pid);
    match in_flight.await.unwrap() {
        Err(PoolError::Crashed { message, .. }) => {
            assert!(message.contains("closed stdout"), "{message}")
        }
        other => panic!("expected Crashed, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failed at once, not after a timeout"
    );
    let new_pid = pid_of(&pool).await;
    assert_ne!(new_pid, pid);
    // And a worker that kills itself.
    assert!(matches!(
        pool.call(call("suicide", json!({}))).await,
        Err(PoolError::Crashed { .. })
    ));
    assert!(
        pool.call(call("echo", json!({"text": "still here"})))
            .await
            .is_ok()
    );
    assert_eq!(pool.stats().replacements, 2);
    pool.shutdown().await;
    assert_all_gone("kill9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_is_killed_and_replaced() {
    let pool = Pool::builder(ProcessFactory::new(python_spec("hang")))
        .size(1)
        .call_timeout(Duration::from_millis(500))
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let pid = pid_of(&pool).await;
    assert!(matches!(
        pool.call(call("hang", json!({}))).await,
        Err(PoolError::Timeout { .. })
    ));
    let new_pid = pid_of(&pool).await;
    assert_ne!(new_pid, pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the hung worker {pid} is still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.shutdown().await;
    assert_all_gone("hang").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_damage_is_worker_death() {
    for (spec, method, marker) in [
        (python_spec("garbage-py"), "garbage", "garbage-py"),
        (rust_spec("garbage-rs"), "garbage", "garbage-rs"),
        (rust_spec("huge-rs"), "huge_frame", "huge-rs"),
        (rust_spec("wrongid-rs"), "wrong_id", "wrongid-rs"),
    ] {
        let pool = pool(spec, 1).await;
        let started = Instant::now();
        match pool.call(call(method, json!({}))).await {
            Err(PoolError::ProtocolViolation { message, .. }) => {
                if method == "huge_frame" {
                    assert!(message.contains("4294967295"), "{message}");
                }
            }
            other => panic!("{marker}: expected a protocol violation, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{marker}: detected at once"
        );
        assert!(
            pool.call(call("echo", json!({"text": "after"})))
                .await
                .is_ok(),
            "{marker}: replaced"
        );
        pool.shutdown().await;
        assert_all_gone(marker).await;
    }
    // No 4 GiB allocation happened: our peak memory stayed small.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(peak_kb < 1024 * 1024, "peak RSS {peak_kb} kB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_print_does_not_corrupt_the_frames() {
    let pool = pool(python_spec("print"), 1).await;
    for _ in 0..3 {
        let answer = pool
            .call(call("stray_print", json!({"text": "hi"})))
            .await
            .unwrap();
        assert_eq!(answer.payload.as_json().unwrap(), &json!("hi"));
    }
    assert_eq!(pool.stats().replacements, 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_flood_does_not_stall_calls() {
    for spec in [python_spec("flood-py"), rust_spec("flood-rs")] {
        let pool = pool(spec, 1).await;
        let started = Instant::now();
        let answer = pool
            .call(call("stderr_flood", json!({"lines": 100_000})))
            .await
            .unwrap();
        assert_eq!(answer.payload.as_json().unwrap(), &json!(100_000));
        assert!(pool.call(call("echo", json!({"text": "x"}))).await.is_ok());
        assert!(started.elapsed() < Duration::from_secs(3));
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_run_together_on_one_rust_worker() {
    let pool = Pool::builder(ProcessFactory::new(rust_spec("pipe")))
        .size(1)
        .max_in_flight(8)
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(call("sleep", json!({"ms": 300}))).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "8 × 300 ms overlapped: {:?}",
        started.elapsed()
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_ping_real_workers() {
    let pool = Pool::builder(ProcessFactory::new(rust_spec("ping")))
        .size(2)
        .health_interval(Some(Duration::from_millis(100)))
        .build()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    for worker in pool.workers() {
        assert_eq!(worker.health, flowbalancer_pool::Health::Healthy);
    }
    assert!(!pool.stats().failures.contains_key("health_check"));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failures_are_typed() {
    let cases: [(ProcessSpec, &str); 3] = [
        (
            ProcessSpec::new("/nonexistent/worker", Vec::<String>::new()),
            "could not start",
        ),
        (ProcessSpec::new("sh", ["-c", "exit 7"]), "before its hello"),
        (
            ProcessSpec::new("sleep", ["10"]).hello_timeout(Duration::from_millis(300)),
            "no hello within",
        ),
    ];
    for (spec, expected) in cases {
        match Pool::builder(ProcessFactory::new(spec))
            .size(1)
            .build()
            .await
        {
            Err(PoolError::NoWorkers { last_error, .. }) => {
                assert!(last_error.contains(expected), "{last_error}")
            }
            other => panic!("expected NoWorkers, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_workers_with_random_kills_answer_every_call_exactly_once() {
    const CALLS: usize = 10_000;
    let marker = "chaos";
    let pool = Pool::builder(ProcessFactory::new(python_spec(marker)))
        .size(20)
        .call_timeout(Duration::from_secs(10))
        .queue_capacity(CALLS)
        .queue_timeout(Duration::from_secs(60))
        .restart_backoff(Duration::from_millis(10))
        // A kill every 40 ms makes most crashes "quick" (within a second of the start), and
        // the pool-wide restart backoff would climb to its 10 s default maximum: on a loaded
        // machine the pool then starves and the run takes many minutes. This test is about
        // every call being answered once, not about the backoff.
        .restart_backoff_max(Duration::from_millis(100))
        .health_interval(None)
        .build()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let killer = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut kills = 0;
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let pids: Vec<u32> = processes_with(marker)
                    .into_iter()
                    .filter(|(_, stat)| !stat.contains(") Z"))
                    .map(|(pid, _)| pid)
                    .collect();
                if !pids.is_empty() {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let victim = pids[(n >> 33) as usize % pids.len()];
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &victim.to_string()])
                        .status();
                    kills += 1;
                }
            }
            kills
        }
    });
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in (t..CALLS).step_by(64) {
                    let result = pool
                        .call(call("echo", json!({"text": i.to_string()})))
                        .await;
                    answers.push((i, result));
                }
                answers
            })
        })
        .collect();
    let mut seen = vec![0u8; CALLS];
    let (mut ok, mut crashed) = (0, 0);
    for task in tasks {
        for (i, result) in task.await.unwrap() {
            seen[i] += 1;
            match result {
                Ok(response) => {
                    assert_eq!(response.payload.as_json().unwrap()["text"], i.to_string());
                    ok += 1;
                }
                Err(PoolError::Crashed { .. }) => crashed += 1,
                Err(other) => panic!("call {i}: unexpected {other}"),
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let kills = killer.await.unwrap();
    assert!(
        seen.iter().all(|&n| n == 1),
        "every call answered exactly once"
    );
    assert_eq!(ok + crashed, CALLS);
    assert!(
        kills > 0 && crashed > 0,
        "the chaos happened: {kills} kills, {crashed} crashed calls"
    );
    eprintln!("{CALLS} calls: {ok} ok, {crashed} crashed; {kills} kills");
    pool.shutdown().await;
    assert_all_gone(marker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_while_idle_is_replaced_before_the_next_call() {
    let pool = pool(python_spec("idle-death"), 1).await;
    let pid = pid_of(&pool).await;
    kill9(pid);
    tokio::time::sleep(Duration::from_millis(300)).await; // the reader sees the EOF
    // The next call does not land on the dead worker: it waits for the replacement.
    let new_pid = pid_of(&pool).await;
    assert_ne!(new_pid, pid);
    let stats = pool.stats();
    assert_eq!(stats.replacements, 1);
    assert!(
        !stats.failures.contains_key("crashed"),
        "no call failed: {:?}",
        stats.failures
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_while_idle_is_replaced_without_waiting_for_a_call() {
    let pool = pool(python_spec("idle-death-refill"), 1).await;
    let pid = pid_of(&pool).await;
    kill9(pid);
    // No call comes: the pool's own maintenance notices the death and starts a replacement.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pool.stats().replacements == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead idle worker was not replaced within 20 s: {:?}",
            pool.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_pid = pid_of(&pool).await;
    assert_ne!(new_pid, pid);
    pool.shutdown().await;
}
