//! `McpWorker`: one instance of a stdio MCP server, spoken to as an MCP client.
//!
//! One reader task routes what the server writes: answers to their callers, progress to the
//! call's progress sink (each call gets its own `progressToken`: our request id), log
//! messages and the server's own requests (sampling, elicitation, roots) to the client of the
//! newest call in flight, and `list_changed` to a re-listing. One writer task sends whole
//! lines. EOF, a line that is not JSON-RPC, a line over the size cap, or an answer to an id
//! never sent mean the instance is dead: its calls fail at once and the pool replaces it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flowbalancer_lifecycle::ProcessHandle;
use flowbalancer_pool::{
    ErrorKind, Payload, ProgressSink, Request, StartContext, StartError, ToolSpec, UpstreamHandle,
    Worker, WorkerError, WorkerId,
};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};

use crate::catalog::Catalog;
use crate::http::{HttpLink, listen, send_lines};
use crate::listing::handshake;
use crate::spec::McpServerSpec;
use crate::stderr::{StderrTail, read_stderr};
use crate::stdio::{read_messages, write_lines};

/// The protocol revision asked for in `initialize`.
pub const PROTOCOL_VERSION: &str = "2025-11-25";
/// Revisions accepted in the server's answer.
pub(crate) const KNOWN_VERSIONS: &[&str] = &[
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];
/// A method name in a [`Request`] that starts with this is sent to the server as the JSON-RPC
/// method that follows (`$mcp:resources/read`), with the payload as params; any other method
/// is a tool.
pub const RAW_METHOD_PREFIX: &str = "$mcp:";
/// How long a ping after an unanswered call may take.
const PING_AFTER_UNANSWERED: Duration = Duration::from_secs(2);

type Answer = oneshot::Sender<Result<Value, WorkerError>>;

/// How the server is reached.
pub(crate) enum Link {
    /// A child process on stdio.
    Process(ProcessHandle),
    /// A streamable-HTTP endpoint.
    Http(Arc<HttpLink>),
}

impl Link {
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Link::Process(process) => Some(process.pid()),
            Link::Http(_) => None,
        }
    }

    fn kill(&self) {
        match self {
            Link::Process(process) => {
                let _ = process.kill();
            }
            Link::Http(link) => link.close(),
        }
    }

    /// How the process ended, if it did within `wait`.
    pub(crate) async fn exit_status(&self, wait: Duration) -> Option<String> {
        match self {
            Link::Process(process) => match tokio::time::timeout(wait, process.wait()).await {
                Ok(Ok(status)) => Some(status.to_string()),
                _ => None,
            },
            Link::Http(_) => None,
        }
    }

    /// Gives the server up to `wait` to go away on its own (its input closed, its session
    /// ended).
    async fn stop(&self, wait: Duration) {
        match self {
            Link::Process(process) => {
                let _ = tokio::time::timeout(wait, process.wait()).await;
            }
            Link::Http(link) => {
                let _ = tokio::time::timeout(wait, link.end_session()).await;
            }
        }
    }
}

/// The tasks' ends of a new link.
enum Io {
    Stdio(ChildStdin, ChildStdout),
    Http(Arc<HttpLink>),
}

pub(crate) enum Waiter {
    /// A client's call.
    Call {
        answer: Answer,
        request_id: u64,
        progress: Option<ProgressSink>,
        upstream: Option<UpstreamHandle>,
        /// Written to the server's stdin in full: from then on it may have run.
        sent: bool,
        /// A tool the server marks read-only or idempotent: running it twice is harmless.
        idempotent: bool,
    },
    /// Our own request (initialize, a listing, a ping).
    Own(Answer),
}

#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) waiting: HashMap<u64, Waiter>,
    pub(crate) dead: Option<WorkerError>,
}

pub(crate) struct Shared {
    pub(crate) label: Arc<str>,
    pub(crate) alive: AtomicBool,
    pub(crate) stopping: AtomicBool,
    pub(crate) pending: Mutex<Pending>,
    pub(crate) next_id: AtomicU64,
    pub(crate) link: Link,
    pub(crate) died: tokio::sync::Notify,
    /// Whole lines for the writer, each with the id of the call it carries (if any).
    pub(crate) lines: mpsc::UnboundedSender<(Option<u64>, Vec<u8>)>,
    pub(crate) tail: Arc<StderrTail>,
    pub(crate) spec: Arc<McpServerSpec>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) tools: RwLock<Vec<ToolSpec>>,
    pub(crate) relisting: AtomicBool,
    /// Set once the start handshake is done: a death before is a start failure, reported by
    /// the start itself.
    pub(crate) ready: AtomicBool,
}

