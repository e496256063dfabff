//! rmcp's session manager for `serve --http`, with one shortcut.
//!
//! Through rmcp's session machinery, each request of a session goes from the connection's
//! task to the session's worker task, to the service's task, to a task of its own for the
//! handler, and its answer back the same way: about eight task hops per call. A `tools/call`
//! that needs no word from the client's peer (`gateway::direct_call`: no MCP tier may serve
//! it and no progress is asked for) is served instead on the request's own response stream,
//! in the connection's task. rmcp still checks everything it checks before a session's
//! request reaches its session manager (`Accept`, `Content-Type`, `Host`, `Origin`, the
//! session, the protocol version header).
//!
//! What the session worker does for a call, this does for such a call:
//! - `notifications/cancelled` naming it cancels it (and the pool cancels it at its worker);
//! - a client whose response stream drops has not cancelled (MCP: only `notifications/cancelled`
//!   cancels): the call runs on as a task, cancellable as before, and its answer goes nowhere;
//! - the session's idle timer (`http.session_ttl`) restarts: the worker sees none of these
//!   calls, so it is told at a call's start when an eighth of the TTL has passed since it was
//!   last told;
//! - the end of the session cancels its calls and ends its balancer session.
//!
//! And one thing rmcp's worker does not do, for every request of a session: a session whose
//! client is waiting for an answer (a response stream is open), or listening for the server's
//! messages (its standalone `GET` stream, or a resumed one, is open), is in use, however long
//! that lasts. One sweeping task restarts the idle timer of such sessions every eighth of the
//! TTL. A client that went away holds no stream open, so its session still expires, and its
//! calls are cancelled then.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use flowbalancer::Balancer;
use futures_util::Stream;
use futures_util::future::Either;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, JsonRpcMessage, JsonRpcRequest,
    RequestId, ServerJsonRpcMessage,
};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use sync_wrapper::SyncWrapper;
use tokio_util::sync::CancellationToken;

use crate::gateway::direct_call;

/// No response stream of a session has this id: asking its worker to close it changes
/// nothing but the worker's idle timer, which restarts on every event.
const NO_SUCH_STREAM: u64 = u64::MAX;

/// By session: what keeps it in use (its direct calls and its open response streams).
type Running = parking_lot::Mutex<HashMap<SessionId, InUse>>;

/// rmcp's [`LocalSessionManager`], serving direct calls itself.
pub(crate) struct Sessions {
    local: Arc<LocalSessionManager>,
    balancer: Arc<Balancer>,
    /// How often a session with direct calls restarts its worker's idle timer.
    touch_every: Duration,
    running: Arc<Running>,
    /// The task that keeps sessions with response streams open in use (`keep_in_use`).
    keeper: Option<tokio::task::AbortHandle>,
}

impl Drop for Sessions {
    fn drop(&mut self) {
        if let Some(keeper) = &self.keeper {
            keeper.abort();
        }
    }
}

/// What keeps a session in use: its direct calls and its open response streams.
struct InUse {
    /// When the session worker's idle timer last restarted for them.
    /// `None` until the first: the worker's last event may be a whole TTL old by then.
    touched: Option<Instant>,
    /// Each running direct call's cancellation, by its request id.
    calls: HashMap<RequestId, CancellationToken>,
    /// Streams open: response streams (each a client waiting for an answer), direct or not,
    /// and standalone or resumed streams (a client listening).
    open_streams: usize,
}

impl InUse {
    fn new() -> Self {
        Self {
            touched: None,
            calls: HashMap::new(),
            open_streams: 0,
        }
    }

    /// Whether the worker's idle timer was last restarted `every` ago or more, or never.
    fn due(&self, every: Duration) -> bool {
        self.touched
            .is_none_or(|touched| touched.elapsed() >= every)
    }

    /// Whether nothing of the session is running or waited for.
    fn is_idle(&self) -> bool {
        self.calls.is_empty() && self.open_streams == 0
    }
}

/// One open response stream of a session, counted while it lives.
struct Open {
    running: Arc<Running>,
    session: SessionId,
}

