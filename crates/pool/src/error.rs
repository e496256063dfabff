//! What a pool call can fail with, and how callers should treat each failure.

use std::time::Duration;

use serde::Serialize;

use crate::request::WorkerId;
use crate::worker::{ErrorKind, WorkerError};

/// How a failure should be handled by whoever routes calls (see `flowbalancer-tiers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureClass {
    /// The caller's mistake (bad params, unknown method) or the handler's own error: trying
    /// elsewhere would give the same answer.
    Caller,
    /// The pool could not take the call (overloaded, no worker, shutting down): try elsewhere
    /// without counting it as a failure of the call.
    Unavailable,
    /// The call failed (timeout, crash, protocol damage, repeated transient errors): another
    /// pool may succeed.
    Failed,
}

/// A pool call failed. Every call ends with a result or exactly one of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PoolError {
    /// The admission queue is full.
    #[error(
        "pool {pool:?} is overloaded: {waiting} callers already waiting (queue capacity {capacity})"
    )]
    Overloaded {
        /// The pool.
        pool: String,
        /// Callers waiting.
        waiting: usize,
        /// The queue's capacity.
        capacity: usize,
    },
    /// No worker became free within the queue's wait bound.
    #[error("pool {pool:?}: no worker became free within {waited:?}")]
    QueueTimeout {
        /// The pool.
        pool: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The call took longer than the call timeout; the worker was killed and is replaced.
    #[error("call timed out after {after:?} on worker {worker}; the worker is replaced")]
    Timeout {
        /// The worker that hung.
        worker: WorkerId,
        /// The timeout.
        after: Duration,
    },
    /// The caller's deadline passed before the call could finish.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The worker died during the call; it is replaced.
    #[error("worker {worker} crashed during the call: {message}")]
    Crashed {
        /// The worker.
        worker: WorkerId,
        /// What was seen (exit status, EOF, …).
        message: String,
    },
    /// The worker broke the protocol during the call; it is replaced.
    #[error("worker {worker} broke the protocol: {message}")]
    ProtocolViolation {
        /// The worker.
        worker: WorkerId,
        /// What was wrong.
        message: String,
    },
    /// The worker answered with an error (a caller error, a handler error, or transient
    /// failures beyond the retry budget).
    #[error("worker {worker}: {error}")]
    Call {
        /// The worker.
        worker: WorkerId,
        /// Its error.
        error: WorkerError,
    },
    /// No worker is running and none could be started.
    #[error("pool {pool:?} has no worker and none could start: {last_error}")]
    NoWorkers {
        /// The pool.
        pool: String,
        /// The last start error.
        last_error: String,
    },
    /// Strict fail-fast affinity: the session's worker is busy.
    #[error("the worker {worker} of session {session:?} is busy")]
    SessionBusy {
        /// The session.
        session: String,
        /// Its worker.
        worker: WorkerId,
    },
    /// Strict affinity: the session's worker has left the pool; the binding was dropped and
    /// the next call binds anew.
    #[error("the worker {worker} of session {session:?} has left the pool")]
    SessionWorkerLost {
        /// The session.
        session: String,
        /// The worker it was bound to.
        worker: WorkerId,
    },
    /// The configuration cannot work (a NaN recycle jitter, say); nothing was started.
    #[error("pool {pool:?} is misconfigured: {message}")]
    InvalidConfig {
        /// The pool.
        pool: String,
        /// What is wrong.
        message: String,
    },
    /// The pool is shutting down and admits no call.
    #[error("pool {pool:?} is shutting down")]
    ShuttingDown {
        /// The pool.
        pool: String,
    },
}

impl PoolError {
    /// How to treat this failure.
    pub fn class(&self) -> FailureClass {
        match self {
            PoolError::Call { error, .. } if error.kind.is_caller_error() => FailureClass::Caller,
            PoolError::Overloaded { .. }
            | PoolError::QueueTimeout { .. }
            | PoolError::NoWorkers { .. }
            | PoolError::SessionBusy { .. }
            | PoolError::ShuttingDown { .. }
            | PoolError::InvalidConfig { .. } => FailureClass::Unavailable,
            _ => FailureClass::Failed,
        }
    }

    /// A short stable name for metrics: `timeout`, `crashed`, `bad_params`, ….
    pub fn kind_name(&self) -> &'static str {
        match self {
            PoolError::Overloaded { .. } => "overloaded",
            PoolError::QueueTimeout { .. } => "queue_timeout",
            PoolError::Timeout { .. } => "timeout",
            PoolError::DeadlineExceeded => "deadline_exceeded",
            PoolError::Crashed { .. } => "crashed",
            PoolError::ProtocolViolation { .. } => "protocol_violation",
            PoolError::Call { error, .. } => match error.kind {
                ErrorKind::BadParams => "bad_params",
                ErrorKind::UnknownMethod => "unknown_method",
                ErrorKind::Handler => "handler",
                ErrorKind::Transient => "transient",
                ErrorKind::Crashed => "crashed",
                ErrorKind::ProtocolViolation => "protocol_violation",
                ErrorKind::Cancelled => "cancelled",
                _ => "error",
            },
            PoolError::NoWorkers { .. } => "no_workers",
            PoolError::SessionBusy { .. } => "session_busy",
            PoolError::SessionWorkerLost { .. } => "session_worker_lost",
            PoolError::ShuttingDown { .. } => "shutting_down",
            PoolError::InvalidConfig { .. } => "invalid_config",
        }
    }

    /// The worker involved, if one was.
    pub fn worker(&self) -> Option<WorkerId> {
        match self {
            PoolError::Timeout { worker, .. }
            | PoolError::Crashed { worker, .. }
            | PoolError::ProtocolViolation { worker, .. }
            | PoolError::Call { worker, .. }
            | PoolError::SessionBusy { worker, .. }
            | PoolError::SessionWorkerLost { worker, .. } => Some(*worker),
            _ => None,
        }
    }
}
