//! The MCP face of a balancer: tools of every tier in one list, calls routed through the
//! tiers, and for MCP tiers their results, resources, prompts and completions passed
//! through, with the servers' requests and log messages sent to the client of the call.

mod direct;
mod malformed;
mod progress;
mod results;
mod rounds;
mod routing;
#[cfg(test)]
mod tests;
mod tools;
mod upstream;

use std::sync::Arc;

use flowbalancer::pool::UpstreamHandle;
use flowbalancer::tiers::CallOptions;
use flowbalancer::{Balancer, McpTier};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, Implementation, InitializeResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub(crate) use direct::direct_call;
use progress::progress_forwarder;
use results::complete;
use tools::tool_definition;
use upstream::ClientPeer;

/// The MCP face of a balancer, for one client connection.
pub(crate) struct Gateway {
    balancer: Arc<Balancer>,
    /// The connection's session: the default session of its calls (affinity, and its own
    /// workers in `isolation = "session"` tiers), ended when the connection closes. Made
    /// when first needed: rmcp makes a gateway for each stateless HTTP request, and one more
    /// to look up a called tool's schema, and most never need one.
    connection: std::sync::OnceLock<Arc<str>>,
    /// Whether the connection lasts across requests (stdio), so that its calls may prefer
    /// one worker; over HTTP, a request without a session stands alone.
    lasting: bool,
    /// Over HTTP: the `Mcp-Session-Id` this gateway's requests carried, which is then the
    /// balancer session instead.
    http_session: parking_lot::Mutex<Option<Arc<str>>>,
    /// The client's log level (`logging/setLevel`), an index of `upstream::LEVELS`.
    log_level: Arc<std::sync::atomic::AtomicUsize>,
    /// The resource URIs the client subscribed to.
    subscribed: Arc<parking_lot::Mutex<std::collections::HashSet<String>>>,
    /// Servers' log messages for this client: a bounded queue that drops the oldest when the
    /// client reads slower than servers write, drained in order by one task. Made at the
    /// first log message for the client (a client no server logs to costs nothing for it).
    logs: upstream::LogSlot,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // The client session is over (stdio closed, HTTP DELETE or TTL): what it held goes.
        if let Some(connection) = self.connection.get() {
            self.balancer.end_session(connection);
        }
        if let Some(session) = self.http_session.lock().take() {
            self.balancer.end_session(&session);
        }
    }
}

/// A session id for a new connection, unique in this process and hard to guess.
pub(crate) fn new_connection_session() -> Arc<str> {
    Arc::from(unguessable_id("conn"))
}

/// `kind-N-HASH`: unique in this process and hard to guess (a session, a round trip's state).
pub(crate) fn unguessable_id(kind: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let random = std::collections::hash_map::RandomState::new();
    let mixed = std::hash::BuildHasher::hash_one(&random, (n, nanos, std::process::id()));
    format!("{kind}-{n}-{mixed:016x}")
}

/// The session of a call: `_meta.sessionId` (or `session_id`), else a `_session` argument.
fn session_of(
    meta: &serde_json::Map<String, Value>,
    arguments: &mut serde_json::Map<String, Value>,
) -> Option<String> {
    let from_meta = ["sessionId", "session_id", "session"]
        .iter()
        .find_map(|k| meta.get(*k).and_then(Value::as_str).map(str::to_string));
    let from_args = arguments
        .remove("_session")
        .and_then(|v| v.as_str().map(str::to_string));
    from_meta.or(from_args)
}

impl Gateway {
    /// The face for one client, whose session id is made when first needed.
    pub(crate) fn new(balancer: Arc<Balancer>) -> Self {
        Self::with_connection(balancer, std::sync::OnceLock::new(), false)
    }

    /// The face for one client connection whose session is `connection` (the caller ends
    /// it too, when the connection closes).
    pub(crate) fn for_connection(balancer: Arc<Balancer>, connection: Arc<str>) -> Self {
        Self::with_connection(balancer, std::sync::OnceLock::from(connection), true)
    }

