//! Files, tasks, guards, deferred closures, nesting, limits, reports, with_scope.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_tree_gone, shell_with_grandchild, wait_for_members};
use flowbalancer_lifecycle::{
    LimitPolicy, Limits, ResourceKind, Scope, ScopeError, with_scope, with_scope_in,
};

fn quick_scope(name: &str) -> Scope {
    Scope::builder()
        .name(name)
        .grace(Duration::from_millis(100))
        .build()
}

#[tokio::test]
async fn files_dirs_and_tracked_paths_are_removed() {
    let scope = quick_scope("files");
    let file = scope.temp_file().unwrap();
    let dir = scope.temp_dir().unwrap();
    std::fs::write(dir.join("inside.txt"), "x").unwrap();
    let tracked = dir.join("tracked.txt");
    std::fs::write(&tracked, "y").unwrap();
    scope.track_path(&tracked).unwrap();
    scope.track_path(dir.join("never-created")).unwrap();
    let report = scope.close().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.paths_removed, 4);
    assert!(!file.path().exists() && !dir.exists());
}

#[tokio::test]
async fn a_path_that_cannot_be_removed_is_reported() {
    let scope = quick_scope("failing");
    scope.track_path("/proc/version").unwrap();
    scope.defer(|| panic!("deferred cleanup failed")).unwrap();
    let report = scope.close().await;
    assert!(!report.is_clean());
    let failures: Vec<String> = report
        .failures
        .iter()
        .map(|f| format!("{}: {}", f.resource, f.error))
        .collect();
    assert!(
        failures.iter().any(|f| f.starts_with("path /proc/version")),
        "{failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|f| f.contains("deferred cleanup failed")),
        "{failures:?}"
    );
    assert!(report.to_string().contains("/proc/version"));
}

#[tokio::test]
async fn tasks_stop_on_the_token_or_are_aborted() {
    let scope = quick_scope("tasks");
    let token = scope.token();
    let polite = scope.spawn(async move { token.cancelled().await }).unwrap();
    let stubborn = scope.spawn(std::future::pending::<()>()).unwrap();
    let report = scope.close().await;
    assert_eq!(
        (report.tasks_finished, report.tasks_aborted),
        (1, 1),
        "{report}"
    );
    assert!(polite.await.is_ok());
    assert!(stubborn.await.unwrap_err().is_cancelled());
}

#[test]
fn spawning_without_a_runtime_is_a_typed_error() {
    let scope = Scope::new();
    assert!(matches!(
        scope.spawn(async {}),
        Err(ScopeError::NoRuntime { .. })
    ));
    assert!(matches!(
        scope.spawn_process(std::process::Command::new("true")),
        Err(ScopeError::NoRuntime { .. })
    ));
}

#[tokio::test]
async fn deferred_closures_run_last_in_first_out_after_children() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let log = |what: &'static str| {
        let order = Arc::clone(&order);
        move || order.lock().unwrap().push(what)
    };
    let parent = quick_scope("parent");
    parent.defer(log("parent first")).unwrap();
    parent.defer(log("parent second")).unwrap();
    let child = parent.child("child").unwrap();
    child.defer(log("child")).unwrap();
    parent.guard((), |()| {}).unwrap();
    let report = parent.close().await;
    assert_eq!(
        *order.lock().unwrap(),
        ["child", "parent second", "parent first"]
    );
    assert_eq!(report.children.len(), 1);
    assert_eq!(report.listeners_released, 1);
    assert!(child.is_closed(), "the child closed with its parent");
    assert!(matches!(child.defer(|| {}), Err(ScopeError::Closed { .. })));
}

#[tokio::test]
async fn listener_guards_release_early_or_at_close() {
    let released = Arc::new(Mutex::new(Vec::new()));
    let scope = quick_scope("listeners");
    let mut guards = Vec::new();
    for i in 0..3 {
        let released = Arc::clone(&released);
        guards.push(
            scope
                .guard(i, move |i| released.lock().unwrap().push(i))
                .unwrap(),
        );
    }
    assert!(guards[1].release());
    assert!(!guards[1].release(), "a cleanup runs once");
    assert_eq!(scope.stats().listeners, 2);
    scope.close().await;
    assert_eq!(*released.lock().unwrap(), [1, 2, 0]);
}

