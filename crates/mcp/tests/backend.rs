//! An MCP server (a small Python one, `tests/servers/fake_mcp.py`) behind a pool: start,
//! pass-through of tools and results, progress, cancellation, server requests, list_changed,
//! and every kind of broken server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowbalancer_mcp::{McpFactory, McpServerSpec, RAW_METHOD_PREFIX};
use flowbalancer_pool::{
    ErrorKind, Pool, PoolError, Progress, ProgressSink, Request, StartMode, Upstream,
    UpstreamError, UpstreamFuture, UpstreamHandle,
};
use serde_json::{Value, json};

fn spec(mode: &str) -> McpServerSpec {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/fake_mcp.py");
    McpServerSpec::new(format!("fake-{mode}"), "python3", [script, mode])
        .start_timeout(Duration::from_secs(10))
}

async fn pool(
    spec: McpServerSpec,
    size: usize,
) -> Result<Pool<flowbalancer_mcp::McpWorker>, PoolError> {
    Pool::builder(McpFactory::new(spec))
        .name("fake")
        .size(size)
        .max_in_flight(8)
        .cancel_grace(Duration::from_millis(300))
        .restart_backoff(Duration::from_millis(50))
        .restart_backoff_max(Duration::from_millis(200))
        .build()
        .await
}