    fn with_connection(
        balancer: Arc<Balancer>,
        connection: std::sync::OnceLock<Arc<str>>,
        lasting: bool,
    ) -> Self {
        Self {
            balancer,
            connection,
            lasting,
            http_session: parking_lot::Mutex::new(None),
            log_level: Arc::default(),
            subscribed: Arc::default(),
            logs: upstream::LogSlot::default(),
        }
    }

    fn client_peer(&self, peer: &rmcp::Peer<RoleServer>) -> UpstreamHandle {
        UpstreamHandle(Arc::new(ClientPeer::new(
            peer.clone(),
            Arc::clone(&self.log_level),
            Arc::clone(&self.logs),
        )))
    }

    /// The connection's session id, made the first time.
    fn connection(&self) -> &Arc<str> {
        self.connection.get_or_init(new_connection_session)
    }

    /// The client session of a request: its `Mcp-Session-Id` over HTTP, else the connection.
    fn client_session(&self, extensions: &rmcp::model::Extensions) -> Arc<str> {
        self.http_session_of(extensions)
            .unwrap_or_else(|| Arc::clone(self.connection()))
    }

    /// The request's `Mcp-Session-Id`, if it has one (HTTP, 2025-11-25).
    fn http_session_of(&self, extensions: &rmcp::model::Extensions) -> Option<Arc<str>> {
        let id = extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())?;
        let mut seen = self.http_session.lock();
        match seen.as_ref() {
            Some(known) if &**known == id => Some(Arc::clone(known)),
            _ => {
                let id: Arc<str> = Arc::from(id);
                *seen = Some(Arc::clone(&id));
                Some(id)
            }
        }
    }

    fn tools(&self) -> Vec<Value> {
        self.balancer
            .tools()
            .into_iter()
            .map(tool_definition)
            .collect()
    }

    /// The session of a call that names none. Over HTTP, the client's `Mcp-Session-Id`.
    /// Otherwise the connection's, where it is needed (tiers with `isolation = "session"`)
    /// or adds a preference: hint affinity over stdio, whose connection lasts. With strict
    /// affinity and no isolated tier, a stdio call without a session stays unbound, so that
    /// all of one client's calls are not tied to one worker; an HTTP request without a
    /// session stands alone, and has no worker to prefer.
    fn default_session(&self, extensions: &rmcp::model::Extensions) -> Option<String> {
        if let Some(id) = self.http_session_of(extensions) {
            return Some(id.to_string());
        }
        let config = self.balancer.config();
        let isolated = config
            .tiers
            .iter()
            .any(|t| t.isolation == flowbalancer::Isolation::Session);
        let hint = config.sessions.affinity == flowbalancer::pool::AffinityMode::Hint;
        (isolated || (hint && self.lasting)).then(|| self.connection().to_string())
    }

    fn any_tier_has(&self, capability: &str) -> bool {
        self.balancer
            .mcp_tiers()
            .iter()
            .any(|t| t.catalog.has_capability(capability))
    }
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        let mut capabilities = json!({ "tools": { "listChanged": true } });
        if self.any_tier_has("resources") {
            capabilities["resources"] = json!({ "listChanged": true });
        }
        if self.any_tier_has("prompts") {
            capabilities["prompts"] = json!({ "listChanged": true });
        }
        if self.any_tier_has("completions") {
            capabilities["completions"] = json!({});
        }
        if self.any_tier_has("logging") {
            capabilities["logging"] = json!({});
        }
        let subscribable = self.balancer.mcp_tiers().iter().any(|t| {
            t.catalog
                .capability("resources")
                .is_some_and(|r| r["subscribe"] == json!(true))
        });
        if subscribable {
            capabilities["resources"]["subscribe"] = json!(true);
        }
        let capabilities: ServerCapabilities =
            serde_json::from_value(capabilities).unwrap_or_default();
        let info: Implementation = serde_json::from_value(json!({
            "name": self.balancer.config().name,
            "version": env!("CARGO_PKG_VERSION"),
        }))
        .unwrap_or_default();
        InitializeResult::new(capabilities)
            .with_server_info(info)
            .with_instructions("Tools are served by tiered worker pools; failures carry every attempt in structuredContent.")
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if self.balancer.mcp_tiers().is_empty() {
            return; // only MCP servers' lists change: nothing to watch for this client
        }
        // Tell this client whenever a server's lists change.
        let mut changes = self.balancer.subscribe_changes();
        let peer = context.peer;
        for tier in self.balancer.mcp_tiers() {
            // Updates of the resources this client subscribed to.
            let mut updates = tier.catalog.subscribe_updates();
            let (peer, subscribed) = (peer.clone(), Arc::clone(&self.subscribed));
            tokio::spawn(async move {
                loop {
                    let uri = match updates.recv().await {
                        Ok(uri) => uri,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    };
                    if !subscribed.lock().contains(&uri) {
                        continue;
                    }
                    let param = rmcp::model::ResourceUpdatedNotificationParam::new(uri);
                    if peer.notify_resource_updated(param).await.is_err() {
                        break;
                    }
                }
            });
        }
        tokio::spawn(async move {
            loop {
                use flowbalancer::bus::TopicRecvError;
                match changes.recv().await {
                    Ok(_) | Err(TopicRecvError::Lagged(_)) => {}
                    Err(TopicRecvError::Closed) => break,
                    Err(_) => continue,
                }
                if peer.notify_tool_list_changed().await.is_err() {
                    break; // the client is gone
                }
                let _ = peer.notify_resource_list_changed().await;
                let _ = peer.notify_prompt_list_changed().await;
            }
        });
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        complete(json!({ "tools": self.tools() }), true)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        // rmcp asks for the called tool of every 2026-07-28 HTTP request: only it is copied.
        self.balancer.tool(name).and_then(tools::rmcp_tool)
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        if !self.balancer.router().offers(&name) {
            return Err(McpError::invalid_params(
                format!("unknown tool {name:?}"),
                Some(json!({ "tool": name })),
            ));
        }
        let mut arguments = request.arguments.unwrap_or_default();
        // The request's `_meta` object, read in place.
        let meta: &serde_json::Map<String, Value> = &context.meta;
        let session =
            session_of(meta, &mut arguments).or_else(|| self.default_session(&context.extensions));
        // A resumed round trip reports progress where its first round did.
        let resuming = request.request_state.is_some() && rounds::takes_input_required(&context);
        let (progress, flush) = match context.meta.get_progress_token() {
            Some(token) if !resuming => {
                let (sink, flush) = progress_forwarder(token, context.peer.clone());
                (Some(sink), Some(flush))
            }
            _ => (None, None),
        };
        let upstream = self.client_peer(&context.peer);
        let mut options = CallOptions::default();
        options.session = session;
        options.progress = progress;
        if rounds::takes_input_required(&context) {
            // 2026-07-28: the server's requests reach the client as `input_required` results.
            let trip = rounds::Trip {
                responses: request.input_responses.take(),
                state: request.request_state.take(),
                capabilities: context.client_capabilities(),
                notify: upstream,
            };
            let round = rounds::call(
                &self.balancer,
                &name,
                Value::Object(arguments),
                options,
                trip,
                &context.ct,
            )
            .await?;
            return match round {
                rounds::Round::Done(result) => {
                    if let Some(flush) = flush {
                        flush.flush().await;
                    }
                    Ok(results::tool_result(&self.balancer, result)?.into())
                }
                rounds::Round::InputRequired(asked) => Ok(asked.into()),
            };
        }
        let options = options.with_upstream(upstream);
        let call = self.balancer.call(&name, Value::Object(arguments), options);
        // A cancelled request drops the call: the pool cancels it at the worker and keeps the
        // worker's slot until the worker has stopped.
        let result = tokio::select! {
            result = call => result,
            () = context.ct.cancelled() => {
                return Err(McpError::internal_error("the request was cancelled", None));
            }
        };
        if let Some(flush) = flush {
            // Every progress report sent before the answer reaches the client before it.
            flush.flush().await;
        }
        Ok(results::tool_result(&self.balancer, result)?.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let resources = self.union(|l| &l.resources, "uri");
        complete(json!({ "resources": resources }), true)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let templates = self.union(|l| &l.resource_templates, "uriTemplate");
        complete(json!({ "resourceTemplates": templates }), true)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let params = serde_json::to_value(&request).unwrap_or_else(|_| json!({}));
        let result = self
            .to_resource_owner("resources/read", &request.uri, params, &context)
            .await?;
        Ok(complete::<rmcp::model::ReadResourceResult>(result, false)?.into())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        // Everything asked for; rmcp keeps only what the capabilities announce.
        Some(requested.clone())
    }

    /// A 2026-07-28 `subscriptions/listen` stream: list changes of every MCP tier, and
    /// updates of the resources it names, until the client cancels it.
    async fn listen(&self, context: rmcp::service::SubscriptionContext) -> Result<(), McpError> {
        use flowbalancer::bus::TopicRecvError;
        let mut changes = self.balancer.subscribe_changes();
        let (updates_tx, mut updates) = mpsc::unbounded_channel::<String>();
        let watched: Vec<String> = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let mut forwarders = Vec::new();
        if !watched.is_empty() {
            for tier in self.balancer.mcp_tiers() {
                let mut receiver = tier.catalog.subscribe_updates();
                let sender = updates_tx.clone();
                forwarders.push(tokio::spawn(async move {
                    loop {
                        match receiver.recv().await {
                            Ok(uri) => {
                                if sender.send(uri).is_err() {
                                    break;
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                }));
            }
        }
        drop(updates_tx);
        let sink = context.sink().clone();
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(_) | Err(TopicRecvError::Lagged(_)) => {
                        // The sink sends only what the client asked for.
                        let _ = sink.notify_tool_list_changed().await;
                        let _ = sink.notify_resource_list_changed().await;
                        let _ = sink.notify_prompt_list_changed().await;
                    }
                    Err(TopicRecvError::Closed) => break,
                    Err(_) => {}
                },
                Some(uri) = updates.recv() => {
                    if watched.contains(&uri) {
                        let _ = sink.notify_resource_updated(uri).await;
                    }
                }
                () = context.cancelled() => break,
            }
        }
        for forwarder in forwarders {
            forwarder.abort();
        }
        Ok(())
    }

    // Logging is deprecated by SEP-2577 (2026-07-28), but 2025-11-25 clients use it.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // Servers' log messages are filtered here, per client: the instances behind us are
        // shared, so their own level cannot be one client's.
        let level = serde_json::to_value(request.level).unwrap_or(Value::Null);
        let index = level
            .as_str()
            .and_then(|l| upstream::LEVELS.iter().position(|k| *k == l))
            .ok_or_else(|| McpError::invalid_params(format!("unknown level {level}"), None))?;
        self.log_level
            .store(index, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.to_resource_owner(
            "resources/subscribe",
            &request.uri,
            json!({ "uri": request.uri }),
            &context,
        )
        .await?;
        self.subscribed.lock().insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscribed.lock().remove(&request.uri);
        self.to_resource_owner(
            "resources/unsubscribe",
            &request.uri,
            json!({ "uri": request.uri }),
            &context,
        )
        .await
        .map(|_| ())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let prompts = self.union(|l| &l.prompts, "name");
        complete(json!({ "prompts": prompts }), true)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let params = serde_json::to_value(&request).unwrap_or_else(|_| json!({}));
        let name = request.name.clone();
        let owner = self
            .balancer
            .mcp_tiers()
            .iter()
            .find(|t| t.catalog.has_prompt(&name));
        let Some(owner) = owner else {
            return Err(McpError::invalid_params(
                format!("unknown prompt {name:?}"),
                None,
            ));
        };
        let result = self.forward(owner, "prompts/get", params, &context).await?;
        Ok(complete::<rmcp::model::GetPromptResult>(result, false)?.into())
    }

    /// A request rmcp could not read as the method it names (see [`malformed`]).
    async fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CustomResult, McpError> {
        Err(malformed::answer(&request))
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let params = serde_json::to_value(&request).unwrap_or_else(|_| json!({}));
        let reference = params.get("ref").cloned().unwrap_or(Value::Null);
        let field = |key: &str| {
            reference
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let owns = |t: &McpTier| match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => t.catalog.has_prompt(field("name")),
            Some("ref/resource") => t.catalog.has_template(field("uri")),
            _ => false,
        };
        let Some(tier) = self.owners(owns, "completions").into_iter().next() else {
            return complete(json!({ "completion": { "values": [] } }), false);
        };
        complete(
            self.forward(&tier, "completion/complete", params, &context)
                .await?,
            false,
        )
    }
}