#[tokio::test]
async fn file_and_listener_limits_evict_or_refuse() {
    let limits = Limits::default().temp_files(2).listeners(1);
    let refusing = Scope::builder().limits(limits).build();
    refusing.temp_file().unwrap();
    refusing.temp_dir().unwrap();
    match refusing.temp_file() {
        Err(ScopeError::LimitReached {
            kind: ResourceKind::TempFiles,
            limit: 2,
            ..
        }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    refusing.guard((), |()| {}).unwrap();
    assert!(refusing.guard((), |()| {}).is_err());
    assert_eq!(refusing.stats().refused, 2);

    let evicting = Scope::builder()
        .limits(limits)
        .policy(LimitPolicy::EvictOldest)
        .build();
    let first = evicting.temp_file().unwrap();
    evicting.temp_file().unwrap();
    let third = evicting.temp_file().unwrap();
    assert!(
        !first.path().exists(),
        "the oldest file was removed to make room"
    );
    assert!(third.path().exists());
    let evicted = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&evicted);
    evicting
        .guard((), move |()| *flag.lock().unwrap() = true)
        .unwrap();
    evicting.guard((), |()| {}).unwrap();
    assert!(*evicted.lock().unwrap(), "the oldest listener was released");
    let stats = evicting.stats();
    assert_eq!(
        (stats.temp_files, stats.listeners, stats.evicted),
        (2, 1, 2)
    );
    assert_eq!(stats.temp_files_high_water, 2);
}

#[tokio::test]
async fn with_scope_closes_on_ok_and_on_err() {
    let kept = with_scope(|scope| async move {
        let file = scope.temp_file().unwrap();
        Ok::<_, String>(file.path().to_path_buf())
    })
    .await
    .unwrap();
    assert!(!kept.exists());
    let path = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&path);
    let result: Result<(), String> = with_scope(|scope| async move {
        *seen.lock().unwrap() = Some(scope.temp_file().unwrap().path().to_path_buf());
        Err("failed".into())
    })
    .await;
    assert!(result.is_err());
    assert!(!path.lock().unwrap().as_ref().unwrap().exists());
}

#[tokio::test]
async fn with_scope_cleans_up_after_a_panic_and_resumes_it() {
    let path = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&path);
    let joined = tokio::spawn(with_scope(|scope| async move {
        *seen.lock().unwrap() = Some(scope.temp_file().unwrap().path().to_path_buf());
        tokio::task::yield_now().await;
        panic!("body panicked");
    }))
    .await;
    let panic = joined.unwrap_err();
    assert!(panic.is_panic(), "the panic was resumed after cleanup");
    assert!(
        !path.lock().unwrap().as_ref().unwrap().exists(),
        "temp file gone after the panic"
    );
}

#[tokio::test]
async fn with_scope_cancelled_mid_body_leaves_nothing() {
    let found = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&found);
    let scope = Scope::builder().grace(Duration::from_millis(50)).build();
    let outcome = tokio::time::timeout(
        Duration::from_millis(300),
        with_scope_in(scope, |scope| async move {
            let file = scope.temp_file().unwrap();
            let child = scope.spawn_process(shell_with_grandchild()).unwrap();
            *seen.lock().unwrap() = Some((file.path().to_path_buf(), child.pid()));
            std::future::pending::<()>().await;
        }),
    )
    .await;
    assert!(
        outcome.is_err(),
        "timed out: the with_scope future was dropped mid-body"
    );
    let (path, pgid) = found.lock().unwrap().clone().unwrap();
    assert!(!path.exists());
    assert_tree_gone(pgid);
}