impl Open {
    /// Counts a stream of `session` in `running` (whose lock the caller holds, as `map`).
    fn count(
        running: &Arc<Running>,
        map: &mut HashMap<SessionId, InUse>,
        session: &SessionId,
    ) -> Self {
        map.entry(session.clone())
            .or_insert_with(InUse::new)
            .open_streams += 1;
        Self {
            running: Arc::clone(running),
            session: session.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(in_use) = self.running.lock().get_mut(&self.session) {
            in_use.open_streams = in_use.open_streams.saturating_sub(1);
        }
    }
}

/// rmcp's response stream of a session's request, counted as open while it lives.
struct Counted<S> {
    stream: S,
    _open: Open,
}

impl<S: Stream + Unpin> Stream for Counted<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

impl Sessions {
    /// `local`'s sessions, with `balancer`'s direct calls. Spawns the task that keeps
    /// sessions with response streams open in use, so it must be called within a Tokio
    /// runtime.
    pub(crate) fn new(local: LocalSessionManager, balancer: Arc<Balancer>) -> Self {
        let ttl = local.session_config.keep_alive;
        // Never a busy loop, whatever the TTL.
        let touch_every = ttl.map_or(Duration::MAX, |ttl| {
            (ttl / 8).max(Duration::from_millis(10))
        });
        let local = Arc::new(local);
        let running = Arc::default();
        let keeper = ttl.map(|_| {
            let keeping = keep_in_use(
                Arc::downgrade(&local),
                Arc::downgrade(&running),
                touch_every,
            );
            tokio::spawn(keeping).abort_handle()
        });
        Self {
            local,
            balancer,
            touch_every,
            running,
            keeper,
        }
    }

    /// The stream `make` makes for session `id`, counted as open from before it is made (so
    /// the session stays in use meanwhile) until it is dropped.
    async fn counted<S>(
        &self,
        id: &SessionId,
        make: impl Future<Output = Result<S, LocalSessionManagerError>>,
    ) -> Result<Counted<S>, LocalSessionManagerError> {
        let open = Open::count(&self.running, &mut self.running.lock(), id);
        Ok(Counted {
            stream: make.await?,
            _open: open,
        })
    }

    /// The stream answering `message` directly, and whether the session's idle timer is
    /// due for a restart; `None`, with `message` untouched, when rmcp's session worker is to
    /// serve it.
    fn direct(
        &self,
        session: &SessionId,
        message: &mut ClientJsonRpcMessage,
    ) -> Option<(DirectStream, bool)> {
        let JsonRpcMessage::Request(JsonRpcRequest { id, request, .. }) = message else {
            return None;
        };
        let ClientRequest::CallToolRequest(call) = request else {
            return None;
        };
        let mut running = self.running.lock();
        // A request id already running is the client's mistake: rmcp's worker answers it.
        if running
            .get(session)
            .is_some_and(|in_use| in_use.calls.contains_key(id))
        {
            return None;
        }
        let answer = direct_call(&self.balancer, session, &mut call.params)?;
        let id = id.clone();
        let cancelled = CancellationToken::new();
        let open = Open::count(&self.running, &mut running, session);
        let in_use = running.entry(session.clone()).or_insert_with(InUse::new);
        in_use.calls.insert(id.clone(), cancelled.clone());
        let due = in_use.due(self.touch_every);
        if due {
            in_use.touched = Some(Instant::now());
        }
        drop(running);
        let guard = Finished {
            running: Arc::clone(&self.running),
            session: session.clone(),
            id: id.clone(),
        };
        let future = async move {
            let _finished = guard;
            let outcome = tokio::select! {
                // A cancelled request gets no answer (MCP: the client ignores any).
                () = cancelled.cancelled() => return None,
                outcome = answer => outcome,
            };
            let message = match outcome {
                Ok(result) => ServerJsonRpcMessage::response(result, id),
                Err(error) => ServerJsonRpcMessage::error(error, Some(id)),
            };
            Some(ServerSseMessage::from_message(message))
        };
        let stream = DirectStream {
            answer: SyncWrapper::new(Some(Box::pin(future))),
            _open: open,
        };
        Some((stream, due))
    }
}

/// Restarts the idle timer of `session`'s worker.
async fn restart_idle_timer(local: &LocalSessionManager, session: &SessionId) {
    let handle = local.sessions.read().await.get(session).cloned();
    if let Some(handle) = handle {
        // The worker answers once it has seen the event; that it closed nothing is the
        // expected answer.
        let _ = handle.close_request_wise_channel(NO_SUCH_STREAM).await;
    }
}

/// Every `every`, restarts the idle timer of each session that has a response stream open
/// and was last told `every` ago or more, and forgets what it kept of sessions that are gone;
/// ends with the sessions.
async fn keep_in_use(local: Weak<LocalSessionManager>, running: Weak<Running>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (Some(local), Some(running)) = (local.upgrade(), running.upgrade()) else {
            return;
        };
        let due: Vec<SessionId> = running
            .lock()
            .iter_mut()
            .filter(|(_, in_use)| in_use.open_streams > 0 && in_use.due(every))
            .map(|(session, in_use)| {
                in_use.touched = Some(Instant::now());
                session.clone()
            })
            .collect();
        for session in due {
            restart_idle_timer(&local, &session).await;
        }
        // A session closed while a request of it was starting left its entry behind.
        let idle: Vec<SessionId> = running
            .lock()
            .iter()
            .filter(|(_, in_use)| in_use.is_idle())
            .map(|(session, _)| session.clone())
            .collect();
        if !idle.is_empty() {
            let live = local.sessions.read().await;
            let gone: Vec<SessionId> = idle.into_iter().filter(|s| !live.contains_key(s)).collect();
            drop(live);
            let mut running = running.lock();
            for session in gone {
                if running.get(&session).is_some_and(InUse::is_idle) {
                    running.remove(&session);
                }
            }
        }
    }
}

