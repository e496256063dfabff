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
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            listing: RwLock::new(Listing::default()),
            changes: watch::channel(0).0,
        }
    }
}

impl Catalog {
    /// The listings as last seen.
    pub fn listing(&self) -> Listing {
        self.listing.read().clone()
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

    /// A receiver whose value moves on every change of this server's tools or listings
    /// (after a `list_changed` notification and the re-listing it caused).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
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
