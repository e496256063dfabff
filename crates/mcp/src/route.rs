//! What the server sends, routed: answers to their callers, notifications to the call (or
//! the catalog, or telemetry), the server's own requests to the client of the call in flight.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use flowbalancer_pool::{ErrorKind, Progress, WorkerError};
use serde_json::{Value, json};

use crate::wire::Incoming;
use crate::worker::{Shared, Waiter};

/// Routes one message. `Err` when it breaks the protocol (an answer to an id never sent).
pub(crate) fn dispatch(shared: &Arc<Shared>, incoming: Incoming) -> Result<(), WorkerError> {
    match incoming {
        Incoming::Response { id, outcome } => answer(shared, &id, outcome).map_err(|message| {
            WorkerError::new(
                ErrorKind::ProtocolViolation,
                format!("{}: {message}", shared.label),
            )
        }),
        Incoming::Notification { method, params } => {
            notification(shared, &method, params);
            Ok(())
        }
        Incoming::Request { id, method, params } => {
            server_request(shared, id, method, params);
            Ok(())
        }
    }
}

/// Maps a JSON-RPC error object from the server to a worker error.
pub(crate) fn rpc_error(label: &str, error: Value) -> WorkerError {
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("error without a message")
        .to_string();
    let kind = match code {
        -32602 => ErrorKind::BadParams,
        -32601 => ErrorKind::UnknownMethod,
        _ => ErrorKind::Handler,
    };
    let _ = label;
    WorkerError::new(kind, message).with_data(error)
}

/// Routes one answer. `Err` when the id was never sent (a protocol violation).
fn answer(shared: &Arc<Shared>, id: &Value, outcome: Result<Value, Value>) -> Result<(), String> {
    let Some(number) = id.as_u64() else {
        return Err(format!("answered request id {id}, which it was never sent"));
    };
    let waiter = shared.pending.lock().waiting.remove(&number);
    let outcome = outcome.map_err(|error| rpc_error(&shared.label, error));
    match waiter {
        Some(Waiter::Call { answer, .. } | Waiter::Own(answer)) => {
            let _ = answer.send(outcome);
            Ok(())
        }
        // A late answer to a call given up on: dropped.
        None if number < shared.next_id.load(Ordering::Relaxed) => {
            tracing::debug!(server = %shared.label, id = number, "late answer dropped");
            Ok(())
        }
        None => Err(format!("answered request id {id}, which it was never sent")),
    }
}

fn notification(shared: &Arc<Shared>, method: &str, params: Value) {
    match method {
        "notifications/progress" => {
            let Some(token) = params.get("progressToken").and_then(Value::as_u64) else {
                return;
            };
            let sink = match shared.pending.lock().waiting.get(&token) {
                Some(Waiter::Call {
                    progress: Some(sink),
                    ..
                }) => sink.clone(),
                _ => return,
            };
            if let Some(progress) = params.get("progress").and_then(Value::as_f64) {
                sink.report(Progress {
                    progress,
                    total: params.get("total").and_then(Value::as_f64),
                    message: params
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
        }
        "notifications/message" => match shared.current_upstream() {
            Some(upstream) => upstream.0.notify(method, params),
            None => {
                let level = params
                    .get("level")
                    .and_then(Value::as_str)
                    .unwrap_or("info");
                let logger = params.get("logger").and_then(Value::as_str).unwrap_or("");
                // To the event log: which server said what kind of thing. What it said may
                // hold tool data, so it goes only under the payload target (recorded only
                // with `log_payloads`).
                tracing::info!(target: "flowbalancer::mcp_log", server = %shared.label, level, logger, "log message from an MCP server with no call in flight");
                let data = params.get("data").map(Value::to_string).unwrap_or_default();
                tracing::debug!(target: "flowbalancer::mcp_payload", server = %shared.label, level, logger, data, "MCP server log message");
            }
        },
        "notifications/tools/list_changed"
        | "notifications/resources/list_changed"
        | "notifications/prompts/list_changed" => shared.relist(),
        "notifications/resources/updated" => {
            if let Some(uri) = params.get("uri").and_then(Value::as_str) {
                shared.catalog.resource_updated(uri.to_string());
            }
        }
        _ => {} // cancelled (of a request it made us), and anything newer
    }
}

/// Answers a request the server makes of us: `ping` here, the rest through the client of the
/// newest call in flight (or the standard error when there is none, or it cannot).
fn server_request(shared: &Arc<Shared>, id: Value, method: String, params: Value) {
    if method == "ping" {
        let _ = shared.send_line(&json!({ "jsonrpc": "2.0", "id": id, "result": {} }));
        return;
    }
    let upstream = shared.current_upstream();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let outcome = match upstream {
            Some(upstream) => upstream.0.request(&method, params).await,
            None => Err(flowbalancer_pool::UpstreamError {
                code: -32601,
                message: format!("{method} is not available: no client call is in flight"),
                data: None,
            }),
        };
        let message = match outcome {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(error) => {
                let mut object = json!({ "code": error.code, "message": error.message });
                if let Some(data) = error.data {
                    object["data"] = data;
                }
                json!({ "jsonrpc": "2.0", "id": id, "error": object })
            }
        };
        let _ = shared.send_line(&message);
    });
}