impl Shared {
    pub(crate) fn die(&self, error: WorkerError) {
        self.alive.store(false, Ordering::SeqCst);
        self.died.notify_waiters();
        let waiting = {
            let mut pending = self.pending.lock();
            if pending.dead.is_none() {
                if self.stopping.load(Ordering::SeqCst) || !self.ready.load(Ordering::SeqCst) {
                    tracing::debug!(server = %self.label, pid = ?self.link.pid(), reason = %error, "MCP server stopped");
                } else {
                    tracing::warn!(server = %self.label, pid = ?self.link.pid(), error = %error, "MCP server instance is dead");
                }
                pending.dead = Some(error.clone());
            }
            std::mem::take(&mut pending.waiting)
        };
        for (_, waiter) in waiting {
            match waiter {
                // Never delivered, or harmless to run twice: another instance may take it.
                Waiter::Call {
                    answer,
                    sent,
                    idempotent,
                    ..
                } if !sent || idempotent => {
                    let why = if sent {
                        "the tool is idempotent, so another instance may run it"
                    } else {
                        "the call had not reached it, so another instance may run it"
                    };
                    let _ = answer.send(Err(WorkerError::new(
                        ErrorKind::Transient,
                        format!("{}; {why}", error.message),
                    )));
                }
                Waiter::Call { answer, .. } | Waiter::Own(answer) => {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
        self.link.kill();
    }

    pub(crate) fn dead(&self) -> WorkerError {
        self.pending.lock().dead.clone().unwrap_or_else(|| {
            WorkerError::new(ErrorKind::Crashed, format!("{} went away", self.label))
        })
    }

    pub(crate) fn send_line(&self, message: &Value) -> Result<(), WorkerError> {
        self.send_call_line(None, message)
    }

    /// Queues a line; `call` is the id of the request it carries (a call is marked sent once
    /// written; over HTTP, an answer that is not JSON-RPC fails the request).
    fn send_call_line(&self, call: Option<u64>, message: &Value) -> Result<(), WorkerError> {
        let mut line = serde_json::to_vec(message).map_err(|e| {
            WorkerError::new(
                ErrorKind::BadParams,
                format!("params do not serialize: {e}"),
            )
        })?;
        line.push(b'\n');
        self.lines.send((call, line)).map_err(|_| self.dead())
    }

    fn register(&self, waiter: Waiter) -> Result<u64, WorkerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.pending.lock();
        if let Some(dead) = &pending.dead {
            return Err(dead.clone());
        }
        pending.waiting.insert(id, waiter);
        Ok(id)
    }

    /// Sends our own request and waits for its result.
    pub(crate) async fn request(
        self: &Arc<Self>,
        method: &str,
        params: Value,
    ) -> Result<Value, WorkerError> {
        let (tx, rx) = oneshot::channel();
        let id = self.register(Waiter::Own(tx))?;
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        if let Err(error) = self.send_call_line(Some(id), &message) {
            self.pending.lock().waiting.remove(&id);
            return Err(error);
        }
        rx.await.map_err(|_| self.dead())?
    }

    pub(crate) fn notify(&self, method: &str, params: Value) -> Result<(), WorkerError> {
        self.send_line(&json!({ "jsonrpc": "2.0", "method": method, "params": params }))
    }

    /// The newest call in flight that has a client to talk back to.
    pub(crate) fn current_upstream(&self) -> Option<UpstreamHandle> {
        let pending = self.pending.lock();
        pending
            .waiting
            .iter()
            .filter_map(|(id, waiter)| match waiter {
                Waiter::Call {
                    upstream: Some(upstream),
                    ..
                } => Some((*id, upstream)),
                _ => None,
            })
            .max_by_key(|(id, _)| *id)
            .map(|(_, upstream)| upstream.clone())
    }
}

/// One instance of a stdio MCP server in its own process group, owned by the pool's
/// lifecycle scope. It takes many calls at once (MCP multiplexes requests on one
/// connection); see the module docs for what it does with each message.
pub struct McpWorker {
    shared: Arc<Shared>,
    id: WorkerId,
}

impl std::fmt::Debug for McpWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpWorker")
            .field("server", &self.shared.label)
            .field("pid", &self.shared.link.pid())
            .finish()
    }
}

