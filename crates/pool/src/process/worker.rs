//! `ProcessWorker`: a subprocess speaking the framed protocol over stdio.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flowbalancer_lifecycle::ProcessHandle;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};

use super::spec::ProcessSpec;
use crate::request::{Payload, Progress, ProgressSink, Request, ToolSpec, WorkerId};
use crate::worker::{ErrorKind, StartContext, StartError, Worker, WorkerError, WorkerFactory};
use flowbalancer_protocol::frame::{FrameError, encode_frame, read_frame};
use flowbalancer_protocol::message::{
    CallMeta, Message, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

/// Starts [`ProcessWorker`]s from a [`ProcessSpec`].
#[derive(Debug, Clone)]
pub struct ProcessFactory {
    spec: Arc<ProcessSpec>,
}

impl ProcessFactory {
    /// A factory for `spec`.
    pub fn new(spec: ProcessSpec) -> Self {
        Self {
            spec: Arc::new(spec),
        }
    }
}

impl WorkerFactory for ProcessFactory {
    type Worker = ProcessWorker;

    fn start(
        &self,
        context: StartContext,
    ) -> impl Future<Output = Result<ProcessWorker, StartError>> + Send {
        ProcessWorker::start(Arc::clone(&self.spec), context)
    }
}

enum Waiting {
    Call {
        answer: oneshot::Sender<Result<serde_json::Value, WorkerError>>,
        /// The pool's request id, by which the pool cancels the call.
        request_id: u64,
        /// Where its progress reports go.
        progress: Option<ProgressSink>,
    },
    Ping(oneshot::Sender<()>),
}

/// Calls waiting for an answer, and why the worker died (once it has).
#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, Waiting>,
    dead: Option<WorkerError>,
}

struct Shared {
    id: WorkerId,
    /// Cleared at death: readable without the lock on every dispatch.
    alive: std::sync::atomic::AtomicBool,
    pending: Mutex<Pending>,
    process: ProcessHandle,
    max_frame: usize,
    /// Set when the pool stops the worker on purpose (shutdown, kill): its death is then
    /// expected and logged quietly.
    stopping: std::sync::atomic::AtomicBool,
    /// Woken when the worker dies, so its writer task ends with it.
    died: tokio::sync::Notify,
}

impl Shared {
    /// Marks the worker dead (first reason wins), fails every waiting call with it and kills
    /// the process group.
    fn die(&self, error: WorkerError) {
        self.alive.store(false, Ordering::SeqCst);
        self.died.notify_waiters();
        let waiting = {
            let mut pending = self.pending.lock();
            if pending.dead.is_none() {
                if self.stopping.load(Ordering::SeqCst) {
                    tracing::debug!(worker = %self.id, pid = self.process.pid(), reason = %error, "worker process stopped");
                } else {
                    tracing::warn!(worker = %self.id, pid = self.process.pid(), error = %error, "worker process is dead");
                }
                pending.dead = Some(error.clone());
            }
            std::mem::take(&mut pending.waiting)
        };
        for (_, waiter) in waiting {
            if let Waiting::Call { answer, .. } = waiter {
                let _ = answer.send(Err(error.clone()));
            }
        }
        let _ = self.process.kill();
    }

    fn dead(&self) -> Option<WorkerError> {
        self.pending.lock().dead.clone()
    }
}

/// A worker process speaking the framed JSON protocol (`docs/protocol.md`) on its stdin and
/// stdout, in its own process group inside the pool's lifecycle scope. Its stderr is read line
/// by line into `tracing`. EOF, exit, a bad or oversized frame, or an unexpected id mean the
/// worker is dead: its calls fail at once with a typed error and the pool replaces it.
///
/// Frames go out through one writer task per worker, fed with whole frames: a caller
/// cancelled while its call is being sent never leaves half a frame in the pipe.
pub struct ProcessWorker {
    shared: Arc<Shared>,
    frames: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU64,
    tools: Vec<ToolSpec>,
    name: String,
    protocol: u32,
}

impl std::fmt::Debug for ProcessWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessWorker")
            .field("id", &self.shared.id)
            .field("pid", &self.shared.process.pid())
            .field("name", &self.name)
            .finish()
    }
}

