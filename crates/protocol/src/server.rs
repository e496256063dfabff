//! The worker side in Rust: serve a set of handlers over stdio with the framed protocol.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinError, JoinSet};

use crate::frame::{DEFAULT_MAX_FRAME, FrameError, encode_frame, read_frame};
use crate::message::{CallMeta, ErrorBody, Message, PROTOCOL_VERSION};
use crate::{ErrorKind, ToolSpec, WorkerError};

type ToolFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, WorkerError>> + Send>>;
type Handler = Arc<dyn Fn(serde_json::Value, CallContext) -> ToolFuture + Send + Sync>;

/// What a handler knows about its call: the session, the caller's deadline, and whether the
/// caller listens for progress; and how it reports progress and learns it was cancelled.
#[derive(Debug, Clone)]
pub struct CallContext {
    id: u64,
    meta: CallMeta,
    received: Instant,
    answers: mpsc::UnboundedSender<Message>,
    cancelled: watch::Receiver<bool>,
}

impl CallContext {
    /// The caller's session, if any.
    pub fn session(&self) -> Option<&str> {
        self.meta.session.as_deref()
    }

    /// When the caller stops waiting, if it said (measured from when the call arrived).
    pub fn deadline(&self) -> Option<Instant> {
        self.meta
            .deadline_ms
            .map(|ms| self.received + Duration::from_millis(ms))
    }

    /// The caller's progress token: present when the caller listens for progress.
    pub fn progress_token(&self) -> Option<&serde_json::Value> {
        self.meta.progress_token.as_ref()
    }

    /// Reports progress to the caller (nothing is sent when it does not listen).
    pub fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        if self.meta.progress_token.is_some() {
            let _ = self.answers.send(Message::Progress {
                id: self.id,
                progress,
                total,
                message,
            });
        }
    }

    /// Whether the pool asked to cancel this call. The handler's task is also aborted at its
    /// next `.await`; this is for handlers that loop without awaiting.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }
}

/// A worker process written in Rust: register tools, then serve them on stdin/stdout.
///
/// Each call runs in its own task. A `cancel` from the pool aborts it (the pool gets an error
/// of kind `cancelled`); a handler that panics answers with a handler error; a result too
/// large for a frame answers with an error saying so. The worker keeps serving in each case.
///
/// ```no_run
/// use flowbalancer_protocol::WorkerServer;
/// use serde_json::json;
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> std::io::Result<()> {
///     WorkerServer::new("echo-worker")
///         .tool("echo", "returns its params", json!({"type": "object"}), |params| async move {
///             Ok(params)
///         })
///         .tool_with_context("count", "counts to n", json!({"type": "object"}), |params, ctx| async move {
///             let n = params["n"].as_u64().unwrap_or(3);
///             for i in 0..n {
///                 ctx.progress(i as f64, Some(n as f64), None);
///                 tokio::time::sleep(std::time::Duration::from_millis(10)).await;
///             }
///             Ok(json!({"counted": n}))
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

    /// Sets the maximum frame size (default: `FLOWBALANCER_MAX_FRAME`, else 16 MiB).
    pub fn max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// Registers a tool: its name, description, JSON Schema of its params, and handler.
    pub fn tool<F, Fut>(
        self,
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: serde_json::Value,
        handler: F,
    ) -> Self
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value, WorkerError>> + Send + 'static,
    {
        self.tool_with_context(name, description, input_schema, move |params, _| {
            handler(params)
        })
    }

    /// Registers a tool whose handler also gets the call's [`CallContext`].
    pub fn tool_with_context<F, Fut>(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: serde_json::Value,
        handler: F,
    ) -> Self
    where
        F: Fn(serde_json::Value, CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value, WorkerError>> + Send + 'static,
    {
        let name = name.into();
        self.tools
            .push(ToolSpec::new(name.clone(), description, input_schema));
        self.handlers.insert(
            name,
            Arc::new(move |params, context| Box::pin(handler(params, context))),
        );
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
    pub async fn serve<R, W>(self, reader: R, writer: W) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (answers, outgoing) = mpsc::unbounded_channel();
        let writing = tokio::spawn(write_messages(writer, outgoing, self.max_frame));
        let _ = answers.send(Message::Hello {
            protocol: PROTOCOL_VERSION,
            worker: self.name.clone(),
            tools: self.tools.clone(),
        });
        let (frames_in, mut incoming) = mpsc::channel(64);
        let reading = tokio::spawn(read_messages(reader, frames_in, self.max_frame));
        let mut calls = Calls::default();
        let result = loop {
            tokio::select! {
                message = incoming.recv() => match message {
                    None => break Ok(()),
                    Some(Err(e)) => break Err(e),
                    Some(Ok(Message::Call { id, method, params, meta })) => {
                        self.start_call(&mut calls, &answers, id, method, params, meta);
                    }
                    Some(Ok(Message::Cancel { id })) => calls.cancel(id),
                    Some(Ok(Message::Ping { id })) => {
                        let _ = answers.send(Message::Pong { id });
                    }
                    Some(Ok(Message::Shutdown)) => break Ok(()),
                    Some(Ok(other)) => {
                        break Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("unexpected message {other:?}"),
                        ));
                    }
                },
                Some(done) = calls.running.join_next_with_id(), if !calls.running.is_empty() => {
                    let _ = answers.send(calls.answer(done));
                }
            }
            if writing.is_finished() {
                break Ok(()); // the writer failed: its error is reported below
            }
        };
        reading.abort();
        // Let calls in progress answer before leaving.
        while let Some(done) = calls.running.join_next_with_id().await {
            let _ = answers.send(calls.answer(done));
        }
        drop(answers);
        let written = writing
            .await
            .map_err(|e| std::io::Error::other(format!("the writer task failed: {e}")))?;
        result.and(written)
    }

    fn start_call(
        &self,
        calls: &mut Calls,
        answers: &mpsc::UnboundedSender<Message>,
        id: u64,
        method: String,
        params: serde_json::Value,
        meta: CallMeta,
    ) {
        let Some(handler) = self.handlers.get(&method).cloned() else {
            let _ = answers.send(error(
                id,
                ErrorKind::UnknownMethod,
                format!("unknown method {method:?}"),
            ));
            return;
        };
        let (cancel, cancelled) = watch::channel(false);
        let context = CallContext {
            id,
            meta,
            received: Instant::now(),
            answers: answers.clone(),
            cancelled,
        };
        let task = calls.running.spawn(handler(params, context));
        calls.by_task.insert(task.id(), (id, task, cancel));
    }
}

