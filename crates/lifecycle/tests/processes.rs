//! Real process trees: nothing survives close or drop, in every context.

mod common;

use std::time::Duration;

use common::{assert_tree_gone, shell_with_grandchild, wait_for_members};
use flowbalancer_lifecycle::{LimitPolicy, Limits, Scope, ScopeError};

fn quick_scope() -> Scope {
    Scope::builder()
        .name("test")
        .grace(Duration::from_millis(200))
        .build()
}

#[tokio::test]
async fn close_kills_the_shell_and_its_grandchild() {
    let scope = quick_scope();
    let child = scope.spawn_process(shell_with_grandchild()).unwrap();
    let pgid = child.pid();
    wait_for_members(pgid, 3); // sh + two sleeps
    let report = scope.close().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.processes_terminated + report.processes_killed, 1);
    assert!(child.try_wait().unwrap().is_some(), "the child was reaped");
    assert_tree_gone(pgid);
}

#[tokio::test]
async fn sigterm_ignoring_process_is_killed_after_the_grace_period() {
    let scope = quick_scope();
    let mut stubborn = std::process::Command::new("sh");
    stubborn.args(["-c", "trap '' TERM; sleep 600 & wait"]);
    let child = scope.spawn_process(stubborn).unwrap();
    let pgid = child.pid();
    wait_for_members(pgid, 2);
    let started = std::time::Instant::now();
    let report = scope.close().await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited the grace period"
    );
    assert_eq!(report.processes_killed, 1, "{report}");
    assert!(report.is_clean(), "{report}");
    assert_tree_gone(pgid);
}

#[tokio::test]
async fn drop_without_close_inside_a_runtime() {
    let scope = quick_scope();
    let child = scope.spawn_process(shell_with_grandchild()).unwrap();
    let pgid = child.pid();
    wait_for_members(pgid, 3);
    drop(scope);
    assert_tree_gone(pgid);
}

#[test]
fn drop_outside_any_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (scope, pgid) = runtime.block_on(async {
        let scope = quick_scope();
        let child = scope.spawn_process(shell_with_grandchild()).unwrap();
        (scope, child.pid())
    });
    drop(runtime);
    wait_for_members(pgid, 3);
    drop(scope); // no runtime anywhere now
    assert_tree_gone(pgid);
}

#[test]
fn drop_during_runtime_shutdown() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (pgid_tx, pgid_rx) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let scope = quick_scope();
        let child = scope.spawn_process(shell_with_grandchild()).unwrap();
        pgid_tx.send(child.pid()).unwrap();
        // Parked forever: the scope is dropped when the runtime shuts down under us.
        std::future::pending::<()>().await;
        drop(scope);
    });
    let pgid = pgid_rx.recv().unwrap();
    wait_for_members(pgid, 3);
    runtime.shutdown_timeout(Duration::from_secs(5));
    assert_tree_gone(pgid);
}

#[test]
fn drop_during_a_panic_unwind() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pgid_tx, pgid_rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            let scope = quick_scope();
            let child = scope.spawn_process(shell_with_grandchild()).unwrap();
            pgid_tx.send(child.pid()).unwrap();
            wait_for_members(child.pid(), 3);
            panic!("boom, with a scope alive");
        })
    }));
    assert!(result.is_err());
    assert_tree_gone(pgid_rx.recv().unwrap());
}

#[tokio::test]
async fn child_exit_is_observed_and_reaped() {
    let scope = quick_scope();
    let mut true_cmd = std::process::Command::new("sh");
    true_cmd.args(["-c", "exit 3"]);
    let child = scope.spawn_process(true_cmd).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(
        scope.stats().processes,
        0,
        "reaped processes are not counted"
    );
    assert_tree_gone(child.pid());
}

#[tokio::test]
async fn pipes_are_async() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let scope = quick_scope();
    let mut cat = std::process::Command::new("cat");
    cat.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = scope.spawn_process(cat).unwrap();
    let mut stdin = child.take_stdin().unwrap();
    let mut stdout = child.take_stdout().unwrap();
    stdin.write_all(b"hello").await.unwrap();
    drop(stdin);
    let mut out = String::new();
    stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "hello");
    assert!(scope.close().await.is_clean());
}

#[tokio::test]
async fn process_limit_refuses_then_evicts() {
    let limits = Limits::default().processes(2);
    let refusing = Scope::builder()
        .limits(limits)
        .grace(Duration::from_millis(100))
        .build();
    let sleeper = || {
        let mut c = std::process::Command::new("sleep");
        c.arg("600");
        c
    };
    refusing.spawn_process(sleeper()).unwrap();
    refusing.spawn_process(sleeper()).unwrap();
    assert!(matches!(
        refusing.spawn_process(sleeper()),
        Err(ScopeError::LimitReached { limit: 2, .. })
    ));
    assert_eq!(refusing.stats().refused, 1);
    assert!(refusing.close().await.is_clean());

    let evicting = Scope::builder()
        .limits(limits)
        .policy(LimitPolicy::EvictOldest)
        .grace(Duration::from_millis(100))
        .build();
    let oldest = evicting.spawn_process(sleeper()).unwrap();
    evicting.spawn_process(sleeper()).unwrap();
    evicting.spawn_process(sleeper()).unwrap();
    assert_tree_gone(oldest.pid());
    let stats = evicting.stats();
    assert_eq!(
        (stats.processes, stats.evicted, stats.processes_high_water),
        (2, 1, 2)
    );
    assert!(evicting.close().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_spawned_while_the_scope_closes_are_not_leaked() {
    for round in 0..20 {
        let scope = Scope::builder().grace(Duration::from_millis(50)).build();
        let handle = scope.handle();
        let spawner = tokio::spawn(async move {
            let mut pids = Vec::new();
            loop {
                let mut sleeper = std::process::Command::new("sleep");
                sleeper.arg("600");
                match handle.spawn_process(sleeper) {
                    Ok(child) => pids.push(child.pid()),
                    Err(ScopeError::Closed { .. }) => return pids,
                    Err(other) => panic!("round {round}: {other}"),
                }
                tokio::task::yield_now().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(5 + round % 5)).await;
        scope.close().await;
        let pids = spawner.await.unwrap();
        for pid in pids {
            assert_tree_gone(pid);
        }
    }
}

/// The group of a leader that exits on its own is killed while the leader is still an
/// unreaped zombie (its pid cannot be reused yet), and never signalled after the reap: a
/// reaped leader's pid may already belong to an unrelated process group.
#[tokio::test]
async fn a_leaders_group_is_killed_before_the_reap_and_never_after() {
    let scope = Scope::builder().grace(Duration::from_millis(100)).build();
    let mut command = std::process::Command::new("sh");
    // The leader leaves a grandchild behind in its group and exits at once.
    command.args(["-c", "sleep 600 & sleep 0.2"]);
    let handle = scope.handle().spawn_process(command).unwrap();
    let pgid = handle.pid();
    wait_for_members(pgid, 2);
    let status = handle.wait().await.unwrap();
    assert!(status.success());
    // Reaping the leader took the grandchild with it.
    assert_tree_gone(pgid);
    // After the reap, signalling is a no-op (and succeeds): nothing is sent to the pid.
    handle.kill().unwrap();
    handle.terminate().unwrap();
    assert!(scope.close().await.is_clean());
}