impl ProcessWorker {
    /// Spawns the process and waits for its hello.
    ///
    /// # Errors
    ///
    /// A [`StartError`] when the process cannot start, exits, says something other than a
    /// hello of protocol 1 or 2, or says nothing within the hello timeout.
    pub async fn start(spec: Arc<ProcessSpec>, context: StartContext) -> Result<Self, StartError> {
        let id = context.id;
        let fail = |message: String| StartError {
            worker: id,
            message,
        };
        let mut process = context
            .scope
            .spawn_process(spec.command())
            .map_err(|e| fail(e.to_string()))?;
        let (Some(stdin), Some(mut stdout), Some(stderr)) = (
            process.take_stdin(),
            process.take_stdout(),
            process.take_stderr(),
        ) else {
            let _ = process.kill();
            return Err(fail("the process has no piped stdio".into()));
        };
        spawn_stderr_reader(&context, id, stderr, spec.max_stderr_line);
        let hello =
            tokio::time::timeout(spec.hello_timeout, read_frame(&mut stdout, spec.max_frame)).await;
        let hello = match hello {
            Err(_) => Err(format!("no hello within {:?}", spec.hello_timeout)),
            Ok(Err(FrameError::Eof { .. })) => Err(match process.try_wait() {
                Ok(Some(status)) => format!("exited before its hello ({status})"),
                _ => "closed stdout before its hello".to_string(),
            }),
            Ok(Err(e)) => Err(format!("bad hello frame: {e}")),
            Ok(Ok(body)) => match serde_json::from_slice::<Message>(&body) {
                Ok(Message::Hello {
                    protocol,
                    worker,
                    tools,
                }) if (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&protocol) => {
                    Ok((worker, tools, protocol))
                }
                Ok(Message::Hello { protocol, .. }) => Err(format!(
                    "speaks protocol {protocol}, this pool speaks {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
                )),
                Ok(other) => Err(format!("first frame is not a hello: {other:?}")),
                Err(e) => Err(format!("hello is not valid JSON of the protocol: {e}")),
            },
        };
        let (name, tools, protocol) = match hello {
            Ok(hello) => hello,
            Err(message) => {
                let _ = process.kill();
                return Err(fail(message));
            }
        };
        tracing::debug!(worker = %id, pid = process.pid(), name = %name, tools = tools.len(), "worker said hello");
        let shared = Arc::new(Shared {
            id,
            alive: std::sync::atomic::AtomicBool::new(true),
            pending: Mutex::new(Pending::default()),
            process,
            max_frame: spec.max_frame,
            stopping: std::sync::atomic::AtomicBool::new(false),
            died: tokio::sync::Notify::new(),
        });
        let (frames, queued) = mpsc::unbounded_channel();
        let writer = Arc::clone(&shared);
        context
            .scope
            .spawn(write_frames(writer, stdin, queued))
            .map_err(|e| fail(e.to_string()))?;
        let reader = Arc::clone(&shared);
        context
            .scope
            .spawn(read_answers(reader, stdout))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            shared,
            frames,
            next_id: AtomicU64::new(1),
            tools,
            name,
            protocol,
        })
    }

    /// The protocol version the worker said hello with.
    pub fn protocol(&self) -> u32 {
        self.protocol
    }

    /// The process id (and process group id).
    pub fn pid(&self) -> u32 {
        self.shared.process.pid()
    }

    /// The name the worker gave in its hello.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues one whole frame for the writer task.
    fn send(&self, message: &Message) -> Result<(), WorkerError> {
        let body = serde_json::to_vec(message).map_err(|e| {
            WorkerError::new(
                ErrorKind::BadParams,
                format!("params do not serialize: {e}"),
            )
        })?;
        let frame = encode_frame(&body, self.shared.max_frame).map_err(|e| match e {
            FrameError::TooLarge { length, max } => WorkerError::new(
                ErrorKind::BadParams,
                format!("request of {length} bytes exceeds the maximum frame of {max}"),
            ),
            other => WorkerError::new(ErrorKind::BadParams, other.to_string()),
        })?;
        self.frames.send(frame).map_err(|_| {
            self.shared.dead().unwrap_or_else(|| {
                WorkerError::new(ErrorKind::Crashed, "the worker's input is closed")
            })
        })
    }

    fn register(&self, waiting: Waiting) -> Result<u64, WorkerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.shared.pending.lock();
        if let Some(dead) = &pending.dead {
            return Err(dead.clone());
        }
        pending.waiting.insert(id, waiting);
        Ok(id)
    }
}

impl Worker for ProcessWorker {
    const KEEPS_RUNNING_WHEN_DROPPED: bool = true;

