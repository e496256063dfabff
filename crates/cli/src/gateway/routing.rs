//! Where a client's request for a resource, prompt or completion goes: the MCP tier that owns
//! it, as a raw method on that tier's pool.

use std::time::Instant;

use flowbalancer::McpTier;
use flowbalancer::mcp::Listing;
use flowbalancer::pool::Request;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::Value;

use super::Gateway;
use super::results::server_error;

impl Gateway {
    /// Items of every MCP tier's listing, each key once (the first tier in order wins).
    pub(super) fn union(&self, items: impl Fn(&Listing) -> &Vec<Value>, key: &str) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        let mut all = Vec::new();
        for tier in self.balancer.mcp_tiers() {
            tier.catalog.with_listing(|listing| {
                for item in items(listing) {
                    let id = item.get(key).map(Value::to_string).unwrap_or_default();
                    if seen.insert(id) {
                        all.push(item.clone());
                    }
                }
            });
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

    /// Sends `method` about the resource `uri` to the tier that lists it, else to every tier
    /// with resources, in order, until one answers; `resource not found` when none does.
    pub(super) async fn to_resource_owner(
        &self,
        method: &str,
        uri: &str,
        params: Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        let mut last = McpError::resource_not_found(format!("no server has {uri:?}"), None);
        for tier in self.owners(|t| t.catalog.has_resource(uri), "resources") {
            match self.forward(&tier, method, params.clone(), context).await {
                Ok(result) => return Ok(result),
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
