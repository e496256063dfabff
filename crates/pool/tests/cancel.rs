//! A call given up on never wedges a worker: the deadline or a dropped caller cancels the call
//! at the worker (protocol v2), the slot stays taken until the worker answers, and a worker
//! that does not answer within `cancel_grace` is killed and replaced. Progress reaches the
//! caller. Real Python and Rust worker processes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowbalancer_pool::{
    ErrorKind, Pool, PoolError, ProcessFactory, ProcessSpec, ProcessWorker, Progress, ProgressSink,
    Request,
};
use serde_json::{Value, json};

fn python_spec() -> ProcessSpec {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../workers/python/examples/basic_worker.py");
    ProcessSpec::new("python3", [script.display().to_string(), "--faults".into()])
}

fn rust_spec() -> ProcessSpec {
    ProcessSpec::new(
        env!("CARGO_BIN_EXE_flowbalancer-example-worker"),
        ["--faults"],
    )
}

/// One worker, the defaults a new user has (call timeout 30 s), a short cancel grace.
async fn one_worker(spec: ProcessSpec, grace: Duration) -> Pool<ProcessWorker> {
    Pool::builder(ProcessFactory::new(spec))
        .name("one")
        .size(1)
        .cancel_grace(grace)
        .queue_timeout(Duration::from_secs(20))
        .health_interval(None)
        .restart_backoff(Duration::from_millis(20))
        .build()
        .await
        .unwrap()
}

fn with_deadline(method: &str, params: Value, after: Duration) -> Request {
    Request::new(method, params).with_deadline(Instant::now() + after)
}

async fn echo(pool: &Pool<ProcessWorker>) -> u64 {
    let response = pool
        .call(Request::new("echo", json!({"text": "next"})))
        .await
        .expect("the next call is served");
    response.worker.0
}

