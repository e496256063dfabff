//! `flowbalancer check` takes the config as every other command does (`--config FILE`) as well
//! as by position, and says what is wrong with it; `bench` and `call` refuse zero where it
//! would make them do nothing; addresses read the same in the config and on the command line.

use std::process::{Command, Output};

fn check(args: &[&std::ffi::OsStr]) -> Output {
    let state = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .arg("check")
        .args(args)
        .env("XDG_STATE_HOME", state.path())
        .output()
        .unwrap()
}

#[test]
fn check_takes_the_config_by_position_or_as_an_option() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[tiers]]\nname = \"hot\"\nworkers = { builtin = [\"echo\"] }\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[tiers]]\nname = \"hot\"\nworkers = { builtin = [\"echo\"] }\nsize = 0\n",
    )
    .unwrap();

    for args in [
        vec![good.as_os_str()],
        vec!["--config".as_ref(), good.as_os_str()],
    ] {
        let output = check(&args);
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("1 tier(s): hot"),
            "{args:?}: {output:?}"
        );
    }
    for args in [
        vec![bad.as_os_str()],
        vec!["--config".as_ref(), bad.as_os_str()],
    ] {
        let output = check(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("tiers[0].size"),
            "{args:?}: {output:?}"
        );
    }
    // Both at once is a usage error, not a silent choice of one.
    let output = check(&[good.as_os_str(), "--config".as_ref(), bad.as_os_str()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn zero_where_a_command_would_do_nothing_is_a_usage_error() {
    let state = tempfile::tempdir().unwrap();
    for args in [
        &["bench", "--duration", "0s"][..],
        &["bench", "--concurrency", "0"],
        &["call", "--timeout", "0ms", "echo", "{}"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
            .args(args)
            .env("XDG_STATE_HOME", state.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("invalid value '0"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_listening_address_may_say_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let tier = "[[tiers]]\nname = \"hot\"\nworkers = { builtin = [\"echo\"] }\n";
    for (bind, accepted) in [
        ("localhost:8080", true),
        ("127.0.0.1:8080", true),
        ("[::1]:8080", true),
        ("8080", false),
        ("localhost", false),
        ("example.com:8080", false),
    ] {
        let path = dir.path().join("http.toml");
        std::fs::write(&path, format!("[http]\nbind = {bind:?}\n{tier}")).unwrap();
        let output = check(&[path.as_os_str()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.success(), accepted, "{bind}: {stderr}");
        if !accepted {
            assert!(
                stderr.contains("http.bind") && stderr.contains("localhost:8080"),
                "{bind}: {stderr}"
            );
        }
    }
    // The flag reads addresses the same way.
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .args(["serve", "--http", "8080"])
        .env("XDG_STATE_HOME", state.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("localhost:8080"), "{stderr}");
}
