//! `cargo xtask loom`: every loom model of every crate, bounded.

use std::fs;

use crate::cmd;

/// Runs the loom models; returns (models run, models passed).
pub(crate) fn run(args: &[String]) -> Result<(usize, usize), String> {
    let only = match args {
        [] => None,
        [flag, name] if flag == "--crate" => Some(name.clone()),
        _ => return Err("usage: cargo xtask loom [--crate NAME]".into()),
    };
    // Each model sets its own preemption bound (loom::model::Builder); this variable can only
    // lower it, and is passed on when set.
    let preemptions = std::env::var("LOOM_MAX_PREEMPTIONS").ok();
    let mut total = 0;
    let mut passed = 0;
    let crates = crates_with_models()?;
    if crates.is_empty() {
        return Err("no crate has loom models (crates/*/tests/loom*.rs)".into());
    }
    for (dir, tests) in crates {
        if only
            .as_deref()
            .is_some_and(|name| name != dir && format!("flowbalancer-{dir}") != name)
        {
            continue;
        }
        let package = package_name(&dir)?;
        for test in tests {
            eprintln!(
                "loom: {package} --test {test} (preemption bound: per model{})",
                preemptions
                    .as_deref()
                    .map(|p| format!(", at most {p}"))
                    .unwrap_or_default()
            );
            let mut command = cmd::cargo();
            command
                .args(["test", "--release", "-p", &package, "--test", &test, "--"])
                .args(["--test-threads", "2"])
                .env("RUSTFLAGS", "--cfg loom")
                // A separate target dir: changing RUSTFLAGS must not rebuild the main one.
                .env("CARGO_TARGET_DIR", cmd::root().join("target/loom"));
            if let Some(preemptions) = &preemptions {
                command.env("LOOM_MAX_PREEMPTIONS", preemptions);
            }
            let output = cmd::run_capture(&mut command);
            let (ran, ok) = match &output {
                Ok(text) | Err(text) => count(text),
            };
            total += ran;
            passed += ok;
            output?;
        }
    }
    println!("loom: {total} models ran, {passed} passed");
    if total == 0 {
        return Err("no loom model ran".into());
    }
    Ok((total, passed))
}

/// `(crate folder, [test target names])` for every crate with `tests/loom*.rs`.
fn crates_with_models() -> Result<Vec<(String, Vec<String>)>, String> {
    let mut found = Vec::new();
    let crates = cmd::root().join("crates");
    let entries = fs::read_dir(&crates).map_err(|e| format!("{}: {e}", crates.display()))?;
    let mut dirs: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let Ok(tests) = fs::read_dir(dir.join("tests")) else {
            continue;
        };
        let mut names: Vec<String> = tests
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name.starts_with("loom") && name.ends_with(".rs"))
            .map(|name| name.trim_end_matches(".rs").to_string())
            .collect();
        names.sort();
        if !names.is_empty() {
            let folder = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.push((folder, names));
        }
    }
    Ok(found)
}

fn package_name(dir: &str) -> Result<String, String> {
    let manifest = cmd::root().join("crates").join(dir).join("Cargo.toml");
    let text = fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    text.lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_string())
        })
        .ok_or_else(|| format!("{}: no package name", manifest.display()))
}

/// Sums "N passed; M failed" over every `test result:` line.
fn count(output: &str) -> (usize, usize) {
    let mut ran = 0;
    let mut passed = 0;
    for line in output.lines().filter(|l| l.starts_with("test result:")) {
        let number_before = |word: &str| -> usize {
            line.split(';')
                .find(|part| part.trim_end().ends_with(word))
                .and_then(|part| part.split_whitespace().rev().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let ok = number_before("passed");
        let failed = number_before("failed");
        passed += ok;
        ran += ok + failed;
    }
    (ran, passed)
}
