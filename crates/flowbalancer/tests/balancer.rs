//! The Balancer from TOML, with built-in and Python tiers.

use std::time::Duration;

use flowbalancer::tiers::{CallOptions, RouteError};
use flowbalancer::{Balancer, Config, Error};
use serde_json::json;

fn worker_script() -> String {
    format!(
        "{}/../../workers/python/examples/basic_worker.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn a_chain_deadline_shorter_than_a_tiers_call_timeout_is_warned_about() {
    let config = Config::from_toml(
        r#"
        timeout = "3s"
        [[tiers]]
        name = "hot"
        workers = { builtin = ["echo"] }
        [[tiers]]
        name = "cold"
        workers = { builtin = ["echo"] }
        call_timeout = "2s"
        cancel_grace = "500ms"
        "#,
    )
    .unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("tier \"hot\""), "{}", warnings[0]);
    assert!(warnings[0].contains("30s"), "{}", warnings[0]);
    assert!(warnings[0].contains("cancel_grace (2s)"), "{}", warnings[0]);
    // The defaults (30 s and 30 s) say nothing.
    let defaults =
        Config::from_toml("[[tiers]]\nname = \"hot\"\nworkers = { builtin = [\"echo\"] }\n")
            .unwrap();
    assert!(defaults.warnings().is_empty());
}

#[test]
fn config_errors_name_their_location() {
    let syntax = Config::from_toml(
        "[[tiers]]\nname = \"hot\"\nworkers = { builtin = [\"echo\"] }\nsize = \"two\"\n",
    )
    .unwrap_err();
    let text = syntax.to_string();
    assert!(text.contains("line 4"), "{text}");
    let semantic = Config::from_toml(
        r#"
        [[tiers]]
        name = "hot"
        workers = { builtin = ["echo", "teleport"] }
        [[tiers]]
        name = "hot"
        workers = { command = [] }
        [routes]
        default = "warm"
        exact = { fib = "cold" }
        "#,
    )
    .unwrap_err();
    let Error::Config { problems } = semantic else {
        panic!()
    };
    let locations: Vec<&str> = problems.iter().map(|p| p.location.as_str()).collect();
    for expected in [
        "tiers[0].workers.builtin",
        "tiers[1].name",
        "tiers[1].workers.command",
        "routes.default",
        "routes.exact.fib",
    ] {
        assert!(
            locations.contains(&expected),
            "{expected} missing from {locations:?}"
        );
    }
    let unknown_key = Config::from_toml("tiers = []\nspeed = 11\n")
        .unwrap_err()
        .to_string();
    assert!(unknown_key.contains("speed"), "{unknown_key}");
}

#[test]
fn zero_where_zero_makes_no_sense_is_a_problem() {
    let bad = Config::from_toml(
        r#"
        timeout = "0s"
        [sessions]
        ttl = 0
        [http]
        session_ttl = "0ms"
        header_read_timeout = "0s"
        max_body_bytes = 0
        [[tiers]]
        name = "a"
        workers = { builtin = ["echo"] }
        call_timeout = "0s"
        hello_timeout = "0s"
        health_interval = "0s"
        recycle_after_calls = 0
        recycle_after_age = "0s"
        "#,
    )
    .unwrap_err();
    let Error::Config { problems } = bad else {
        panic!("{bad}")
    };
    let locations: Vec<&str> = problems.iter().map(|p| p.location.as_str()).collect();
    assert_eq!(
        locations,
        [
            "timeout",
            "sessions.ttl",
            "http.session_ttl",
            "http.header_read_timeout",
            "http.max_body_bytes",
            "tiers[0].call_timeout",
            "tiers[0].hello_timeout",
            "tiers[0].health_interval",
            "tiers[0].recycle_after_calls",
            "tiers[0].recycle_after_age",
        ]
    );
    // Zero stays allowed where it means something: fail fast, kill at once, no waiting room,
    // no drain.
    Config::from_toml(
        r#"
        [http]
        shutdown_grace = "0s"
        [[tiers]]
        name = "a"
        workers = { builtin = ["echo"] }
        queue_timeout = "0s"
        cancel_grace = "0s"
        queue_capacity = 0
        "#,
    )
    .unwrap();
}

