//! Where a client's request for a resource, prompt or completion goes: the MCP tier that owns
//! it, as a raw method on that tier's pool.

use std::time::Instant;

use flowbalancer::McpTier;
use flowbalancer::pool::Request;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Value, json};

use super::{Gateway, server_error};

impl Gateway {
    /// Items of every MCP tier's listing, each key once (the first tier in order wins).
    pub(super) fn union(&self, items: impl Fn(&McpTier) -> Vec<Value>, key: &str) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        let mut all = Vec::new();
        for tier in self.balancer.mcp_tiers() {
            for item in items(tier) {
                let id = item.get(key).map(Value::to_string).unwrap_or_default();
                if seen.insert(id) {
                    all.push(item);
                }
            }
        }
        all
    }

    /// Sends a raw MCP request to one tier's servers.
    pub(super) async fn forward(
        &self,
        tier: &McpTier,
        method: &str,
        params: Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        let deadline = Instant::now() + self.balancer.config().timeout;
        let request = Request::new(
            format!("{}{method}", flowbalancer::mcp::RAW_METHOD_PREFIX),
            params,
        )
        .with_session(self.client_session(&context.extensions))
        .with_deadline(deadline)
        .with_upstream(self.client_peer(&context.peer));
        let call = tier.pool.call(request);
        let answer = tokio::select! {
            answer = call => answer,
            () = context.ct.cancelled() => {
                return Err(McpError::internal_error("the request was cancelled", None));
            }
        };
        match answer {
            Ok(response) => Ok(response.payload.to_json()),
            Err(error) => Err(server_error(&error).unwrap_or_else(|| {
                McpError::internal_error(format!("tier {:?}: {error}", tier.name), None)
            })),
        }
    }

    /// Sends a subscribe or unsubscribe to the tier that owns `uri` (or every tier that
    /// supports subscriptions, in order, until one accepts).
    pub(super) async fn resource_subscription(
        &self,
        method: &str,
        uri: String,
        context: &RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let owns = |t: &McpTier| {
            t.catalog
                .listing()
                .resources
                .iter()
                .any(|r| r.get("uri").and_then(Value::as_str) == Some(uri.as_str()))
        };
        let mut last = McpError::invalid_params(format!("no server offers {uri:?}"), None);
        for tier in self.owners(owns, "resources") {
            match self
                .forward(&tier, method, json!({ "uri": uri }), context)
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// The tiers to ask for `key`, the owner first: the tier whose listing has it, then
    /// every other tier with the capability.
    pub(super) fn owners(&self, owns: impl Fn(&McpTier) -> bool, capability: &str) -> Vec<McpTier> {
        let tiers = self.balancer.mcp_tiers();
        let mut ordered: Vec<McpTier> = tiers.iter().filter(|t| owns(t)).cloned().collect();
        ordered.extend(
            tiers
                .iter()
                .filter(|t| !owns(t) && t.catalog.has_capability(capability))
                .cloned(),
        );
        ordered
    }
}
