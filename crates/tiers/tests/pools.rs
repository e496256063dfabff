//! Tiers that are real pools: tools from the workers decide what each tier offers.

use std::time::Duration;

use flowbalancer_pool::{ErrorKind, Payload, Pool, ToolSpec, WorkerError, in_process};
use flowbalancer_tiers::{CallOptions, RouteError, Router};
use serde_json::json;

fn tool(name: &str) -> ToolSpec {
    ToolSpec::new(name, "", json!({"type": "object"}))
}

#[tokio::test]
async fn pools_announce_their_tools_and_failures_fall_through() {
    let hot = Pool::builder(
        in_process(|request| async move {
            match request.method.as_ref() {
                "echo" => Ok(request.payload),
                "flaky" => Err(WorkerError::new(ErrorKind::Crashed, "died")),
                other => Err(WorkerError::new(ErrorKind::UnknownMethod, other)),
            }
        })
        .with_tools(vec![tool("echo"), tool("flaky")]),
    )
    .size(1)
    .health_interval(None)
    .build()
    .await
    .unwrap();
    let cold = Pool::builder(
        in_process(|request| async move {
            Ok(Payload::json(json!({ "cold": request.method.as_ref() })))
        })
        .with_tools(vec![tool("fib"), tool("flaky")]),
    )
    .size(1)
    .health_interval(None)
    .build()
    .await
    .unwrap();
    let router = Router::builder()
        .tier("hot", hot)
        .tier("cold", cold)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let names: Vec<String> = router.tools().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["echo", "flaky", "fib"]);
    assert_eq!(
        router
            .call("echo", json!({"x": 1}), CallOptions::default())
            .await
            .unwrap()
            .tier,
        "hot"
    );
    // Only cold offers fib: hot is never tried.
    let fib = router
        .call("fib", json!({}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!((fib.tier.as_str(), fib.attempts.len()), ("cold", 0));
    // hot crashes on flaky; cold serves it.
    let flaky = router
        .call("flaky", json!({}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!((flaky.tier.as_str(), flaky.attempts.len()), ("cold", 1));
    assert!(matches!(
        router
            .call("missing", json!({}), CallOptions::default())
            .await,
        Err(RouteError::UnknownMethod { .. })
    ));
}
