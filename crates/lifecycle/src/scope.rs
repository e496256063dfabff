//! `Scope`, its builder, and the resources it registers.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builder::ScopeBuilder;
use crate::error::ScopeError;
use crate::limits::{LimitPolicy, Limits, ResourceKind, ScopeStats};
use crate::process::{self, ProcessEntry, ProcessHandle};

/// A cleanup registered with [`ScopeHandle::guard`] or [`ScopeHandle::defer`].
pub(crate) type Cleanup = Box<dyn FnOnce() + Send>;

/// A path the scope removes.
#[derive(Debug)]
pub(crate) struct TrackedPath {
    pub(crate) path: PathBuf,
    pub(crate) is_dir: bool,
}

/// Everything one scope owns.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) tasks: Vec<AbortHandle>,
    pub(crate) processes: VecDeque<Arc<ProcessEntry>>,
    pub(crate) paths: VecDeque<TrackedPath>,
    pub(crate) listeners: VecDeque<(u64, Cleanup)>,
    pub(crate) deferred: Vec<Cleanup>,
    pub(crate) children: Vec<Arc<Inner>>,
    pub(crate) stats: ScopeStats,
}

pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) grace: Duration,
    limits: Limits,
    policy: LimitPolicy,
    temp_dir: PathBuf,
    pub(crate) token: CancellationToken,
    pub(crate) tracker: TaskTracker,
    state: Mutex<State>,
    pub(crate) closed: AtomicBool,
    next_id: AtomicU64,
}

impl Inner {
    /// A fresh, open scope's shared part.
    pub(crate) fn new(
        name: String,
        grace: Duration,
        limits: Limits,
        policy: LimitPolicy,
        temp_dir: PathBuf,
    ) -> Self {
        Self {
            name,
            grace,
            limits,
            policy,
            temp_dir,
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the lists consistent (single pushes/pops).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_open(&self) -> Result<(), ScopeError> {
        if self.closed.load(Ordering::SeqCst) {
            Err(ScopeError::Closed {
                scope: self.name.clone(),
            })
        } else {
            Ok(())
        }
    }
}

/// Owns tasks, child process groups, temp files, listener guards and deferred closures, and
/// cleans all of them up: gracefully with [`close`](ScopeHandle::close), or synchronously when
/// dropped without it.
///
/// `Scope` is the owner: it is not `Clone`, and dropping it cleans up. Everything that works
/// on a scope lives on [`ScopeHandle`] (reached through `Deref`); hand out
/// [`handle`](Scope::handle)s to code that registers resources, and once the scope is closed
/// they refuse new ones with [`ScopeError::Closed`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use flowbalancer_lifecycle::Scope;
///
/// let scope = Scope::builder().name("demo").grace(Duration::from_millis(100)).build();
/// let file = scope.temp_file()?;
/// let token = scope.token();
/// scope.spawn(async move { token.cancelled().await })?;
/// scope.defer(|| { /* release something last */ })?;
///
/// let report = scope.close().await;
/// assert!(report.is_clean(), "{report}");
/// assert!(!file.path().exists());
/// assert_eq!((report.tasks_finished, report.paths_removed, report.deferred_run), (1, 1, 1));
/// # Ok::<(), flowbalancer_lifecycle::ScopeError>(())
/// # }).unwrap();
/// ```
pub struct Scope {
    handle: ScopeHandle,
}

impl Scope {
    /// A scope with the default name, grace period and limits.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures a scope.
    pub fn builder() -> ScopeBuilder {
        ScopeBuilder::default()
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self {
            handle: ScopeHandle { inner },
        }
    }

    /// A handle that registers resources in this scope (cheap to clone, does not keep the
    /// scope open: the owner's close or drop ends it).
    pub fn handle(&self) -> ScopeHandle {
        self.handle.clone()
    }
}

impl Default for Scope {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for Scope {
    type Target = ScopeHandle;

    fn deref(&self) -> &ScopeHandle {
        &self.handle
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.handle.inner.cleanup_now();
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("name", &self.handle.inner.name)
            .field("stats", &self.handle.stats())
            .finish()
    }
}

/// A temp file created by a scope; removed when the scope closes.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The open file, by value (the path stays tracked by the scope).
    pub fn into_file(self) -> File {
        self.file
    }
}

/// A registered listener or subscription; see [`ScopeHandle::guard`].
#[derive(Debug, Clone)]
pub struct ListenerGuard {
    id: u64,
    scope: ScopeHandle,
}

impl ListenerGuard {
    /// Runs the cleanup now instead of at close; `false` if it already ran.
    pub fn release(&self) -> bool {
        let cleanup = {
            let mut state = self.scope.inner.state();
            let position = state.listeners.iter().position(|(id, _)| *id == self.id);
            position.and_then(|i| state.listeners.remove(i))
        };
        match cleanup {
            Some((_, cleanup)) => {
                cleanup();
                true
            }
            None => false,
        }
    }
}

/// Registers resources in a scope; see [`Scope`]. Cloning is cheap.
#[derive(Clone)]
pub struct ScopeHandle {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ScopeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeHandle")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl ScopeHandle {
    /// The scope's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the scope was closed (or its owner dropped).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// A token that is cancelled when the scope starts closing: tasks watch it to stop on
    /// their own within the grace period.
    pub fn token(&self) -> CancellationToken {
        self.inner.token.child_token()
    }

    /// Spawns a task the scope tracks: cancelled (through [`token`](Self::token)) and, after
    /// the grace period, aborted when the scope closes; aborted at once when it is dropped.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Closed`], or [`ScopeError::NoRuntime`] outside a tokio runtime.
    pub fn spawn<F>(&self, future: F) -> Result<JoinHandle<F::Output>, ScopeError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.check_open()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ScopeError::NoRuntime { what: "spawn" })?;
        let handle = self.inner.tracker.spawn_on(future, &runtime);
        let mut state = self.inner.state();
        // Closed meanwhile (see `spawn_process`): `close` already took the task list, so
        // nobody would abort this one. Abort it now.
        if self.inner.closed.load(Ordering::SeqCst) {
            drop(state);
            handle.abort();
            return Err(ScopeError::Closed {
                scope: self.inner.name.clone(),
            });
        }
        state.tasks.retain(|task| !task.is_finished());
        state.tasks.push(handle.abort_handle());
        Ok(handle)
    }

