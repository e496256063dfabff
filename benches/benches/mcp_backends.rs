//! MCP servers behind `flowbalancer serve`, in one run:
//! - the latency the gateway adds to a `tools/call`: a fast stdio MCP server (flowbalancer's
//!   own `serve` with the built-in echo) called directly, against the same server behind
//!   `serve` as an MCP tier, at concurrency 1;
//! - a CPU-bound tool of a Python server on the `mcp` 2.x SDK (`tests/e2e/servers/py_tools.py`):
//!   one instance called directly, against N instances pooled (N = the core count);
//! - the same server behind FastMCP's own proxy (`fastmcp` 4.x), at concurrency 16.
//!
//! All three are driven by rmcp's client over stdio. The Python parts need the venvs that
//! `cargo xtask bench` prepares under target/; without them they are reported as not run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use flowbalancer_pool::LatencyHistogram;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

use flowbalancer_benches::harness::{self, micros as us, root};

struct Run {
    rate: f64,
    latency: Arc<LatencyHistogram>,
}

/// `calls` calls of `tool` from `concurrency` callers; every answer is checked by `expect`.
async fn drive(
    command: tokio::process::Command,
    tool: &'static str,
    arguments: Value,
    expect: fn(&Value) -> bool,
    calls: usize,
    concurrency: usize,
) -> Result<Run, String> {
    let transport = TokioChildProcess::new(command).map_err(|e| e.to_string())?;
    let client = ().serve(transport).await.map_err(|e| e.to_string())?;
    let params: CallToolRequestParams =
        serde_json::from_value(json!({"name": tool, "arguments": arguments}))
            .map_err(|e| e.to_string())?;
    for _ in 0..50 {
        client
            .call_tool(params.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    let latency = Arc::new(LatencyHistogram::new());
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (peer, latency, params) =
                (client.peer().clone(), Arc::clone(&latency), params.clone());
            tokio::spawn(async move {
                for _ in (t..calls).step_by(concurrency) {
                    let begun = Instant::now();
                    let result = peer
                        .call_tool(params.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                    let value = serde_json::to_value(&result).map_err(|e| e.to_string())?;
                    if !expect(&value) {
                        return Err(format!("unexpected answer {value}"));
                    }
                    latency.record(begun.elapsed());
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    let _ = client.cancel().await;
    Ok(Run { rate, latency })
}

/// One table row: the name, the rate, p50 and p99 (or why the run failed).
fn row(name: &str, run: &Result<Run, String>, rate: impl Fn(f64) -> String) -> String {
    match run {
        Ok(run) => format!(
            "| {name} | {} | {} | {} |\n",
            rate(run.rate),
            us(run.latency.percentile(50.0)),
            us(run.latency.percentile(99.0))
        ),
        Err(e) => format!("| {name} | failed: {e} | – | – |\n"),
    }
}

fn text_is(value: &Value, wanted: &str) -> bool {
    value["content"][0]["text"].as_str() == Some(wanted)
}

fn echo_ok(value: &Value) -> bool {
    value["structuredContent"]["text"] == "x" || text_is(value, "{\"text\":\"x\"}")
}

fn burn_ok(value: &Value) -> bool {
    text_is(value, "2666466670000")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("bench file");
    path
}

fn main() {
    if !harness::selected("mcp_backends", "mcp_backends") {
        return;
    }
    let quick = harness::quick();
    let rt = harness::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(binary) = harness::release_binary("mcp_backends") else {
        return;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = String::from("## MCP servers behind the gateway\n\n");

    // 1. Added latency: a fast stdio MCP server, directly and behind the gateway.
    let backend = write(
        dir.path(),
        "backend.toml",
        "[telemetry]\nenabled = false\n[[tiers]]\nname = \"hot\"\nworkers = { builtin = [\"echo\"] }\nsize = 1\nmax_in_flight = 64\n",
    );
    let gateway = write(
        dir.path(),
        "gateway.toml",
        &format!(
            "[telemetry]\nenabled = false\n[[tiers]]\nname = \"mcp\"\nworkers = {{ mcp = [{:?}, \"serve\", \"--config\", {:?}] }}\nsize = 1\n",
            binary.display().to_string(),
            backend.display().to_string()
        ),
    );
    let calls = if quick { 3_000 } else { 10_000 };
    let serve = |config: &Path| {
        let mut command = tokio::process::Command::new(&binary);
        command.args(["serve", "--config"]).arg(config);
        command
    };
    let echo = json!({"text": "x"});
    let direct = rt.block_on(drive(
        serve(&backend),
        "echo",
        echo.clone(),
        echo_ok,
        calls,
        1,
    ));
    let pooled = rt.block_on(drive(
        serve(&gateway),
        "echo",
        echo.clone(),
        echo_ok,
        calls,
        1,
    ));
    report.push_str(&format!(
        "### added latency: tools/call, echo, concurrency 1, {calls} calls\n\n\
         | path | calls/s | p50 | p99 |\n|---|---:|---:|---:|\n"
    ));
    for (name, run) in [
        ("server called directly", &direct),
        ("the same server behind the gateway", &pooled),
    ] {
        report.push_str(&row(name, run, |rate| format!("{:.1} k/s", rate / 1000.0)));
    }
    if let (Ok(direct), Ok(pooled)) = (&direct, &pooled) {
        report.push_str(&format!(
            "\nAdded by the gateway: p50 {}, p99 {} (goal: ≤ 50 µs at p50).\n\n",
            us(pooled
                .latency
                .percentile(50.0)
                .saturating_sub(direct.latency.percentile(50.0))),
            us(pooled
                .latency
                .percentile(99.0)
                .saturating_sub(direct.latency.percentile(99.0))),
        ));
    }

    // 2. A CPU-bound Python tool: one instance against N pooled instances.
    let python = root().join("target/e2e-venv/bin/python");
    let server = root().join("tests/e2e/servers/py_tools.py");
    let burn = json!({"rounds": 20000});
    let burn_calls = if quick { 400 } else { 2_000 };
    if python.exists() {
        let pooled_config = write(
            dir.path(),
            "python.toml",
            &format!(
                "[telemetry]\nenabled = false\n[[tiers]]\nname = \"py\"\nworkers = {{ mcp = [{:?}, {:?}] }}\nsize = {cores}\nmax_in_flight = 4\n",
                python.display().to_string(),
                server.display().to_string()
            ),
        );
        let mut one = tokio::process::Command::new(&python);
        one.arg(&server);
        let direct = rt.block_on(drive(
            one,
            "burn",
            burn.clone(),
            burn_ok,
            burn_calls,
            2 * cores,
        ));
        let pooled = rt.block_on(drive(
            serve(&pooled_config),
            "burn",
            burn.clone(),
            burn_ok,
            burn_calls,
            2 * cores,
        ));
        report.push_str(&format!(
            "### a CPU-bound tool in a Python MCP server (`mcp` 2.x), {burn_calls} calls, concurrency {}, {cores} cores\n\n\
             | path | calls/s | p50 | p99 |\n|---|---:|---:|---:|\n",
            2 * cores
        ));
        for (name, run) in [
            ("1 instance, called directly", &direct),
            (&*format!("{cores} instances behind the gateway"), &pooled),
        ] {
            report.push_str(&row(name, run, |rate| format!("{rate:.0}/s")));
        }
        if let (Ok(direct), Ok(pooled)) = (&direct, &pooled) {
            report.push_str(&format!(
                "\nPooled ÷ (N × direct) = {:.2} (goal ≥ 0.85, N = {cores}).\n\n",
                pooled.rate / (cores as f64 * direct.rate)
            ));
        }

        // 3. FastMCP's own proxy in front of the same server.
        let fastmcp = root().join("target/bench-fastmcp-venv/bin/python");
        if fastmcp.exists() {
            let mut proxy = tokio::process::Command::new(&fastmcp);
            proxy
                .arg(root().join("benches/python/fastmcp_proxy.py"))
                .arg(&python)
                .arg(&server);
            let theirs = rt.block_on(drive(
                proxy,
                "burn",
                burn.clone(),
                burn_ok,
                burn_calls / 2,
                16,
            ));
            let ours = rt.block_on(drive(
                serve(&pooled_config),
                "burn",
                burn.clone(),
                burn_ok,
                burn_calls,
                16,
            ));
            let mut proxy = tokio::process::Command::new(&fastmcp);
            proxy
                .arg(root().join("benches/python/fastmcp_proxy.py"))
                .arg(&python)
                .arg(&server);
            let add = json!({"a": 2, "b": 3});
            let add_ok: fn(&Value) -> bool = |v| text_is(v, "5");
            let theirs_cheap =
                rt.block_on(drive(proxy, "add", add.clone(), add_ok, burn_calls / 2, 16));
            let ours_cheap = rt.block_on(drive(
                serve(&pooled_config),
                "add",
                add,
                add_ok,
                burn_calls * 2,
                16,
            ));
            report.push_str(&format!(
                "### the same server behind FastMCP's proxy (`fastmcp` 4.x) and behind flowbalancer ({cores} instances), concurrency 16\n\n\
                 | path | tool | calls/s | p50 | p99 |\n|---|---|---:|---:|---:|\n"
            ));
            for (name, run) in [
                ("FastMCP proxy | burn (CPU-bound)", &theirs),
                ("flowbalancer | burn (CPU-bound)", &ours),
                ("FastMCP proxy | add (trivial)", &theirs_cheap),
                ("flowbalancer | add (trivial)", &ours_cheap),
            ] {
                report.push_str(&row(name, run, |rate| format!("{rate:.0}/s")));
            }
            if let (Ok(theirs), Ok(ours), Ok(theirs_cheap), Ok(ours_cheap)) =
                (&theirs, &ours, &theirs_cheap, &ours_cheap)
            {
                report.push_str(&format!(
                    "\nflowbalancer ÷ FastMCP proxy = {:.1}× on the CPU-bound tool, {:.1}× on the trivial one (goal ≥ 10×).\n\n",
                    ours.rate / theirs.rate,
                    ours_cheap.rate / theirs_cheap.rate
                ));
            }
        } else {
            report.push_str("FastMCP proxy: not run (needs target/bench-fastmcp-venv, which `cargo xtask bench` creates).\n\n");
        }
    } else {
        report.push_str("Python servers: not run (needs target/e2e-venv, which `cargo xtask bench` creates).\n\n");
    }
    harness::report("mcp_backends.md", &report);
}
