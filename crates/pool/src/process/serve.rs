//! The worker side in Rust: serve a set of handlers over stdio with the framed protocol.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::{DEFAULT_MAX_FRAME, FrameError, read_frame, write_frame};
use super::protocol::{ErrorBody, Message, PROTOCOL_VERSION};
use crate::request::ToolSpec;
use crate::worker::{ErrorKind, WorkerError};

type ToolFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, WorkerError>> + Send>>;
type Handler = Arc<dyn Fn(serde_json::Value) -> ToolFuture + Send + Sync>;

/// A worker process written in Rust: register tools, then serve them on stdin/stdout.
///
/// ```no_run
/// use flowbalancer_pool::WorkerServer;
/// use serde_json::json;
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> std::io::Result<()> {
///     WorkerServer::new("echo-worker")
///         .tool("echo", "returns its params", json!({"type": "object"}), |params| async move {
///             Ok(params)
///         })
///         .serve_stdio()
///         .await
/// }
/// ```
pub struct WorkerServer {
    name: String,
    tools: Vec<ToolSpec>,
    handlers: HashMap<String, Handler>,
    max_frame: usize,
}

impl std::fmt::Debug for WorkerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerServer")
            .field("name", &self.name)
            .field("tools", &self.tools.len())
            .finish()
    }
}

impl WorkerServer {
    /// A server announcing itself as `name`. The maximum frame size comes from
    /// `FLOWBALANCER_MAX_FRAME` (set by the pool), else 16 MiB.
    pub fn new(name: impl Into<String>) -> Self {
        let max_frame = std::env::var("FLOWBALANCER_MAX_FRAME")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_FRAME);
        Self {
            name: name.into(),
            tools: Vec::new(),
            handlers: HashMap::new(),
            max_frame,
        }
    }

    /// Registers a tool: its name, description, JSON Schema of its params, and handler.
    pub fn tool<F, Fut>(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: serde_json::Value,
        handler: F,
    ) -> Self
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value, WorkerError>> + Send + 'static,
    {
        let name = name.into();
        self.tools.push(ToolSpec {
            name: name.clone(),
            description: description.into(),
            input_schema,
        });
        self.handlers
            .insert(name, Arc::new(move |params| Box::pin(handler(params))));
        self
    }

    /// Serves on this process's stdin and stdout until stdin closes or a shutdown arrives.
    /// Calls run concurrently (the pool may pipeline several per worker); answers go out as
    /// they finish.
    ///
    /// # Errors
    ///
    /// An I/O error on stdout, or a malformed or oversized frame on stdin.
    pub async fn serve_stdio(self) -> std::io::Result<()> {
        self.serve(tokio::io::stdin(), tokio::io::stdout()).await
    }

    /// Serves on any reader and writer; see [`serve_stdio`](Self::serve_stdio).
    ///
    /// # Errors
    ///
    /// As [`serve_stdio`](Self::serve_stdio).
    pub async fn serve<R, W>(self, mut reader: R, writer: W) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let hello = Message::Hello {
            protocol: PROTOCOL_VERSION,
            worker: self.name.clone(),
            tools: self.tools.clone(),
        };
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        send(&writer, &hello, self.max_frame).await?;
        let mut running = tokio::task::JoinSet::new();
        let result = loop {
            // Surface a failed answer write at once.
            while let Some(done) = running.try_join_next() {
                if let Ok(Err(e)) = done {
                    return Err(e);
                }
            }
            let body = match read_frame(&mut reader, self.max_frame).await {
                Ok(body) => body,
                Err(FrameError::Eof {
                    inside_frame: false,
                }) => break Ok(()),
                Err(FrameError::Io(e)) => break Err(e),
                Err(e) => {
                    break Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e.to_string(),
                    ));
                }
            };
            let message = match serde_json::from_slice::<Message>(&body) {
                Ok(message) => message,
                Err(e) => break Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            };
            match message {
                Message::Call {
                    id, method, params, ..
                } => {
                    let handler = self.handlers.get(&method).cloned();
                    let writer = Arc::clone(&writer);
                    let max_frame = self.max_frame;
                    running.spawn(async move {
                        let answer = match handler {
                            None => error(
                                id,
                                ErrorKind::UnknownMethod,
                                format!("unknown method {method:?}"),
                            ),
                            Some(handler) => match handler(params).await {
                                Ok(result) => Message::Result { id, result },
                                Err(e) => Message::Error {
                                    id,
                                    error: ErrorBody {
                                        kind: e.kind,
                                        message: e.message,
                                        data: e.data,
                                    },
                                },
                            },
                        };
                        send(&writer, &answer, max_frame).await
                    });
                }
                Message::Ping { id } => {
                    send(&writer, &Message::Pong { id }, self.max_frame).await?
                }
                Message::Shutdown => break Ok(()),
                other => {
                    break Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("unexpected message {other:?}"),
                    ));
                }
            }
        };
        // Let calls in progress answer before leaving.
        while let Some(done) = running.join_next().await {
            if let Ok(Err(e)) = done {
                return Err(e);
            }
        }
        result
    }
}

async fn send<W: AsyncWrite + Unpin>(
    writer: &tokio::sync::Mutex<W>,
    message: &Message,
    max_frame: usize,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let mut writer = writer.lock().await;
    match write_frame(&mut *writer, &body, max_frame).await {
        Ok(()) => Ok(()),
        Err(FrameError::Io(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

fn error(id: u64, kind: ErrorKind, message: String) -> Message {
    Message::Error {
        id,
        error: ErrorBody {
            kind,
            message,
            data: None,
        },
    }
}
