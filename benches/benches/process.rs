//! Python worker processes through the pool, side by side with Python's own
//! `concurrent.futures.ProcessPoolExecutor` running the same trivial function (driven by
//! `benches/python/ppe_bench.py`), in one run; and the time to get 100 Python workers ready.
//! Writes its tables to the bench report.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowbalancer_pool::{
    LatencyHistogram, Pool, ProcessFactory, ProcessSpec, ProcessWorker, Request,
};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python_spec() -> ProcessSpec {
    // The bundled worker needs only the standard library: skip `site` (-S).
    ProcessSpec::python(
        root().join("workers/python/examples/basic_worker.py"),
        ["-S"],
        Vec::<String>::new(),
    )
}

async fn pool(workers: usize) -> Pool<ProcessWorker> {
    Pool::builder(ProcessFactory::new(python_spec()))
        .name("python")
        .size(workers)
        .max_in_flight(2)
        .queue_capacity(100_000)
        .health_interval(None)
        .build()
        .await
        .expect("python workers")
}

/// Calls/s and latency for `calls` echo calls from `concurrency` callers.
async fn drive(
    pool: &Pool<ProcessWorker>,
    calls: usize,
    concurrency: usize,
) -> (f64, Arc<LatencyHistogram>) {
    let histogram = Arc::new(LatencyHistogram::new());
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let pool = pool.clone();
            let histogram = Arc::clone(&histogram);
            tokio::spawn(async move {
                for i in (t..calls).step_by(concurrency) {
                    let started = Instant::now();
                    let response = pool
                        .call(Request::new("echo", json!({ "text": i.to_string() })))
                        .await
                        .expect("echo");
                    assert_eq!(
                        response.payload.as_json().expect("json")["text"],
                        i.to_string()
                    );
                    histogram.record(started.elapsed());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    (calls as f64 / start.elapsed().as_secs_f64(), histogram)
}

fn process_pool_executor(workers: usize, calls: usize) -> Option<f64> {
    let output = Command::new(flowbalancer_pool::process::python_interpreter())
        .arg(root().join("benches/python/ppe_bench.py"))
        .args([workers.to_string(), calls.to_string()])
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "ppe_bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    line["calls_per_sec"].as_f64()
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter
        .as_deref()
        .is_some_and(|f| !"process_python".contains(f) && !f.contains("process"))
    {
        return;
    }
    let quick = std::env::var_os("FLOWBALANCER_BENCH_QUICK").is_some();
    let calls = if quick { 20_000 } else { 100_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut table = format!(
        "## process workers: Python echo, {calls} calls\n\n\
         | workers | flowbalancer pool | p50 | p99 | ProcessPoolExecutor | ours ÷ PPE |\n\
         |---:|---:|---:|---:|---:|---:|\n"
    );
    for workers in [1usize, 2] {
        let (ours, histogram) = rt.block_on(async {
            let pool = pool(workers).await;
            drive(&pool, calls / 10, 8).await; // warm up
            let result = drive(&pool, calls, 8 * workers).await;
            pool.shutdown().await;
            result
        });
        let peer = process_pool_executor(workers, calls / 4);
        let us = |d: Duration| format!("{:.0} µs", d.as_nanos() as f64 / 1000.0);
        table.push_str(&format!(
            "| {workers} | {:.1} k/s | {} | {} | {} | {} |\n",
            ours / 1000.0,
            us(histogram.percentile(50.0)),
            us(histogram.percentile(99.0)),
            peer.map(|p| format!("{:.1} k/s", p / 1000.0))
                .unwrap_or_else(|| "failed".into()),
            peer.map(|p| format!("{:.1}×", ours / p))
                .unwrap_or_else(|| "–".into()),
        ));
    }
    // Start-up: 100 Python workers started at once (eager start), until the pool is ready.
    let rounds = if quick { 1 } else { 3 };
    let mut times = Vec::new();
    for _ in 0..rounds {
        let elapsed = rt.block_on(async {
            let started = Instant::now();
            let pool = pool(100).await;
            let elapsed = started.elapsed();
            assert_eq!(pool.workers().len(), 100);
            pool.shutdown().await;
            elapsed
        });
        times.push(elapsed);
    }
    times.sort();
    table.push_str(&format!(
        "\n100 Python workers ready (eager start, all at once): median {:.2} s over {rounds} run(s).\n\n",
        times[times.len() / 2].as_secs_f64()
    ));
    eprintln!("{table}");
    if let Ok(dir) = std::env::var("FLOWBALANCER_BENCH_EXTRA") {
        let _ = std::fs::write(PathBuf::from(dir).join("process-workers.md"), &table);
    }
}
