//! `flowbalancer serve`: an MCP server on stdio whose tools are the workers' tools.
//!
//! Between the real stdin/stdout and rmcp sits a small filter, run inside rmcp's reads: rmcp
//! silently ignores a line that is not JSON, so the filter answers it with a JSON-RPC parse
//! error (-32700) — and a JSON value that is not a JSON-RPC message with -32600 — and keeps
//! serving. Everything written to stdout goes through one writer, a whole line at a time.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use flowbalancer::Balancer;
use rmcp::ServiceExt;
use serde_json::{Value, json};

use crate::gateway::Gateway;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The longest input line accepted (a longer one is answered with a parse error).
const MAX_LINE: usize = 16 * 1024 * 1024;

/// A JSON-RPC error line for input that could not be served.
fn error_line(id: Value, code: i64, message: String) -> Vec<u8> {
    let mut line =
        json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
            .to_string();
    line.push('\n');
    line.into_bytes()
}

/// The shape of a JSON-RPC message, checked without building a JSON tree.
#[derive(serde::Deserialize)]
struct Shape<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a str>,
    #[serde(default)]
    method: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    result: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// Checks one input line: `Ok` to pass it to rmcp, `Err(line)` to answer it ourselves.
pub(crate) fn vet(line: &[u8]) -> Result<(), Vec<u8>> {
    // The common case, cheaply: one well-formed message object.
    if let Ok(shape) = serde_json::from_slice::<Shape<'_>>(line)
        && shape.jsonrpc == Some("2.0")
        && (shape.method.is_some() || shape.result.is_some() || shape.error.is_some())
    {
        return Ok(());
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => return Err(error_line(Value::Null, -32700, format!("Parse error: {e}"))),
    };
    let message_like = |v: &Value| {
        v.as_object().is_some_and(|o| {
            o.get("jsonrpc") == Some(&json!("2.0"))
                && (o.contains_key("method") || o.contains_key("result") || o.contains_key("error"))
        })
    };
    let valid = match &value {
        Value::Array(batch) => !batch.is_empty() && batch.iter().all(message_like),
        other => message_like(other),
    };
    if valid {
        Ok(())
    } else {
        let id = value.get("id").cloned().unwrap_or(Value::Null);
        Err(error_line(
            id,
            -32600,
            "Invalid Request: not a JSON-RPC 2.0 message".into(),
        ))
    }
}

/// stdin as rmcp reads it: whole lines, the good ones passed on, the bad ones answered on
/// `out`. It filters as rmcp reads, in rmcp's own task: no task of its own in between, so a
/// request costs no extra wake-up on its way in.
struct VettedInput<R> {
    input: R,
    /// Bytes read from `input`, not yet split into lines.
    chunk: Box<[u8]>,
    /// The line being gathered.
    line: Vec<u8>,
    overlong: bool,
    /// Vetted lines (newline-terminated) not yet handed to rmcp, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
    out: mpsc::UnboundedSender<Vec<u8>>,
    listings: ToolListings,
}

impl<R> VettedInput<R> {
    fn new(input: R, out: mpsc::UnboundedSender<Vec<u8>>, listings: ToolListings) -> Self {
        Self {
            input,
            chunk: vec![0u8; 64 * 1024].into_boxed_slice(),
            line: Vec::new(),
            overlong: false,
            ready: Vec::new(),
            ready_at: 0,
            out,
            listings,
        }
    }

    /// Splits `n` freshly read bytes into lines: good ones go to `ready`, bad ones are
    /// answered.
    fn take_in(&mut self, n: usize) {
        for index in 0..n {
            let byte = self.chunk[index];
            if byte != b'\n' {
                if self.line.len() < MAX_LINE {
                    self.line.push(byte);
                } else {
                    self.overlong = true;
                }
                continue;
            }
            if self.overlong {
                let _ = self.out.send(error_line(
                    Value::Null,
                    -32700,
                    format!("Parse error: line longer than {MAX_LINE} bytes"),
                ));
            } else if self.line.iter().any(|b| !b.is_ascii_whitespace()) {
                match vet(&self.line) {
                    Ok(()) => {
                        self.listings.note_request(&self.line);
                        self.ready.extend_from_slice(&self.line);
                        self.ready.push(b'\n');
                    }
                    Err(answer) => {
                        tracing::warn!(
                            bytes = self.line.len(),
                            "malformed input line answered with a JSON-RPC error"
                        );
                        let _ = self.out.send(answer);
                    }
                }
            }
            self.line.clear();
            self.overlong = false;
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VettedInput<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_at);
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = tokio::io::ReadBuf::new(&mut this.chunk);
            match Pin::new(&mut this.input).poll_read(cx, &mut chunk) {
                Poll::Pending => return Poll::Pending,
                // EOF (or a broken stdin): rmcp sees the end of its input and stops.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let n = chunk.filled().len();
                    if n == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    this.take_in(n);
                }
            }
        }
    }
}

