//! tools/call over MCP's streamable HTTP transport, in one run:
//! - `flowbalancer serve --http` with the built-in echo tier, 64 concurrent client sessions;
//! - the MCP Python SDK's own streamable-HTTP server serving the same tool, same load;
//! - memory per idle session: the gateway's resident memory before and after opening 1000
//!   sessions that then do nothing;
//! - one caller alone (latency), against the floor: a minimal rmcp streamable-HTTP server
//!   (`rmcp_echo_floor --http`) answering the same tool with no balancer behind it.
//!
//! The client is a small one of this bench's own (hyper, one keep-alive connection per
//! session, SSE or JSON answers), the same for both servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flowbalancer_pool::LatencyHistogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use flowbalancer_benches::harness::{self, free_port, micros as us, root};

/// Which revision of MCP a bench client speaks.
#[derive(Clone, Copy, PartialEq)]
enum Revision {
    /// 2025-11-25: `initialize`, then every request in an `Mcp-Session-Id` session (what the
    /// SDKs' `ClientSession` does).
    Sessions,
    /// 2026-07-28: no handshake and no session; every request carries the protocol version in
    /// its headers and `_meta` (what the Python SDK's high-level `Client` does).
    Stateless,
}

/// One client session on its own connection.
struct Session {
    send: SendRequest<Full<Bytes>>,
    host: String,
    path: String,
    id: Option<String>,
    next: u64,
    revision: Revision,
}

impl Session {
    async fn open(address: &str, path: &str) -> Result<Self, String> {
        Self::open_speaking(address, path, Revision::Sessions).await
    }

    async fn open_speaking(address: &str, path: &str, revision: Revision) -> Result<Self, String> {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut session = Self {
            send,
            host: address.to_string(),
            path: path.to_string(),
            id: None,
            next: 1,
            revision,
        };
        if revision == Revision::Stateless {
            return Ok(session);
        }
        session
            .post(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"}}}),
            )
            .await?;
        session
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(session)
    }

    /// POSTs one message; returns the JSON-RPC answer (from JSON or the SSE stream), if any.
    async fn post(&mut self, message: Value) -> Result<Option<Value>, String> {
        let mut request = Request::post(&self.path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        let mut message = message;
        if self.revision == Revision::Stateless {
            request = request
                .header("mcp-protocol-version", STATELESS_REVISION)
                .header("mcp-method", message["method"].as_str().unwrap_or_default());
            if let Some(name) = message["params"]["name"].as_str() {
                request = request.header("mcp-name", name);
            }
            message["params"]["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": STATELESS_REVISION,
                "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            });
        }
        let request = request
            .body(Full::new(Bytes::from(message.to_string())))
            .map_err(|e| e.to_string())?;
        self.send.ready().await.map_err(|e| e.to_string())?;
        let response = self
            .send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(id) = response.headers().get("mcp-session-id") {
            self.id = Some(id.to_str().map_err(|e| e.to_string())?.to_string());
        }
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        let text = String::from_utf8_lossy(&body);
        let answer = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .chain(std::iter::once(text.trim()))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v.get("id").is_some());
        Ok(answer)
    }

    async fn echo(&mut self, text: &str) -> Result<(), String> {
        let id = self.next;
        self.next += 1;
        let answer = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                         "params": {"name": "echo", "arguments": {"text": text}}}))
            .await?
            .ok_or("no answer")?;
        let result = &answer["result"];
        let echoed = result["structuredContent"]["text"].as_str().or_else(|| {
            result["content"][0]["text"]
                .as_str()
                .filter(|t| t.contains(text))
                .map(|_| text)
        });
        if echoed == Some(text) {
            Ok(())
        } else {
            Err(format!("unexpected answer {answer}"))
        }
    }
}

/// The revision whose requests need no session.
const STATELESS_REVISION: &str = "2026-07-28";

struct Run {
    rate: f64,
    latency: Arc<LatencyHistogram>,
    /// The server's CPU time (all its threads) per call during the load, when known: steadier
    /// than rates on a shared machine, and it shows what each call costs the server.
    cpu_per_call: Option<Duration>,
    /// The load generator's own CPU time per call (this process): client and server share
    /// the machine's cores, so what the client spends is taken from the server.
    client_cpu_per_call: Option<Duration>,
}

