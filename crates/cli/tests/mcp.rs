//! The built `flowbalancer` binary, spoken to through rmcp's own MCP client.

use std::io::Write;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

fn params(value: Value) -> CallToolRequestParams {
    serde_json::from_value(value).expect("call params")
}

fn server(args: &[&str]) -> TokioChildProcess {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowbalancer"));
    command.arg("serve").args(args);
    TokioChildProcess::new(command).expect("spawn flowbalancer serve")
}

/// The names of the tools `client`'s server lists, in its order.
async fn tool_names<H: rmcp::ClientHandler>(
    client: &rmcp::service::RunningService<rmcp::RoleClient, H>,
) -> Vec<String> {
    client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

fn builtin_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("flowbalancer.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(
        file,
        r#"
        [telemetry]
        path = "{}"
        [[tiers]]
        name = "hot"
        workers = {{ builtin = ["echo", "word_count", "sleep"] }}
        size = 4
        max_in_flight = 16
        call_timeout = "200ms"
        [[tiers]]
        name = "cold"
        workers = {{ builtin = ["echo", "sleep", "fib"] }}
        [routes]
        exact = {{ fib = "cold" }}
        "#,
        dir.join("events.jsonl").display()
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_lists_and_calls_tools() {
    let dir = tempfile::tempdir().unwrap();
    let config = builtin_config(dir.path());
    let client =
        ().serve(server(&["--config", config.to_str().unwrap()]))
            .await
            .expect("initialize");
    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("flowbalancer")
    );
    let mut names = tool_names(&client).await;
    names.sort();
    assert_eq!(names, ["echo", "fib", "sleep", "word_count"]);

    let echo = client
        .call_tool(params(json!({"name": "echo", "arguments": {"text": "hé"}})))
        .await
        .unwrap();
    assert_eq!(echo.is_error, Some(false));
    assert_eq!(echo.structured_content.unwrap()["text"], "hé");

    let fib = client
        .call_tool(params(json!({"name": "fib", "arguments": {"n": 30}})))
        .await
        .unwrap();
    assert_eq!(fib.structured_content.unwrap()["fib"], 832040);

    // Past hot's call timeout: cold serves it; the result's _meta says so.
    let slow = client
        .call_tool(params(json!({"name": "sleep", "arguments": {"ms": 400}})))
        .await
        .unwrap();
    let meta = serde_json::to_value(&slow.meta).unwrap();
    assert_eq!(meta["flowbalancer/tier"], "cold", "{meta}");

    // A caller error: isError with the structured reason, no fallback.
    let bad = client
        .call_tool(params(json!({"name": "echo", "arguments": {}})))
        .await
        .unwrap();
    assert_eq!(bad.is_error, Some(true));
    assert_eq!(bad.structured_content.unwrap()["kind"], "rejected");

    // An unknown tool is a JSON-RPC error.
    assert!(
        client
            .call_tool(params(json!({"name": "teleport", "arguments": {}})))
            .await
            .is_err()
    );

    // Many concurrent calls, each answered with its own result.
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let peer = client.peer().clone();
            tokio::spawn(async move {
                let result = peer
                    .call_tool(params(
                        json!({"name": "echo", "arguments": {"text": i.to_string()}}),
                    ))
                    .await
                    .unwrap();
                (i, result.structured_content.unwrap()["text"].clone())
            })
        })
        .collect();
    for call in calls {
        let (i, text) = call.await.unwrap();
        assert_eq!(text, i.to_string());
    }
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_serves_the_bundled_workers() {
    let client = ().serve(server(&[])).await.expect("initialize");
    let names = tool_names(&client).await;
    for expected in ["echo", "word_count", "sleep", "fib"] {
        assert!(names.contains(&expected.to_string()), "{names:?}");
    }
    let words = client
        .call_tool(params(
            json!({"name": "word_count", "arguments": {"text": "one two three"}}),
        ))
        .await
        .unwrap();
    assert_eq!(words.structured_content.unwrap()["words"], 3);
    let fib = client
        .call_tool(params(json!({"name": "fib", "arguments": {"n": 10}})))
        .await
        .unwrap();
    let meta = serde_json::to_value(&fib.meta).unwrap();
    assert_eq!(meta["flowbalancer/tier"], "cold");
    client.cancel().await.unwrap();
}

/// An MCP client that says when the server's tool list changed.
struct ListWatcher(tokio::sync::mpsc::UnboundedSender<()>);

impl rmcp::ClientHandler for ListWatcher {
    async fn on_tool_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        let _ = self.0.send(());
    }
}

/// A stdio MCP server that answers nothing (not even `initialize`) until `gate` exists,
/// then offers `late_echo`; `malformed`, whose result is not a valid `CallToolResult`; and
/// `ask`, which asks the client for sampling and answers with what it got.
const GATED_SERVER: &str = r#"
import json, os, sys, time
gate = sys.argv[1]
while not os.path.exists(gate):
    time.sleep(0.05)
