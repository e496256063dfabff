//! The pool's dispatch overhead with an in-process echo worker, side by side with a bare
//! tokio mpsc + oneshot dispatcher and with deadpool managing the same workers: calls/s at
//! concurrency 1, 16 and 256, then latency percentiles at concurrency 16.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use flowbalancer_pool::{FnWorker, LatencyHistogram, Pool, Request, Worker, in_process};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

const CALLS: usize = 20_000;
const WORKERS: usize = 4;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn echo_factory() -> flowbalancer_pool::FnFactory {
    in_process(|request| async move { Ok(request.payload) })
}

/// Something that runs an echo call.
trait Dispatch: Send + Sync + 'static {
    fn call(&self, request: Request) -> impl std::future::Future<Output = ()> + Send;
}

struct Ours(Pool<FnWorker>);
impl Dispatch for Ours {
    async fn call(&self, request: Request) {
        self.0.call(request).await.expect("echo");
    }
}

/// The bare minimum: a task per worker fed by an mpsc queue, answers by oneshot,
/// round-robin choice. No timeouts, no health, no recovery.
struct Bare {
    senders: Vec<mpsc::Sender<(Request, oneshot::Sender<flowbalancer_pool::Payload>)>>,
    next: AtomicUsize,
}
impl Bare {
    fn new(workers: Vec<FnWorker>) -> Self {
        let senders = workers
            .into_iter()
            .map(|worker| {
                let (tx, mut rx) = mpsc::channel::<(Request, oneshot::Sender<_>)>(1024);
                tokio::spawn(async move {
                    while let Some((request, reply)) = rx.recv().await {
                        let _ = reply.send(worker.call(request).await.expect("echo"));
                    }
                });
                tx
            })
            .collect();
        Self {
            senders,
            next: AtomicUsize::new(0),
        }
    }
}
impl Dispatch for Bare {
    async fn call(&self, request: Request) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        let (tx, rx) = oneshot::channel();
        self.senders[i].send((request, tx)).await.expect("send");
        rx.await.expect("reply");
    }
}

struct Deadpool(deadpool::unmanaged::Pool<FnWorker>);
impl Dispatch for Deadpool {
    async fn call(&self, request: Request) {
        let worker = self.0.get().await.expect("deadpool get");
        worker.call(request).await.expect("echo");
    }
}

async fn workers() -> Vec<FnWorker> {
    use flowbalancer_pool::WorkerFactory;
    let factory = echo_factory();
    let scope = flowbalancer_lifecycle_scope();
    let mut out = Vec::new();
    for id in 0..WORKERS {
        let context = flowbalancer_pool::StartContext {
            id: flowbalancer_pool::WorkerId(id as u64),
            scope: scope.handle(),
        };
        out.push(factory.start(context).await.expect("start"));
    }
    std::mem::forget(scope); // in-process workers own nothing to clean up
    out
}

fn flowbalancer_lifecycle_scope() -> flowbalancer_lifecycle::Scope {
    flowbalancer_lifecycle::Scope::new()
}

/// Runs `CALLS` calls from `concurrency` tasks; records each latency when asked.
async fn drive<D: Dispatch>(
    dispatch: Arc<D>,
    concurrency: usize,
    histogram: Option<Arc<LatencyHistogram>>,
) -> Duration {
    let per_task = CALLS / concurrency;
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let dispatch = Arc::clone(&dispatch);
            let histogram = histogram.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let request = Request::new("echo", json!({ "i": i }));
                    let t = Instant::now();
                    dispatch.call(request).await;
                    if let Some(h) = &histogram {
                        h.record(t.elapsed());
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    start.elapsed()
}

fn main() {
    let rt = runtime();
    let ours = rt.block_on(async {
        Arc::new(Ours(
            Pool::builder(echo_factory())
                .name("bench")
                .size(WORKERS)
                .max_in_flight(64)
                .queue_capacity(100_000)
                .health_interval(None)
                .build()
                .await
                .expect("pool"),
        ))
    });
    let ours_exclusive = rt.block_on(async {
        Arc::new(Ours(
            Pool::builder(echo_factory())
                .name("bench-exclusive")
                .size(WORKERS)
                .max_in_flight(1)
                .queue_capacity(100_000)
                .health_interval(None)
                .build()
                .await
                .expect("pool"),
        ))
    });
    let bare = rt.block_on(async { Arc::new(Bare::new(workers().await)) });
    let deadpool =
        rt.block_on(async { Arc::new(Deadpool(deadpool::unmanaged::Pool::from(workers().await))) });

    let mut criterion = Criterion::default().configure_from_args();
    for concurrency in [1usize, 16, 256] {
        let mut group = criterion.benchmark_group(format!("pool_echo_c{concurrency}"));
        group.throughput(Throughput::Elements(
            (CALLS / concurrency * concurrency) as u64,
        ));
        group.sample_size(10);
        macro_rules! bench {
            ($name:expr, $dispatch:expr) => {
                group.bench_function($name, |b| {
                    b.iter_custom(|n| {
                        (0..n)
                            .map(|_| rt.block_on(drive(Arc::clone(&$dispatch), concurrency, None)))
                            .sum()
                    })
                });
            };
        }
        bench!("flowbalancer pool (4 workers x 64 in flight)", ours);
        bench!(
            "flowbalancer pool exclusive (4 workers x 1)",
            ours_exclusive
        );
        bench!("tokio mpsc + oneshot dispatcher", bare);
        bench!("deadpool (unmanaged, 4 workers)", deadpool);
        group.finish();
    }

    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter
        .as_deref()
        .is_none_or(|f| "pool_latency".contains(f) || f.contains("pool"))
    {
        let mut table = String::from(
            "## pool latency per call, in-process echo, concurrency 16\n\n\
             | implementation | p50 | p95 | p99 | max |\n|---|---:|---:|---:|---:|\n",
        );
        let mut row = |name: &str, histogram: &LatencyHistogram| {
            let s = histogram.summary();
            let us = |d: Duration| format!("{:.1} µs", d.as_nanos() as f64 / 1000.0);
            table.push_str(&format!(
                "| {name} | {} | {} | {} | {} |\n",
                us(s.p50),
                us(s.p95),
                us(s.p99),
                us(s.max)
            ));
        };
        for (name, run) in [
            ("flowbalancer pool (4 × 64)", 0),
            ("flowbalancer pool exclusive (4 × 1)", 1),
            ("tokio mpsc + oneshot", 2),
            ("deadpool", 3),
        ] {
            let histogram = Arc::new(LatencyHistogram::new());
            for _ in 0..5 {
                let h = Some(Arc::clone(&histogram));
                match run {
                    0 => rt.block_on(drive(Arc::clone(&ours), 16, h)),
                    1 => rt.block_on(drive(Arc::clone(&ours_exclusive), 16, h)),
                    2 => rt.block_on(drive(Arc::clone(&bare), 16, h)),
                    _ => rt.block_on(drive(Arc::clone(&deadpool), 16, h)),
                };
            }
            row(name, &histogram);
        }
        table.push('\n');
        eprintln!("{table}");
        if let Ok(dir) = std::env::var("FLOWBALANCER_BENCH_EXTRA") {
            let _ = std::fs::write(std::path::Path::new(&dir).join("pool-latency.md"), &table);
        }
    }
    criterion.final_summary();
}
