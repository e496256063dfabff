//! An MCP server's pool as a tier of the router: it offers exactly the tools its instances
//! listed.

use std::future::Future;

use flowbalancer_mcp::McpWorker;
use flowbalancer_pool::{Pool, PoolError, Request, Response, ToolSpec};

/// A pool of MCP server instances, routed by their listing. Until the first instance has
/// listed its tools (a server still starting, or one that cannot start) the tier offers none,
/// so calls of other tiers' tools never wait in its queue for an instance that may never come.
#[derive(Clone)]
pub(crate) struct ListedTier(pub(crate) Pool<McpWorker>);

impl flowbalancer_tiers::Tier for ListedTier {
    type Error = PoolError;

    fn call(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, PoolError>> + Send + '_ {
        self.0.call(request)
    }

    fn offers(&self, method: &str) -> Option<bool> {
        Some(self.0.offers(method).unwrap_or(false))
    }

    fn tools(&self) -> Vec<ToolSpec> {
        self.0.tools()
    }

    fn tool(&self, name: &str) -> Option<ToolSpec> {
        self.0.tool(name)
    }
}
