//! Child processes, each the leader of its own process group, so that signals reach the whole
//! tree a wrapper (`sh -c`, `npx`, …) starts, and every child is reaped.
//!
//! Processes are spawned with `std::process` and reaped by this crate (never by tokio's
//! orphan queue), so reaping works inside and outside a runtime, during runtime shutdown and
//! during a panic. Their pipes are handed out as tokio async handles.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use parking::Mutex;

/// `std::sync::Mutex` that shrugs off poisoning: the state behind it stays consistent.
mod parking {
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(std::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}

/// A process the scope owns.
pub(crate) struct ProcessEntry {
    pid: u32,
    label: String,
    /// `Some` until reaped.
    child: Mutex<Option<Child>>,
    status: Mutex<Option<ExitStatus>>,
}

impl ProcessEntry {
    pub(crate) fn describe(&self) -> String {
        format!("process {} ({})", self.pid, self.label)
    }

    /// Reaps the child if it has exited; `Some(status)` once reaped.
    pub(crate) fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = *self.status.lock() {
            return Ok(Some(status));
        }
        let mut child = self.child.lock();
        let Some(inner) = child.as_mut() else {
            return Ok(*self.status.lock());
        };
        // The leader exited but is not reaped yet: it is a zombie, so its pid (the group's id)
        // cannot be reused. Kill what is left of its group now — the last moment a group
        // signal is safe — then reap.
        if leader_exited(self.pid) {
            let _ = signal_group(self.pid, GroupSignal::Kill, None);
        }
        match inner.try_wait()? {
            Some(status) => {
                *self.status.lock() = Some(status);
                *child = None;
                Ok(Some(status))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn is_reaped(&self) -> bool {
        self.status.lock().is_some()
    }

    /// Sends `signal` to the whole process group (to the child alone where groups do not
    /// exist). Does nothing once the leader is reaped and the group is gone.
    /// Signals the process group, but only while its leader is not reaped: once reaped, its
    /// pid may belong to an unrelated process (and group), so nothing is sent. Holding the
    /// child's lock keeps a reap from slipping in between the check and the signal.
    pub(crate) fn signal_group(&self, signal: GroupSignal) -> io::Result<()> {
        let mut child = self.child.lock();
        if child.is_none() {
            return Ok(()); // reaped: the group was killed at reap time (see `try_reap`)
        }
        signal_group(self.pid, signal, child.as_mut())
    }

    /// Waits until the child is reaped or `timeout` passes; `true` when reaped.
    pub(crate) async fn reap_within(&self, timeout: Duration) -> bool {
        let deadline = saturating_after(tokio::time::Instant::now(), timeout);
        let mut pause = Duration::from_millis(1);
        loop {
            if matches!(self.try_reap(), Ok(Some(_)) | Err(_)) {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Synchronous cleanup for `Drop`: SIGKILL the group, then reap — at once if it is
    /// already gone, otherwise on a short-lived reaper thread, so no runtime thread blocks.
    pub(crate) fn kill_and_reap_detached(self: &Arc<Self>) -> Option<String> {
        if self.is_reaped() {
            return None; // its group was killed when it was reaped
        }
        let error = self.signal_group(GroupSignal::Kill).err();
        if matches!(self.try_reap(), Ok(Some(_))) {
            return error.map(|e| e.to_string());
        }
        let entry = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("flowbalancer-reaper".into())
            .spawn(move || entry.reap_blocking());
        if spawned.is_err() {
            // No thread to be had: a SIGKILLed child dies at once; wait for it here.
            self.reap_blocking();
        }
        error.map(|e| e.to_string())
    }

    fn reap_blocking(&self) {
        let mut child = self.child.lock();
        if child.is_some() {
            wait_for_exit(self.pid);
            // A zombie now: the group id is still ours (see `try_reap`).
            let _ = signal_group(self.pid, GroupSignal::Kill, None);
        }
        if let Some(inner) = child.as_mut()
            && let Ok(status) = inner.wait()
        {
            *self.status.lock() = Some(status);
            *child = None;
        }
    }
}

/// The signals a scope sends to process groups.
/// Makes the child receive SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), so a worker
/// never outlives a gateway killed with SIGKILL or by the OOM killer. If the parent died
/// between the fork and this call, the child exits at once instead of running as an orphan.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;

    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe calls are allowed. It makes three raw system calls through nix —
    // prctl(PR_SET_PDEATHSIG), getppid and _exit — each async-signal-safe; it allocates
    // nothing, takes no lock and touches no state shared with the parent (`parent` is a
    // plain integer copied into the closure before the fork).
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)?;
            if nix::unistd::getppid() != parent {
                // The parent is already gone: the signal will never come.
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum GroupSignal {
    Terminate,
    Kill,
}

/// Whether the child `pid` has exited (it is a zombie, not reaped): asked with `WNOWAIT`, so
/// the child stays unreaped.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn leader_exited(pid: u32) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    use nix::unistd::Pid;
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    matches!(
        waitid(
            Id::Pid(Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ),
        Ok(status) if status != WaitStatus::StillAlive
    )
}

/// Elsewhere the exit cannot be observed without reaping: no final group signal.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn leader_exited(_pid: u32) -> bool {
    false
}

/// Blocks until the child `pid` has exited, leaving it unreaped (a zombie).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn wait_for_exit(pid: u32) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    use nix::unistd::Pid;
    if let Ok(pid) = i32::try_from(pid) {
        let _ = waitid(
            Id::Pid(Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        );
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn wait_for_exit(_pid: u32) {}

#[cfg(unix)]
fn signal_group(pid: u32, signal: GroupSignal, _child: Option<&mut Child>) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    let signal = match signal {
        GroupSignal::Terminate => Signal::SIGTERM,
        GroupSignal::Kill => Signal::SIGKILL,
    };
    let pgid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    match killpg(Pid::from_raw(pgid), signal) {
        // The whole group is gone already.
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Without process groups, only the direct child can be signalled (documented fallback).
#[cfg(not(unix))]
fn signal_group(_pid: u32, _signal: GroupSignal, child: Option<&mut Child>) -> io::Result<()> {
    // No process groups: only the direct child can be killed.
    match child {
        Some(child) => child.kill(),
        None => Ok(()),
    }
}

/// The pipes of a freshly spawned child, before they become async handles.
pub(crate) struct Pipes {
    pub(crate) stdin: Option<std::process::ChildStdin>,
    pub(crate) stdout: Option<std::process::ChildStdout>,
    pub(crate) stderr: Option<std::process::ChildStderr>,
}

/// Spawns `command` as the leader of a new process group. The scope keeps the `Child` (to
/// reap it); the pipes go to the caller.
pub(crate) fn spawn(mut command: Command) -> io::Result<(Arc<ProcessEntry>, Pipes)> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    if let Some(token) = crate::orphans::run_token() {
        command.env(crate::orphans::RUN_ENV, token);
    }
    #[cfg(target_os = "linux")]
    die_with_parent(&mut command);
    let label = command.get_program().to_string_lossy().into_owned();
    let mut child = command.spawn()?;
    let pipes = Pipes {
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    };
    let entry = Arc::new(ProcessEntry {
        pid: child.id(),
        label,
        child: Mutex::new(Some(child)),
        status: Mutex::new(None),
    });
    Ok((entry, pipes))
}

/// A child process owned by a scope: its pid, its pipes as tokio async handles, and ways to
/// wait for it or signal its process group. Dropping the handle does not stop the process;
/// closing (or dropping) the scope does.
pub struct ProcessHandle {
    entry: Arc<ProcessEntry>,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
}

impl ProcessHandle {
    pub(crate) fn new(entry: Arc<ProcessEntry>, pipes: Pipes) -> io::Result<Self> {
        Ok(Self {
            entry,
            stdin: pipes
                .stdin
                .map(tokio::process::ChildStdin::from_std)
                .transpose()?,
            stdout: pipes
                .stdout
                .map(tokio::process::ChildStdout::from_std)
                .transpose()?,
            stderr: pipes
                .stderr
                .map(tokio::process::ChildStderr::from_std)
                .transpose()?,
        })
    }

    /// The process id, which is also its process group id on Unix.
    pub fn pid(&self) -> u32 {
        self.entry.pid
    }

    /// The child's standard input, if it was piped (once).
    pub fn take_stdin(&mut self) -> Option<tokio::process::ChildStdin> {
        self.stdin.take()
    }

    /// The child's standard output, if it was piped (once).
    pub fn take_stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.stdout.take()
    }

    /// The child's standard error, if it was piped (once).
    pub fn take_stderr(&mut self) -> Option<tokio::process::ChildStderr> {
        self.stderr.take()
    }

    /// Waits for the child to exit and reaps it.
    ///
    /// # Errors
    ///
    /// An OS error from `waitpid`.
    pub async fn wait(&self) -> io::Result<ExitStatus> {
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = self.entry.try_reap()? {
                return Ok(status);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The exit status if the child has exited (and reaps it).
    ///
    /// # Errors
    ///
    /// An OS error from `waitpid`.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        self.entry.try_reap()
    }

    /// Sends SIGTERM to the child's whole process group.
    ///
    /// # Errors
    ///
    /// An OS error from `killpg` (a group that is already gone is not an error).
    pub fn terminate(&self) -> io::Result<()> {
        self.entry.signal_group(GroupSignal::Terminate)
    }

    /// Sends SIGKILL to the child's whole process group.
    ///
    /// # Errors
    ///
    /// An OS error from `killpg` (a group that is already gone is not an error).
    pub fn kill(&self) -> io::Result<()> {
        self.entry.signal_group(GroupSignal::Kill)
    }
}

impl std::fmt::Debug for ProcessHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessHandle")
            .field("pid", &self.entry.pid)
            .field("program", &self.entry.label)
            .field("reaped", &self.entry.is_reaped())
            .finish()
    }
}

/// `now + duration`, saturating: a duration past the clock's range (`Duration::MAX`) means
/// "never" and gives a time a century away instead of a panic.
pub(crate) fn saturating_after(
    now: tokio::time::Instant,
    duration: Duration,
) -> tokio::time::Instant {
    now.checked_add(duration)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}