def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    message = json.loads(line)
    method, rid = message.get("method"), message.get("id")
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": rid, "result": {"protocolVersion": "2025-06-18",
              "capabilities": {"tools": {}}, "serverInfo": {"name": "gated", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"tools": [{"name": "late_echo",
              "inputSchema": {"type": "object"}}, {"name": "malformed",
              "inputSchema": {"type": "object"}}, {"name": "ask", "inputSchema": {"type": "object"}}]}})
    elif method is None and str(rid).startswith("ask-"):
        sampled = message.get("result", {}).get("content", {}).get("text", "no answer")
        send({"jsonrpc": "2.0", "id": int(rid[4:]), "result": {"content": [{"type": "text", "text": sampled}]}})
    elif method == "tools/call" and message["params"]["name"] == "ask":
        send({"jsonrpc": "2.0", "id": f"ask-{rid}", "method": "sampling/createMessage", "params": {
              "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}], "maxTokens": 5}})
    elif method == "tools/call" and message["params"]["name"] == "malformed":
        send({"jsonrpc": "2.0", "id": rid, "result": {"content": "not a list"}})
    elif method == "tools/call":
        text = message["params"].get("arguments", {}).get("text", "")
        send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}})
    elif rid is not None:
        send({"jsonrpc": "2.0", "id": rid, "result": {}})
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_has_not_started_never_keeps_clients_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("gated.py");
    std::fs::write(&script, GATED_SERVER).unwrap();
    let gate = dir.path().join("gate");
    let config = dir.path().join("flowbalancer.toml");
    // Calls may wait an hour for the gated server's instance: a call routed to it before it
    // is up would hang the test, not slow it.
    std::fs::write(
        &config,
        format!(
            r#"
            start_wait = "300ms"
            [telemetry]
            enabled = false
            [[tiers]]
            name = "gated"
            workers = {{ mcp = ["python3", {script:?}, {gate:?}] }}
            size = 1
            queue_timeout = "1h"
            [[tiers]]
            name = "hot"
            workers = {{ builtin = ["echo"] }}
            "#,
        ),
    )
    .unwrap();
    let run = async {
        let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
        let client = ListWatcher(changed)
            .serve(server(&["--config", config.to_str().unwrap()]))
            .await
            .expect("initialize answered while the gated server waits");
        let names = tool_names(&client).await;
        assert_eq!(names, ["echo"]);
        let echo = client
            .call_tool(params(
                json!({"name": "echo", "arguments": {"text": "now"}}),
            ))
            .await
            .unwrap();
        let meta = serde_json::to_value(&echo.meta).unwrap();
        assert_eq!(meta["flowbalancer/tier"], "hot", "{meta}");
        assert_eq!(meta["flowbalancer/attempts"], json!([]), "{meta}");
        assert!(
            client
                .call_tool(params(json!({"name": "late_echo", "arguments": {}})))
                .await
                .is_err(),
            "not offered before the server is up"
        );

        // The server comes up: the client hears of it, and its tool is served.
        std::fs::write(&gate, "").unwrap();
        changes.recv().await.expect("tools/list_changed");
        let names = tool_names(&client).await;
        assert!(names.contains(&"late_echo".to_string()), "{names:?}");
        let late = client
            .call_tool(params(
                json!({"name": "late_echo", "arguments": {"text": "up"}}),
            ))
            .await
            .unwrap();
        assert_eq!(
            late.content[0].as_text().map(|t| t.text.as_str()),
            Some("up")
        );

        // A result the client could not read is an error naming the tier, not a hang.
        let malformed = client
            .call_tool(params(json!({"name": "malformed", "arguments": {}})))
            .await
            .expect_err("an invalid result");
        let text = malformed.to_string();
        assert!(
            text.contains("tier \"gated\"") && text.contains("not a valid MCP result"),
            "{text}"
        );
        client.cancel().await.unwrap();
    };
    // A deadline so that a regression fails instead of hanging CI.
    tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the client was kept waiting (60 s)");
}

/// A client that answers sampling with a fixed text. (rmcp deprecates sampling (SEP-2577),
/// but the servers people run today still ask for it.)
struct Sampler;

#[allow(deprecated)]
impl rmcp::ClientHandler for Sampler {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let mut info = rmcp::model::ClientConfig::default();
        info.capabilities.sampling = Some(Default::default());
        info
    }

    async fn create_message(
        &self,
        _params: rmcp::model::CreateMessageRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        Ok(rmcp::model::CreateMessageResult::new(
            rmcp::model::SamplingMessage::assistant_text("sampled by rmcp"),
            "test-model".into(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_request_reaches_a_2026_07_28_client_as_input_required() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("gated.py");
    std::fs::write(&script, GATED_SERVER).unwrap();
    let gate = dir.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    let config = dir.path().join("flowbalancer.toml");
    std::fs::write(
        &config,
        format!(
            "[telemetry]\nenabled = false\n[[tiers]]\nname = \"asking\"\nworkers = {{ mcp = [\"python3\", {script:?}, {gate:?}] }}\nsize = 1\n"
        ),
    )
    .unwrap();
    let run = async {
        use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
        let client = Sampler
            .serve_with_lifecycle(
                server(&["--config", config.to_str().unwrap()]),
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
                },
            )
            .await
            .expect("server/discover");
        assert_eq!(
            client.peer_info().map(|i| i.protocol_version.clone()),
            Some(rmcp::model::ProtocolVersion::V_2026_07_28)
        );
        // rmcp's client drives the rounds: it answers the embedded request and retries.
        let asked = client
            .call_tool(params(json!({"name": "ask", "arguments": {}})))
            .await
            .expect("answered");
        assert_eq!(
            asked.content[0].as_text().map(|t| t.text.as_str()),
            Some("sampled by rmcp")
        );
        // A state the gateway never gave is refused, naming what to do.
        let mut forged = params(json!({"name": "ask", "arguments": {}}));
        forged.request_state = Some("round-forged".into());
        let refused = client
            .call_tool(forged)
            .await
            .expect_err("an unknown requestState");
        assert!(
            refused.to_string().contains("unknown or expired"),
            "{refused}"
        );
        client.cancel().await.unwrap();
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the round trip ended (60 s)");
}
