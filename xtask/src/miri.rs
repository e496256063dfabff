//! `cargo xtask miri`: the ringbuf and bus tests under Miri (nightly), which reports undefined
//! behaviour and leaks. The tests use small sizes under `cfg(miri)`.

use std::process::Command;

use crate::cmd;

/// The crates whose unsafe code and concurrency Miri checks.
const CRATES: [&str; 2] = ["flowbalancer-ringbuf", "flowbalancer-bus"];

/// Installs what is missing (the nightly toolchain's `miri` and `rust-src` components, Miri's
/// sysroot), then runs the tests.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("usage: cargo xtask miri".into());
    }
    ensure_miri()?;
    let mut command = nightly_cargo();
    // The unit and integration tests; doctests are left to the normal test step (they read
    // the wall clock, which Miri's isolation forbids, and use production-sized queues).
    command.args(["miri", "test", "--lib", "--tests"]);
    for package in CRATES {
        command.args(["-p", package]);
    }
    cmd::run(&mut command)
}

/// `cargo +nightly`, without the variables through which the stable cargo that runs xtask
/// would pin its own toolchain.
pub(crate) fn nightly_cargo() -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .current_dir(cmd::root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    command
}

/// Whether `cargo +nightly ARGS` runs and succeeds (its output discarded).
fn nightly_succeeds(args: &[&str]) -> bool {
    nightly_cargo()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the nightly toolchain (minimal profile) when it is missing.
pub(crate) fn ensure_nightly() -> Result<(), String> {
    if nightly_succeeds(&["--version"]) {
        return Ok(());
    }
    eprintln!("adding the nightly toolchain (rustup, minimal profile)");
    install_nightly(&[])
}

/// `rustup toolchain install nightly --profile minimal`, with `components` if any.
fn install_nightly(components: &[&str]) -> Result<(), String> {
    let mut command = Command::new("rustup");
    command.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
    if !components.is_empty() {
        command.args(["--component", &components.join(",")]);
    }
    cmd::run(&mut command)
}

fn ensure_miri() -> Result<(), String> {
    ensure_nightly()?;
    let has_miri = || nightly_succeeds(&["miri", "--version"]);
    if !has_miri() {
        eprintln!("miri: adding the nightly toolchain's miri and rust-src components (rustup)");
        let installed = cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "--toolchain",
            "nightly",
            "miri",
            "rust-src",
        ]));
        if installed.is_err() {
            install_nightly(&["miri", "rust-src"])?;
        }
        if !has_miri() {
            return Err("`cargo +nightly miri` is still missing after the install".into());
        }
    }
    cmd::run(nightly_cargo().args(["miri", "setup"]))
}
