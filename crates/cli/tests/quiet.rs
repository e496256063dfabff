//! A normal run logs no warnings: workers the gateway stops on purpose stopped cleanly.

use std::process::Command;

#[test]
fn a_plain_call_with_the_default_config_prints_no_warning() {
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .args(["call", "echo", r#"{"text": "hi"}"#])
        .env("XDG_STATE_HOME", state.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("\"hi\""), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for noise in ["WARN", "ERROR", "crashed", "is dead"] {
        assert!(
            !stderr.contains(noise),
            "a normal run printed {noise:?}:\n{stderr}"
        );
    }
}
