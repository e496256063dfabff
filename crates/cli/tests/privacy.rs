//! A real `serve` run with the default config writes nothing of its callers' data to disk,
//! and what it writes is private to the user.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contents(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_default();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = Vec::new();
        let _ = flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut text);
        return text;
    }
    bytes
}

#[test]
fn a_serve_run_writes_no_argument_or_result_and_only_private_files() {
    let root = tempfile::tempdir().unwrap();
    let (home, state, tmp) = (
        root.path().join("home"),
        root.path().join("state"),
        root.path().join("tmp"),
    );
    for dir in [&home, &state, &tmp] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let secret = format!("SECRET-{}-payload", std::process::id());
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .arg("serve")
        .env("HOME", &home)
        .env("XDG_STATE_HOME", &state)
        .env("TMPDIR", &tmp)
        .env_remove("FLOWBALANCER_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = gateway.stdin.take().unwrap();
    let mut stdout = BufReader::new(gateway.stdout.take().unwrap());
    let send = |stdin: &mut std::process::ChildStdin, message: Value| {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    };
    let mut answer = |id: u64| loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "stdout closed");
        let message: Value = serde_json::from_str(&line).unwrap();
        if message["id"] == json!(id) {
            return message;
        }
    };
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "privacy", "version": "1"}}}),
    );
    answer(1);
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    // A result carrying the secret, a caller error naming it (the worker's error message
    // quotes an argument's name), a failure with it in the arguments, and a long call cut
    // short.
    let mut named_by_the_secret = serde_json::Map::new();
    named_by_the_secret.insert("text".into(), json!("x"));
    named_by_the_secret.insert(secret.clone(), json!(1));
    let calls = [
        json!({"name": "echo", "arguments": {"text": secret}}),
        json!({"name": "echo", "arguments": {"text": secret, "unexpected": secret}}),
        // Not echo: the event log folds a second "call echo failed" within a second into a
        // count, and this one must be written out whole.
        json!({"name": "word_count", "arguments": named_by_the_secret}),
        json!({"name": "word_count", "arguments": {"text": secret}}),
        json!({"name": "fib", "arguments": {"n": -1, "note": secret}}),
        json!({"name": "sleep", "arguments": {"ms": 10, "secret": secret}}),
    ];
    for (i, params) in calls.iter().enumerate() {
        let id = 10 + i as u64;
        send(
            &mut stdin,
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}),
        );
        let reply = answer(id);
        assert!(
            reply.get("result").is_some() || reply.get("error").is_some(),
            "{reply}"
        );
    }
    drop(stdin);
    let status = gateway.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    gateway
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !stderr.contains(&secret),
        "stderr has the secret:\n{stderr}"
    );

    let mut files = Vec::new();
    for dir in [&home, &state, &tmp] {
        files_under(dir, &mut files);
    }
    let logs: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("events"))
        .collect();
    assert!(!logs.is_empty(), "the run wrote an event log: {files:?}");
    for file in &files {
        let text = contents(file);
        assert!(
            !String::from_utf8_lossy(&text).contains(&secret),
            "{} holds a caller's argument",
            file.display()
        );
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o077,
            0,
            "{} is readable by others",
            file.display()
        );
    }
    let log_dir = state.join("flowbalancer");
    assert_eq!(
        std::fs::metadata(&log_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
}
