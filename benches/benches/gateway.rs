//! tools/call through `flowbalancer serve` over stdio (echo on an in-process hot tier),
//! against the same tool served by the MCP Python SDK's own server, both driven by rmcp's
//! client with the same concurrency, in one run; and the gateway's own overhead: the latency
//! of a call over stdio minus the latency of the same call made in-process, and against the
//! floor of the transport: a minimal rmcp stdio server (`rmcp_echo_floor`) answering the same
//! tool with no balancer behind it, driven by the same client.

use std::sync::Arc;
use std::time::Instant;

use flowbalancer::tiers::CallOptions;
use flowbalancer_pool::LatencyHistogram;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::json;

const CONFIG: &str = r#"
[telemetry]
enabled = false
[[tiers]]
name = "hot"
workers = { builtin = ["echo"] }
size = 2
max_in_flight = 64
"#;

use flowbalancer_benches::harness::{self, micros as us, root};

fn params(i: usize) -> CallToolRequestParams {
    serde_json::from_value(json!({"name": "echo", "arguments": {"text": i.to_string()}}))
        .expect("params")
}

/// Calls/s and the latency histogram of `calls` echo calls from `concurrency` callers.
async fn drive(
    command: tokio::process::Command,
    calls: usize,
    concurrency: usize,
) -> Option<(f64, Arc<LatencyHistogram>)> {
    let client = ().serve(TokioChildProcess::new(command).ok()?).await.ok()?;
    // Warm up.
    for i in 0..200 {
        client.call_tool(params(i)).await.ok()?;
    }
    let histogram = Arc::new(LatencyHistogram::new());
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (peer, histogram) = (client.peer().clone(), Arc::clone(&histogram));
            tokio::spawn(async move {
                for i in (t..calls).step_by(concurrency) {
                    let begun = Instant::now();
                    let result = peer.call_tool(params(i)).await.expect("call");
                    // Structured content where the server gives it, else the JSON text content.
                    let value = match result.structured_content {
                        Some(value) => value,
                        None => {
                            let content = serde_json::to_value(&result.content).expect("content");
                            serde_json::from_str(content[0]["text"].as_str().expect("text"))
                                .expect("json text")
                        }
                    };
                    assert_eq!(value["text"], i.to_string());
                    histogram.record(begun.elapsed());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.ok()?;
    }
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    let _ = client.cancel().await;
    Some((rate, histogram))
}

fn main() {
    if !harness::selected("gateway", "gateway") {
        return;
    }
    let quick = harness::quick();
    let calls = if quick { 5_000 } else { 20_000 };
    let rt = harness::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let Some(binary) = harness::release_binary("gateway") else {
        return;
    };
    let ours = |concurrency| {
        let mut command = tokio::process::Command::new(&binary);
        command.args(["serve", "--config"]).arg(&config);
        rt.block_on(drive(command, calls, concurrency))
    };
    let python = root().join("target/e2e-venv/bin/python");
    let theirs = |concurrency| {
        if !python.exists() {
            return None;
        }
        let mut command = tokio::process::Command::new(&python);
        command.arg(root().join("benches/python/mcp_echo_server.py"));
        rt.block_on(drive(command, calls / 5, concurrency))
    };
    let mut table = format!(
        "## gateway: tools/call over stdio, echo, {calls} calls (Python: {} calls)\n\n\
         | concurrency | flowbalancer serve | p50 | p99 | Python MCP SDK server | p50 | p99 | ours ÷ Python |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
        calls / 5
    );
    for concurrency in [1usize, 16] {
        let a = ours(concurrency);
        let b = theirs(concurrency);
        let cell = |r: &Option<(f64, Arc<LatencyHistogram>)>| match r {
            Some((rate, h)) => format!(
                "{:.1} k/s | {} | {}",
                rate / 1000.0,
                us(h.percentile(50.0)),
                us(h.percentile(99.0))
            ),
            None => "not run | – | –".into(),
        };
        let ratio = match (&a, &b) {
            (Some((x, _)), Some((y, _))) => format!("{:.1}×", x / y),
            _ => "–".into(),
        };
        table.push_str(&format!(
            "| {concurrency} | {} | {} | {ratio} |\n",
            cell(&a),
            cell(&b)
        ));
    }
    if !python.exists() {
        table.push_str("\nThe Python side needs the MCP SDK venv that `cargo xtask e2e` creates under target/.\n");
    }
    // The floor: the same client, the same transport, a server that only echoes.
    let floor = |concurrency| {
        let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rmcp_echo_floor"));
        rt.block_on(drive(command, calls, concurrency))
    };
    table.push_str(
        "\n| concurrency | minimal rmcp stdio server (the floor) | p50 | p99 | flowbalancer serve | p50 | p99 | serve's p50 − floor's |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for concurrency in [1usize, 16] {
        let (Some((floor_rate, floor_h)), Some((rate, h))) =
            (floor(concurrency), ours(concurrency))
        else {
            table.push_str(&format!(
                "| {concurrency} | not run | – | – | – | – | – | – |\n"
            ));
            continue;
        };
        table.push_str(&format!(
            "| {concurrency} | {:.1} k/s | {} | {} | {:.1} k/s | {} | {} | {} |\n",
            floor_rate / 1000.0,
            us(floor_h.percentile(50.0)),
            us(floor_h.percentile(99.0)),
            rate / 1000.0,
            us(h.percentile(50.0)),
            us(h.percentile(99.0)),
            harness::micros_over(h.percentile(50.0), floor_h.percentile(50.0)),
        ));
    }
    // The gateway's own overhead: stdio + MCP + JSON against the same call made in-process.
    let in_process = rt.block_on(async {
        let balancer = flowbalancer::Balancer::from_config(
            flowbalancer::Config::from_toml(CONFIG).expect("config"),
        )
        .await
        .expect("balancer");
        let histogram = LatencyHistogram::new();
        for i in 0..calls {
            let begun = Instant::now();
            balancer
                .call(
                    "echo",
                    json!({"text": i.to_string()}),
                    CallOptions::default(),
                )
                .await
                .expect("call");
            histogram.record(begun.elapsed());
        }
        balancer.shutdown().await;
        histogram
    });
    if let Some((_, over_stdio)) = ours(1) {
        table.push_str(&format!(
            "\nGateway overhead at concurrency 1 (over stdio minus in-process `Balancer::call`): p50 {} (in-process {} vs stdio {}), p99 {} (in-process {} vs stdio {}).\n\n",
            us(over_stdio.percentile(50.0).saturating_sub(in_process.percentile(50.0))),
            us(in_process.percentile(50.0)),
            us(over_stdio.percentile(50.0)),
            us(over_stdio.percentile(99.0).saturating_sub(in_process.percentile(99.0))),
            us(in_process.percentile(99.0)),
            us(over_stdio.percentile(99.0)),
        ));
    }
    harness::report("gateway.md", &table);
}
