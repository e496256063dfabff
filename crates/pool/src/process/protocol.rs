//! The messages of protocol version 1 (see `docs/protocol.md`).

use serde::{Deserialize, Serialize};

use crate::request::ToolSpec;
use crate::worker::{ErrorKind, WorkerError};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Call metadata sent to the worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallMeta {
    /// The caller's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Milliseconds left before the caller's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
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
}