impl McpWorker {
    /// Starts an instance: spawn, `initialize`, `notifications/initialized`, then the tool,
    /// resource and prompt listings the server's capabilities announce, all within the
    /// spec's start timeout.
    ///
    /// # Errors
    ///
    /// A [`StartError`] naming the server and the worker, with the tail of the server's
    /// stderr, when any step fails or the timeout passes.
    pub async fn start(
        spec: Arc<McpServerSpec>,
        catalog: Arc<Catalog>,
        context: StartContext,
    ) -> Result<Self, StartError> {
        let id = context.id;
        let label: Arc<str> = Arc::from(format!("MCP server {:?} worker {id}", spec.name));
        let tail = Arc::new(StderrTail::default());
        let (link, io) = match &spec.url {
            Some(url) => {
                let link =
                    Arc::new(
                        HttpLink::new(url, &spec.headers).map_err(|message| StartError {
                            worker: id,
                            message: format!("{label}: {message}"),
                        })?,
                    );
                (Link::Http(Arc::clone(&link)), Io::Http(link))
            }
            None => {
                let mut process =
                    context
                        .scope
                        .spawn_process(spec.command())
                        .map_err(|e| StartError {
                            worker: id,
                            message: format!("{label}: cannot start {:?}: {e}", spec.program),
                        })?;
                let (Some(stdin), Some(stdout), Some(stderr)) = (
                    process.take_stdin(),
                    process.take_stdout(),
                    process.take_stderr(),
                ) else {
                    let _ = process.kill();
                    return Err(StartError {
                        worker: id,
                        message: format!("{label}: the process has no piped stdio"),
                    });
                };
                read_stderr(
                    &context.scope,
                    Arc::clone(&label),
                    stderr,
                    Arc::clone(&tail),
                );
                (Link::Process(process), Io::Stdio(stdin, stdout))
            }
        };
        let (lines, queued) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            label: Arc::clone(&label),
            alive: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            link,
            died: tokio::sync::Notify::new(),
            lines,
            tail: Arc::clone(&tail),
            spec: Arc::clone(&spec),
            catalog,
            tools: RwLock::new(Vec::new()),
            relisting: AtomicBool::new(false),
            ready: AtomicBool::new(false),
        });
        let fail = |shared: &Shared, message: String| {
            shared.stopping.store(true, Ordering::SeqCst);
            shared.die(WorkerError::new(ErrorKind::Crashed, "start failed"));
            let stderr = shared.tail.text();
            // Errors from the reader already name the server.
            let message = match message.strip_prefix(&*label) {
                Some(rest) => format!("{label}{rest}"),
                None => format!("{label}: {message}"),
            };
            StartError {
                worker: id,
                message: if stderr.is_empty() {
                    message
                } else {
                    format!("{message}; its stderr ended with:\n{stderr}")
                },
            }
        };
        let spawned = match io {
            Io::Stdio(stdin, stdout) => context
                .scope
                .spawn(write_lines(Arc::clone(&shared), stdin, queued))
                .and_then(|_| {
                    context
                        .scope
                        .spawn(read_messages(Arc::clone(&shared), stdout))
                })
                .map(|_| ()),
            Io::Http(link) => context
                .scope
                .spawn(send_lines(Arc::clone(&shared), link, queued))
                .map(|_| ()),
        };
        if let Err(e) = spawned {
            return Err(fail(&shared, e.to_string()));
        }
        let handshake = tokio::time::timeout(spec.start_timeout, handshake(&shared)).await;
        match handshake {
            Ok(Ok(())) => {
                shared.ready.store(true, Ordering::SeqCst);
                if let Link::Http(link) = &shared.link {
                    // What the server sends outside any request.
                    let _ = context
                        .scope
                        .spawn(listen(Arc::clone(&shared), Arc::clone(link)));
                }
                Ok(Self { shared, id })
            }
            Ok(Err(error)) => {
                // A process that exited says so better than "closed its stdout".
                let status = shared.link.exit_status(Duration::from_millis(200)).await;
                let message = match status {
                    Some(status) if !error.message.contains("exited") => {
                        format!("{} ({status})", error.message)
                    }
                    _ => error.message,
                };
                Err(fail(&shared, message))
            }
            Err(_) => Err(fail(
                &shared,
                format!(
                    "no answer to initialize and the listings within {:?}",
                    spec.start_timeout
                ),
            )),
        }
    }

    /// The process id (and process group id); `None` for a server reached over HTTP.
    pub fn pid(&self) -> Option<u32> {
        self.shared.link.pid()
    }

    /// The worker's id in its pool.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// Whether the offered tool is marked read-only or idempotent by its server.
    fn is_idempotent(&self, offered: &str) -> bool {
        self.shared.tools.read().iter().any(|t| {
            t.name == offered
                && t.definition.as_ref().is_some_and(|d| {
                    let hint = |k: &str| d["annotations"][k].as_bool() == Some(true);
                    hint("readOnlyHint") || hint("idempotentHint")
                })
        })
    }

    fn backend_id_of(&self, request_id: u64) -> Option<u64> {
        self.shared
            .pending
            .lock()
            .waiting
            .iter()
            .find_map(|(id, waiter)| match waiter {
                Waiter::Call { request_id: r, .. } if *r == request_id => Some(*id),
                _ => None,
            })
    }
}

