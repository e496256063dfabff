//! Tools as the gateway shows them to MCP clients: the JSON of `tools/list`, and rmcp's
//! `Tool` for the one tool rmcp asks about.

use flowbalancer::pool::ToolSpec;
use rmcp::model::Tool;
use serde_json::{Value, json};

/// A tool as MCP lists it: an MCP server's definition whole (its name already prefixed), else
/// name, description and input schema.
pub(super) fn tool_definition(tool: ToolSpec) -> Value {
    match tool.definition {
        Some(definition) if definition.is_object() => definition,
        _ => json!({
            "name": tool.name,
            "description": tool.description,
            "inputSchema": object_schema(tool.input_schema),
        }),
    }
}

/// The same tool as rmcp's `Tool` (`None` for an MCP server's definition that rmcp cannot
/// read). A tool that is not an MCP server's is built directly, without a JSON round trip:
/// rmcp asks for the called tool of every 2026-07-28 request.
pub(super) fn rmcp_tool(tool: ToolSpec) -> Option<Tool> {
    match tool.definition {
        Some(definition) if definition.is_object() => serde_json::from_value(definition).ok(),
        _ => Some(Tool::new(
            tool.name,
            tool.description,
            object_schema(tool.input_schema),
        )),
    }
}

/// A tool's input schema: its own when it is an object, else one that takes any object.
fn object_schema(schema: Value) -> serde_json::Map<String, Value> {
    match schema {
        Value::Object(schema) => schema,
        _ => serde_json::Map::from_iter([("type".to_string(), json!("object"))]),
    }
}
