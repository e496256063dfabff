//! What the client receives: servers' results made complete for the 2026-07-28 revision,
//! routed calls' outcomes as `tools/call` results, servers' JSON-RPC errors passed on.

use flowbalancer::Balancer;
use flowbalancer::pool::PoolError;
use flowbalancer::tiers::{RouteError, Routed};
use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Value, json};

/// How long a client may cache a list (tools, resources, templates, prompts): a change is
/// announced with `list_changed`, so the list may be kept until then, within this bound.
const LIST_TTL_MS: u64 = 5 * 60 * 1000;

/// A result for the client: `resultType: "complete"` (2026-07-28; rmcp drops it for older
/// revisions), and for a list, how long it may be cached and by whom (this client only: what
/// a gateway lists may differ between its deployments and credentials).
pub(crate) fn complete<T: serde::de::DeserializeOwned>(
    mut value: Value,
    list: bool,
) -> Result<T, McpError> {
    if let Some(object) = value.as_object_mut() {
        object
            .entry("resultType")
            .or_insert_with(|| json!("complete"));
        if list {
            object.insert("ttlMs".into(), json!(LIST_TTL_MS));
            object.insert("cacheScope".into(), json!("private"));
        }
    }
    from_json(value)
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, McpError> {
    serde_json::from_value(value).map_err(|e| {
        McpError::internal_error(format!("the answer is not a valid MCP result: {e}"), None)
    })
}

/// The MCP error for a server's JSON-RPC error (kept whole in the worker error's data).
pub(crate) fn server_error(error: &PoolError) -> Option<McpError> {
    let PoolError::Call { error, .. } = error else {
        return None;
    };
    let data = error.data.as_ref()?;
    let code = i32::try_from(data.get("code")?.as_i64()?).ok()?;
    let message = data
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or(&error.message)
        .to_string();
    Some(McpError::new(
        rmcp::model::ErrorCode(code),
        message,
        data.get("data").cloned(),
    ))
}

/// A routed call's outcome as the client's `tools/call` result, or the server's own
/// JSON-RPC error.
pub(crate) fn tool_result(
    balancer: &Balancer,
    result: Result<Routed, RouteError>,
) -> Result<CallToolResult, McpError> {
    let result = match result {
        Ok(routed) if balancer.is_mcp_tier(&routed.tier) => {
            // An MCP server's result, as it sent it.
            complete::<CallToolResult>(routed.payload().to_json(), false).map_err(|e| {
                McpError::internal_error(
                    format!("tier {:?}: {}", routed.tier, e.message),
                    Some(json!({ "tier": routed.tier })),
                )
            })?
        }
        Ok(routed) => {
            let payload = routed.payload().to_json();
            let mut result = CallToolResult::success(vec![ContentBlock::text(payload.to_string())]);
            if payload.is_object() {
                result.structured_content = Some(payload);
            }
            // Which tier served it, and what was tried first.
            let mut meta = rmcp::model::MetaObject::new();
            meta.insert("flowbalancer/tier".into(), json!(routed.tier));
            meta.insert("flowbalancer/attempts".into(), json!(routed.attempts));
            result.meta = Some(meta);
            result
        }
        Err(RouteError::Rejected {
            ref tier,
            ref error,
            ..
        }) if balancer.is_mcp_tier(tier)
            && error
                .downcast_ref::<PoolError>()
                .and_then(server_error)
                .is_some() =>
        {
            // The server's own JSON-RPC error (invalid params, …), passed on.
            return Err(error
                .downcast_ref::<PoolError>()
                .and_then(server_error)
                .unwrap_or_else(|| McpError::internal_error("", None)));
        }
        Err(error) => {
            let mut result = CallToolResult::error(vec![ContentBlock::text(error.to_string())]);
            result.structured_content = Some(error.to_json());
            result
        }
    };
    Ok(result)
}