/// The calls running, by task, with how to cancel each.
#[derive(Default)]
struct Calls {
    running: JoinSet<Result<serde_json::Value, WorkerError>>,
    by_task: HashMap<tokio::task::Id, (u64, AbortHandle, watch::Sender<bool>)>,
}

impl Calls {
    fn cancel(&mut self, id: u64) {
        // A cancel for a call that already answered is normal (the answer crossed it).
        if let Some((_, task, cancel)) = self.by_task.values().find(|(call, ..)| *call == id) {
            let _ = cancel.send(true);
            task.abort();
        }
    }

    /// The answer for a finished task.
    fn answer(
        &mut self,
        done: Result<(tokio::task::Id, Result<serde_json::Value, WorkerError>), JoinError>,
    ) -> Message {
        let (task, outcome) = match done {
            Ok((task, outcome)) => (task, outcome),
            Err(join_error) => {
                let task = join_error.id();
                let outcome = if join_error.is_panic() {
                    let panic = join_error.into_panic();
                    let text = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a non-string panic payload".into());
                    Err(WorkerError::new(
                        ErrorKind::Handler,
                        format!("the handler panicked: {text}"),
                    ))
                } else {
                    Err(WorkerError::new(
                        ErrorKind::Cancelled,
                        "the call was cancelled",
                    ))
                };
                (task, outcome)
            }
        };
        let Some((id, ..)) = self.by_task.remove(&task) else {
            // Every task is registered right after it is spawned, before it can be joined.
            return error(
                0,
                ErrorKind::Handler,
                "an unregistered task finished".into(),
            );
        };
        match outcome {
            Ok(result) => Message::Result { id, result },
            Err(e) => Message::Error {
                id,
                error: ErrorBody {
                    kind: e.kind,
                    message: e.message,
                    data: e.data,
                },
            },
        }
    }
}

/// Reads and parses frames until EOF (the channel closes) or an error (sent, then closes).
async fn read_messages<R: AsyncRead + Unpin>(
    mut reader: R,
    messages: mpsc::Sender<std::io::Result<Message>>,
    max_frame: usize,
) {
    loop {
        let message = match read_frame(&mut reader, max_frame).await {
            Ok(body) => serde_json::from_slice::<Message>(&body)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(FrameError::Eof {
                inside_frame: false,
            }) => return,
            Err(FrameError::Io(e)) => Err(e),
            Err(e) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            )),
        };
        let failed = message.is_err();
        if messages.send(message).await.is_err() || failed {
            return;
        }
    }
}

/// Writes messages as whole frames until the channel closes. An answer too large for a frame
/// is replaced by an error answer saying so.
async fn write_messages<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut messages: mpsc::UnboundedReceiver<Message>,
    max_frame: usize,
) -> std::io::Result<()> {
    while let Some(message) = messages.recv().await {
        let frame = frame_of(&message, max_frame)?;
        writer.write_all(&frame).await?;
        // Flush once the queue is empty: answers that finish together go out together.
        if messages.is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await
}

fn frame_of(message: &Message, max_frame: usize) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    match encode_frame(&body, max_frame) {
        Ok(frame) => Ok(frame),
        Err(FrameError::TooLarge { length, max }) => {
            let id = match message {
                Message::Result { id, .. } | Message::Error { id, .. } => *id,
                // Only answers carry payloads that can grow past the cap.
                _ => {
                    return Err(std::io::Error::other(format!(
                        "a frame of {length} bytes exceeds the maximum of {max}"
                    )));
                }
            };
            let replacement = error(
                id,
                ErrorKind::Handler,
                format!("the result of {length} bytes exceeds the maximum frame of {max} bytes"),
            );
            let body = serde_json::to_vec(&replacement).map_err(std::io::Error::other)?;
            encode_frame(&body, max_frame).map_err(|e| std::io::Error::other(e.to_string()))
        }
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
