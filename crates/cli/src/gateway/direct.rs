//! A `tools/call` served without the client's peer: for a tool whose tiers can never send
//! the client anything during the call (no MCP tier among them, and no progress asked for).
//! `serve --http` answers such calls on the request's own stream (`http::sessions`), without
//! the hops through rmcp's session worker.

use std::future::Future;
use std::sync::Arc;

use flowbalancer::Balancer;
use flowbalancer::tiers::CallOptions;
use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolRequestParams, ServerResult};
use serde_json::Value;

use super::{results, session_of};

/// The call of `params` in the client session `session`, as the gateway makes it (the
/// session named in `_meta` or the `_session` argument first), or `None`, with `params`
/// untouched, when the call needs the client's peer: progress asked for, a multi-round-trip
/// retry, an unknown tool, or an MCP tier among the tiers that may serve it (its server may ask
/// the client for sampling, elicitation or roots, or send it log messages).
pub(crate) fn direct_call(
    balancer: &Arc<Balancer>,
    session: &str,
    params: &mut CallToolRequestParams,
) -> Option<impl Future<Output = Result<ServerResult, McpError>> + Send + 'static> {
    let asks_progress = params
        .meta
        .as_ref()
        .is_some_and(|meta| meta.get_progress_token().is_some());
    if asks_progress || params.input_responses.is_some() || params.request_state.is_some() {
        return None;
    }
    let chain = balancer.router().chain(&params.name);
    if chain.is_empty() || chain.iter().any(|tier| balancer.is_mcp_tier(tier)) {
        return None;
    }
    let balancer = Arc::clone(balancer);
    let name = std::mem::take(&mut params.name);
    let mut arguments = params.arguments.take().unwrap_or_default();
    let meta = params.meta.take().map(|meta| meta.0.0).unwrap_or_default();
    let mut options = CallOptions::default();
    options.session =
        Some(session_of(&meta, &mut arguments).unwrap_or_else(|| session.to_string()));
    Some(async move {
        let routed = balancer
            .call(&name, Value::Object(arguments), options)
            .await;
        let mut result = ServerResult::CallToolResult(results::tool_result(&balancer, routed)?);
        // Sessions exist only for revisions before 2026-07-28: their results' shape.
        result.strip_result_type_for_legacy_peer();
        result.strip_non_object_output_for_legacy_peer();
        Ok(result)
    })
}