    async fn call(&self, request: Request) -> Result<Payload, WorkerError> {
        let (tx, rx) = oneshot::channel();
        let progress_token = request.meta.progress.as_ref().map(|sink| {
            sink.token()
                .cloned()
                .unwrap_or_else(|| serde_json::Value::from(request.meta.request_id))
        });
        let id = self.register(Waiting::Call {
            answer: tx,
            request_id: request.meta.request_id,
            progress: request.meta.progress.clone(),
        })?;
        let deadline_ms = request.meta.deadline.map(|d| {
            u64::try_from(d.saturating_duration_since(Instant::now()).as_millis())
                .unwrap_or(u64::MAX)
        });
        let message = Message::Call {
            id,
            method: request.method.to_string(),
            params: request.payload.to_json(),
            meta: CallMeta {
                session: request.meta.session.as_deref().map(str::to_string),
                deadline_ms,
                progress_token,
            },
        };
        if let Err(error) = self.send(&message) {
            self.shared.pending.lock().waiting.remove(&id);
            return Err(error);
        }
        // If this future is dropped here, the entry stays until the late answer arrives
        // and is then dropped: a late answer is not a protocol violation.
        match rx.await {
            Ok(Ok(result)) => Ok(Payload::json(result)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(self
                .shared
                .dead()
                .unwrap_or_else(|| WorkerError::new(ErrorKind::Crashed, "worker went away"))),
        }
    }

    fn cancel(&self, request_id: u64) {
        if self.protocol < 2 {
            return; // a v1 worker cannot be asked: the grace period, then a kill
        }
        let id = {
            let pending = self.shared.pending.lock();
            pending
                .waiting
                .iter()
                .find_map(|(id, waiting)| match waiting {
                    Waiting::Call { request_id: r, .. } if *r == request_id => Some(*id),
                    _ => None,
                })
        };
        if let Some(id) = id
            && let Err(error) = self.send(&Message::Cancel { id })
        {
            tracing::debug!(worker = %self.shared.id, %error, "could not send a cancel");
        }
    }

    async fn health_check(&self) -> Result<(), WorkerError> {
        let (tx, rx) = oneshot::channel();
        let id = self.register(Waiting::Ping(tx))?;
        if let Err(error) = self.send(&Message::Ping { id }) {
            self.shared.pending.lock().waiting.remove(&id);
            return Err(error);
        }
        rx.await.map_err(|_| {
            self.shared
                .dead()
                .unwrap_or_else(|| WorkerError::new(ErrorKind::Crashed, "worker went away"))
        })
    }

    async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if self.shared.dead().is_none() && self.send(&Message::Shutdown).is_ok() {
            // Give it a moment to exit on its own; the pool's timeout and the scope kill
            // it otherwise.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.shared.process.wait()).await;
        }
        self.shared
            .die(WorkerError::new(ErrorKind::Crashed, "worker shut down"));
    }

    fn kill(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.die(WorkerError::new(
            ErrorKind::Crashed,
            "worker killed by the pool",
        ));
    }

    fn tools(&self) -> Vec<ToolSpec> {
        self.tools.clone()
    }

    fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }
}

/// Writes whole frames to the worker's stdin, in order, until every sender is gone (the
/// worker was dropped: its stdin closes) or a write fails (the worker is dead).
async fn write_frames(
    shared: Arc<Shared>,
    mut stdin: ChildStdin,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    loop {
        let died = shared.died.notified();
        tokio::pin!(died);
        died.as_mut().enable();
        if !shared.alive.load(Ordering::SeqCst) {
            return; // dead: nothing more will be read
        }
        let frame = tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
            () = &mut died => return,
        };
        if let Err(e) = stdin.write_all(&frame).await {
            shared.die(WorkerError::new(
                ErrorKind::Crashed,
                format!("writing to the worker failed: {e}"),
            ));
            return;
        }
    }
}

impl Drop for ProcessWorker {
    fn drop(&mut self) {
        // A worker the pool let go of must not keep running.
        let _ = self.shared.process.kill();
    }
}

