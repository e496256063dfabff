//! What a close did.

use std::fmt;

/// One cleanup that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanupFailure {
    /// What it was about: `"process 1234 (sleep)"`, `"path /tmp/x"`, `"deferred #2"`, ….
    pub resource: String,
    /// What went wrong.
    pub error: String,
}

/// Everything a close cleaned up, and every failure. Nothing is silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// The scope's name.
    pub scope: String,
    /// Tasks that finished on their own within the grace period after cancellation.
    pub tasks_finished: usize,
    /// Tasks aborted after the grace period.
    pub tasks_aborted: usize,
    /// Process groups whose leader exited after SIGTERM, within the grace period.
    pub processes_terminated: usize,
    /// Process groups that needed SIGKILL.
    pub processes_killed: usize,
    /// Files and directories removed (paths already gone count here too).
    pub paths_removed: usize,
    /// Listener guards released.
    pub listeners_released: usize,
    /// Deferred closures run.
    pub deferred_run: usize,
    /// Child scopes closed first (their reports are in `children`).
    pub children: Vec<CloseReport>,
    /// Every cleanup that failed.
    pub failures: Vec<CleanupFailure>,
}

impl CloseReport {
    /// Whether nothing failed, here or in a child scope.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty() && self.children.iter().all(CloseReport::is_clean)
    }

    /// Every failure, this scope's and its children's.
    pub fn all_failures(&self) -> Vec<&CleanupFailure> {
        let mut all: Vec<&CleanupFailure> = self.failures.iter().collect();
        for child in &self.children {
            all.extend(child.all_failures());
        }
        all
    }
}

impl fmt::Display for CloseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scope {:?} closed: {} tasks finished, {} aborted; {} processes terminated, {} killed; \
             {} paths removed; {} listeners released; {} deferred run; {} child scopes; {} failures",
            self.scope,
            self.tasks_finished,
            self.tasks_aborted,
            self.processes_terminated,
            self.processes_killed,
            self.paths_removed,
            self.listeners_released,
            self.deferred_run,
            self.children.len(),
            self.failures.len()
        )?;
        for failure in &self.failures {
            write!(f, "\n  {}: {}", failure.resource, failure.error)?;
        }
        Ok(())
    }
}
