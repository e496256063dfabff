//! Where the log goes by default, and making sure one instance owns its file.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::sink::{create_private_dirs, private_options};

/// The per-user default: `$XDG_STATE_HOME/flowbalancer/events.jsonl`, else
/// `~/.local/state/flowbalancer/events.jsonl`; `None` when neither variable is set.
///
/// ```
/// if let Some(path) = flowbalancer_telemetry::default_log_path() {
///     assert!(path.ends_with("flowbalancer/events.jsonl"));
/// }
/// ```
pub fn default_log_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".local/state"))
        })?;
    Some(state.join("flowbalancer").join("events.jsonl"))
}

/// An advisory lock on `path`'s lock file (`path.lock`), held for the writer's lifetime.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    _file: File,
}

/// Claims `path` for this instance. When another live instance holds it, the log goes to
/// `stem-<pid>.ext` instead, so two instances never interleave, rotate or delete each other's
/// files. Returns the path to use and its lock (none when locking is unsupported or fails: the
/// path is then used as is).
pub(crate) fn claim(path: &Path) -> (PathBuf, Option<InstanceLock>) {
    if let Some(lock) = try_lock(path) {
        return (path.to_path_buf(), Some(lock));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "events".into());
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "jsonl".into());
    let own = path.with_file_name(format!("{stem}-{}.{ext}", std::process::id()));
    let lock = try_lock(&own);
    (own, lock)
}

fn try_lock(path: &Path) -> Option<InstanceLock> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dirs(dir).ok()?;
    }
    let file = private_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .ok()?;
    match file.try_lock() {
        Ok(()) => Some(InstanceLock { _file: file }),
        Err(_) => None,
    }
}
