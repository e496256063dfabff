//! Starting a session with a server and keeping its listings: the `initialize` handshake,
//! the (paginated) listings, the tools offered (prefix, filter, malformed definitions left
//! out), and the re-listing after `list_changed`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use flowbalancer_pool::{ErrorKind, ToolSpec, WorkerError};
use serde_json::{Value, json};

use crate::catalog::Listing;
use crate::spec::is_valid_tool_name;
use crate::worker::{KNOWN_VERSIONS, Link, PROTOCOL_VERSION, Shared};

/// `initialize`, `notifications/initialized`, then the listings the capabilities announce.
pub(crate) async fn handshake(shared: &Arc<Shared>) -> Result<(), WorkerError> {
    let initialized = shared
        .request(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {
                    "roots": { "listChanged": false },
                    "sampling": {},
                    "elicitation": {},
                },
                "clientInfo": { "name": "flowbalancer", "version": env!("CARGO_PKG_VERSION") },
            }),
        )
        .await?;
    let version = initialized
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !KNOWN_VERSIONS.contains(&version) {
        return Err(WorkerError::new(
            ErrorKind::ProtocolViolation,
            format!(
                "answered initialize with protocol revision {version:?}, which this gateway does not speak"
            ),
        ));
    }
    if let Link::Http(link) = &shared.link {
        link.set_protocol(version);
    }
    shared.notify("notifications/initialized", json!({}))?;
    let capabilities = initialized
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let (definitions, mut listing) = shared.list_all(&capabilities).await?;
    listing.capabilities = capabilities;
    listing.server_info = initialized
        .get("serverInfo")
        .cloned()
        .unwrap_or(Value::Null);
    listing.instructions = initialized
        .get("instructions")
        .and_then(Value::as_str)
        .map(str::to_string);
    *shared.tools.write() = shared.offered_tools(&definitions);
    shared.catalog.update(listing, false);
    tracing::debug!(server = %shared.label, pid = ?shared.link.pid(), version, tools = definitions.len(), "MCP server ready");
    Ok(())
}

impl Shared {
    /// Lists everything (paginated) and stores it; returns the tools offered.
    pub(crate) async fn list_all(
        self: &Arc<Self>,
        capabilities: &Value,
    ) -> Result<(Vec<Value>, Listing), WorkerError> {
        let has = |name: &str| capabilities.get(name).is_some_and(|c| !c.is_null());
        let tools = if has("tools") {
            self.list_paginated("tools/list", "tools").await?
        } else {
            Vec::new()
        };
        let mut listing = self.catalog.listing();
        if has("resources") {
            listing.resources = self.list_paginated("resources/list", "resources").await?;
            // Templates are optional even for servers with resources.
            listing.resource_templates = self
                .list_paginated("resources/templates/list", "resourceTemplates")
                .await
                .unwrap_or_default();
        }
        if has("prompts") {
            listing.prompts = self.list_paginated("prompts/list", "prompts").await?;
        }
        Ok((tools, listing))
    }

    async fn list_paginated(
        self: &Arc<Self>,
        method: &str,
        field: &str,
    ) -> Result<Vec<Value>, WorkerError> {
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..1000 {
            let params = match &cursor {
                Some(cursor) => json!({ "cursor": cursor }),
                None => json!({}),
            };
            let page = self.request(method, params).await?;
            match page.get(field) {
                Some(Value::Array(page_items)) => items.extend(page_items.iter().cloned()),
                _ => {
                    return Err(WorkerError::new(
                        ErrorKind::ProtocolViolation,
                        format!(
                            "{}: {method} answered without a {field:?} array",
                            self.label
                        ),
                    ));
                }
            }
            match page.get("nextCursor") {
                Some(next) if !next.is_null() && Some(next) != cursor.as_ref() => {
                    cursor = Some(next.clone());
                }
                _ => return Ok(items),
            }
        }
        Ok(items)
    }

    /// Turns the server's tool definitions into the tools offered: malformed ones and those
    /// the filter drops are left out (malformed ones with a warning).
    fn offered_tools(&self, definitions: &[Value]) -> Vec<ToolSpec> {
        let mut tools = Vec::with_capacity(definitions.len());
        for definition in definitions {
            let name = definition.get("name").and_then(Value::as_str);
            let schema_ok = definition.get("inputSchema").is_some_and(Value::is_object);
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                tracing::warn!(server = %self.label, "a tool definition without a name is left out");
                continue;
            };
            if !schema_ok {
                tracing::warn!(server = %self.label, tool = name, "a tool definition without an inputSchema object is left out");
                continue;
            }
            let Some(offered) = self.spec.offered_name(name) else {
                continue;
            };
            if self.spec.tool_prefix.is_some() && !is_valid_tool_name(&offered) {
                tracing::warn!(server = %self.label, tool = %offered, "a prefixed tool name breaks the MCP name rules ([A-Za-z0-9_.-], 1 to 128 characters); the tool is left out");
                continue;
            }
            let mut whole = definition.clone();
            whole["name"] = Value::String(offered.clone());
            tools.push(ToolSpec {
                description: definition
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                input_schema: definition["inputSchema"].clone(),
                definition: Some(whole),
                ..ToolSpec::new(offered, "", Value::Null)
            });
        }
        tools
    }

    /// Re-lists after a `list_changed` notification (one re-listing at a time).
    pub(crate) fn relist(self: &Arc<Self>) {
        if self.relisting.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let capabilities = shared.catalog.with_listing(|l| l.capabilities.clone());
            match shared.list_all(&capabilities).await {
                Ok((definitions, listing)) => {
                    let tools = shared.offered_tools(&definitions);
                    let tools_changed = {
                        let mut current = shared.tools.write();
                        let changed = *current != tools;
                        *current = tools;
                        changed
                    };
                    shared.catalog.update(listing, tools_changed);
                }
                Err(error) if shared.stopping.load(Ordering::SeqCst) => {
                    tracing::debug!(server = %shared.label, %error, "re-listing cut short by the stop");
                }
                Err(error) => {
                    tracing::warn!(server = %shared.label, %error, "re-listing after list_changed failed");
                }
            }
            shared.relisting.store(false, Ordering::SeqCst);
        });
    }
}