impl Worker for McpWorker {
    const KEEPS_RUNNING_WHEN_DROPPED: bool = true;
    const MAY_SURVIVE_UNANSWERED: bool = true;

    async fn call(&self, request: Request) -> Result<Payload, WorkerError> {
        let shared = &self.shared;
        let (method, params) = match request.method.strip_prefix(RAW_METHOD_PREFIX) {
            Some(raw) => (raw.to_string(), request.payload.to_json()),
            None => {
                let Some(tool) = shared.spec.server_name(&request.method) else {
                    return Err(WorkerError::new(
                        ErrorKind::UnknownMethod,
                        format!("{}: no tool {:?}", shared.label, request.method),
                    ));
                };
                let arguments = match request.payload.to_json() {
                    Value::Null => json!({}),
                    other => other,
                };
                (
                    "tools/call".to_string(),
                    json!({ "name": tool, "arguments": arguments }),
                )
            }
        };
        let idempotent = method == "tools/call" && self.is_idempotent(&request.method);
        let (tx, rx) = oneshot::channel();
        let id = shared.register(Waiter::Call {
            answer: tx,
            request_id: request.meta.request_id,
            progress: request.meta.progress.clone(),
            upstream: request.meta.upstream.clone(),
            sent: false,
            idempotent,
        })?;
        let mut params = params;
        if request.meta.progress.is_some()
            && let Some(object) = params.as_object_mut()
        {
            // Our request id is the call's token at the server; reports come back to this
            // call's sink, which carries the client's own token.
            let meta = object.entry("_meta").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("progressToken".into(), json!(id));
            }
        }
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        if let Err(error) = shared.send_call_line(Some(id), &message) {
            shared.pending.lock().waiting.remove(&id);
            return Err(WorkerError::new(
                ErrorKind::Transient,
                format!("{}; the call was not sent", error.message),
            ));
        }
        match rx.await {
            Ok(Ok(result)) => Ok(Payload::json(result)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(shared.dead()),
        }
    }

    fn cancel(&self, request_id: u64) {
        if let Some(id) = self.backend_id_of(request_id) {
            let params =
                json!({ "requestId": id, "reason": "the client no longer waits for this call" });
            if let Err(error) = self.shared.notify("notifications/cancelled", params) {
                tracing::debug!(server = %self.shared.label, %error, "could not send a cancellation");
            }
        }
    }

    async fn keep_after_unanswered(&self, request_id: u64) -> bool {
        if let Some(id) = self.backend_id_of(request_id) {
            // Forget the call: a late answer is dropped.
            let waiter = self.shared.pending.lock().waiting.remove(&id);
            if let Some(Waiter::Call { answer, .. }) = waiter {
                let _ = answer.send(Err(WorkerError::new(
                    ErrorKind::Cancelled,
                    "the call was given up on",
                )));
            }
        }
        matches!(
            tokio::time::timeout(
                PING_AFTER_UNANSWERED,
                self.shared.request("ping", json!({}))
            )
            .await,
            Ok(Ok(_))
        )
    }

    async fn health_check(&self) -> Result<(), WorkerError> {
        self.shared.request("ping", json!({})).await.map(|_| ())
    }

    async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // MCP's stdio shutdown: close its input, give it a moment, then the kill.
        self.shared.died.notify_waiters();
        self.shared.link.stop(Duration::from_millis(500)).await;
        self.shared.die(WorkerError::new(
            ErrorKind::Crashed,
            "the server was shut down",
        ));
    }

    fn kill(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.die(WorkerError::new(
            ErrorKind::Crashed,
            format!("{} was killed by the pool", self.shared.label),
        ));
    }

    fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    fn tools(&self) -> Vec<ToolSpec> {
        self.shared.tools.read().clone()
    }
}

impl Drop for McpWorker {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.die(WorkerError::new(
            ErrorKind::Crashed,
            "the worker was dropped",
        ));
    }
}