    /// Starts `command` in its own process group (so signals reach every process it starts)
    /// and hands back its pid and pipes. Configure stdio on the command as usual; piped
    /// streams come back as tokio async handles.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Closed`], [`ScopeError::LimitReached`], [`ScopeError::NoRuntime`] (the
    /// pipes need a runtime), [`ScopeError::Spawn`].
    pub fn spawn_process(&self, command: Command) -> Result<ProcessHandle, ScopeError> {
        self.inner.check_open()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ScopeError::NoRuntime {
                what: "spawn_process",
            });
        }
        let program = command.get_program().to_string_lossy().into_owned();
        self.admit(ResourceKind::Processes)?;
        let (entry, pipes) = process::spawn(command).map_err(|source| ScopeError::Spawn {
            program: program.clone(),
            source,
        })?;
        {
            let mut state = self.inner.state();
            // `close` sets `closed` before it takes the lock to empty the state: checked under
            // the lock, a scope that closed while we spawned is seen here, and the child is
            // not left in a state nobody will clean.
            if self.inner.closed.load(Ordering::SeqCst) {
                drop(state);
                let _ = entry.kill_and_reap_detached();
                return Err(ScopeError::Closed {
                    scope: self.inner.name.clone(),
                });
            }
            state.processes.push_back(Arc::clone(&entry));
            state.stats.processes_high_water =
                state.stats.processes_high_water.max(state.processes.len());
        }
        tracing::debug!(scope = %self.inner.name, pid = entry.describe(), "process started");
        ProcessHandle::new(entry, pipes).map_err(|source| ScopeError::Spawn { program, source })
    }

    /// Creates an empty temp file, removed when the scope closes.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Closed`], [`ScopeError::LimitReached`], [`ScopeError::Temp`].
    pub fn temp_file(&self) -> Result<TempFile, ScopeError> {
        self.inner.check_open()?;
        self.admit(ResourceKind::TempFiles)?;
        let (file, path) = tempfile::Builder::new()
            .prefix(&format!("{}-", sanitize(&self.inner.name)))
            .tempfile_in(&self.inner.temp_dir)
            .and_then(|named| named.keep().map_err(|e| e.error))
            .map_err(|source| ScopeError::Temp {
                what: "file",
                dir: self.inner.temp_dir.clone(),
                source,
            })?;
        self.push_path(TrackedPath {
            path: path.clone(),
            is_dir: false,
        });
        Ok(TempFile { path, file })
    }

    /// Creates an empty temp directory, removed with its contents when the scope closes.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Closed`], [`ScopeError::LimitReached`], [`ScopeError::Temp`].
    pub fn temp_dir(&self) -> Result<PathBuf, ScopeError> {
        self.inner.check_open()?;
        self.admit(ResourceKind::TempFiles)?;
        let path = tempfile::Builder::new()
            .prefix(&format!("{}-", sanitize(&self.inner.name)))
            .tempdir_in(&self.inner.temp_dir)
            .map(|dir| dir.keep())
            .map_err(|source| ScopeError::Temp {
                what: "directory",
                dir: self.inner.temp_dir.clone(),
                source,
            })?;
        self.push_path(TrackedPath {
            path: path.clone(),
            is_dir: true,
        });
        Ok(path)
    }

    /// Removes `path` (a file, or a directory with its contents) when the scope closes.
    /// A path that is already gone then counts as removed.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Closed`], [`ScopeError::LimitReached`].
    pub fn track_path(&self, path: impl Into<PathBuf>) -> Result<(), ScopeError> {
        self.inner.check_open()?;
        self.admit(ResourceKind::TempFiles)?;
        let path = path.into();
        let is_dir = path.is_dir();
        self.push_path(TrackedPath { path, is_dir });
        Ok(())
    }

    /// Keeps `value` (a listener registration, a subscription handle, …) until the scope
    /// closes, then passes it to `cleanup`. The returned guard can release it earlier.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Closed`] or [`ScopeError::LimitReached`]; `cleanup` has then already
    /// run: nothing handed to a scope outlives it, registered or refused.
    pub fn guard<T: Send + 'static>(
        &self,
        value: T,
        cleanup: impl FnOnce(T) + Send + 'static,
    ) -> Result<ListenerGuard, ScopeError> {
        if let Err(refused) = self
            .inner
            .check_open()
            .and_then(|()| self.admit(ResourceKind::Listeners))
        {
            cleanup(value);
            return Err(refused);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut state = self.inner.state();
        if self.inner.closed.load(Ordering::SeqCst) {
            // Closed while we registered (see `spawn_process`): clean up now.
            drop(state);
            cleanup(value);
            return Err(ScopeError::Closed {
                scope: self.inner.name.clone(),
            });
        }
        state
            .listeners
            .push_back((id, Box::new(move || cleanup(value))));
        state.stats.listeners_high_water =
            state.stats.listeners_high_water.max(state.listeners.len());
        Ok(ListenerGuard {
            id,
            scope: self.clone(),
        })
    }

    /// Runs `f` when the scope closes, after everything else; deferred closures run last-in
    /// first-out.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Closed`] when the scope is closed or closing: `f` has then already run.
    pub fn defer(&self, f: impl FnOnce() + Send + 'static) -> Result<(), ScopeError> {
        let mut state = self.inner.state();
        // Checked under the lock: `close` sets `closed` before it takes the state.
        if self.inner.closed.load(Ordering::SeqCst) {
            drop(state);
            f();
            return Err(ScopeError::Closed {
                scope: self.inner.name.clone(),
            });
        }
        state.deferred.push(Box::new(f));
        Ok(())
    }

    /// A nested scope with the same settings, closed before this one closes.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Closed`].
    pub fn child(&self, name: impl Into<String>) -> Result<Scope, ScopeError> {
        self.inner.check_open()?;
        let child = Scope::from_inner(Arc::new(Inner::new(
            format!("{}/{}", self.inner.name, name.into()),
            self.inner.grace,
            self.inner.limits,
            self.inner.policy,
            self.inner.temp_dir.clone(),
        )));
        let mut state = self.inner.state();
        if self.inner.closed.load(Ordering::SeqCst) {
            // Closed while we built it: the child goes at once (dropping a scope cleans it
            // up synchronously; it holds nothing yet).
            drop(state);
            drop(child);
            return Err(ScopeError::Closed {
                scope: self.inner.name.clone(),
            });
        }
        state.children.retain(|c| !c.closed.load(Ordering::SeqCst));
        state.children.push(Arc::clone(&child.handle.inner));
        Ok(child)
    }

    /// Live counts and high-water marks.
    pub fn stats(&self) -> ScopeStats {
        let mut state = self.inner.state();
        state.tasks.retain(|task| !task.is_finished());
        state.processes.retain(|p| !p.is_reaped());
        let mut stats = state.stats;
        stats.tasks = state.tasks.len();
        stats.processes = state.processes.len();
        stats.temp_files = state.paths.len();
        stats.listeners = state.listeners.len();
        stats.deferred = state.deferred.len();
        stats.children = state
            .children
            .iter()
            .filter(|c| !c.closed.load(Ordering::SeqCst))
            .count();
        stats
    }

    fn push_path(&self, tracked: TrackedPath) {
        let mut state = self.inner.state();
        if self.inner.closed.load(Ordering::SeqCst) {
            // Closed meanwhile (see `spawn_process`): remove it now rather than leak it.
            drop(state);
            if let Err(error) = crate::close::remove_path(&tracked) {
                tracing::warn!(scope = %self.inner.name, path = %tracked.path.display(), %error, "removing a path registered during close failed");
            }
            return;
        }
        state.paths.push_back(tracked);
        state.stats.temp_files_high_water =
            state.stats.temp_files_high_water.max(state.paths.len());
    }

    /// Makes room for one more resource of `kind`, or refuses.
    fn admit(&self, kind: ResourceKind) -> Result<(), ScopeError> {
        let limit = self.inner.limits.of(kind);
        let evicted = {
            let mut state = self.inner.state();
            let count = match kind {
                ResourceKind::Processes => {
                    state.processes.retain(|p| !p.is_reaped());
                    state.processes.len()
                }
                ResourceKind::TempFiles => state.paths.len(),
                ResourceKind::Listeners => state.listeners.len(),
            };
            if count < limit {
                return Ok(());
            }
            tracing::warn!(
                scope = %self.inner.name,
                %kind,
                count,
                limit,
                policy = ?self.inner.policy,
                "scope reached its limit"
            );
            match self.inner.policy {
                LimitPolicy::Refuse => {
                    state.stats.refused += 1;
                    return Err(ScopeError::LimitReached {
                        scope: self.inner.name.clone(),
                        kind,
                        limit,
                    });
                }
                LimitPolicy::EvictOldest => {
                    state.stats.evicted += 1;
                    match kind {
                        ResourceKind::Processes => {
                            state.processes.pop_front().map(Evicted::Process)
                        }
                        ResourceKind::TempFiles => state.paths.pop_front().map(Evicted::Path),
                        ResourceKind::Listeners => state
                            .listeners
                            .pop_front()
                            .map(|(_, c)| Evicted::Listener(c)),
                    }
                }
            }
        };
        // Clean the evicted resource outside the lock.
        match evicted {
            Some(Evicted::Process(entry)) => {
                if let Some(error) = entry.kill_and_reap_detached() {
                    tracing::warn!(scope = %self.inner.name, process = entry.describe(), %error, "evicting a process failed");
                }
            }
            Some(Evicted::Path(tracked)) => {
                if let Err(error) = crate::close::remove_path(&tracked) {
                    tracing::warn!(scope = %self.inner.name, path = %tracked.path.display(), %error, "evicting a path failed");
                }
            }
            Some(Evicted::Listener(cleanup)) => {
                if let Err(error) = crate::close::run_caught(cleanup) {
                    tracing::warn!(scope = %self.inner.name, %error, "evicting a listener failed");
                }
            }
            None => {}
        }
        Ok(())
    }
}

enum Evicted {
    Process(Arc<ProcessEntry>),
    Path(TrackedPath),
    Listener(Cleanup),
}

/// File-name-safe version of a scope name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}
