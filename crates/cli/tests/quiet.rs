//! A normal run logs no warnings: workers the gateway stops on purpose stopped cleanly. The one
//! start that does warn is an HTTP front open beyond this machine without bearer tokens.

use std::process::Command;

#[test]
fn a_plain_call_with_the_default_config_prints_no_warning() {
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .args(["call", "echo", r#"{"text": "hi"}"#])
        .env("XDG_STATE_HOME", state.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("\"hi\""), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for noise in ["WARN", "ERROR", "crashed", "is dead"] {
        assert!(
            !stderr.contains(noise),
            "a normal run printed {noise:?}:\n{stderr}"
        );
    }
}

/// A config with one tier of the built-in echo tool and the event log off.
const ECHO_TIER: &str =
    "[telemetry]\nenabled = false\n[[tiers]]\nname = \"hot\"\nworkers = { builtin = [\"echo\"] }\n";

/// The lines `serve --http ADDRESS` prints on stderr up to the one that says it is serving.
fn startup_lines(address: &str, tokens: Option<&str>) -> Vec<String> {
    use std::io::BufRead;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("http.toml");
    let mut text = String::from(ECHO_TIER);
    if tokens.is_some() {
        text.push_str("[http]\nbearer_tokens_env = \"FLOWBALANCER_TEST_TOKENS\"\n");
    }
    std::fs::write(&config, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowbalancer"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--http", address])
        .env("XDG_STATE_HOME", dir.path())
        .env_remove("RUST_LOG")
        .env_remove("FLOWBALANCER_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(tokens) = tokens {
        command.env("FLOWBALANCER_TEST_TOKENS", tokens);
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let serving = line.contains("serving MCP over HTTP at");
                lines.push(line);
                if serving {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("serving MCP over HTTP at")),
        "serve --http {address} did not start within 20 s: {lines:?}"
    );
    lines
}

#[test]
fn serving_http_beyond_this_machine_without_tokens_warns_and_loopback_does_not() {
    let warning = "without bearer tokens";
    let open = startup_lines("0.0.0.0:0", None);
    assert!(
        open.iter().any(|l| l.contains(warning)),
        "no warning for 0.0.0.0 without tokens: {open:?}"
    );
    let guarded = startup_lines("0.0.0.0:0", Some("secret-token"));
    assert!(
        !guarded
            .iter()
            .any(|l| l.contains(warning) || l.contains("secret-token")),
        "{guarded:?}"
    );
    let local = startup_lines("127.0.0.1:0", None);
    assert!(
        !local.iter().any(|l| l.contains("WARN")),
        "a loopback start printed a warning: {local:?}"
    );
}

/// `flowbalancer serve ARGS` on stdio pipes, its state under `state`, at the default log level.
fn serve_over_pipes(args: &[&std::ffi::OsStr], state: &std::path::Path) -> std::process::Child {
    use std::process::Stdio;
    Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .arg("serve")
        .args(args)
        .env("XDG_STATE_HOME", state)
        .env_remove("RUST_LOG")
        .env_remove("FLOWBALANCER_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A client's mistakes are answered, not logged with what the client sent: rmcp's warning for
/// every error answer (with the error's data) stays out of stderr by default.
#[test]
fn error_answers_over_stdio_log_nothing_of_the_request() {
    use std::io::{BufRead, Write};

    let state = tempfile::tempdir().unwrap();
    let mut child = serve_over_pipes(&[], state.path());
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut answer = || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    let requests = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"no-such-tool-SECRET1"}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":"SECRET2"}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"no/such/SECRET3"}"#,
    ];
    for request in requests {
        writeln!(stdin, "{request}").unwrap();
    }
    stdin.flush().unwrap();
    assert_eq!(answer()["id"], 1);
    // Requests are served concurrently: the answers come in any order.
    let mut codes: Vec<_> = (0..3)
        .map(|_| {
            let error = answer();
            (error["id"].as_i64(), error["error"]["code"].as_i64())
        })
        .collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [
            (Some(2), Some(-32602)),
            (Some(3), Some(-32602)),
            (Some(4), Some(-32601))
        ]
    );
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for secret in ["SECRET1", "SECRET2", "SECRET3", "WARN"] {
        assert!(!stderr.contains(secret), "stderr has {secret:?}:\n{stderr}");
    }
}

/// A client that leaves before it initializes ends `serve` cleanly: one that only asks
/// `server/discover` (the TypeScript SDK's v2 probes so, on a process it then closes) gets its
/// answer, and neither it nor one that closes stdin at once sees an exit status or a message
/// of failure.
#[test]
fn a_client_that_leaves_before_initializing_ends_serve_cleanly() {
    use std::io::{BufRead, Write};

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("builtin.toml");
    std::fs::write(&config, ECHO_TIER).unwrap();
    let discover = r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"probe","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    for probe in [Some(discover), None] {
        let mut child = serve_over_pipes(&["--config".as_ref(), config.as_os_str()], dir.path());
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        if let Some(request) = probe {
            writeln!(stdin, "{request}").unwrap();
            stdin.flush().unwrap();
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(
                answer["result"]["supportedVersions"]
                    .as_array()
                    .is_some_and(|versions| versions.iter().any(|v| v == "2026-07-28")),
                "{answer}"
            );
        }
        drop(stdin);
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "probe {probe:?}: {status:?}\n{stderr}");
        for noise in ["failed", "WARN", "ERROR"] {
            assert!(
                !stderr.contains(noise),
                "probe {probe:?}: stderr has {noise:?}:\n{stderr}"
            );
        }
    }
}
