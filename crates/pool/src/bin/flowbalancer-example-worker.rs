//! An example worker written in Rust with `flowbalancer_pool::WorkerServer`.
//!
//! Tools: `echo {text}`, `word_count {text}`, `sleep {ms}`, `fib {n}`, `pid`. With
//! `--faults`, also tools that misbehave on purpose, for tests: `crash`, `hang`, `garbage`,
//! `huge_frame`, `wrong_id`, `stderr_flood {lines}`.

use std::io::Write;
use std::time::Duration;

use flowbalancer_pool::{ErrorKind, WorkerError, WorkerServer};
use serde_json::{Value, json};

fn text(params: &Value) -> Result<String, WorkerError> {
    params["text"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| WorkerError::new(ErrorKind::BadParams, "`text` (a string) is required"))
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}

/// Writes raw bytes straight to stdout, bypassing the protocol (fault injection).
fn raw_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let faults = std::env::args().any(|a| a == "--faults");
    let object = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    let mut server = WorkerServer::new("rust-example")
        .tool(
            "echo",
            "Returns the same text",
            object(json!({"text": {"type": "string"}}), &["text"]),
            |p| async move { Ok(json!({ "text": text(&p)? })) },
        )
        .tool(
            "word_count",
            "Counts the words of a text",
            object(json!({"text": {"type": "string"}}), &["text"]),
            |p| async move { Ok(json!({ "words": text(&p)?.split_whitespace().count() })) },
        )
        .tool(
            "sleep",
            "Sleeps for ms milliseconds",
            object(json!({"ms": {"type": "integer"}}), &["ms"]),
            |p| async move {
                let ms = p["ms"].as_u64().ok_or_else(|| {
                    WorkerError::new(ErrorKind::BadParams, "`ms` (an integer) is required")
                })?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!("slept"))
            },
        )
        .tool(
            "fib",
            "The n-th Fibonacci number",
            object(json!({"n": {"type": "integer"}}), &["n"]),
            |p| async move {
                let n = p["n"].as_u64().ok_or_else(|| {
                    WorkerError::new(ErrorKind::BadParams, "`n` (an integer) is required")
                })?;
                Ok(json!({ "n": n, "fib": fib(n.min(90)) }))
            },
        )
        .tool(
            "pid",
            "This worker's process id",
            object(json!({}), &[]),
            |_| async move { Ok(json!(std::process::id())) },
        );
    if faults {
        server = server
            .tool("crash", "Exits with status 3", json!({}), |_| async move {
                std::process::exit(3)
            })
            .tool("hang", "Never answers", json!({}), |_| async move {
                std::future::pending::<()>().await;
                Ok(Value::Null)
            })
            .tool(
                "garbage",
                "Writes garbage to stdout",
                json!({}),
                |_| async move {
                    raw_stdout(b"\x00\x00\x00\x05hello this is not json");
                    std::future::pending::<()>().await;
                    Ok(Value::Null)
                },
            )
            .tool(
                "huge_frame",
                "Announces a 4 GiB frame",
                json!({}),
                |_| async move {
                    raw_stdout(&[0xFF, 0xFF, 0xFF, 0xFF, b'{']);
                    std::future::pending::<()>().await;
                    Ok(Value::Null)
                },
            )
            .tool(
                "wrong_id",
                "Answers with an id nobody waits for",
                json!({}),
                |_| async move {
                    let body = br#"{"type":"result","id":987654321,"result":null}"#;
                    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
                    frame.extend_from_slice(body);
                    raw_stdout(&frame);
                    std::future::pending::<()>().await;
                    Ok(Value::Null)
                },
            )
            .tool(
                "panic",
                "Panics in the handler",
                json!({}),
                |_| async move {
                    if std::env::var_os("FLOWBALANCER_NEVER_SET").is_none() {
                        panic!("the handler gave up");
                    }
                    Ok(Value::Null)
                },
            )
            .tool(
                "big_result",
                "Returns a string of `size` characters",
                json!({}),
                |p| async move { Ok(json!("x".repeat(p["size"].as_u64().unwrap_or(0) as usize))) },
            )
            .tool_with_context(
                "progress_steps",
                "Reports `steps` progress steps, then answers",
                json!({}),
                |p, ctx| async move {
                    let steps = p["steps"].as_u64().unwrap_or(3);
                    for i in 1..=steps {
                        ctx.progress(i as f64, Some(steps as f64), Some(format!("step {i}")));
                    }
                    Ok(json!(steps))
                },
            )
            .tool(
                "stderr_flood",
                "Writes lines to stderr",
                json!({}),
                |p| async move {
                    let lines = p["lines"].as_u64().unwrap_or(10_000);
                    let mut err = std::io::stderr().lock();
                    for i in 0..lines {
                        let _ = writeln!(err, "flood line {i} {}", "x".repeat(100));
                    }
                    Ok(json!(lines))
                },
            );
    }
    server.serve_stdio().await
}
