//! Limits on what a scope holds, and its live counts.

use std::fmt;

/// The kinds of resources a scope counts and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceKind {
    /// Listener and subscription guards ([`ScopeHandle::guard`](crate::ScopeHandle::guard)).
    Listeners,
    /// Child processes.
    Processes,
    /// Temp files and directories, and tracked paths.
    TempFiles,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Listeners => "listeners",
            ResourceKind::Processes => "processes",
            ResourceKind::TempFiles => "temp files",
        })
    }
}

/// What happens when a limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LimitPolicy {
    /// Clean up the oldest resource of that kind (kill the process group, remove the file,
    /// release the listener) to make room.
    EvictOldest,
    /// Refuse the new resource with [`ScopeError::LimitReached`](crate::ScopeError).
    #[default]
    Refuse,
}

/// How many resources of each kind a scope holds at most. The defaults come from the field:
/// 50 listeners, 20 processes, 100 temp files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Listener and subscription guards.
    pub listeners: usize,
    /// Child processes.
    pub processes: usize,
    /// Temp files, temp directories and tracked paths.
    pub temp_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            listeners: 50,
            processes: 20,
            temp_files: 100,
        }
    }
}

impl Limits {
    /// No limit on anything.
    pub fn unlimited() -> Self {
        Self {
            listeners: usize::MAX,
            processes: usize::MAX,
            temp_files: usize::MAX,
        }
    }

    /// The same limits with `listeners` listener and subscription guards.
    pub fn listeners(mut self, listeners: usize) -> Self {
        self.listeners = listeners;
        self
    }

    /// The same limits with `processes` child processes.
    pub fn processes(mut self, processes: usize) -> Self {
        self.processes = processes;
        self
    }

    /// The same limits with `temp_files` temp files, directories and tracked paths.
    pub fn temp_files(mut self, temp_files: usize) -> Self {
        self.temp_files = temp_files;
        self
    }

    pub(crate) fn of(&self, kind: ResourceKind) -> usize {
        match kind {
            ResourceKind::Listeners => self.listeners,
            ResourceKind::Processes => self.processes,
            ResourceKind::TempFiles => self.temp_files,
        }
    }
}

/// Live counts and high-water marks of one scope (not counting child scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ScopeStats {
    /// Tasks still running.
    pub tasks: usize,
    /// Child processes not yet reaped.
    pub processes: usize,
    /// Temp files, temp dirs and tracked paths not yet removed.
    pub temp_files: usize,
    /// Listener guards not yet released.
    pub listeners: usize,
    /// Deferred closures not yet run.
    pub deferred: usize,
    /// Open child scopes.
    pub children: usize,
    /// The most processes held at once.
    pub processes_high_water: usize,
    /// The most temp files held at once.
    pub temp_files_high_water: usize,
    /// The most listeners held at once.
    pub listeners_high_water: usize,
    /// Resources cleaned up early to stay within a limit.
    pub evicted: usize,
    /// Resources refused because of a limit.
    pub refused: usize,
}
