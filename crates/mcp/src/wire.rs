//! JSON-RPC lines on a server's stdout: read with a size cap, sorted into responses,
//! notifications and requests. Anything else is a protocol violation.

use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt};

/// One message from the server.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// An answer to one of our requests: `Ok(result)` or `Err(error object)`.
    Response {
        id: Value,
        outcome: Result<Value, Value>,
    },
    /// A notification.
    Notification { method: String, params: Value },
    /// A request the server makes of us.
    Request {
        id: Value,
        method: String,
        params: Value,
    },
}

/// Why reading stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The server closed its stdout.
    Eof,
    /// Reading failed.
    Io(std::io::Error),
    /// A line longer than the cap.
    TooLong { max: usize },
    /// A line that is not a JSON-RPC 2.0 message.
    NotJsonRpc { bytes: usize, why: String },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Eof => f.write_str("closed its stdout"),
            ReadError::Io(e) => write!(f, "reading its stdout failed: {e}"),
            ReadError::TooLong { max } => {
                write!(f, "sent a message larger than the cap of {max} bytes")
            }
            ReadError::NotJsonRpc { bytes, why } => write!(
                f,
                "wrote a line of {bytes} bytes to stdout that is not JSON-RPC ({why}); MCP servers must log to stderr"
            ),
        }
    }
}

/// Reads newline-delimited messages, at most `max` bytes each.
pub(crate) struct LineReader<R> {
    input: R,
    buffer: Vec<u8>,
    start: usize,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(input: R, max: usize) -> Self {
        Self {
            input,
            buffer: Vec::with_capacity(64 * 1024),
            start: 0,
            max,
        }
    }

    /// The next non-blank line's message.
    pub(crate) async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(offset) = self.buffer[self.start..].iter().position(|b| *b == b'\n') {
                if offset > self.max {
                    return Err(ReadError::TooLong { max: self.max });
                }
                let end = self.start + offset;
                let line = &self.buffer[self.start..end];
                self.start = end + 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse(line);
            }
            if self.buffer.len() - self.start > self.max {
                return Err(ReadError::TooLong { max: self.max });
            }
            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.input.read(&mut chunk).await.map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Eof);
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

pub(crate) fn parse(line: &[u8]) -> Result<Incoming, ReadError> {
    let not = |why: &str| ReadError::NotJsonRpc {
        bytes: line.len(),
        why: why.to_string(),
    };
    let value: Value = serde_json::from_slice(line).map_err(|_| not("not JSON"))?;
    let Value::Object(mut message) = value else {
        return Err(not(if value.is_array() {
            "a batch, which MCP does not use"
        } else {
            "not an object"
        }));
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(not("no \"jsonrpc\": \"2.0\""));
    }
    let method = match message.remove("method") {
        Some(Value::String(method)) => Some(method),
        Some(_) => return Err(not("a method that is not a string")),
        None => None,
    };
    let id = message.remove("id");
    let params = message
        .remove("params")
        .unwrap_or_else(|| Value::Object(Map::new()));
    match (method, id) {
        (Some(method), Some(id)) if valid_id(&id) => Ok(Incoming::Request { id, method, params }),
        (Some(_), Some(_)) => Err(not("a request id that is neither a string nor a number")),
        (Some(method), None) => Ok(Incoming::Notification { method, params }),
        (None, Some(id)) => {
            let outcome = match (message.remove("result"), message.remove("error")) {
                (Some(result), None) => Ok(result),
                (None, Some(error)) if error.is_object() => Err(error),
                _ => return Err(not("a response without exactly one of result and error")),
            };
            Ok(Incoming::Response { id, outcome })
        }
        (None, None) => Err(not("neither a method nor an id")),
    }
}

fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], max: usize) -> Vec<Result<String, String>> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(Incoming::Response { id, .. }) => out.push(Ok(format!("response {id}"))),
                Ok(Incoming::Notification { method, .. }) => out.push(Ok(format!("note {method}"))),
                Ok(Incoming::Request { method, .. }) => out.push(Ok(format!("request {method}"))),
                Err(ReadError::Eof) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn sorts_messages_and_stops_at_garbage() {
        let input = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"ping\"}\nhello world\n";
        let out = read_all(input, 1024).await;
        assert_eq!(out[0], Ok("response 1".into()));
        assert_eq!(out[1], Ok("note notifications/progress".into()));
        assert_eq!(out[2], Ok("request ping".into()));
        assert!(out[3].as_ref().unwrap_err().contains("not JSON"), "{out:?}");
    }

    #[tokio::test]
    async fn refuses_an_oversized_line_without_reading_it_all() {
        let mut input = vec![b'x'; 10_000];
        input.push(b'\n');
        let out = read_all(&input, 1024).await;
        assert!(
            out[0].as_ref().unwrap_err().contains("larger than the cap"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn refuses_batches_and_responses_with_both_result_and_error() {
        let out = read_all(b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}]\n", 1024).await;
        assert!(out[0].as_ref().unwrap_err().contains("batch"), "{out:?}");
        let out = read_all(
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{},\"error\":{}}\n",
            1024,
        )
        .await;
        assert!(
            out[0].as_ref().unwrap_err().contains("exactly one"),
            "{out:?}"
        );
    }
}
