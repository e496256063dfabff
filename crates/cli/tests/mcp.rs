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
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
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
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
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