#[tokio::test]
async fn closing_twice_and_using_a_closed_scope() {
    let scope = quick_scope("twice");
    let handle = scope.handle();
    scope.temp_file().unwrap();
    let first = scope.close().await;
    assert_eq!(first.paths_removed, 1);
    let second = scope.close().await;
    assert_eq!(second.paths_removed, 0);
    assert!(matches!(handle.temp_file(), Err(ScopeError::Closed { .. })));
    let child = scope.spawn_process(shell_with_grandchild());
    assert!(matches!(child, Err(ScopeError::Closed { .. })));
}

#[tokio::test]
async fn dropped_child_scope_cleans_itself_first() {
    let parent = quick_scope("parent");
    let child = parent.child("worker").unwrap();
    let process = child.spawn_process(shell_with_grandchild()).unwrap();
    wait_for_members(process.pid(), 3);
    drop(child);
    assert_tree_gone(process.pid());
    assert_eq!(parent.stats().children, 0);
    assert!(parent.close().await.is_clean());
}

/// Tasks, guards, deferred closures and child scopes registered while `close()` runs are
/// cleaned at once (the same race the process test covers, for every other resource).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_registered_while_the_scope_closes_is_cleaned() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for round in 0..40 {
        let scope = Scope::builder()
            .name("racing")
            .grace(Duration::from_millis(100))
            .limits(Limits::unlimited())
            .build();
        let handle = scope.handle();
        // Counts of what was registered and of what got cleaned (run, aborted, closed).
        let registered = Arc::new(AtomicUsize::new(0));
        let cleaned = Arc::new(AtomicUsize::new(0));
        let registrar = tokio::spawn({
            let (registered, cleaned) = (Arc::clone(&registered), Arc::clone(&cleaned));
            async move {
                let mut children = Vec::new();
                for i in 0usize.. {
                    let result = match i % 4 {
                        0 => {
                            // A task that never ends unless aborted; its drop guard counts.
                            let counted = Counted(Arc::clone(&cleaned));
                            handle
                                .spawn(async move {
                                    let _counted = counted;
                                    std::future::pending::<()>().await;
                                })
                                .map(drop)
                        }
                        1 => {
                            let cleaned = Arc::clone(&cleaned);
                            handle
                                .guard((), move |()| {
                                    cleaned.fetch_add(1, Ordering::SeqCst);
                                })
                                .map(std::mem::forget)
                        }
                        2 => {
                            let cleaned = Arc::clone(&cleaned);
                            handle.defer(move || {
                                cleaned.fetch_add(1, Ordering::SeqCst);
                            })
                        }
                        _ => handle.child(format!("c{i}")).map(|child| {
                            // A child's deferred closure runs when the child closes.
                            let cleaned = Arc::clone(&cleaned);
                            child
                                .handle()
                                .defer(move || {
                                    cleaned.fetch_add(1, Ordering::SeqCst);
                                })
                                .ok();
                            children.push(child);
                        }),
                    };
                    // A refused task, guard or deferred closure is cleaned at once (so it
                    // counts); a refused child scope was never made.
                    if result.is_ok() || i % 4 != 3 {
                        registered.fetch_add(1, Ordering::SeqCst);
                    }
                    match result {
                        Ok(()) => {}
                        Err(ScopeError::Closed { .. }) => return children,
                        Err(other) => panic!("round {round}: {other}"),
                    }
                    tokio::task::yield_now().await;
                }
                children
            }
        });
        tokio::time::sleep(Duration::from_millis(2 + round % 5)).await;
        scope.close().await;
        let children = registrar.await.unwrap();
        drop(children);
        // Aborted tasks drop their futures on the runtime: give them a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cleaned.load(Ordering::SeqCst) < registered.load(Ordering::SeqCst)
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            cleaned.load(Ordering::SeqCst),
            registered.load(Ordering::SeqCst),
            "round {round}: everything registered was cleaned exactly once"
        );
    }
}

/// Counts its drop.
struct Counted(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