fn text_of(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_and_results_pass_through_whole() {
    let pool = pool(spec("ok"), 1).await.expect("starts");
    let tools = pool.tools();
    let echo = tools
        .iter()
        .find(|t| t.name == "echo")
        .expect("echo is offered");
    let definition = echo
        .definition
        .as_ref()
        .expect("the whole definition is kept");
    assert_eq!(definition["title"], "Echo");
    assert_eq!(definition["outputSchema"], json!({"type": "object"}));
    assert_eq!(definition["annotations"]["readOnlyHint"], true);
    assert_eq!(definition["_meta"]["x/custom"], 1);
    assert_eq!(
        definition["execution"]["taskSupport"], "forbidden",
        "fields we do not know are kept too"
    );
    assert!(
        !tools.iter().any(|t| t.name == "no_schema"),
        "a malformed definition is dropped"
    );

    let answer = pool
        .call(Request::new("echo", json!({"message": "hi"})))
        .await
        .expect("echo");
    let result = answer.payload.to_json();
    assert_eq!(result["content"][0], json!({"type": "text", "text": "hi"}));
    assert_eq!(
        result["content"][1],
        json!({"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"})
    );
    assert_eq!(result["structuredContent"], json!({"echo": "hi"}));
    assert_eq!(result["_meta"], json!({"x/served": true}));

    // isError is the tool's answer, not a failure of the worker: it comes back as is.
    let failed = pool
        .call(Request::new("fail", json!({})))
        .await
        .expect("an isError result is an answer");
    assert_eq!(failed.payload.to_json()["isError"], true);

    // A JSON-RPC error maps to a kind.
    match pool.call(Request::new("nope", json!({}))).await {
        Err(PoolError::Call { error, .. }) => {
            assert_eq!(error.kind, ErrorKind::BadParams, "{error}")
        }
        other => panic!("expected bad params, got {other:?}"),
    }

    // Resources and prompts through the raw-method prefix.
    let read = pool
        .call(Request::new(
            format!("{RAW_METHOD_PREFIX}resources/read"),
            json!({"uri": "fake://one"}),
        ))
        .await
        .expect("read");
    assert_eq!(
        read.payload.to_json()["contents"][0]["text"],
        "content of fake://one"
    );
    let listing = McpFactory::new(spec("ok")).catalog().listing();
    assert!(
        listing.resources.is_empty(),
        "a fresh factory has seen nothing yet"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_holds_resources_templates_and_prompts() {
    let factory = McpFactory::new(spec("ok"));
    let catalog = factory.catalog();
    let pool = Pool::builder(factory)
        .size(1)
        .build()
        .await
        .expect("starts");
    let listing = catalog.listing();
    assert_eq!(listing.resources[0]["uri"], "fake://one");
    assert_eq!(listing.resource_templates[0]["uriTemplate"], "fake://{n}");
    assert_eq!(listing.prompts[0]["name"], "greet");
    assert_eq!(listing.server_info["name"], "fake");
    assert!(catalog.has_capability("completions"));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_and_a_filter_shape_the_tools_offered() {
    let filter = flowbalancer_mcp::ToolFilter::new(None, vec!["stubborn".into()]);
    let pool = pool(spec("ok").tool_prefix("fake_").tool_filter(filter), 1)
        .await
        .expect("starts");
    let names: Vec<String> = pool.tools().into_iter().map(|t| t.name).collect();
    assert!(names.contains(&"fake_echo".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("stubborn")),
        "denied: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("bad tool")),
        "a prefixed name must meet the rules: {names:?}"
    );
    let definition = pool
        .tools()
        .into_iter()
        .find(|t| t.name == "fake_echo")
        .and_then(|t| t.definition);
    assert_eq!(definition.expect("kept")["name"], "fake_echo");
    let answer = pool
        .call(Request::new("fake_echo", json!({"message": "p"})))
        .await
        .expect("the prefix is removed on the way in");
    assert_eq!(text_of(&answer.payload.to_json()), "p");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_the_calls_sink() {
    let pool = pool(spec("ok"), 1).await.expect("starts");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let seen = Arc::clone(&seen);
        ProgressSink::new(move |p: Progress| {
            seen.lock().unwrap().push((p.progress, p.total, p.message))
        })
        .with_token(json!("client-token"))
    };
    let answer = pool
        .call(Request::new("progress", json!({})).with_progress(sink))
        .await
        .expect("progress");
    assert_eq!(text_of(&answer.payload.to_json()), "progressed");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2], (3.0, Some(3.0), Some("step 3".to_string())));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_is_cancelled_at_the_server_and_frees_its_slot() {
    let pool = pool(spec("ok"), 1).await.expect("starts");
    let slow = pool.call(Request::new("slow", json!({"seconds": 30})));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), slow)
            .await
            .is_err()
    );
    // The server stops the cancelled call (it never answers it); the grace frees the slot.
    let started = Instant::now();
    let answer = pool
        .call(Request::new("echo", json!({"message": "next"})))
        .await
        .expect("served");
    assert_eq!(text_of(&answer.payload.to_json()), "next");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(pool.stats().cancels, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let workers = pool.workers();
    assert_eq!(workers.len(), 1, "the worker is kept: {workers:?}");
    assert_eq!(workers[0].in_flight, 0, "the slot is free after the grace");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_cancellation_never_ties_up_the_tier() {
    let pool = pool(spec("ok"), 1).await.expect("starts");
    let pid_before = text_of(
        &pool
            .call(Request::new("pid", json!({})))
            .await
            .expect("pid")
            .payload
            .to_json(),
    );
    for _ in 0..4 {
        let deadline = Instant::now() + Duration::from_millis(100);
        let stubborn = pool
            .call(Request::new("stubborn", json!({"seconds": 3})).with_deadline(deadline))
            .await;
        assert!(
            matches!(stubborn, Err(PoolError::DeadlineExceeded)),
            "{stubborn:?}"
        );
    }
    // Four stubborn calls still run in the server; other calls are served at once, by the
    // same process.
    let started = Instant::now();
    let answer = pool
        .call(Request::new("pid", json!({})))
        .await
        .expect("served");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        text_of(&answer.payload.to_json()),
        pid_before,
        "no restart for an ignored cancel"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        pool.workers()[0].in_flight,
        0,
        "every slot is back after the grace"
    );
    pool.shutdown().await;
}

struct TestUpstream {
    notes: Mutex<Vec<(String, Value)>>,
}

impl Upstream for TestUpstream {
    fn request(&self, method: &str, params: Value) -> UpstreamFuture {
        let method = method.to_string();
        Box::pin(async move {
            if method == "sampling/createMessage" {
                Ok(
                    json!({"role": "assistant", "content": {"type": "text", "text": "sampled"}, "model": "test", "echo": params["maxTokens"]}),
                )
            } else {
                Err(UpstreamError {
                    code: -32601,
                    message: "no".into(),
                    data: None,
                })
            }
        })
    }
    fn notify(&self, method: &str, params: Value) {
        self.notes
            .lock()
            .unwrap()
            .push((method.to_string(), params));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requests_and_logs_go_to_the_client_of_the_call() {
    let pool = pool(spec("ok"), 1).await.expect("starts");
    let upstream = Arc::new(TestUpstream {
        notes: Mutex::new(Vec::new()),
    });
    let answer = pool
        .call(Request::new("ask", json!({})).with_upstream(UpstreamHandle(upstream.clone())))
        .await
        .expect("ask");
    let sampled: Value = serde_json::from_str(&text_of(&answer.payload.to_json())).expect("json");
    assert_eq!(sampled["content"]["text"], "sampled");
    assert_eq!(sampled["echo"], 5);
    let notes = upstream.notes.lock().unwrap().clone();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, "notifications/message");
    assert_eq!(notes[0].1["data"], "asked");

    // Without a client to ask, the server gets the standard error.
    let answer = pool
        .call(Request::new("ask", json!({})))
        .await
        .expect("ask");
    assert!(
        text_of(&answer.payload.to_json()).contains("-32601"),
        "{}",
        text_of(&answer.payload.to_json())
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changed_relists_and_signals() {
    let factory = McpFactory::new(spec("ok"));
    let mut changes = factory.catalog().subscribe();
    let pool = Pool::builder(factory)
        .size(1)
        .build()
        .await
        .expect("starts");
    changes.borrow_and_update();
    assert!(!pool.tools().iter().any(|t| t.name == "added"));
    pool.call(Request::new("change", json!({})))
        .await
        .expect("change");
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("a change is signalled")
        .expect("open");
    assert!(pool.refresh_tools(), "the pool sees new tools");
    assert!(pool.tools().iter().any(|t| t.name == "added"));
    let answer = pool
        .call(Request::new("added", json!({})))
        .await
        .expect("the new tool works");
    assert_eq!(text_of(&answer.payload.to_json()), "added works");
    pool.shutdown().await;
}

async fn start_error(mode: &str, spec: McpServerSpec) -> String {
    let result = Pool::builder(McpFactory::new(spec))
        .name(mode)
        .size(1)
        .build()
        .await;
    match result {
        Err(PoolError::NoWorkers { last_error, .. }) => last_error,
        other => panic!("{mode}: expected a start failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_servers_fail_to_start_with_a_clear_error() {
    let garbage = start_error("garbage", spec("garbage")).await;
    assert!(
        garbage.contains("not JSON-RPC")
            && garbage.contains("fake-garbage")
            && garbage.contains("worker w1"),
        "{garbage}"
    );
    let hang = start_error(
        "hang_init",
        spec("hang_init").start_timeout(Duration::from_millis(800)),
    )
    .await;
    assert!(hang.contains("no answer to initialize"), "{hang}");
    let crash = start_error("crash", spec("crash")).await;
    assert!(
        crash.contains("cannot find module 'imaginary'") && crash.contains("exit"),
        "{crash}"
    );
    let missing = start_error(
        "missing",
        McpServerSpec::new("missing", "/nonexistent/server", Vec::<String>::new()),
    )
    .await;
    assert!(
        missing.contains("cannot start") && missing.contains("/nonexistent/server"),
        "{missing}"
    );
}

/// A local HTTP server that answers every request with `status`, `extra` headers and an
/// HTML body: what a gateway in front of a server, or the wrong URL, gives.
async fn answering(status: &'static str, extra: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut request).await;
                let body = "<html>no</html>";
                let answer = format!(
                    "HTTP/1.1 {status}\r\n{extra}content-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{address}/mcp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_servers_that_refuse_fail_to_start_at_once_saying_why() {
    // A long hello timeout: a start that waited it out would end with "no answer", not the
    // reasons checked here.
    let wait = Duration::from_secs(60);
    let url = answering(
        "401 Unauthorized",
        "www-authenticate: Bearer realm=\"x\"\r\n",
    )
    .await;
    let unauthorized = start_error(
        "unauthorized",
        McpServerSpec::http("unauthorized", &url).start_timeout(wait),
    )
    .await;
    assert!(
        unauthorized.contains("401")
            && unauthorized.contains("Bearer realm")
            && unauthorized.contains("headers")
            && unauthorized.contains(&url),
        "{unauthorized}"
    );
    let url = answering("404 Not Found", "").await;
    let missing = start_error(
        "wrong_path",
        McpServerSpec::http("wrong_path", &url).start_timeout(wait),
    )
    .await;
    assert!(
        missing.contains("404") && missing.contains(&url) && missing.contains("JSON-RPC"),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_tier_keeps_trying_in_the_background() {
    let pool = Pool::builder(McpFactory::new(spec("crash")))
        .size(1)
        .start(StartMode::EagerKeepTrying)
        .restart_backoff(Duration::from_millis(50))
        .build()
        .await
        .expect("built even though nothing starts");
    assert!(!pool.has_live_worker());
    let why = pool.last_start_error().expect("the reason is kept");
    assert!(why.contains("imaginary"), "{why}");
    let call = pool.call(Request::new("echo", json!({}))).await;
    assert!(
        matches!(
            call,
            Err(PoolError::NoWorkers { .. }) | Err(PoolError::QueueTimeout { .. })
        ),
        "{call:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        pool.stats().start_failures >= 2,
        "retries go on: {:?}",
        pool.stats().start_failures
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_flood_does_not_block_the_server() {
    let pool = pool(spec("stderr_flood"), 1)
        .await
        .expect("starts while flooding");
    for i in 0..20 {
        let answer = pool
            .call(Request::new("echo", json!({"message": i.to_string()})))
            .await
            .expect("served");
        assert_eq!(text_of(&answer.payload.to_json()), i.to_string());
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_break_during_calls_are_replaced() {
    for (mode, expected) in [
        ("wrong_id", "never sent"),
        ("huge", "larger than the cap"),
        ("crash_on_call", "exited"),
    ] {
        let spec = spec(mode).max_message(4 * 1024 * 1024);
        let pool = pool(spec, 1).await.expect("starts");
        let first = pool.workers()[0].id;
        let call = tokio::time::timeout(
            Duration::from_secs(20),
            pool.call(Request::new("echo", json!({"message": "x"}))),
        )
        .await
        .expect("the call ends");
        let message = match call {
            Err(
                PoolError::Crashed { message, .. } | PoolError::ProtocolViolation { message, .. },
            ) => message,
            // echo is read-only: it was retried on a fresh instance, which broke the same way.
            Err(PoolError::Call { error, .. }) if error.kind == ErrorKind::Transient => {
                error.message
            }
            other => panic!("{mode}: expected a crash, got {other:?}"),
        };
        assert!(
            message.contains(expected) && message.contains(&format!("fake-{mode}")),
            "{mode}: {message}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.workers().iter().all(|w| w.id == first) || !pool.has_live_worker() {
            assert!(
                Instant::now() < deadline,
                "{mode}: the worker was not replaced"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_for_good_fails_calls_at_once_instead_of_queueing_them() {
    let marker = std::env::temp_dir().join(format!("fb-once-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let mode = format!("once:{}", marker.display());
    let pool = Pool::builder(McpFactory::new(spec(&mode)))
        .size(1)
        .queue_timeout(Duration::from_secs(5))
        .restart_backoff(Duration::from_millis(50))
        .build()
        .await
        .expect("the first start works");
    let pid = text_of(
        &pool
            .call(Request::new("pid", json!({})))
            .await
            .expect("pid")
            .payload
            .to_json(),
    );
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status();
    // Its replacement cannot start: a call made while it tries must not wait out the 5 s
    // queue bound.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let started = Instant::now();
    let call = pool
        .call(Request::new("echo", json!({"message": "x"})))
        .await;
    assert!(matches!(call, Err(PoolError::NoWorkers { .. })), "{call:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    pool.shutdown().await;
    let _ = std::fs::remove_file(&marker);
}
