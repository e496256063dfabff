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

/// `--http ADDRESS`: the same server over rmcp's streamable HTTP transport on hyper, the
/// floor for `flowbalancer serve --http`.
async fn serve_http(address: &str) -> Result<(), Box<dyn std::error::Error>> {
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    use tower_service::Service;

    let rmcp = StreamableHttpService::new(
        || Ok(Echo),
        std::sync::Arc::new(LocalSessionManager::default()),
        // JSON answers for requests that stand alone, as `serve --http` gives them: the
        // cheapest rmcp answers them, so the floor stays a floor.
        StreamableHttpServerConfig::default().with_json_response(true),
    );
    let listener = tokio::net::TcpListener::bind(address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let rmcp = rmcp.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let mut rmcp = rmcp.clone();
                async move { rmcp.call(request).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let args: Vec<String> = std::env::args().collect();
    runtime.block_on(async {
        if let [_, flag, address] = args.as_slice()
            && flag == "--http"
        {
            return serve_http(address).await;
        }
        let service = Echo.serve(rmcp::transport::io::stdio_pipes()).await?;
        service.waiting().await?;
        Ok(())
    })
}
