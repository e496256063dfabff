//! Nothing outlives its owner, even when the owner is killed with SIGKILL.
//!
//! Two mechanisms, both Linux-only (elsewhere they do nothing):
//!
//! * Every child a scope starts gets `PR_SET_PDEATHSIG(SIGKILL)`, set in the child before it
//!   runs the program: the kernel kills it when the thread that started it dies — which, for
//!   a tokio worker thread, is when the process dies.
//! * A [`RunRegistry`] records this run in a per-user directory and marks every child with
//!   the run's token (the `FLOWBALANCER_RUN` environment variable, which grandchildren
//!   inherit). When a run dies without cleaning up, the next run that opens the registry
//!   finds the run's file, sees its owner gone, and kills every process still carrying its
//!   token — including a grandchild that moved into a process group or session of its own,
//!   which neither a group kill nor the parent-death signal reaches. Scratch directories the
//!   run recorded ([`RunRegistry::record_scratch`]) are removed then too.
//!
//! ```no_run
//! use flowbalancer_lifecycle::RunRegistry;
//!
//! let dir = RunRegistry::default_dir().expect("a home directory");
//! let (registry, swept) = RunRegistry::open(dir)?;
//! if swept.killed > 0 {
//!     eprintln!("killed {} processes a crashed run left behind", swept.killed);
//! }
//! // … start scopes and processes; `registry` lives as long as the program …
//! drop(registry); // a clean exit removes the record
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable that marks a run's children.
pub const RUN_ENV: &str = "FLOWBALANCER_RUN";

/// This process's run token, once a registry is open.
static RUN_TOKEN: OnceLock<String> = OnceLock::new();

/// The token children are marked with, if a [`RunRegistry`] is open in this process.
pub(crate) fn run_token() -> Option<&'static str> {
    RUN_TOKEN.get().map(String::as_str)
}

/// What opening a registry cleaned up after earlier runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Swept {
    /// Earlier runs found dead, whose leftovers were looked for.
    pub dead_runs: usize,
    /// Processes of those runs that were still alive and were killed.
    pub killed: usize,
    /// Scratch directories of those runs that were still there and were removed.
    pub scratch_removed: usize,
}

/// This run's record in the per-user run directory; removed when dropped (a clean exit).
#[derive(Debug)]
pub struct RunRegistry {
    file: PathBuf,
}

impl RunRegistry {
    /// The per-user directory for run records: `$XDG_STATE_HOME/flowbalancer/runs`, else
    /// `~/.local/state/flowbalancer/runs`; `None` when neither variable is set.
    pub fn default_dir() -> Option<PathBuf> {
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| PathBuf::from(home).join(".local/state"))
            })?;
        Some(state.join("flowbalancer").join("runs"))
    }

    /// Cleans up after dead runs recorded in `dir`, then records this one. The directory is
    /// created private to the user (0700). Opening a second registry in the same process
    /// records the same run again.
    ///
    /// # Errors
    ///
    /// The directory or this run's record cannot be written.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<(Self, Swept)> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        let swept = sweep(&dir);
        let token = RUN_TOKEN.get_or_init(new_token);
        let file = dir.join(format!("run-{token}"));
        let me = std::process::id();
        let record = format!("{me} {}\n", start_time(me).unwrap_or(0));
        fs::write(&file, record)?;
        Ok((Self { file }, swept))
    }
}

impl RunRegistry {
    /// Records `path`, a scratch directory of this run, so that if the run dies without
    /// cleaning up (SIGKILL, OOM), the next run that opens a registry removes it with
    /// everything in it. A clean exit leaves the directory to its owner (a
    /// `tempfile::TempDir`, say); only the record goes.
    ///
    /// # Errors
    ///
    /// The path is not absolute, is not UTF-8 or holds a line break (records are lines), or
    /// the record cannot be written.
    pub fn record_scratch(&self, path: &Path) -> io::Result<()> {
        use std::io::Write;

        let text = path
            .to_str()
            .filter(|text| path.is_absolute() && !text.contains(['\n', '\r']))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} cannot be recorded: a scratch directory is recorded by its absolute UTF-8 path on one line",
                        path.display()
                    ),
                )
            })?;
        let mut record = fs::OpenOptions::new().append(true).open(&self.file)?;
        writeln!(record, "{SCRATCH}{text}")
    }
}

/// How a scratch directory's line in a run record starts.
const SCRATCH: &str = "scratch ";

impl Drop for RunRegistry {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
    }
}

