//! `cargo xtask minimal-versions`: every lower bound the workspace declares builds. A copy of
//! the workspace under `target/minimal-versions/` gets the lowest versions its direct
//! dependencies allow (`cargo +nightly update -Z direct-minimal-versions`), then
//! `cargo check --workspace` builds it with its own target directory, so the real lockfile
//! and build cache stay as they are.

use std::path::Path;
use std::process::Command;

use crate::cmd;

/// What the copy needs: the manifests, the lockfile, cargo's config, every member's sources,
/// and the Python files the CLI embeds.
const COPIED: [&str; 7] = [
    "Cargo.toml",
    "Cargo.lock",
    ".cargo",
    "crates",
    "xtask",
    "benches",
    "workers",
];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("usage: cargo xtask minimal-versions".into());
    }
    let root = cmd::root();
    let base = root.join("target/minimal-versions");
    let copy = base.join("workspace");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
    }
    std::fs::create_dir_all(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
    for item in COPIED {
        copy_tree(&root.join(item), &copy.join(item))?;
    }
    crate::miri::ensure_nightly()?;
    let mut update = crate::miri::nightly_cargo();
    update
        .current_dir(&copy)
        .args(["update", "-Z", "direct-minimal-versions"]);
    cmd::run(&mut update)?;
    let mut check = Command::new("cargo");
    check
        .current_dir(&copy)
        .env("CARGO_TARGET_DIR", base.join("target"))
        .args(["check", "--workspace"]);
    cmd::run(&mut check).map_err(|e| {
        format!("{e}\nA declared lower bound does not build: raise it in the Cargo.toml that declares it")
    })
}

/// Copies a file or a directory tree (skipping `target` directories).
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let metadata = std::fs::metadata(from).map_err(|e| format!("{}: {e}", from.display()))?;
    if metadata.is_file() {
        std::fs::copy(from, to).map_err(|e| format!("{}: {e}", from.display()))?;
        return Ok(());
    }
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        let name = entry.file_name();
        if name == "target" || name == "__pycache__" || name == "node_modules" {
            continue;
        }
        copy_tree(&entry.path(), &to.join(&name))?;
    }
    Ok(())
}
