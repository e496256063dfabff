//! The client of one request, as an [`Upstream`] for the MCP server that serves it: the
//! server's sampling, elicitation and roots requests and its log messages go to this client.

use flowbalancer::pool::{Upstream, UpstreamError, UpstreamFuture};
use rmcp::model::{ServerNotification, ServerRequest};
use rmcp::{Peer, RoleServer};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The standard "method not found" code, for a capability the client lacks.
const METHOD_NOT_FOUND: i64 = -32601;

/// MCP's log levels, least severe first.
pub(crate) const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// Log messages kept for a client that reads slower than servers write.
const LOG_QUEUE: usize = 64;

/// A client's log queue, made (with the task that drains it into the client) at the first log
/// message for that client.
pub(crate) type LogSlot = Arc<parking_lot::Mutex<Option<flowbalancer::bus::Sender<Value>>>>;

/// The sender of `slot`'s queue, made the first time: a bounded queue that drops the oldest
/// message when the client reads slower than servers write, drained in order into `peer`.
fn log_sender(slot: &LogSlot, peer: &Peer<RoleServer>) -> Option<flowbalancer::bus::Sender<Value>> {
    let mut logs = slot.lock();
    if logs.is_none() {
        let (sender, queue) = flowbalancer::bus::channel(
            flowbalancer::bus::QueueConfig::new(LOG_QUEUE)
                .overflow(flowbalancer::bus::Overflow::DropOldest),
        )
        .ok()?;
        let peer = peer.clone();
        tokio::spawn(async move {
            while let Some(params) = queue.recv().await {
                let notification = serde_json::from_value::<ServerNotification>(
                    json!({ "method": "notifications/message", "params": params }),
                );
                if let Ok(notification) = notification
                    && peer.send_notification(notification).await.is_err()
                {
                    break; // the client is gone
                }
            }
        });
        *logs = Some(sender);
    }
    logs.clone()
}

/// One client connection, answering for the requests of the MCP servers behind us.
pub(crate) struct ClientPeer {
    peer: Peer<RoleServer>,
    /// The least severe log level the client wants (`logging/setLevel`), as an index of
    /// [`LEVELS`]: servers' log messages below it are not passed on.
    level: Arc<AtomicUsize>,
    /// The client's log queue (bounded, oldest dropped first), shared by its calls.
    logs: LogSlot,
}

impl ClientPeer {
    pub(crate) fn new(peer: Peer<RoleServer>, level: Arc<AtomicUsize>, logs: LogSlot) -> Self {
        Self { peer, level, logs }
    }

    /// Whether the client declared the capability a server request needs.
    fn can(&self, method: &str) -> bool {
        let Some(info) = self.peer.peer_info() else {
            return false;
        };
        declares(
            &serde_json::to_value(&info.capabilities).unwrap_or(Value::Null),
            method,
        )
    }
}

/// Whether `capabilities` (a client's, as JSON) has what the server request `method` needs.
pub(crate) fn declares(capabilities: &Value, method: &str) -> bool {
    let needed = match method {
        "sampling/createMessage" => "sampling",
        "elicitation/create" => "elicitation",
        "roots/list" => "roots",
        _ => return false,
    };
    capabilities.get(needed).is_some_and(|c| !c.is_null())
}

/// The error a server gets for a request the client has no capability for.
pub(crate) fn unsupported(method: &str) -> UpstreamError {
    error(
        METHOD_NOT_FOUND,
        format!("the client does not support {method}"),
    )
}

pub(crate) fn error(code: i64, message: impl Into<String>) -> UpstreamError {
    UpstreamError {
        code,
        message: message.into(),
        data: None,
    }
}

impl Upstream for ClientPeer {
    fn request(&self, method: &str, params: Value) -> UpstreamFuture {
        if !self.can(method) {
            let unsupported = unsupported(method);
            return Box::pin(async move { Err(unsupported) });
        }
        let request: Result<ServerRequest, _> =
            serde_json::from_value(json!({ "method": method, "params": params }));
        let peer = self.peer.clone();
        Box::pin(async move {
            let request = request.map_err(|e| error(-32602, format!("invalid params: {e}")))?;
            match peer.send_request(request).await {
                Ok(result) => serde_json::to_value(result)
                    .map_err(|e| error(-32603, format!("the client's answer: {e}"))),
                Err(rmcp::ServiceError::McpError(e)) => Err(UpstreamError {
                    code: i64::from(e.code.0),
                    message: e.message.to_string(),
                    data: e.data,
                }),
                Err(other) => Err(error(-32603, format!("the client did not answer: {other}"))),
            }
        })
    }

    fn notify(&self, method: &str, params: Value) {
        if method == "notifications/message" {
            let severity = params
                .get("level")
                .and_then(Value::as_str)
                .and_then(|l| LEVELS.iter().position(|k| *k == l))
                .unwrap_or(LEVELS.len() - 1);
            if severity < self.level.load(Ordering::Relaxed) {
                return;
            }
            if let Some(logs) = log_sender(&self.logs, &self.peer) {
                let _ = logs.try_send(params);
            }
            return;
        }
        let notification: Result<ServerNotification, _> =
            serde_json::from_value(json!({ "method": method, "params": params }));
        let Ok(notification) = notification else {
            tracing::debug!(method, "a server notification could not be forwarded");
            return;
        };
        let peer = self.peer.clone();
        tokio::spawn(async move {
            let _ = peer.send_notification(notification).await;
        });
    }
}