/// Reads answers until the worker dies, routes each to its caller, then reaps the process.
async fn read_answers(shared: Arc<Shared>, mut stdout: ChildStdout) {
    let error = loop {
        let body = match read_frame(&mut stdout, shared.max_frame).await {
            Ok(body) => body,
            Err(FrameError::Eof { inside_frame }) => {
                let status =
                    match tokio::time::timeout(Duration::from_millis(200), shared.process.wait())
                        .await
                    {
                        Ok(Ok(status)) => format!(" ({status})"),
                        _ => String::new(),
                    };
                let what = if inside_frame {
                    "closed stdout inside a frame"
                } else {
                    "closed stdout"
                };
                break WorkerError::new(ErrorKind::Crashed, format!("worker {what}{status}"));
            }
            Err(FrameError::TooLarge { length, max }) => {
                break WorkerError::new(
                    ErrorKind::ProtocolViolation,
                    format!("frame of {length} bytes exceeds the maximum of {max}"),
                );
            }
            Err(FrameError::Io(e)) => {
                break WorkerError::new(
                    ErrorKind::Crashed,
                    format!("reading from the worker failed: {e}"),
                );
            }
            Err(other) => {
                break WorkerError::new(
                    ErrorKind::ProtocolViolation,
                    format!("reading a frame failed: {other}"),
                );
            }
        };
        let message = match serde_json::from_slice::<Message>(&body) {
            Ok(message) => message,
            Err(e) => {
                let preview: String =
                    String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
                break WorkerError::new(
                    ErrorKind::ProtocolViolation,
                    format!("frame is not a protocol message ({e}): {preview:?}"),
                );
            }
        };
        let (id, answer) = match message {
            Message::Result { id, result } => (id, Ok(result)),
            Message::Error { id, error } => (id, Err(WorkerError::from(error))),
            Message::Progress {
                id,
                progress,
                total,
                message,
            } => {
                let sink = match shared.pending.lock().waiting.get(&id) {
                    Some(Waiting::Call { progress, .. }) => progress.clone(),
                    // Progress of a call already answered, or one nobody listens to.
                    _ => None,
                };
                if let Some(sink) = sink {
                    sink.report(Progress {
                        progress,
                        total,
                        message,
                    });
                }
                continue;
            }
            Message::Pong { id } => match shared.pending.lock().waiting.remove(&id) {
                Some(Waiting::Ping(tx)) => {
                    let _ = tx.send(());
                    continue;
                }
                _ => {
                    break WorkerError::new(
                        ErrorKind::ProtocolViolation,
                        format!("pong for {id}, which is not a waiting ping"),
                    );
                }
            },
            other => {
                break WorkerError::new(
                    ErrorKind::ProtocolViolation,
                    format!(
                        "unexpected message from the worker: {}",
                        message_type(&other)
                    ),
                );
            }
        };
        let waiter = shared.pending.lock().waiting.remove(&id);
        match waiter {
            Some(Waiting::Call { answer: tx, .. }) => {
                let _ = tx.send(answer); // the caller may have gone: the answer is dropped
            }
            _ => {
                break WorkerError::new(
                    ErrorKind::ProtocolViolation,
                    format!("answer for id {id}, which no call is waiting for"),
                );
            }
        }
    };
    shared.die(error);
    // Reap it, so no zombie waits for the pool to close.
    let _ = tokio::time::timeout(Duration::from_secs(10), shared.process.wait()).await;
}

fn message_type(message: &Message) -> &'static str {
    match message {
        Message::Hello { .. } => "hello",
        Message::Call { .. } => "call",
        Message::Result { .. } => "result",
        Message::Error { .. } => "error",
        Message::Ping { .. } => "ping",
        Message::Pong { .. } => "pong",
        Message::Shutdown => "shutdown",
        Message::Cancel { .. } => "cancel",
        Message::Progress { .. } => "progress",
        _ => "unknown",
    }
}

/// Forwards the worker's stderr to `tracing`, line by line, cutting overlong lines, never
/// holding more than one line in memory.
fn spawn_stderr_reader(
    context: &StartContext,
    id: WorkerId,
    mut stderr: ChildStderr,
    max_line: usize,
) {
    let spawned = context.scope.spawn(async move {
        let mut buffer = vec![0u8; 8192];
        let mut line: Vec<u8> = Vec::new();
        let mut cut = false;
        loop {
            let n = match stderr.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &byte in &buffer[..n] {
                if byte == b'\n' {
                    emit(id, &line, cut);
                    line.clear();
                    cut = false;
                } else if line.len() < max_line {
                    line.push(byte);
                } else {
                    cut = true;
                }
            }
        }
        if !line.is_empty() {
            emit(id, &line, cut);
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(worker = %id, %error, "cannot read the worker's stderr");
    }
}

fn emit(id: WorkerId, line: &[u8], cut: bool) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    tracing::info!(target: "flowbalancer::worker_stderr", worker = %id, cut, "{text}");
}