/// rmcp's output: cut into whole lines, handed to the one stdout writer.
struct LineSink {
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Vec<u8>,
    listings: ToolListings,
}

/// Puts the MCP servers' whole tool definitions back into a `tools/list` answer (rmcp keeps
/// only the fields it models). Returns whether `message` was such an answer.
pub(crate) fn restore_definitions(message: &mut Value, balancer: &Balancer) -> bool {
    let Some(tools) = message
        .get_mut("result")
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let whole: std::collections::HashMap<String, Value> = balancer
        .tools()
        .into_iter()
        .filter_map(|t| t.definition.map(|d| (t.name, d)))
        .collect();
    for tool in tools.iter_mut() {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
        if let (Some(definition), Some(object)) = (whole.get(name), tool.as_object_mut())
            && let Some(fields) = definition.as_object()
        {
            for (key, value) in fields {
                object.insert(key.clone(), value.clone());
            }
        }
    }
    true
}

/// The `tools/list` requests in flight, so that their answers can get the MCP servers' whole
/// tool definitions back: rmcp's typed `Tool` keeps only the fields it knows, and a field a
/// server sends that rmcp does not model (`execution`, or whatever a later revision adds)
/// must still reach the client.
#[derive(Clone)]
pub(crate) struct ToolListings {
    ids: Arc<parking_lot::Mutex<Vec<Value>>>,
    balancer: Arc<Balancer>,
}

impl ToolListings {
    fn note_request(&self, line: &[u8]) {
        const NEEDLE: &[u8] = b"tools/list";
        if !line.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
            return;
        }
        if let Ok(message) = serde_json::from_slice::<Value>(line)
            && message.get("method").and_then(Value::as_str) == Some("tools/list")
            && let Some(id) = message.get("id")
        {
            self.ids.lock().push(id.clone());
        }
    }

    /// The line, with whole tool definitions if it answers a `tools/list`.
    fn restore(&self, line: Vec<u8>) -> Vec<u8> {
        if self.ids.lock().is_empty() {
            return line;
        }
        let Ok(mut message) = serde_json::from_slice::<Value>(&line) else {
            return line;
        };
        let Some(id) = message.get("id").cloned() else {
            return line;
        };
        {
            let mut ids = self.ids.lock();
            let Some(at) = ids.iter().position(|i| *i == id) else {
                return line;
            };
            ids.swap_remove(at);
        }
        if !restore_definitions(&mut message, &self.balancer) {
            return line;
        }
        let mut restored = serde_json::to_vec(&message).unwrap_or_default();
        if restored.is_empty() {
            return line;
        }
        restored.push(b'\n');
        restored
    }
}

impl AsyncWrite for LineSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.pending.extend_from_slice(data);
        while let Some(end) = this.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = this.pending.drain(..=end).collect();
            let line = this.listings.restore(line);
            if this.out.send(line).is_err() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "stdout is closed",
                )));
            }
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let _ = this.out.send(std::mem::take(&mut this.pending));
        }
        Poll::Ready(Ok(()))
    }
}

/// Serves `balancer` over MCP on stdin/stdout until the client closes stdin.
pub(crate) async fn serve(balancer: Arc<Balancer>) -> Result<(), String> {
    // Non-blocking pipes where stdin/stdout are pipes (tokio's Stdin reads on a blocking
    // thread, which costs a thread hop per read).
    let (stdin, mut stdout) = rmcp::transport::io::stdio_pipes();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(line) = out_rx.recv().await {
            // Everything ready goes out in one write and one flush.
            batch.clear();
            batch.extend_from_slice(&line);
            while let Ok(more) = out_rx.try_recv() {
                batch.extend_from_slice(&more);
            }
            if stdout.write_all(&batch).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let listings = ToolListings {
        ids: Arc::default(),
        balancer: Arc::clone(&balancer),
    };
    let rmcp_input = VettedInput::new(stdin, out_tx.clone(), listings.clone());
    let sink = LineSink {
        out: out_tx,
        pending: Vec::new(),
        listings,
    };
    let connection = crate::gateway::new_connection_session();
    let served = match Gateway::for_connection(Arc::clone(&balancer), Arc::clone(&connection))
        .serve((rmcp_input, sink))
        .await
    {
        Ok(service) => service
            .waiting()
            .await
            .map(|_| ())
            .map_err(|e| format!("MCP service failed: {e}")),
        // The client closed stdin before it initialized: a probe that only asked
        // `server/discover` (the TypeScript SDK's v2 does so on a throwaway process), or a
        // client that changed its mind. Nothing failed.
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
            tracing::debug!("the client closed stdin before initializing");
            Ok(())
        }
        Err(error) => Err(format!("MCP initialization failed: {error}")),
    };
    // The client is gone: what its session held (its own workers) goes, and what was
    // answered still goes out.
    balancer.end_session(&connection);
    let _ = writer.await;
    served
}
