//! Closing a scope: gracefully (`close().await`) or synchronously (drop).

use std::any::Any;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::process::GroupSignal;
use crate::report::{CleanupFailure, CloseReport};
use crate::scope::{Cleanup, Inner, ScopeHandle, State, TrackedPath};

/// How long a SIGKILLed process may take to be reaped before close reports it.
const KILL_REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long aborted tasks may take to stop before close reports them.
const ABORT_TIMEOUT: Duration = Duration::from_secs(1);

impl ScopeHandle {
    /// Closes the scope gracefully, child scopes first:
    ///
    /// 1. cancels the scope's token and sends SIGTERM to every process group;
    /// 2. waits up to the grace period for tasks to finish and processes to exit;
    /// 3. aborts the tasks still running, SIGKILLs the groups still alive, reaps every child;
    /// 4. releases listener guards, removes temp files, dirs and tracked paths;
    /// 5. runs deferred closures, last-in first-out.
    ///
    /// Returns what was cleaned and every failure. Closing twice is harmless: the second
    /// report is empty.
    pub async fn close(&self) -> CloseReport {
        Box::pin(self.inner.close()).await
    }
}

impl Inner {
    fn take_all(&self) -> Option<State> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return None;
        }
        let mut state = self.state();
        let stats = state.stats;
        Some(std::mem::replace(
            &mut *state,
            State {
                stats,
                ..State::default()
            },
        ))
    }

    pub(crate) async fn close(&self) -> CloseReport {
        let mut report = CloseReport {
            scope: self.name.clone(),
            ..CloseReport::default()
        };
        let Some(mut state) = self.take_all() else {
            return report;
        };
        for child in state.children.drain(..).rev() {
            report.children.push(Box::pin(child.close()).await);
        }

        // 1. Ask politely, all at once.
        self.token.cancel();
        self.tracker.close();
        let processes: Vec<_> = state
            .processes
            .drain(..)
            .filter(|p| !p.is_reaped())
            .collect();
        for process in &processes {
            if let Err(e) = process.signal_group(GroupSignal::Terminate) {
                report
                    .failures
                    .push(failure(process.describe(), format!("SIGTERM: {e}")));
            }
        }

        // 2. Give tasks and processes the grace period, together.
        let grace = self.grace;
        let tracker = self.tracker.clone();
        let reaped = async {
            let mut reaped = Vec::with_capacity(processes.len());
            let deadline = crate::process::saturating_after(tokio::time::Instant::now(), grace);
            for process in &processes {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                reaped.push(process.reap_within(left).await);
            }
            reaped
        };
        let (_, reaped) = tokio::join!(tokio::time::timeout(grace, tracker.wait()), reaped);

        // 3. Then force.
        for task in &state.tasks {
            if task.is_finished() {
                report.tasks_finished += 1;
            } else {
                task.abort();
                report.tasks_aborted += 1;
            }
        }
        if report.tasks_aborted > 0
            && tokio::time::timeout(ABORT_TIMEOUT, self.tracker.wait())
                .await
                .is_err()
        {
            report.failures.push(failure(
                "tasks".into(),
                format!(
                    "{} tasks still running {ABORT_TIMEOUT:?} after abort (blocking the thread?)",
                    self.tracker.len()
                ),
            ));
        }
        for (process, reaped) in processes.iter().zip(reaped) {
            // SIGKILL the group even when the leader exited: its children may not have.
            let kill = process.signal_group(GroupSignal::Kill);
            if reaped {
                report.processes_terminated += 1;
                continue;
            }
            report.processes_killed += 1;
            if let Err(e) = kill {
                report
                    .failures
                    .push(failure(process.describe(), format!("SIGKILL: {e}")));
            }
            if !process.reap_within(KILL_REAP_TIMEOUT).await {
                report.failures.push(failure(
                    process.describe(),
                    format!("not reaped {KILL_REAP_TIMEOUT:?} after SIGKILL"),
                ));
            }
        }

        // 4 and 5.
        finish(&mut state, &mut report);
        if report.is_clean() {
            tracing::debug!(scope = %self.name, %report, "scope closed");
        } else {
            tracing::warn!(scope = %self.name, %report, "scope closed with failures");
        }
        report
    }

    /// Synchronous best effort, for `Drop`: abort tasks, SIGKILL process groups (reaped on a
    /// helper thread if not dead yet), release listeners, remove paths, run deferred closures.
    /// Safe inside or outside a runtime, during runtime shutdown and during a panic.
    pub(crate) fn cleanup_now(&self) {
        let Some(mut state) = self.take_all() else {
            return;
        };
        let mut report = CloseReport {
            scope: self.name.clone(),
            ..CloseReport::default()
        };
        for child in state.children.drain(..).rev() {
            child.cleanup_now();
        }
        self.token.cancel();
        self.tracker.close();
        for task in state.tasks.drain(..) {
            task.abort();
        }
        for process in state.processes.drain(..) {
            if let Some(error) = process.kill_and_reap_detached() {
                report.failures.push(failure(process.describe(), error));
            }
        }
        finish(&mut state, &mut report);
        if !report.failures.is_empty() {
            tracing::warn!(scope = %self.name, %report, "scope dropped without close; cleanup failures");
        }
    }
}

/// Listeners, paths, deferred closures: the same for both kinds of close.
fn finish(state: &mut State, report: &mut CloseReport) {
    for (id, cleanup) in state.listeners.drain(..).rev() {
        match run_caught(cleanup) {
            Ok(()) => report.listeners_released += 1,
            Err(e) => report.failures.push(failure(format!("listener #{id}"), e)),
        }
    }
    // Newest first: a file inside a tracked directory goes before the directory.
    for tracked in state.paths.drain(..).rev() {
        match remove_path(&tracked) {
            Ok(()) => report.paths_removed += 1,
            Err(e) => report.failures.push(failure(
                format!("path {}", tracked.path.display()),
                e.to_string(),
            )),
        }
    }
    let count = state.deferred.len();
    for (i, deferred) in state.deferred.drain(..).rev().enumerate() {
        match run_caught(deferred) {
            Ok(()) => report.deferred_run += 1,
            Err(e) => report
                .failures
                .push(failure(format!("deferred #{}", count - 1 - i), e)),
        }
    }
}

/// Removes a tracked path; one that is already gone is fine.
pub(crate) fn remove_path(tracked: &TrackedPath) -> io::Result<()> {
    let result = if tracked.is_dir {
        std::fs::remove_dir_all(&tracked.path)
    } else {
        std::fs::remove_file(&tracked.path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Runs a cleanup closure; a panic inside becomes an error message instead of unwinding
/// (which would abort the process if we are already unwinding).
pub(crate) fn run_caught(cleanup: Cleanup) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(cleanup))
        .map_err(|panic| format!("panicked: {}", panic_message(&panic)))
}

pub(crate) fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".into()
    }
}

fn failure(resource: String, error: String) -> CleanupFailure {
    CleanupFailure { resource, error }
}