#[test]
fn nats_tiers_are_checked_where_they_are_declared() {
    let config = Config::from_toml(
        r#"
        [[tiers]]
        name = "warm"
        workers = { nats = { url = "nats://10.0.0.5:4222", token_env = "NATS_TOKEN" } }
        "#,
    )
    .unwrap();
    let flowbalancer::WorkersConfig::Nats(nats) = &config.tiers[0].workers else {
        panic!("{:?}", config.tiers[0].workers)
    };
    assert_eq!(nats.url, "nats://10.0.0.5:4222");
    assert_eq!(nats.tier, None, "the tier's own name by default");
    assert_eq!(nats.token_env.as_deref(), Some("NATS_TOKEN"));
    let bad = Config::from_toml(
        r#"
        [[tiers]]
        name = "a"
        workers = { nats = { url = "http://10.0.0.5:4222" } }
        [[tiers]]
        name = "b"
        workers = { nats = { url = "nats://x:4222", tier = "has.dot" } }
        "#,
    )
    .unwrap_err();
    let Error::Config { problems } = bad else {
        panic!()
    };
    let locations: Vec<&str> = problems.iter().map(|p| p.location.as_str()).collect();
    assert_eq!(
        locations,
        ["tiers[0].workers.nats.url", "tiers[1].workers.nats.tier"]
    );
    let unknown = Config::from_toml(
        "[[tiers]]\nname = \"a\"\nworkers = { nats = { url = \"nats://x:1\", queue_group = \"x\" } }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(unknown.contains("queue_group"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_tier_whose_server_is_down_is_unready_and_the_router_falls_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let config = Config::from_toml(&format!(
        "[[tiers]]\nname = \"remote\"\nworkers = {{ nats = {{ url = \"nats://127.0.0.1:{port}\" }} }}\n\
         [[tiers]]\nname = \"local\"\nworkers = {{ builtin = [\"echo\"] }}\nsize = 1\n\
         [telemetry]\nenabled = false\n"
    ))
    .unwrap();
    let balancer = tokio::time::timeout(Duration::from_secs(10), Balancer::from_config(config))
        .await
        .expect("the start does not wait for the NATS server")
        .expect("starts");
    let readiness = balancer.readiness();
    assert_eq!(readiness[0].0, "remote");
    assert!(readiness[0].1.is_err(), "{readiness:?}");
    assert_eq!(readiness[1], ("local".to_string(), Ok(())));
    let routed = balancer
        .call("echo", json!({"text": "hi"}), CallOptions::default())
        .await
        .expect("the local tier serves");
    assert_eq!(routed.tier, "local");
    // The NATS tier was skipped at once, as unavailable (no waiting for a host).
    assert_eq!(routed.attempts.len(), 1, "{:?}", routed.attempts);
    let attempt = serde_json::to_value(&routed.attempts[0]).unwrap();
    assert_eq!(attempt["outcome"], "skipped", "{attempt}");
    assert!(
        routed.attempts[0].elapsed < Duration::from_secs(1),
        "{attempt}"
    );
    balancer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_tiers_route_and_fall_back() {
    let config = Config::from_toml(
        r#"
        timeout = "5s"
        [telemetry]
        enabled = false
        [[tiers]]
        name = "hot"
        workers = { builtin = ["echo", "sleep"] }
        call_timeout = "100ms"
        [[tiers]]
        name = "cold"
        workers = { builtin = ["echo", "sleep", "fib"] }
        [routes]
        exact = { fib = "cold" }
        "#,
    )
    .unwrap();
    let balancer = Balancer::from_config(config).await.unwrap();
    let names: Vec<String> = balancer.tools().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["echo", "sleep", "fib"]);
    let echo = balancer
        .call("echo", json!({"text": "hi"}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (
            echo.tier.as_str(),
            echo.payload().as_json().unwrap()["text"].as_str()
        ),
        ("hot", Some("hi"))
    );
    // 300 ms is past hot's 100 ms call timeout: cold serves it, and says so.
    let slow = balancer
        .call("sleep", json!({"ms": 300}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(slow.tier, "cold");
    assert!(
        matches!(slow.attempts[0].outcome, flowbalancer::tiers::Outcome::Failed { ref kind, .. } if kind == "timeout")
    );
    assert!(matches!(
        balancer
            .call("echo", json!({}), CallOptions::default())
            .await,
        Err(RouteError::Rejected { .. })
    ));
    assert!(matches!(
        balancer
            .call("nope", json!({}), CallOptions::default())
            .await,
        Err(RouteError::UnknownMethod { .. })
    ));
    let stats = balancer.stats();
    assert_eq!(stats.tiers[1].fallbacks_in, 1);
    assert!(balancer.shutdown().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_tiers_serve_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        r#"
        [telemetry]
        path = "{events}"
        [[tiers]]
        name = "hot"
        workers = {{ python = "{script}" }}
        python_args = ["-S"]
        size = 2
        [[tiers]]
        name = "cold"
        workers = {{ python = "{script}" }}
        python_args = ["-S"]
        size = 1
        [routes]
        exact = {{ fib = "cold" }}
        "#,
        events = dir.path().join("events.jsonl").display(),
        script = worker_script(),
    ))
    .unwrap();
    let balancer = Balancer::from_config(config).await.unwrap();
    let words = balancer
        .call(
            "word_count",
            json!({"text": "a b c"}),
            CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(words.payload().as_json().unwrap()["words"], 3);
    let fib = balancer
        .call("fib", json!({"n": 20}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (
            fib.tier.as_str(),
            fib.payload().as_json().unwrap()["fib"].as_u64()
        ),
        ("cold", Some(6765))
    );
    let pids: Vec<u64> = futures_pids(&balancer).await;
    // A failed call lands in the event log.
    let _ = balancer
        .call("echo", json!({}), CallOptions::default())
        .await;
    balancer.shutdown().await;
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    assert!(events.contains("call \\\"echo\\\" failed"), "{events}");
    for pid in pids {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "worker {pid} survived shutdown"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn an_env_value_naming_an_unset_variable_stops_the_start_and_names_it() {
    let config = Config::from_toml(&format!(
        r#"
        [telemetry]
        enabled = false
        [[tiers]]
        name = "hot"
        workers = {{ python = "{script}" }}
        env = {{ API_KEY = "${{FLOWBALANCER_SURELY_UNSET_KEY}}", HOME_TOO = "${{HOME}}" }}
        "#,
        script = worker_script(),
    ))
    .unwrap();
    let error = Balancer::from_config(config)
        .await
        .expect_err("unset")
        .to_string();
    assert!(
        error.contains("tier \"hot\".env.API_KEY")
            && error.contains("FLOWBALANCER_SURELY_UNSET_KEY"),
        "{error}"
    );
}

async fn futures_pids(balancer: &Balancer) -> Vec<u64> {
    let mut pids = Vec::new();
    for _ in 0..4 {
        let routed = balancer
            .call("pid", json!({}), CallOptions::default())
            .await
            .unwrap();
        pids.push(routed.payload().as_json().unwrap().as_u64().unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_balancer_kills_its_workers() {
    let config = Config::from_toml(&format!(
        "[telemetry]\nenabled = false\n[[tiers]]\nname = \"hot\"\nworkers = {{ python = \"{}\" }}\npython_args = [\"-S\"]\nsize = 2\n",
        worker_script()
    ))
    .unwrap();
    let balancer = Balancer::from_config(config).await.unwrap();
    let pids = futures_pids(&balancer).await;
    assert!(!pids.is_empty());
    drop(balancer);
    for pid in pids {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "worker {pid} survived the drop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn sessions_expire() {
    let sessions = flowbalancer::SessionManager::new(Duration::from_millis(50));
    sessions.set("s", "k", json!(1));
    assert_eq!(sessions.get("s", "k"), Some(json!(1)));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(sessions.get("s", "k"), None);
    sessions.set("a", "k", json!(2));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(sessions.expire(), 1);
    assert!(sessions.is_empty());
}

#[tokio::test]
async fn a_failure_with_a_traceback_is_logged_as_its_analysis() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        r#"
        [telemetry]
        path = "{events}"
        [[tiers]]
        name = "py"
        workers = {{ command = ["python3", "{script}", "--faults"] }}
        size = 1
        "#,
        events = dir.path().join("events.jsonl").display(),
        script = worker_script(),
    ))
    .unwrap();
    let balancer = Balancer::from_config(config).await.unwrap();
    let error = balancer
        .call("explode", json!({}), CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, RouteError::Rejected { .. }), "{error}");
    let telemetry = balancer.telemetry().unwrap().clone();
    let event = telemetry
        .recent()
        .into_iter()
        .find(|e| e.message.contains("explode"))
        .expect("the failure is logged");
    let analysis = &event.fields["analysis"][0];
    assert_eq!(analysis["kind"], "exception", "{analysis}");
    assert!(
        analysis["headline"]
            .as_str()
            .unwrap()
            .starts_with("RuntimeError at basic_worker.py:"),
        "{analysis}"
    );
    let logged = serde_json::to_string(&event.fields["error"]).unwrap();
    assert!(
        !logged.contains("Traceback (most recent call last)"),
        "the raw traceback is replaced: {logged}"
    );
    balancer.shutdown().await;
}
