//! Running cargo and other programs, with timing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The workspace root (the parent of this crate's folder).
pub(crate) fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// `cargo`, as the one that runs us.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root());
    command
}

/// Runs a command with inherited output; an error names it.
pub(crate) fn run(command: &mut Command) -> Result<(), String> {
    let shown = describe(command);
    let status = command
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

/// Runs a command, echoing and capturing its standard output.
pub(crate) fn run_capture(command: &mut Command) -> Result<String, String> {
    let shown = describe(command);
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{stdout}");
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("`{shown}` failed ({})", output.status))
    }
}

/// Whether `program --version` runs.
pub(crate) fn has(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Times a step and prints one line for it.
pub(crate) struct Steps {
    started: Instant,
    lines: Vec<String>,
}

impl Steps {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            lines: Vec::new(),
        }
    }

    pub(crate) fn step(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), String> {
        eprintln!("==> {name}");
        let started = Instant::now();
        let result = f();
        let line = format!(
            "{:<8} {:<40} {:>8.1}s",
            if result.is_ok() { "ok" } else { "FAILED" },
            name,
            started.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        self.lines.push(line);
        result.map_err(|e| format!("step `{name}` failed: {e}"))
    }

    pub(crate) fn summary(&self) {
        eprintln!("\nsteps:");
        for line in &self.lines {
            eprintln!("  {line}");
        }
        eprintln!("  total {:.1}s", self.started.elapsed().as_secs_f64());
    }
}

/// Runs a command and returns its standard output without echoing it.
pub(crate) fn run_capture_quiet(command: &mut Command) -> Result<String, String> {
    let shown = describe(command);
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("`{shown}` failed ({})", output.status))
    }
}