/// Takes a direct call off its session's list when it ends, however it ends.
struct Finished {
    running: Arc<Running>,
    session: SessionId,
    id: RequestId,
}

impl Drop for Finished {
    fn drop(&mut self) {
        if let Some(in_use) = self.running.lock().get_mut(&self.session) {
            in_use.calls.remove(&self.id);
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Option<ServerSseMessage>> + Send>>;

/// A direct call's response stream: its answer, if it is not cancelled, then the end.
/// (rmcp wants response streams `Sync`; the future is only ever polled through `&mut`.)
struct DirectStream {
    answer: SyncWrapper<Option<Answer>>,
    _open: Open,
}

impl Drop for DirectStream {
    fn drop(&mut self) {
        // Dropped before the answer: the client's connection went. That is no cancel (MCP
        // 2025-11-25: a disconnect is not a cancellation), so the call runs on; it ends by
        // itself, at its deadline, or by the session's cancel or end, as it would have here.
        if let Some(answer) = self.answer.get_mut().take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(answer);
        }
    }
}

impl Stream for DirectStream {
    type Item = ServerSseMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServerSseMessage>> {
        let slot = self.get_mut().answer.get_mut();
        let Some(answer) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        match answer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(message) => {
                *slot = None;
                Poll::Ready(message)
            }
        }
    }
}

impl SessionManager for Sessions {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.local.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.local.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.local.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let in_use = self.running.lock().remove(id);
        if let Some(in_use) = in_use {
            in_use.calls.values().for_each(CancellationToken::cancel);
            // The session's gateway may never have seen a call to end its session for.
            self.balancer.end_session(id);
        }
        self.local.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let mut message = message;
        match self.direct(id, &mut message) {
            Some((stream, touch)) => {
                if touch {
                    restart_idle_timer(&self.local, id).await;
                }
                Ok(Either::Left(stream))
            }
            None => Ok(Either::Right(
                self.counted(id, self.local.create_stream(id, message))
                    .await?,
            )),
        }
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        if let JsonRpcMessage::Notification(notification) = &message
            && let ClientNotification::CancelledNotification(cancel) = &notification.notification
            && let Some(request) = &cancel.params.request_id
        {
            let call = self
                .running
                .lock()
                .get(id)
                .and_then(|in_use| in_use.calls.get(request).cloned());
            if let Some(call) = call {
                call.cancel();
            }
        }
        self.local.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        // A client listening for the server's messages is using its session.
        self.counted(id, self.local.create_standalone_stream(id))
            .await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.counted(id, self.local.resume(id, last_event_id)).await
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        self.local.restore_session(id).await
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.local.event_store()
    }
}
