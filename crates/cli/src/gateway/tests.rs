//! The gateway's answers that need no client: checked against a balancer of built-in tools.

use std::sync::Arc;

use flowbalancer::{Balancer, Config};
use rmcp::ServerHandler;
use rmcp::model::Tool;

use super::{Gateway, tool_definition};

async fn balancer() -> Arc<Balancer> {
    let config = Config::from_toml(
        r#"
        [telemetry]
        enabled = false
        [[tiers]]
        name = "local"
        workers = { builtin = ["echo", "fib", "sleep"] }
        "#,
    )
    .expect("config");
    Arc::new(Balancer::from_config(config).await.expect("balancer"))
}

/// rmcp looks up the called tool of every 2026-07-28 request (its `Mcp-Param-*` check): the
/// tool it gets is the one `tools/list` shows, built without the list's JSON round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_tool_gives_the_listed_definition() {
    let balancer = balancer().await;
    let gateway = Gateway::new(Arc::clone(&balancer));
    let listed = balancer.tools();
    assert!(listed.len() >= 3, "{listed:?}");
    for spec in listed {
        let name = spec.name.clone();
        let expected: Tool = serde_json::from_value(tool_definition(spec)).expect("a tool");
        assert_eq!(gateway.get_tool(&name), Some(expected), "{name}");
    }
    assert_eq!(gateway.get_tool("no_such_tool"), None);
    drop(gateway);
    balancer.shutdown().await;
}
