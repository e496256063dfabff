//! `serve --metrics ADDR` exports the pools' and tiers' metrics in the Prometheus text format.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `GET path` on `address`, the whole answer (status line, headers, body).
fn get(address: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer
}

#[test]
fn serve_exports_call_counts_and_latency_histograms_for_prometheus() {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .args(["serve", "--metrics", "127.0.0.1:0"])
        .env("XDG_STATE_HOME", state.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let address = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve ended before saying where the metrics are"
        );
        if let Some(rest) = line.split("Prometheus metrics at http://").nth(1) {
            break rest.trim().trim_end_matches("/metrics").to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no metrics line"
        );
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));

    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for message in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
    ] {
        writeln!(stdin, "{message}").unwrap();
    }
    let mut answered = false;
    for _ in 0..10 {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains(r#""id":2"#) {
            assert!(line.contains("hi"), "{line}");
            answered = true;
            break;
        }
    }
    assert!(answered, "the call was not answered");

    let scrape = get(&address, "/metrics");
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    assert!(scrape.contains("text/plain; version=0.0.4"), "{scrape}");
    for expected in [
        "# TYPE flowbalancer_pool_calls_total counter",
        "flowbalancer_tier_calls_total{tier=\"",
        "flowbalancer_tier_successes_total{tier=\"",
        "flowbalancer_pool_in_flight{pool=\"",
        "flowbalancer_pool_worker_transitions_total{pool=\"",
        "flowbalancer_tier_call_duration_seconds_bucket{tier=\"",
        "le=\"0.005\"",
    ] {
        assert!(scrape.contains(expected), "no {expected:?} in:\n{scrape}");
    }
    // The call is counted: some tier served exactly one call.
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("flowbalancer_tier_successes_total{") && l.ends_with(" 1")),
        "{scrape}"
    );
    assert!(get(&address, "/other").starts_with("HTTP/1.1 404"));

    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not end after stdin closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
