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

#[tokio::test]
async fn one_tool_is_found_as_the_list_gives_it() {
    let described =
        |name: &str, description: &str| ToolSpec::new(name, description, json!({"type": "object"}));
    let pool = |tools: Vec<ToolSpec>| async move {
        Pool::builder(in_process(|request| async move { Ok(request.payload) }).with_tools(tools))
            .size(1)
            .health_interval(None)
            .build()
            .await
            .unwrap()
    };
    let hot = pool(vec![
        described("echo", "hot echo"),
        described("shared", "hot"),
    ])
    .await;
    let warm = pool(vec![
        described("shared", "warm"),
        described("hidden", "warm"),
    ])
    .await;
    let cold = pool(vec![
        described("shared", "cold"),
        described("hidden", "cold"),
    ])
    .await;
    let router = Router::builder()
        .tier("hot", hot)
        // warm may serve only `shared`: its `hidden` is not offered.
        .tier_with_methods("warm", warm, ["shared"])
        .tier("cold", cold)
        .build()
        .unwrap();
    let listed = router.tools();
    for name in ["echo", "shared", "hidden", "missing"] {
        let from_list = listed.iter().find(|t| t.name == name);
        let found = router.tool(name);
        assert_eq!(
            found.as_ref().map(|t| &t.description),
            from_list.map(|t| &t.description),
            "{name}"
        );
    }
    assert_eq!(router.tool("shared").unwrap().description, "hot");
    assert_eq!(router.tool("hidden").unwrap().description, "cold");
    assert!(router.tool("missing").is_none());
}