#[tokio::test]
async fn a_deadline_cancels_the_call_at_a_python_worker_which_then_serves_the_next() {
    let pool = one_worker(python_spec(), Duration::from_secs(10)).await;
    let first = echo(&pool).await;
    // A busy Python loop: the cancel interrupts it, so the worker answers and stays.
    let error = pool
        .call(with_deadline("spin", json!({}), Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(error, PoolError::DeadlineExceeded), "{error:?}");
    assert_eq!(
        echo(&pool).await,
        first,
        "the same worker serves the next call"
    );
    let stats = pool.stats();
    assert_eq!(stats.cancels, 1);
    assert_eq!(stats.replacements, 0, "the worker answered the cancel");
    pool.shutdown().await;
}

#[tokio::test]
async fn an_async_python_tool_is_cancelled_too() {
    let pool = one_worker(python_spec(), Duration::from_secs(10)).await;
    let first = echo(&pool).await;
    let error = pool
        .call(with_deadline(
            "async_hang",
            json!({}),
            Duration::from_millis(200),
        ))
        .await
        .unwrap_err();
    assert!(matches!(error, PoolError::DeadlineExceeded), "{error:?}");
    assert_eq!(echo(&pool).await, first);
    assert_eq!(pool.stats().replacements, 0);
    pool.shutdown().await;
}

#[tokio::test]
async fn a_worker_that_cannot_stop_is_killed_after_the_grace_and_replaced() {
    // `hang` sleeps in C (time.sleep): no cancel can interrupt it.
    let pool = one_worker(python_spec(), Duration::from_millis(500)).await;
    let first = echo(&pool).await;
    let error = pool
        .call(with_deadline("hang", json!({}), Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(error, PoolError::DeadlineExceeded), "{error:?}");
    // The slot stays taken while the cancelled call settles: this call waits for the
    // replacement instead of queueing behind the hung call in the old worker's stdin.
    let next = echo(&pool).await;
    assert_ne!(next, first, "served by the replacement");
    let stats = pool.stats();
    assert_eq!(stats.replacements, 1);
    assert_eq!(stats.cancels, 1);
    pool.shutdown().await;
}

#[tokio::test]
async fn a_dropped_caller_cancels_the_call_at_the_worker() {
    let pool = one_worker(python_spec(), Duration::from_secs(10)).await;
    let first = echo(&pool).await;
    let call = pool.call(Request::new("spin", json!({})));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err(),
        "the caller gives up"
    );
    assert_eq!(echo(&pool).await, first);
    let stats = pool.stats();
    assert_eq!(stats.cancels, 1);
    assert_eq!(stats.replacements, 0);
    pool.shutdown().await;
}

/// A minimal worker of protocol version 1: one call at a time, no cancel.
const V1_WORKER: &str = r#"
import json, struct, sys, time
out = sys.stdout.buffer
def send(m):
    b = json.dumps(m).encode()
    out.write(struct.pack(">I", len(b)) + b); out.flush()
send({"type": "hello", "protocol": 1, "worker": "v1", "tools": [{"name": "echo"}, {"name": "hang"}]})
while True:
    p = sys.stdin.buffer.read(4)
    if len(p) < 4: break
    m = json.loads(sys.stdin.buffer.read(struct.unpack(">I", p)[0]))
    if m["type"] == "call":
        if m["method"] == "hang": time.sleep(3600)
        send({"type": "result", "id": m["id"], "result": m["params"]})
    elif m["type"] == "ping": send({"type": "pong", "id": m["id"]})
    elif m["type"] == "shutdown": break
"#;

#[tokio::test]
async fn a_v1_worker_cannot_be_asked_so_it_is_replaced_after_the_grace() {
    let spec = ProcessSpec::new("python3", ["-c", V1_WORKER]);
    let pool = one_worker(spec, Duration::from_millis(300)).await;
    let first = echo(&pool).await;
    let error = pool
        .call(with_deadline("hang", json!({}), Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(error, PoolError::DeadlineExceeded), "{error:?}");
    assert_ne!(echo(&pool).await, first, "served by the replacement");
    assert_eq!(pool.stats().replacements, 1);
    pool.shutdown().await;
}

#[tokio::test]
async fn a_rust_worker_aborts_a_cancelled_call_and_stays() {
    // The Rust example worker's `hang` awaits forever: the v2 cancel aborts its task.
    let pool = one_worker(rust_spec(), Duration::from_secs(10)).await;
    let first = echo(&pool).await;
    let error = pool
        .call(with_deadline("hang", json!({}), Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(error, PoolError::DeadlineExceeded), "{error:?}");
    assert_eq!(
        echo(&pool).await,
        first,
        "the Rust worker aborted the call and stayed"
    );
    assert_eq!(pool.stats().replacements, 0);
    pool.shutdown().await;
}

fn collecting_sink() -> (ProgressSink, Arc<Mutex<Vec<Progress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let seen = Arc::clone(&seen);
        ProgressSink::new(move |p| seen.lock().unwrap().push(p))
    };
    (sink.with_token(json!("token-1")), seen)
}

#[tokio::test]
async fn progress_reaches_the_caller_from_python_and_rust_workers() {
    for spec in [python_spec(), rust_spec()] {
        let pool = one_worker(spec, Duration::from_secs(2)).await;
        let (sink, seen) = collecting_sink();
        let response = pool
            .call(Request::new("progress_steps", json!({"steps": 3})).with_progress(sink))
            .await
            .unwrap();
        assert_eq!(response.payload.as_json(), Some(&json!(3)));
        let seen = seen.lock().unwrap().clone();
        let steps: Vec<f64> = seen.iter().map(|p| p.progress).collect();
        assert_eq!(steps, [1.0, 2.0, 3.0]);
        assert_eq!(seen[0].total, Some(3.0));
        assert_eq!(seen[2].message.as_deref(), Some("step 3"));
        pool.shutdown().await;
    }
}

#[tokio::test]
async fn a_panicking_rust_handler_answers_with_a_handler_error() {
    let pool = one_worker(rust_spec(), Duration::from_secs(2)).await;
    let first = echo(&pool).await;
    let error = pool
        .call(Request::new("panic", json!({})))
        .await
        .unwrap_err();
    match error {
        PoolError::Call { error, .. } => {
            assert_eq!(error.kind, ErrorKind::Handler);
            assert!(error.message.contains("the handler gave up"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        echo(&pool).await,
        first,
        "the worker survives its handler's panic"
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn a_result_larger_than_a_frame_is_an_error_in_both_libraries() {
    for spec in [python_spec(), rust_spec()] {
        let pool = one_worker(spec.max_frame(8192), Duration::from_secs(2)).await;
        let first = echo(&pool).await;
        let error = pool
            .call(Request::new("big_result", json!({"size": 20_000})))
            .await
            .unwrap_err();
        match error {
            PoolError::Call { error, .. } => {
                assert_eq!(error.kind, ErrorKind::Handler);
                assert!(
                    error.message.contains("exceeds the maximum frame"),
                    "{error}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(echo(&pool).await, first, "the worker survives");
        pool.shutdown().await;
    }
}

#[tokio::test]
async fn callers_dropped_while_their_large_request_is_written_leave_no_half_frame() {
    // 4 MiB of params take a while to go through the pipe; callers give up after a moment,
    // often mid-write. Frames go out whole through the worker's writer task, so the worker
    // never reads a torn frame: it stays and answers the next call.
    let pool = one_worker(python_spec(), Duration::from_secs(10)).await;
    let first = echo(&pool).await;
    let big = "x".repeat(4 * 1024 * 1024);
    for _ in 0..5 {
        let call = pool.call(Request::new("echo", json!({ "text": big })));
        let _ = tokio::time::timeout(Duration::from_millis(2), call).await;
    }
    assert_eq!(
        echo(&pool).await,
        first,
        "no protocol damage, no replacement"
    );
    assert_eq!(pool.stats().replacements, 0);
    pool.shutdown().await;
}
