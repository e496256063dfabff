//! The messages of the worker protocol, versions 1 and 2 (see `docs/protocol.md`).

use serde::{Deserialize, Serialize};

use crate::{ErrorKind, ToolSpec, WorkerError};

/// The newest protocol version this crate speaks (2: `cancel` and `progress`).
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest protocol version a pool still accepts from a worker.
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;

/// Call metadata sent to the worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallMeta {
    /// The caller's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Milliseconds left before the caller's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Present when the caller listens for progress (v2): the caller's token for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_token: Option<serde_json::Value>,
}

/// The error object of an `error` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `bad_params`, `unknown_method`, `handler` or `transient`.
    pub kind: ErrorKind,
    /// A human-readable message.
    pub message: String,
    /// Anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl From<ErrorBody> for WorkerError {
    fn from(body: ErrorBody) -> Self {
        WorkerError {
            kind: body.kind,
            message: body.message,
            data: body.data,
        }
    }
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Message {
    /// Worker → pool, first frame.
    Hello {
        /// The protocol version.
        protocol: u32,
        /// The worker's name.
        worker: String,
        /// What it offers.
        #[serde(default)]
        tools: Vec<ToolSpec>,
    },
    /// Pool → worker.
    Call {
        /// Chosen by the pool.
        id: u64,
        /// The tool.
        method: String,
        /// Its input.
        params: serde_json::Value,
        /// Session and deadline.
        #[serde(default)]
        meta: CallMeta,
    },
    /// Worker → pool: success.
    Result {
        /// The call's id.
        id: u64,
        /// The result.
        result: serde_json::Value,
    },
    /// Worker → pool: failure.
    Error {
        /// The call's id.
        id: u64,
        /// What went wrong.
        error: ErrorBody,
    },
    /// Pool → worker: health check.
    Ping {
        /// Chosen by the pool.
        id: u64,
    },
    /// Worker → pool: answer to a ping.
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// Pool → worker: finish and exit.
    Shutdown,
    /// Pool → worker (v2): stop call `id`, which the caller gave up on. The worker still
    /// answers it (with its result, or an error of kind `cancelled`).
    Cancel {
        /// The call's id.
        id: u64,
    },
    /// Worker → pool (v2): how far call `id` is.
    Progress {
        /// The call's id.
        id: u64,
        /// How far (increasing).
        progress: f64,
        /// The total, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<f64>,
        /// What it is doing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}
