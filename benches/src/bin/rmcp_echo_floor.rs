//! The floor of a tools/call over stdio with rmcp: a minimal rmcp server whose `echo` tool
//! answers at once, no balancer behind it. The gateway bench drives it with the same client
//! as `flowbalancer serve`, so the difference between the two is flowbalancer's own part.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, InitializeResult, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> InitializeResult {
        let capabilities: ServerCapabilities =
            serde_json::from_value(json!({ "tools": {} })).unwrap_or_default();
        InitializeResult::new(capabilities)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        serde_json::from_value(json!({ "tools": [{
            "name": "echo",
            "inputSchema": { "type": "object" },
        }]}))
        .map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let text = serde_json::from_value(json!({ "type": "text", "text": arguments.to_string() }))
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let mut result = CallToolResult::success(vec![text]);
        result.structured_content = Some(arguments);
        Ok(result.into())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let service = Echo.serve(rmcp::transport::io::stdio_pipes()).await?;
        service.waiting().await?;
        Ok(())
    })
}
