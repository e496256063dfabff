//! The `Worker` and `WorkerFactory` traits, worker errors, and in-process workers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use flowbalancer_lifecycle::ScopeHandle;

use crate::request::{Payload, Request, ToolSpec, WorkerId};
pub use flowbalancer_protocol::{ErrorKind, WorkerError};

/// A worker: something that runs calls. The pool owns each worker and never runs more than
/// [`max_in_flight`](crate::PoolBuilder::max_in_flight) calls on it at once.
pub trait Worker: Send + Sync + 'static {
    /// Whether a call keeps running in the worker after the pool drops the call's future: true
    /// for a process or a remote server, false (the default) for in-process futures, which stop
    /// when dropped.
    ///
    /// When true, a call the pool gives up on (the caller's deadline, the caller gone) is not
    /// dropped: the pool calls [`cancel`](Self::cancel), keeps the call's future running in the
    /// background and the worker's slot taken until the worker answers, and kills and replaces
    /// the worker if no answer comes within the pool's `cancel_grace`. A worker slot is free
    /// only once the worker is.
    const KEEPS_RUNNING_WHEN_DROPPED: bool = false;

    /// Runs one call.
    fn call(&self, request: Request) -> impl Future<Output = Result<Payload, WorkerError>> + Send;

    /// Checks the worker is alive and well (a ping for a process). Default: always healthy.
    fn health_check(&self) -> impl Future<Output = Result<(), WorkerError>> + Send {
        async { Ok(()) }
    }

    /// Stops the worker: it will get no call any more. Default: nothing to do.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Asks the worker to stop the call with this request id ([`Meta::request_id`]), which the
    /// pool has given up on. Its answer (or the cancellation error it sends) still ends the
    /// call. Default: nothing to do.
    ///
    /// [`Meta::request_id`]: crate::Meta::request_id
    fn cancel(&self, request_id: u64) {
        let _ = request_id;
    }

    /// Whether a worker that left a call unanswered may go on serving: true for a worker that
    /// runs many calls at once on one connection (an MCP server), where one stuck call says
    /// little about the others. False (the default): a call past the call timeout, or not
    /// answered within the cancel grace after a cancel, gets the worker killed and replaced.
    ///
    /// When true, the pool asks [`keep_after_unanswered`](Self::keep_after_unanswered)
    /// instead of killing.
    const MAY_SURVIVE_UNANSWERED: bool = false;

    /// Only asked when [`MAY_SURVIVE_UNANSWERED`](Self::MAY_SURVIVE_UNANSWERED) is true: the
    /// call with this request id ran past the call timeout, or was given up on and not
    /// answered within the cancel grace. The worker forgets the call (a late answer is
    /// dropped) and says whether it is still well (an MCP worker pings its server). True: the
    /// call's slot is freed and the worker keeps serving; false: it is killed and replaced.
    /// Default: false.
    fn keep_after_unanswered(&self, request_id: u64) -> impl Future<Output = bool> + Send {
        let _ = request_id;
        async { false }
    }

    /// Kills the worker at once (after a timeout, the pool does this before replacing it).
    /// Default: nothing to do.
    fn kill(&self) {}

    /// Whether the worker can still take calls. A worker that knows it died (its process
    /// exited, its pipe closed) says so here, and the pool replaces it before giving it a
    /// call. Default: always alive.
    fn is_alive(&self) -> bool {
        true
    }

    /// The tools (methods) the worker offers; empty when it does not say.
    fn tools(&self) -> Vec<ToolSpec> {
        Vec::new()
    }
}

/// What a factory gets to start worker `id`.
#[derive(Debug, Clone)]
pub struct StartContext {
    /// The new worker's id.
    pub id: WorkerId,
    /// The pool's lifecycle scope: spawn processes and tasks here so they die with the pool.
    pub scope: ScopeHandle,
}

/// Starting a worker failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("worker {worker} failed to start: {message}")]
pub struct StartError {
    /// Which worker.
    pub worker: WorkerId,
    /// Why.
    pub message: String,
}

/// Starts workers.
pub trait WorkerFactory: Send + Sync + 'static {
    /// The workers it makes.
    type Worker: Worker;

    /// Starts one worker.
    fn start(
        &self,
        context: StartContext,
    ) -> impl Future<Output = Result<Self::Worker, StartError>> + Send;
}

/// A boxed future of a handler.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Payload, WorkerError>> + Send>>;

type Handler = Arc<dyn Fn(Request) -> HandlerFuture + Send + Sync>;

/// An in-process worker running an async closure; see [`in_process`].
#[derive(Clone)]
pub struct FnWorker {
    handler: Handler,
    tools: Arc<Vec<ToolSpec>>,
}

impl fmt::Debug for FnWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnWorker")
            .field("tools", &self.tools.len())
            .finish()
    }
}

impl Worker for FnWorker {
    fn call(&self, request: Request) -> impl Future<Output = Result<Payload, WorkerError>> + Send {
        (self.handler)(request)
    }

    fn tools(&self) -> Vec<ToolSpec> {
        self.tools.as_ref().clone()
    }
}

/// A factory of in-process workers that all run `handler`.
///
/// ```
/// use flowbalancer_pool::{in_process, Payload, WorkerError, ErrorKind};
///
/// let factory = in_process(|request| async move {
///     match request.method.as_ref() {
///         "echo" => Ok(request.payload),
///         other => Err(WorkerError::new(ErrorKind::UnknownMethod, other)),
///     }
/// });
/// # let _ = factory;
/// ```
pub fn in_process<H, Fut>(handler: H) -> FnFactory
where
    H: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Payload, WorkerError>> + Send + 'static,
{
    FnFactory {
        worker: FnWorker {
            handler: Arc::new(move |request| Box::pin(handler(request))),
            tools: Arc::new(Vec::new()),
        },
    }
}

/// Starts [`FnWorker`]s; see [`in_process`].
#[derive(Debug, Clone)]
pub struct FnFactory {
    worker: FnWorker,
}

impl FnFactory {
    /// Announces the tools the workers offer (used by tier routing).
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.worker.tools = Arc::new(tools);
        self
    }
}

impl WorkerFactory for FnFactory {
    type Worker = FnWorker;

    fn start(
        &self,
        _context: StartContext,
    ) -> impl Future<Output = Result<FnWorker, StartError>> + Send {
        let worker = self.worker.clone();
        async move { Ok(worker) }
    }
}
