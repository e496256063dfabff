//! `flowbalancer analyze`: tool output in, a summary out; the exit code says whether it failed.

use std::io::Write;
use std::process::{Command, Stdio};

fn analyze(input: &str, args: &[&str]) -> (i32, String) {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .arg("analyze")
        .args(args)
        .env("XDG_STATE_HOME", state.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn a_traceback_from_stdin_is_summarised_and_fails() {
    let traceback = "Traceback (most recent call last):\n  File \"/w/tools.py\", line 9, in run\n    1 / 0\nZeroDivisionError: division by zero\n";
    let (code, out) = analyze(traceback, &[]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("ZeroDivisionError at tools.py:9 in run"),
        "{out}"
    );
}

#[test]
fn lint_output_from_a_file_gives_the_hint_and_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ruff.txt");
    std::fs::write(
        &file,
        "a.py:1:8: F401 [*] `os` imported but unused\nFound 1 error.\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let (code, out) = analyze("", &[&path]);
    assert_eq!(code, 1);
    assert!(
        out.contains("1 lint error") && out.contains("next: ruff check --fix"),
        "{out}"
    );
    let (_, json) = analyze("", &[&path, "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["kind"], "lint");
    assert_eq!(value["total"], 1);
}

#[test]
fn clean_output_exits_zero() {
    let (code, _) = analyze("all tests passed, nothing to see\n", &["-"]);
    assert_eq!(code, 0);
}
