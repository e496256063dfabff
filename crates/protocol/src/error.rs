//! How a call failed, as a worker reports it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a worker failed a call. The pool acts on the kind: see [`WorkerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The params were wrong: returned to the caller as is, never retried.
    BadParams,
    /// The worker does not offer this method: returned as is, never retried.
    UnknownMethod,
    /// The call failed in the handler (an exception, an error result): returned as is; the
    /// worker is fine.
    Handler,
    /// A passing failure (busy, resource briefly unavailable): retried on another worker
    /// within a small budget.
    Transient,
    /// The worker died (exit, EOF): it is replaced.
    Crashed,
    /// The worker broke the protocol (garbage, oversized frame, wrong id): it is replaced.
    ProtocolViolation,
    /// The call was cancelled (the caller gave up and the pool asked the worker to stop): the
    /// worker's answer to a `cancel`. The worker is fine.
    Cancelled,
}

impl ErrorKind {
    /// Errors that are the caller's or the handler's business: the worker stays.
    pub fn is_caller_error(self) -> bool {
        matches!(
            self,
            ErrorKind::BadParams
                | ErrorKind::UnknownMethod
                | ErrorKind::Handler
                | ErrorKind::Cancelled
        )
    }

    /// Errors after which the worker cannot be trusted any more.
    pub fn kills_worker(self) -> bool {
        matches!(self, ErrorKind::Crashed | ErrorKind::ProtocolViolation)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::BadParams => "bad params",
            ErrorKind::UnknownMethod => "unknown method",
            ErrorKind::Handler => "handler error",
            ErrorKind::Transient => "transient",
            ErrorKind::Crashed => "worker crashed",
            ErrorKind::ProtocolViolation => "protocol violation",
            ErrorKind::Cancelled => "cancelled",
        })
    }
}

/// A failed call, as the worker reports it.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{kind}: {message}")]
pub struct WorkerError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A human-readable message.
    pub message: String,
    /// Anything else (an exception type, a traceback, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl WorkerError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            data: None,
        }
    }

    /// The same error with extra data.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }
}
