//! RAII scopes that leave nothing behind.
//!
//! One [`Scope`] owns everything a piece of work starts: tokio tasks, child processes (each
//! in its own process group, always reaped), temp files and directories, tracked paths,
//! listener and subscription guards, and deferred closures.
//!
//! * [`close`](ScopeHandle::close) is graceful: cancel a token, SIGTERM every process group,
//!   wait a grace period, then abort and SIGKILL, reap every child, remove files, run deferred
//!   closures last-in first-out — and return a [`CloseReport`] of what was cleaned and every
//!   failure.
//! * Dropping a scope without closing it still cleans up, synchronously: tasks aborted,
//!   process groups SIGKILLed and reaped (on a helper thread, never blocking the runtime),
//!   files removed, closures run. This works inside and outside a tokio runtime, during
//!   runtime shutdown and during a panic.
//! * [`with_scope`] closes the scope on `Ok`, `Err`, panic (resumed after cleanup) and when
//!   the future itself is dropped.
//! * [`Limits`] (defaults: 50 listeners, 20 processes, 100 temp files) warn through `tracing`
//!   and then [`LimitPolicy::EvictOldest`] or [`LimitPolicy::Refuse`].
//!
//! Why not the usual three crates: tokio-util's `TaskTracker` does not abort on drop, tokio's
//! `kill_on_drop` kills only the direct child (a `sh -c` or `npx` wrapper leaves orphans), and
//! `tempfile` ignores removal errors. Here, signals go to the whole process group and every
//! removal error is reported.
//!
//! Platforms: Unix gets process groups and signals. Elsewhere the crate compiles and falls
//! back to killing the direct child only.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::process::Command;
//! use std::time::Duration;
//! use flowbalancer_lifecycle::Scope;
//!
//! let scope = Scope::builder().grace(Duration::from_millis(200)).build();
//! let mut wrapper = Command::new("sh");
//! wrapper.args(["-c", "sleep 600 & sleep 600"]); // a grandchild too
//! let child = scope.spawn_process(wrapper)?;
//! let report = scope.close().await;
//! assert_eq!(report.processes_terminated + report.processes_killed, 1);
//! assert!(child.try_wait()?.is_some(), "reaped");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod builder;
mod close;
mod error;
mod limits;
mod orphans;
mod process;
mod report;
mod scope;
mod with_scope;

pub use builder::ScopeBuilder;
pub use error::ScopeError;
pub use limits::{LimitPolicy, Limits, ResourceKind, ScopeStats};
pub use orphans::{RUN_ENV, RunRegistry, Swept};
pub use process::ProcessHandle;
pub use report::{CleanupFailure, CloseReport};
pub use scope::{ListenerGuard, Scope, ScopeHandle, TempFile};
pub use tokio_util::sync::CancellationToken;
pub use with_scope::{with_scope, with_scope_in};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
