//! A gateway killed with SIGKILL while its workers are busy leaves nothing behind: the
//! workers die with it (PR_SET_PDEATHSIG), and a grandchild that a worker moved into a
//! session of its own is killed by the next start (the per-user run registry), which also
//! removes the killed run's scratch directory.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn worker_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workers/python/examples/basic_worker.py")
}

/// A worker of protocol version 1 that runs one call at a time on its only thread: busy in
/// `hang`, it does not notice its stdin closing, so only the parent-death signal stops it.
const SINGLE_THREADED_WORKER: &str = r#"
import json, struct, sys, time
out = sys.stdout.buffer
def send(m):
    b = json.dumps(m).encode()
    out.write(struct.pack(">I", len(b)) + b); out.flush()
send({"type": "hello", "protocol": 1, "worker": "blocking", "tools": [{"name": "hang"}]})
while True:
    p = sys.stdin.buffer.read(4)
    if len(p) < 4: break
    m = json.loads(sys.stdin.buffer.read(struct.unpack(">I", p)[0]))
    if m["type"] == "call":
        time.sleep(3600)
    elif m["type"] == "ping": send({"type": "pong", "id": m["id"]})
    elif m["type"] == "shutdown": break
"#;

fn config(dir: &Path, marker: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    let script = worker_script();
    let blocking = dir.join("blocking_worker.py");
    std::fs::write(&blocking, SINGLE_THREADED_WORKER).unwrap();
    std::fs::write(
        &path,
        format!(
            r#"
            [telemetry]
            path = "{events}"
            [[tiers]]
            name = "orphans"
            workers = {{ command = ["python3", "{script}", "--faults", "--marker={marker}"] }}
            size = 1
            [[tiers]]
            name = "busy"
            workers = {{ command = ["python3", "{blocking}", "--marker={marker}"] }}
            size = 2
            [routes]
            exact = {{ hang = "busy" }}
            fallback = {{ hang = [] }}
            "#,
            events = dir.join("events.jsonl").display(),
            script = script.display(),
            blocking = blocking.display(),
        ),
    )
    .unwrap();
    path
}

struct Gateway {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Gateway {
    fn start(config: &Path, state: &Path, temp: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
            .args(["serve", "--config"])
            .arg(config)
            .env("XDG_STATE_HOME", state)
            .env("TMPDIR", temp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut gateway = Self {
            child,
            stdin,
            stdout,
        };
        gateway.send(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "parent-death-test", "version": "1"}}}),
        );
        gateway.answer(0);
        gateway.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        gateway
    }

    fn send(&mut self, message: Value) {
        writeln!(self.stdin, "{message}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Reads lines until the answer to `id`.
    fn answer(&mut self, id: u64) -> Value {
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the gateway closed stdout"
            );
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    fn call(&mut self, id: u64, tool: &str) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": {}}}));
    }
}

/// Live (not zombie) processes whose command line carries `marker`.
fn live_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    found
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_gateway_leaves_no_worker_and_the_next_start_kills_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let marker = format!("parent-death-{}", std::process::id());
    let config = config(dir.path(), &marker);
    let temp = dir.path().join("tmp");
    std::fs::create_dir(&temp).unwrap();
    let mut gateway = Gateway::start(&config, &state, &temp);
    gateway.call(1, "spawn_orphan");
    let answer = gateway.answer(1);
    assert!(answer["result"]["isError"] != json!(true), "{answer}");
    // Busy workers: two calls that hang for an hour.
    gateway.call(2, "hang");
    gateway.call(3, "hang");
    // Three workers, and the orphan once it leads a session of its own (it calls setsid()
    // just after the fork that answered the call).
    let leader = |marker: &str| {
        live_with(marker)
            .into_iter()
            .find(|&pid| session_of(pid) == Some(pid))
    };
    wait_until(
        Duration::from_secs(20),
        "three workers and the orphan run",
        || live_with(&marker).len() >= 4 && leader(&marker).is_some(),
    );
    let orphan = leader(&marker).expect("the orphan runs");
    gateway.child.kill().unwrap(); // SIGKILL
    gateway.child.wait().unwrap();
    wait_until(
        Duration::from_secs(2),
        "the busy workers died with their gateway",
        || live_with(&marker).iter().all(|&pid| pid == orphan),
    );
    assert_eq!(
        live_with(&marker),
        [orphan],
        "the orphan, in a session of its own, survived"
    );
    let scratch = || {
        std::fs::read_dir(&temp)
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("flowbalancer-")
            })
            .count()
    };
    assert_eq!(scratch(), 1, "the killed run's scratch directory is left");
    for entry in std::fs::read_dir(&temp).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the scratch directory is private");
    }
    // The next start, with the same per-user state, kills it and removes the directory.
    let status = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .args(["check"])
        .arg(&config)
        .env("XDG_STATE_HOME", &state)
        .env("TMPDIR", &temp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(
        Duration::from_secs(2),
        "the next start killed what the crashed run left",
        || live_with(&marker).is_empty(),
    );
    assert_eq!(
        scratch(),
        0,
        "the crashed run's scratch directory is removed, and check removed its own"
    );
}

/// The session id of `pid` (field 6 of /proc/PID/stat).
fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn the_start_after_a_killed_run_with_nothing_left_running_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let temp = dir.path().join("tmp");
    std::fs::create_dir(&temp).unwrap();
    let config = dir.path().join("quiet.toml");
    std::fs::write(
        &config,
        "[telemetry]\nenabled = false\n[[tiers]]\nname = \"local\"\nworkers = { builtin = [\"echo\"] }\nsize = 1\n",
    )
    .unwrap();
    let mut gateway = Gateway::start(&config, &state, &temp);
    gateway.child.kill().unwrap(); // SIGKILL: its scratch directory stays, nothing runs
    gateway.child.wait().unwrap();
    assert_eq!(std::fs::read_dir(&temp).unwrap().count(), 1);
    let next = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .args(["check"])
        .arg(&config)
        .env("XDG_STATE_HOME", &state)
        .env("TMPDIR", &temp)
        .env_remove("FLOWBALANCER_LOG")
        .output()
        .unwrap();
    assert!(next.status.success());
    let stderr = String::from_utf8_lossy(&next.stderr);
    assert!(
        !stderr.contains("WARN"),
        "removing a scratch directory is housekeeping, not a warning:\n{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&temp).unwrap().count(),
        0,
        "the killed run's scratch directory is removed"
    );
}
