//! What a worker offers.

use serde::{Deserialize, Serialize};

/// A tool (method) a worker offers, as announced in its hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The method name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of its params.
    #[serde(default = "empty_object_schema")]
    pub input_schema: serde_json::Value,
    /// The tool's whole MCP definition (`name`, `title`, `description`, `inputSchema`,
    /// `outputSchema`, `annotations`, `icons`, `_meta`, and whatever later revisions add),
    /// passed through to MCP clients unchanged except for its `name`. `None` for workers that
    /// announce only the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<serde_json::Value>,
}

impl ToolSpec {
    /// A tool named `name` with a description and a JSON Schema of its params.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: serde_json::Value,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema,
            definition: None,
        }
    }
}

fn empty_object_schema() -> serde_json::Value {
    serde_json::json!({"type": "object"})
}
