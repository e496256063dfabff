//! What goes to a worker and what comes back.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Identifies a worker within its pool; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId(pub u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.0)
    }
}

/// A request's or response's body: JSON or raw bytes. Cloning is cheap (shared).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON value.
    Json(Arc<serde_json::Value>),
    /// Raw bytes.
    Bytes(Bytes),
}

impl Payload {
    /// A JSON payload.
    pub fn json(value: serde_json::Value) -> Self {
        Payload::Json(Arc::new(value))
    }

    /// The JSON value, if this is JSON.
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Payload::Json(value) => Some(value),
            Payload::Bytes(_) => None,
        }
    }

    /// The payload as JSON: bytes become a JSON string when they are UTF-8, else an array.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Payload::Json(value) => (**value).clone(),
            Payload::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => serde_json::Value::String(text.to_string()),
                Err(_) => serde_json::Value::from(bytes.to_vec()),
            },
        }
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        Payload::json(value)
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Bytes(bytes)
    }
}

/// Metadata that travels with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Meta {
    /// Unique in this process.
    pub request_id: u64,
    /// The caller's session, for affinity.
    pub session: Option<Arc<str>>,
    /// When the caller stops waiting.
    pub deadline: Option<Instant>,
    /// Where the worker's progress reports go (none: the caller does not listen).
    pub progress: Option<ProgressSink>,
    /// The caller's side of the call, for workers that talk back while it runs (none: the
    /// caller cannot be asked anything).
    pub upstream: Option<UpstreamHandle>,
}

/// One progress report of a running call: `progress` out of `total` (when known), with an
/// optional message. Workers send it with the protocol's `progress` message; the MCP gateway
/// turns it into `notifications/progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// How far the call is (increasing).
    pub progress: f64,
    /// The total, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// What it is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a call's progress reports go: a callback, and the token the caller knows them by
/// (handed to the worker as `meta.progress_token`). Cheap to clone; two sinks are equal when
/// they are the same sink.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use flowbalancer_pool::{Progress, ProgressSink, Request};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = {
///     let seen = Arc::clone(&seen);
///     ProgressSink::new(move |p: Progress| seen.lock().unwrap().push(p.progress))
/// };
/// let request = Request::new("long_job", serde_json::json!({})).with_progress(sink);
/// if let Some(sink) = &request.meta.progress {
///     sink.report(Progress { progress: 1.0, total: Some(4.0), message: None });
/// }
/// assert_eq!(*seen.lock().unwrap(), [1.0]);
/// ```
#[derive(Clone)]
pub struct ProgressSink {
    token: Option<serde_json::Value>,
    report: Arc<dyn Fn(Progress) + Send + Sync>,
}

impl ProgressSink {
    /// A sink calling `report` for every progress report.
    pub fn new(report: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        Self {
            token: None,
            report: Arc::new(report),
        }
    }

    /// The same sink, known to the caller by `token` (an MCP `progressToken`, say).
    pub fn with_token(mut self, token: serde_json::Value) -> Self {
        self.token = Some(token);
        self
    }

    /// The caller's token for these reports, if it gave one.
    pub fn token(&self) -> Option<&serde_json::Value> {
        self.token.as_ref()
    }

    /// Delivers one report.
    pub fn report(&self, progress: Progress) {
        (self.report)(progress);
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressSink")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ProgressSink {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.report, &other.report)
    }
}

impl Eq for ProgressSink {}

/// A request the caller's side refused or could not answer: a JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct UpstreamError {
    /// The JSON-RPC error code (-32601 when the caller lacks the capability).
    pub code: i64,
    /// What went wrong.
    pub message: String,
    /// Extra data, if any.
    pub data: Option<serde_json::Value>,
}

/// A boxed future of an [`Upstream`] request.
pub type UpstreamFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<serde_json::Value, UpstreamError>> + Send>,
>;

/// The caller's side of a running call, for workers that talk back: an MCP server that asks
/// its client for sampling (`sampling/createMessage`), input (`elicitation/create`) or its
/// roots (`roots/list`) during a tool call, or sends it log messages. The MCP gateway
/// implements it for each client request.
pub trait Upstream: Send + Sync + 'static {
    /// Sends the caller a JSON-RPC request and waits for its result.
    fn request(&self, method: &str, params: serde_json::Value) -> UpstreamFuture;
    /// Sends the caller a JSON-RPC notification (best effort).
    fn notify(&self, method: &str, params: serde_json::Value);
}

/// A shared [`Upstream`]; two handles are equal when they are the same upstream.
#[derive(Clone)]
pub struct UpstreamHandle(pub Arc<dyn Upstream>);

impl fmt::Debug for UpstreamHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UpstreamHandle")
    }
}

impl PartialEq for UpstreamHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for UpstreamHandle {}

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// A call for a worker: a method name, a payload and metadata. Cloning is cheap.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The method (tool) to run.
    pub method: Arc<str>,
    /// Its input.
    pub payload: Payload,
    /// Request id, session, deadline.
    pub meta: Meta,
}

impl Request {
    /// A request for `method` with `payload`, a fresh id, no session and no deadline.
    pub fn new(method: impl Into<Arc<str>>, payload: impl Into<Payload>) -> Self {
        Self {
            method: method.into(),
            payload: payload.into(),
            meta: Meta {
                request_id: NEXT_REQUEST.fetch_add(1, Ordering::Relaxed),
                session: None,
                deadline: None,
                progress: None,
                upstream: None,
            },
        }
    }

    /// The same request bound to `session` (affinity).
    pub fn with_session(mut self, session: impl Into<Arc<str>>) -> Self {
        self.meta.session = Some(session.into());
        self
    }

    /// The same request with a deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.meta.deadline = Some(deadline);
        self
    }

    /// The same request with a progress sink: progress reports of the worker go there.
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.meta.progress = Some(sink);
        self
    }

    /// The same request with the caller's side attached: the worker may send it requests
    /// and notifications while the call runs.
    pub fn with_upstream(mut self, upstream: UpstreamHandle) -> Self {
        self.meta.upstream = Some(upstream);
        self
    }

    /// The JSON params (or `Value::Null` for a bytes payload).
    pub fn params(&self) -> &serde_json::Value {
        static NULL: serde_json::Value = serde_json::Value::Null;
        self.payload.as_json().unwrap_or(&NULL)
    }
}

/// A worker's answer, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The result.
    pub payload: Payload,
    /// The worker that answered.
    pub worker: WorkerId,
    /// How many workers were tried (more than 1 after transient failures).
    pub attempts: u32,
    /// The session's worker had left and the session was bound to another one (hint mode).
    pub rebound: bool,
}

pub use flowbalancer_protocol::ToolSpec;
