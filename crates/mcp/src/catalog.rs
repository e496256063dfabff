//! What a server offers besides tools, shared by all instances of one server: its resources,
//! resource templates and prompts (as the server sent them), its capabilities, and a change
//! counter that moves whenever a re-listing changed something.

use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::watch;

/// One server's listings, as last seen by any of its instances.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Listing {
    /// `resources/list`: the resource objects, untouched.
    pub resources: Vec<Value>,
    /// `resources/templates/list`: the template objects, untouched.
    pub resource_templates: Vec<Value>,
    /// `prompts/list`: the prompt objects, untouched.
    pub prompts: Vec<Value>,
    /// The server's `capabilities` from `initialize`.
    pub capabilities: Value,
    /// The server's `serverInfo` from `initialize`.
    pub server_info: Value,
    /// The server's `instructions`, if any.
    pub instructions: Option<String>,
}

/// The shared, changing listings of one server; see [`Listing`].
#[derive(Debug)]
pub struct Catalog {
    listing: RwLock<Listing>,
    changes: watch::Sender<u64>,
    updated: tokio::sync::broadcast::Sender<String>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            listing: RwLock::new(Listing::default()),
            changes: watch::channel(0).0,
            updated: tokio::sync::broadcast::channel(256).0,
        }
    }
}

impl Catalog {
    /// The listings as last seen.
    pub fn listing(&self) -> Listing {
        self.listing.read().clone()
    }

    /// Reads the listings in place (nothing is copied): for lookups on every request.
    pub fn with_listing<R>(&self, read: impl FnOnce(&Listing) -> R) -> R {
        read(&self.listing.read())
    }

    /// Whether the server lists a resource with this URI.
    pub fn has_resource(&self, uri: &str) -> bool {
        self.with_listing(|l| has(&l.resources, "uri", uri))
    }

    /// Whether the server lists a prompt with this name.
    pub fn has_prompt(&self, name: &str) -> bool {
        self.with_listing(|l| has(&l.prompts, "name", name))
    }

    /// Whether the server lists a resource template with this URI template.
    pub fn has_template(&self, uri_template: &str) -> bool {
        self.with_listing(|l| has(&l.resource_templates, "uriTemplate", uri_template))
    }

    /// Whether the server says it has this capability (`"resources"`, `"prompts"`,
    /// `"completions"`, `"logging"`, …).
    pub fn has_capability(&self, name: &str) -> bool {
        self.listing
            .read()
            .capabilities
            .get(name)
            .is_some_and(|c| !c.is_null())
    }

    /// The server's announced capability `name` (`"resources"`, …), if any.
    pub fn capability(&self, name: &str) -> Option<Value> {
        self.with_listing(|l| l.capabilities.get(name).filter(|c| !c.is_null()).cloned())
    }

    /// A receiver whose value moves on every change of this server's tools or listings
    /// (after a `list_changed` notification and the re-listing it caused).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A receiver of the URIs the server says were updated (`notifications/resources/updated`),
    /// for the clients subscribed to them.
    pub fn subscribe_updates(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.updated.subscribe()
    }

    pub(crate) fn resource_updated(&self, uri: String) {
        let _ = self.updated.send(uri);
    }

    /// Replaces the listings; signals a change when they differ or `tools_changed`.
    pub(crate) fn update(&self, listing: Listing, tools_changed: bool) {
        let changed = {
            let mut current = self.listing.write();
            let changed = *current != listing;
            *current = listing;
            changed
        };
        if changed || tools_changed {
            self.changes.send_modify(|generation| *generation += 1);
        }
    }
}

/// Whether `items` holds an object whose `key` is the string `value`.
fn has(items: &[Value], key: &str, value: &str) -> bool {
    items
        .iter()
        .any(|item| item.get(key).and_then(Value::as_str) == Some(value))
}
