//! Stdio MCP servers as pool workers.
//!
//! People already have MCP servers (npx and uvx packages, scripts on the MCP SDKs); this
//! crate lets a [`flowbalancer_pool::Pool`] keep N warm instances of one and balance calls
//! over them. Each instance ([`McpWorker`]) is one child process in its own process group,
//! owned by the pool's lifecycle scope, spoken to as an MCP client over its stdin and stdout:
//!
//! - **start**: `initialize`, `notifications/initialized`, then `tools/list`, and
//!   `resources/list`, `resources/templates/list` and `prompts/list` when the server has
//!   them; a failure or a start past the timeout is a start error carrying the tail of the
//!   server's stderr;
//! - **calls**: a pool request for a tool becomes `tools/call`; its result comes back as the
//!   server sent it (every content block, `structuredContent`, `isError`, `_meta`). A method
//!   starting with [`RAW_METHOD_PREFIX`] is sent as that JSON-RPC method (resources, prompts,
//!   completion). JSON-RPC errors map to error kinds (invalid params, unknown method,
//!   handler);
//! - **many calls at once** on one instance, each with its own progress token; progress goes
//!   to the call's [`ProgressSink`](flowbalancer_pool::ProgressSink), log messages and the
//!   server's own requests (sampling, elicitation, roots) to the call's
//!   [`Upstream`](flowbalancer_pool::Upstream);
//! - **cancellation**: a call the pool gives up on gets `notifications/cancelled`; one the
//!   server never answers is forgotten after the grace (a late answer is dropped) and the
//!   instance is kept only if it still answers `ping`;
//! - **faults**: EOF, a line that is not JSON-RPC, a line over the size cap, an answer to an
//!   id never sent: the instance is dead, its calls fail at once, and the pool replaces it
//!   with backoff. stderr is read to the end (a flood never blocks the server).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use flowbalancer_mcp::{McpFactory, McpServerSpec};
//! use flowbalancer_pool::{Pool, Request};
//!
//! let spec = McpServerSpec::new("everything", "npx", ["-y", "@modelcontextprotocol/server-everything", "stdio"]);
//! let pool = Pool::builder(McpFactory::new(spec)).size(2).max_in_flight(16).build().await?;
//! let answer = pool.call(Request::new("echo", serde_json::json!({"message": "hi"}))).await?;
//! println!("{}", answer.payload.to_json()); // the tools/call result, untouched
//! pool.shutdown().await;
//! # Ok(()) }
//! ```

mod catalog;
mod factory;
mod http;
mod listing;
mod route;
mod spec;
mod stderr;
mod stdio;
mod wire;
mod worker;

pub use catalog::{Catalog, Listing};
pub use factory::McpFactory;
pub use spec::{DEFAULT_MAX_MESSAGE, McpServerSpec, ToolFilter, is_valid_tool_name};
pub use worker::{McpWorker, PROTOCOL_VERSION, RAW_METHOD_PREFIX};
