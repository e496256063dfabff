//! Errors of scopes.

use std::io;
use std::path::PathBuf;

use crate::limits::ResourceKind;

/// A scope refused to take on a resource.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// The scope was closed (or dropped); it takes nothing new.
    #[error("scope {scope:?} is closed")]
    Closed {
        /// The scope's name.
        scope: String,
    },
    /// The scope holds as many resources of this kind as its limit allows, and its policy is
    /// to refuse.
    #[error("scope {scope:?} reached its limit of {limit} {kind}")]
    LimitReached {
        /// The scope's name.
        scope: String,
        /// Which kind of resource.
        kind: ResourceKind,
        /// The limit.
        limit: usize,
    },
    /// Tasks and processes need a tokio runtime, and none is running on this thread.
    #[error("{what} needs a tokio runtime, and none is running here")]
    NoRuntime {
        /// What was asked for.
        what: &'static str,
    },
    /// Starting a process failed.
    #[error("could not start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// Creating a temp file or directory failed.
    #[error("could not create a temporary {what} in {dir:?}: {source}")]
    Temp {
        /// `"file"` or `"directory"`.
        what: &'static str,
        /// Where.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}