fn new_token() -> String {
    let me = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{me:x}-{:x}-{nanos:x}", start_time(me).unwrap_or(0))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// The start time of `pid` (clock ticks since boot, field 22 of `/proc/PID/stat`): with the
/// pid, it names one process for good, as pids are reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: start after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the run recorded as `pid start` is still alive.
fn alive(record: &str) -> bool {
    let mut fields = record.split_whitespace();
    let (Some(pid), Some(start)) = (fields.next(), fields.next()) else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid).is_some_and(|now| now == start),
        _ => false,
    }
}

/// Kills what dead runs left behind and removes their records.
fn sweep(dir: &Path) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return swept;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(token) = name.strip_prefix("run-") else {
            continue;
        };
        if RUN_TOKEN.get().is_some_and(|mine| mine == token) {
            continue;
        }
        let record = fs::read_to_string(entry.path()).unwrap_or_default();
        if alive(&record) {
            continue;
        }
        swept.dead_runs += 1;
        swept.killed += kill_marked(token);
        // After the kill: nothing of the run writes into its scratch directories any more.
        swept.scratch_removed += remove_scratch(&record);
        let _ = fs::remove_file(entry.path());
    }
    if swept.killed > 0 {
        tracing::warn!(
            killed = swept.killed,
            scratch_removed = swept.scratch_removed,
            runs = swept.dead_runs,
            "killed processes left behind by runs that died without cleaning up"
        );
    } else if swept.scratch_removed > 0 {
        // Housekeeping after a client that SIGKILLs its servers: nothing to warn about.
        tracing::info!(
            scratch_removed = swept.scratch_removed,
            runs = swept.dead_runs,
            "removed the scratch directories of runs that died without cleaning up"
        );
    }
    swept
}

/// Removes the scratch directories a dead run's record names; returns how many were there.
fn remove_scratch(record: &str) -> usize {
    record
        .lines()
        .filter_map(|line| line.strip_prefix(SCRATCH))
        .map(Path::new)
        .filter(|path| path.is_absolute() && fs::remove_dir_all(path).is_ok())
        .count()
}

/// Kills every process of this user whose environment carries `FLOWBALANCER_RUN=token`.
#[cfg(target_os = "linux")]
fn kill_marked(token: &str) -> usize {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let wanted = format!("{RUN_ENV}={token}");
    let me = std::process::id();
    let mut killed = 0;
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Another user's processes are unreadable here, and not ours to kill.
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        let marked = environ
            .split(|&b| b == 0)
            .any(|var| var == wanted.as_bytes());
        if marked
            && let Ok(raw) = i32::try_from(pid)
            && kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

#[cfg(not(target_os = "linux"))]
fn kill_marked(_token: &str) -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_a_live_process_is_alive_and_a_stale_one_is_not() {
        let me = std::process::id();
        let start = start_time(me).expect("/proc is readable");
        assert!(alive(&format!("{me} {start}")));
        assert!(
            !alive(&format!("{me} {}", start + 1)),
            "same pid, other process"
        );
        assert!(!alive("garbage"));
        assert!(!alive(""));
        assert!(
            alive(&format!("{me} {start}\n{SCRATCH}/tmp/x\n")),
            "scratch lines follow"
        );
    }

    #[test]
    fn the_scratch_of_a_dead_run_is_removed_by_the_next_sweep_and_a_live_ones_is_not() {
        let root = tempfile::tempdir().unwrap();
        let runs = root.path().join("runs");
        let (registry, _) = RunRegistry::open(&runs).unwrap();
        let mine = root.path().join("mine");
        fs::create_dir_all(mine.join("deep")).unwrap();
        fs::write(mine.join("deep/file"), "x").unwrap();
        registry.record_scratch(&mine).unwrap();
        for bad in [Path::new("relative"), Path::new("/tmp/two\nlines")] {
            let error = registry.record_scratch(bad).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        // A dead run (pid 0 never names a process) with two scratch directories, one gone.
        let theirs = root.path().join("theirs");
        fs::create_dir_all(theirs.join("sub")).unwrap();
        fs::write(
            runs.join("run-dead"),
            format!(
                "0 0\n{SCRATCH}{}\n{SCRATCH}{}\n{SCRATCH}relative\n",
                theirs.display(),
                root.path().join("already-gone").display()
            ),
        )
        .unwrap();
        let swept = sweep(&runs);
        assert_eq!(
            (swept.dead_runs, swept.scratch_removed),
            (1, 1),
            "{swept:?}"
        );
        assert!(!theirs.exists(), "the dead run's scratch is removed");
        assert!(mine.join("deep/file").exists(), "this run's own is kept");
        assert!(!runs.join("run-dead").exists());
        drop(registry);
        assert!(
            mine.exists(),
            "a clean exit leaves the directory to its owner"
        );
    }
}
