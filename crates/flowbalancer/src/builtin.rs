//! In-process versions of the bundled tools, for tiers without worker processes (and for
//! machines without python3).

use std::time::Duration;

use flowbalancer_pool::{ErrorKind, FnFactory, Payload, ToolSpec, WorkerError, in_process};
use serde_json::{Value, json};

/// The built-in tools.
pub const NAMES: [&str; 5] = ["echo", "word_count", "sleep", "fib", "pid"];

fn spec(name: &str) -> ToolSpec {
    let (description, schema) = match name {
        "echo" => (
            "Returns the same text",
            json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        ),
        "word_count" => (
            "Counts the words of a text",
            json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        ),
        "sleep" => (
            "Sleeps for ms milliseconds (shows timeouts)",
            json!({"type": "object", "properties": {"ms": {"type": "integer"}}, "required": ["ms"]}),
        ),
        "fib" => (
            "The n-th Fibonacci number (CPU work, for the cold tier)",
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
        ),
        _ => (
            "This worker's process id",
            json!({"type": "object", "properties": {}}),
        ),
    };
    ToolSpec::new(name, description, schema)
}

fn text(params: &Value) -> Result<&str, WorkerError> {
    params["text"]
        .as_str()
        .ok_or_else(|| WorkerError::new(ErrorKind::BadParams, "`text` (a string) is required"))
}

fn fib(n: u64) -> Value {
    // Big numbers as strings, like the Python worker (which has big integers).
    let (mut a, mut b) = (0u128, 1u128);
    for _ in 0..n.min(180) {
        (a, b) = (b, a.wrapping_add(b));
    }
    if n > 90 {
        json!({"n": n, "fib": a.to_string()})
    } else {
        json!({"n": n, "fib": a as u64})
    }
}

async fn run(method: &str, params: &Value) -> Result<Value, WorkerError> {
    match method {
        "echo" => Ok(json!({ "text": text(params)? })),
        "word_count" => Ok(json!({ "words": text(params)?.split_whitespace().count() })),
        "sleep" => {
            let ms = params["ms"].as_u64().ok_or_else(|| {
                WorkerError::new(ErrorKind::BadParams, "`ms` (an integer >= 0) is required")
            })?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!("slept"))
        }
        "fib" => {
            let n = params["n"].as_u64().filter(|n| *n <= 180).ok_or_else(|| {
                WorkerError::new(ErrorKind::BadParams, "`n` (an integer 0..=180) is required")
            })?;
            Ok(fib(n))
        }
        "pid" => Ok(json!(std::process::id())),
        other => Err(WorkerError::new(
            ErrorKind::UnknownMethod,
            format!("unknown method {other:?}"),
        )),
    }
}

/// A factory of in-process workers offering `tools` (a subset of [`NAMES`]).
pub fn factory(tools: &[String]) -> FnFactory {
    let allowed: Vec<String> = tools.to_vec();
    let specs = tools.iter().map(|t| spec(t)).collect();
    in_process(move |request| {
        let allowed = allowed.contains(&request.method.to_string());
        async move {
            if !allowed {
                return Err(WorkerError::new(
                    ErrorKind::UnknownMethod,
                    format!("unknown method {:?}", request.method),
                ));
            }
            run(&request.method, request.params())
                .await
                .map(Payload::json)
        }
    })
    .with_tools(specs)
}
