//! tools/call through `flowbalancer serve` over stdio (echo on an in-process hot tier),
//! against the same tool served by the MCP Python SDK's own server, both driven by rmcp's
//! client with the same concurrency, in one run; and the gateway's own overhead: the latency
//! of a call over stdio minus the latency of the same call made in-process, and against the
//! floor of the transport: a minimal rmcp stdio server (`rmcp_echo_floor`) answering the same
//! tool with no balancer behind it, driven by the same client. The overhead at concurrency 1
//! is measured with a minimal blocking client against `serve` and against the platform's
//! floor (a bare line-echo process), on separate CPUs and on one shared CPU.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
    table.push_str(&overhead_table(&binary, &config, calls, &in_process));
    harness::report("gateway.md", &table);
}

/// The latencies of `calls` echo calls made one at a time by a minimal blocking client: it
/// writes JSON-RPC lines to the server's stdin and reads the answers from its stdout, with no
/// async runtime of its own (after `initialize` and 500 warm-up calls). With `one_cpu`, the
/// client thread is pinned to one CPU before it spawns the server, which inherits that
/// affinity: no round trip then waits for a wake-up on another CPU.
fn blocking_round_trips(
    program: &Path,
    args: &[&str],
    calls: usize,
    one_cpu: bool,
) -> Option<LatencyHistogram> {
    let (program, args): (PathBuf, Vec<String>) = (
        program.to_owned(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    let thread = std::thread::spawn(move || {
        if one_cpu {
            flowbalancer_benches::pin(0);
        }
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let result = (|| {
            let mut input = child.stdin.take()?;
            let mut output = BufReader::new(child.stdout.take()?);
            let mut line = String::new();
            let mut ask = |request: serde_json::Value, expect: Option<u64>| -> Option<()> {
                // One write per request: written piece by piece, a request would wake the
                // server once per piece.
                let mut bytes = serde_json::to_vec(&request).ok()?;
                bytes.push(b'\n');
                input.write_all(&bytes).ok()?;
                let Some(id) = expect else { return Some(()) };
                line.clear();
                output.read_line(&mut line).ok()?;
                let answer: serde_json::Value = serde_json::from_str(&line).ok()?;
                let served = answer["id"] == id
                    && answer.get("result").is_some()
                    && answer["result"]["isError"] != true;
                served.then_some(())
            };
            ask(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "1"}}}),
                Some(0),
            )?;
            ask(
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                None,
            )?;
            let histogram = LatencyHistogram::new();
            for i in 1..=calls + 500 {
                let request = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": i.to_string()}}});
                let begun = Instant::now();
                ask(request, Some(i as u64))?;
                if i > 500 {
                    histogram.record(begun.elapsed());
                }
            }
            Some(histogram)
        })();
        let _ = child.kill();
        let _ = child.wait();
        result
    });
    thread.join().ok().flatten()
}

/// The gateway's overhead at concurrency 1: `serve` against the in-process call and against
/// the platform's floor, a bare line-echo process driven by the same blocking client.
fn overhead_table(
    binary: &Path,
    config: &Path,
    calls: usize,
    in_process: &LatencyHistogram,
) -> String {
    let Some(config) = config.to_str() else {
        return String::new();
    };
    let echo = Path::new(env!("CARGO_BIN_EXE_stdio_line_echo"));
    let mut table = String::from(
        "\n### Gateway overhead at concurrency 1: one blocking client, one call at a time\n\n\
         The client writes JSON-RPC lines to the server's stdin and reads the answers, with no \
         async runtime of its own. The floor is a process that answers each line with an empty \
         result (blocking I/O, no MCP, no runtime): what the two pipes and the two wake-ups cost \
         on this machine. On one CPU, client and server share a core, so no round trip waits \
         for a wake-up on another CPU.\n\n\
         | client and server | bare line echo (floor) p50 | p99 | flowbalancer serve p50 | p99 | \
         serve − in-process `Balancer::call`, p50 / p99 | serve − floor, p50 |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (label, one_cpu) in [
        ("where the scheduler puts them", false),
        ("on one CPU", true),
    ] {
        let floor = blocking_round_trips(echo, &[], calls, one_cpu);
        let ours = blocking_round_trips(binary, &["serve", "--config", config], calls, one_cpu);
        let (Some(floor), Some(ours)) = (floor, ours) else {
            table.push_str(&format!("| {label} | not run | – | – | – | – | – |\n"));
            continue;
        };
        table.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} / {} | {} |\n",
            us(floor.percentile(50.0)),
            us(floor.percentile(99.0)),
            us(ours.percentile(50.0)),
            us(ours.percentile(99.0)),
            us(ours
                .percentile(50.0)
                .saturating_sub(in_process.percentile(50.0))),
            us(ours
                .percentile(99.0)
                .saturating_sub(in_process.percentile(99.0))),
            harness::micros_over(ours.percentile(50.0), floor.percentile(50.0)),
        ));
    }
    table.push_str(&format!(
        "\nIn-process `Balancer::call` of the same tool: p50 {}, p99 {}.\n\n",
        us(in_process.percentile(50.0)),
        us(in_process.percentile(99.0)),
    ));
    table
}