/// CPU time used so far by every live thread of process `pid` (from each thread's
/// `schedstat`, in nanoseconds).
fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread may end between the listing and the read: it is then left out.
        if let Ok(stat) = std::fs::read_to_string(path) {
            total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(Duration::from_nanos(total))
}

async fn load(
    address: &str,
    path: &str,
    sessions: usize,
    calls: usize,
    server: Option<u32>,
) -> Result<Run, String> {
    load_speaking(address, path, sessions, calls, server, Revision::Sessions).await
}

/// `calls` echo calls from `sessions` clients at once, each on its own connection, speaking
/// `revision`.
async fn load_speaking(
    address: &str,
    path: &str,
    sessions: usize,
    calls: usize,
    server: Option<u32>,
    revision: Revision,
) -> Result<Run, String> {
    let mut opened = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        opened.push(Session::open_speaking(address, path, revision).await?);
    }
    for session in &mut opened {
        session.echo("warm").await?;
    }
    let latency = Arc::new(LatencyHistogram::new());
    let per_session = calls / sessions;
    let cpu_before = server.and_then(cpu_time);
    let client_before = cpu_time(std::process::id());
    let started = Instant::now();
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|mut session| {
            let latency = Arc::clone(&latency);
            tokio::spawn(async move {
                for i in 0..per_session {
                    let begun = Instant::now();
                    session.echo(&i.to_string()).await?;
                    latency.record(begun.elapsed());
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let elapsed = started.elapsed();
    let served = per_session * sessions;
    let per_call = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
        (Some(before), Some(after)) if served > 0 => {
            Some(after.saturating_sub(before) / u32::try_from(served).unwrap_or(u32::MAX))
        }
        _ => None,
    };
    let cpu_per_call = per_call(cpu_before, server.and_then(cpu_time));
    let client_cpu_per_call = per_call(client_before, cpu_time(std::process::id()));
    Ok(Run {
        rate: served as f64 / elapsed.as_secs_f64(),
        latency,
        cpu_per_call,
        client_cpu_per_call,
    })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Starts `command` and waits until `address` accepts connections.
fn start(mut command: std::process::Command, address: &str) -> Option<std::process::Child> {
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(address).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// What one server gave: 64 sessions at once, one caller alone, and its memory per idle session.
struct Measured {
    load: Result<Run, String>,
    /// 64 clients at once speaking 2026-07-28 (no sessions).
    stateless: Result<Run, String>,
    alone: Result<Run, String>,
    idle: Option<(u64, u64)>,
}

impl Measured {
    /// Resident memory added per idle session, in KiB.
    fn kib_per_idle_session(&self) -> Option<f64> {
        self.idle
            .map(|(before, after)| after.saturating_sub(before) as f64 / 1000.0)
    }
}

/// Starts the server `command` at `address`, measures it, and stops it (`None`: it did not
/// start).
fn measure(
    rt: &tokio::runtime::Runtime,
    command: std::process::Command,
    address: &str,
    calls: usize,
) -> Option<Measured> {
    let mut child = start(command, address)?;
    let measured = Measured {
        load: rt.block_on(load(address, "/mcp", 64, calls, Some(child.id()))),
        stateless: rt.block_on(load_speaking(
            address,
            "/mcp",
            64,
            calls,
            Some(child.id()),
            Revision::Stateless,
        )),
        alone: rt.block_on(load(address, "/mcp", 1, calls / 20, Some(child.id()))),
        idle: idle_sessions(rt, &child, address),
    };
    let _ = child.kill();
    let _ = child.wait();
    Some(measured)
}

/// One caller alone against the server `command` at `address`, with the client and the
/// server sharing one CPU: the client's thread is pinned before it starts the server, which
/// inherits that affinity, and drives the calls on a single-threaded runtime. `None`: the
/// server did not start.
fn alone_on_one_cpu(
    command: std::process::Command,
    address: &str,
    calls: usize,
) -> Option<Result<Run, String>> {
    let address = address.to_string();
    let thread = std::thread::spawn(move || {
        flowbalancer_benches::pin(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let mut child = start(command, &address)?;
        let run = rt.block_on(load(&address, "/mcp", 1, calls, Some(child.id())));
        let _ = child.kill();
        let _ = child.wait();
        Some(run)
    });
    thread.join().ok().flatten()
}

/// Resident memory of the server `child` before and after 1000 sessions are opened at
/// `address` and left idle, in KiB.
fn idle_sessions(
    rt: &tokio::runtime::Runtime,
    child: &std::process::Child,
    address: &str,
) -> Option<(u64, u64)> {
    let before = rss_kib(child.id())?;
    let sessions = rt.block_on(async {
        let mut sessions = Vec::new();
        for _ in 0..1000 {
            sessions.push(Session::open(address, "/mcp").await.ok()?);
        }
        Some(sessions)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(child.id())?;
    drop(sessions);
    Some((before, after))
}

fn main() {
    if !harness::selected("http_gateway", "http_gateway") {
        return;
    }
    let quick = harness::quick();
    let calls = if quick { 20_000 } else { 100_000 };
    let rt = harness::runtime();
    let Some(binary) = harness::release_binary("http_gateway") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("http.toml");
    std::fs::write(
        &config,
        "[telemetry]\nenabled = false\n[http]\nmax_concurrent_requests = 4096\n[[tiers]]\nname = \"hot\"\nworkers = { builtin = [\"echo\"] }\nsize = 2\nmax_in_flight = 64\n",
    )
    .expect("config");
    let mut report =
        String::from("## HTTP gateway: tools/call over streamable HTTP, echo, 64 sessions\n\n");

    let ours_at = |address: &str| {
        let mut command = std::process::Command::new(&binary);
        command
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--http", address]);
        command
    };
    let floor_at = |address: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rmcp_echo_floor"));
        command.args(["--http", address]);
        command
    };
    let address = format!("127.0.0.1:{}", free_port());
    let ours = measure(&rt, ours_at(&address), &address, calls);
    let floor_address = format!("127.0.0.1:{}", free_port());
    let floor = measure(&rt, floor_at(&floor_address), &floor_address, calls);
    let address = format!("127.0.0.1:{}", free_port());
    let ours_one_cpu = alone_on_one_cpu(ours_at(&address), &address, calls / 20);
    let address = format!("127.0.0.1:{}", free_port());
    let floor_one_cpu = alone_on_one_cpu(floor_at(&address), &address, calls / 20);
    let python = root().join("target/e2e-venv/bin/python");
    let theirs_port = free_port();
    let theirs_address = format!("127.0.0.1:{theirs_port}");
    let theirs = python
        .exists()
        .then(|| {
            let mut command = std::process::Command::new(&python);
            command
                .arg(root().join("benches/python/mcp_http_echo_server.py"))
                .arg(theirs_port.to_string());
            start(command, &theirs_address).map(|mut child| {
                let run = rt.block_on(load(
                    &theirs_address,
                    "/mcp",
                    64,
                    calls / 20,
                    Some(child.id()),
                ));
                let _ = child.kill();
                let _ = child.wait();
                run
            })
        })
        .flatten();
    let row = |name: &str, n: usize, run: Option<&Result<Run, String>>| match run {
        Some(Ok(run)) => format!(
            "| {name} | {n} | {:.1} k/s | {} | {} | {} | {} |\n",
            run.rate / 1000.0,
            us(run.latency.percentile(50.0)),
            us(run.latency.percentile(99.0)),
            run.cpu_per_call.map_or_else(|| "–".to_string(), us),
            run.client_cpu_per_call.map_or_else(|| "–".to_string(), us),
        ),
        Some(Err(e)) => format!("| {name} | {n} | failed: {e} | – | – | – | – |\n"),
        None => format!("| {name} | {n} | not run | – | – | – | – |\n"),
    };
    let header = "| server | calls | calls/s | p50 | p99 | server CPU per call | client CPU per call |\n|---|---:|---:|---:|---:|---:|---:|\n";
    report.push_str(header);
    report.push_str(&row(
        "flowbalancer serve --http",
        calls,
        ours.as_ref().map(|m| &m.load),
    ));
    report.push_str(&row(
        "minimal rmcp streamable-HTTP server (the floor)",
        calls,
        floor.as_ref().map(|m| &m.load),
    ));
    report.push_str(&row(
        "MCP Python SDK (MCPServer, streamable HTTP)",
        calls / 20,
        theirs.as_ref(),
    ));
    if let (Some(Measured { load: Ok(a), .. }), Some(Ok(b))) = (&ours, &theirs) {
        report.push_str(&format!("\nflowbalancer ÷ Python SDK = {:.1}× (goal ≥ 10×); goal for ours: ≥ 20 k/s with p99 < 5 ms.\n", a.rate / b.rate));
    }
    if let (Some(Measured { load: Ok(a), .. }), Some(Measured { load: Ok(b), .. })) =
        (&ours, &floor)
        && let (Some(ours_cpu), Some(floor_cpu)) = (a.cpu_per_call, b.cpu_per_call)
    {
        report.push_str(&format!(
            "Server CPU per call at 64 sessions: flowbalancer {} against the floor's {} ({:.2}×): the gateway's own work per call is the difference, {}.\n",
            us(ours_cpu),
            us(floor_cpu),
            ours_cpu.as_secs_f64() / floor_cpu.as_secs_f64().max(f64::MIN_POSITIVE),
            harness::micros_over(ours_cpu, floor_cpu),
        ));
    }
    report.push_str(&format!(
        "\nThe same load from 64 clients speaking {STATELESS_REVISION} (no handshake, no \
         session: each request stands alone, as the Python SDK's high-level `Client` sends \
         them):\n\n"
    ));
    report.push_str(header);
    report.push_str(&row(
        "flowbalancer serve --http",
        calls,
        ours.as_ref().map(|m| &m.stateless),
    ));
    report.push_str(&row(
        "minimal rmcp streamable-HTTP server (the floor)",
        calls,
        floor.as_ref().map(|m| &m.stateless),
    ));
    report.push_str("\nOne caller alone (one session, one call at a time):\n\n");
    report.push_str(header);
    report.push_str(&row(
        "flowbalancer serve --http",
        calls / 20,
        ours.as_ref().map(|m| &m.alone),
    ));
    report.push_str(&row(
        "minimal rmcp streamable-HTTP server (the floor)",
        calls / 20,
        floor.as_ref().map(|m| &m.alone),
    ));
    if let (Some(Measured { alone: Ok(a), .. }), Some(Measured { alone: Ok(b), .. })) =
        (&ours, &floor)
    {
        report.push_str(&format!(
            "\nflowbalancer's own part for one caller: p50 {}, p99 {} (serve's minus the floor's).\n",
            harness::micros_over(a.latency.percentile(50.0), b.latency.percentile(50.0)),
            harness::micros_over(a.latency.percentile(99.0), b.latency.percentile(99.0)),
        ));
    }
    report.push_str(
        "\nOne caller alone, with the client and the server on one CPU (no round trip waits \
         for a wake-up on another CPU):\n\n",
    );
    report.push_str(header);
    report.push_str(&row(
        "flowbalancer serve --http",
        calls / 20,
        ours_one_cpu.as_ref(),
    ));
    report.push_str(&row(
        "minimal rmcp streamable-HTTP server (the floor)",
        calls / 20,
        floor_one_cpu.as_ref(),
    ));
    if let (Some(Ok(a)), Some(Ok(b))) = (&ours_one_cpu, &floor_one_cpu) {
        report.push_str(&format!(
            "\nflowbalancer's own part for one caller on one CPU: p50 {}, p99 {} (serve's minus the floor's).\n",
            harness::micros_over(a.latency.percentile(50.0), b.latency.percentile(50.0)),
            harness::micros_over(a.latency.percentile(99.0), b.latency.percentile(99.0)),
        ));
    }
    if let Some(
        ours @ Measured {
            idle: Some((before, after)),
            ..
        },
    ) = &ours
        && let Some(kib) = ours.kib_per_idle_session()
    {
        report.push_str(&format!(
            "\nMemory per idle session: {kib:.1} KiB ({before} KiB resident before 1000 idle sessions, {after} KiB after; goal < 64 KiB).\n",
        ));
        if let Some(kib) = floor.as_ref().and_then(Measured::kib_per_idle_session) {
            report.push_str(&format!(
                "The floor (rmcp's own session manager, no balancer) holds {kib:.1} KiB per idle session measured the same way.\n",
            ));
        }
        report.push('\n');
    }
    harness::report("http_gateway.md", &report);
}
