//! A server's requests for clients of the 2026-07-28 revision, which take no request in the
//! middle of a call (SEP-2322, multi round-trip requests).
//!
//! The MCP servers behind us speak an older revision: in the middle of a `tools/call` they
//! send `sampling/createMessage`, `elicitation/create` or `roots/list` and wait for the answer.
//! For such a client the gateway keeps the call running, ends the client's request with an
//! `input_required` result that carries the server's requests and an opaque `requestState`,
//! and when the client calls again with its `inputResponses` and that state, hands the answers
//! to the server and goes on waiting: for the result, or for the server's next requests.
//!
//! A call nobody comes back for is dropped (and so cancelled at its server) after
//! [`UNCLAIMED`]; at most [`MAX_SUSPENDED`] wait at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use flowbalancer::Balancer;
use flowbalancer::pool::{Upstream, UpstreamError, UpstreamFuture, UpstreamHandle};

use super::upstream::{declares, error, unsupported};
use flowbalancer::tiers::{CallOptions, RouteError, Routed};
use rmcp::ErrorData as McpError;
use rmcp::model::{InputRequest, InputRequests, InputRequiredResult, InputResponses};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long a call waits for its client to come back with the answers.
const UNCLAIMED: Duration = Duration::from_secs(10 * 60);

/// Calls waiting for their clients at once; past it, a server request gets an error.
const MAX_SUSPENDED: usize = 1024;

type Answer = oneshot::Sender<Result<Value, UpstreamError>>;

/// One request of a server, waiting for the client.
struct Ask {
    method: String,
    params: Value,
    answer: Answer,
}

/// A call whose client was sent the server's requests.
struct Suspended {
    tool: String,
    call: Running,
    asks: mpsc::UnboundedReceiver<Ask>,
    /// The server's requests sent to the client, by the key the client answers with.
    waiting: HashMap<String, Answer>,
    since: Instant,
}

type Outcome = Result<Routed, RouteError>;

/// The call: polled in place while its client's request waits for it (most calls end so), and
/// a task of its own once it is suspended, so that its deadlines still run while nobody waits.
enum Running {
    Inline(std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>),
    Spawned(AbortOnDrop),
}

/// A call's task, aborted (and so its call dropped and cancelled at the worker) when this is
/// dropped.
struct AbortOnDrop(tokio::task::JoinHandle<Outcome>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Running {
    /// The call as a task of its own (a suspended call must go on without a poller).
    fn detach(self) -> Self {
        match self {
            Running::Inline(call) => Running::Spawned(AbortOnDrop(tokio::spawn(call))),
            spawned => spawned,
        }
    }
}

impl Future for Running {
    type Output = Result<Outcome, tokio::task::JoinError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Running::Inline(call) => call.as_mut().poll(cx).map(Ok),
            Running::Spawned(task) => std::pin::Pin::new(&mut task.0).poll(cx),
        }
    }
}

static SUSPENDED: LazyLock<parking_lot::Mutex<HashMap<String, Suspended>>> =
    LazyLock::new(Default::default);

/// Whether the request's client takes `input_required` results instead of server requests.
pub(crate) fn takes_input_required(
    context: &rmcp::service::RequestContext<rmcp::RoleServer>,
) -> bool {
    context
        .protocol_version()
        .is_some_and(|v| !v.has_initialize())
}

/// What one round of a call gave the client.
pub(crate) enum Round {
    /// The call ended.
    Done(Result<Routed, RouteError>),
    /// The server asks the client first.
    InputRequired(InputRequiredResult),
}

/// One round trip of the request.
pub(crate) struct Trip {
    /// The client's answers to the previous round's requests.
    pub(crate) responses: Option<InputResponses>,
    /// The `requestState` of the previous round.
    pub(crate) state: Option<String>,
    /// The client's declared capabilities (`sampling`, `elicitation`, `roots`).
    pub(crate) capabilities: Option<rmcp::model::ClientCapabilities>,
    /// Where the server's notifications (log messages) go.
    pub(crate) notify: UpstreamHandle,
}

/// Starts the call (or takes up the one `trip.state` names) and waits for its end or its
/// server's next requests.
///
/// # Errors
///
/// Invalid params for a state that is unknown, expired or of another tool; the request's
/// cancellation.
pub(crate) async fn call(
    balancer: &Arc<Balancer>,
    tool: &str,
    arguments: Value,
    options: CallOptions,
    trip: Trip,
    cancelled: &CancellationToken,
) -> Result<Round, McpError> {
    let mut suspended = match trip.state {
        Some(state) => take(&state, tool)?,
        None => start(
            balancer,
            tool,
            arguments,
            options,
            trip.capabilities,
            trip.notify,
        ),
    };
    for (key, response) in trip.responses.unwrap_or_default() {
        if let Some(answer) = suspended.waiting.remove(&key) {
            let _ = answer.send(Ok(response));
        }
    }
    // A request the client left unanswered gets an error, so that the server goes on.
    for (_, answer) in suspended.waiting.drain() {
        let _ = answer.send(Err(error(
            -32603,
            "the client sent no answer to this request",
        )));
    }
    let ask = tokio::select! {
        joined = &mut suspended.call => return finished(joined),
        ask = suspended.asks.recv() => ask,
        () = cancelled.cancelled() => {
            return Err(McpError::internal_error("the request was cancelled", None));
        }
    };
    match ask {
        Some(ask) => Ok(Round::InputRequired(suspend(suspended, ask))),
        // The call's upstream is gone, so the call has ended: its result is ready.
        None => finished((&mut suspended.call).await),
    }
}

fn finished(joined: Result<Outcome, tokio::task::JoinError>) -> Result<Round, McpError> {
    joined
        .map(Round::Done)
        .map_err(|join| McpError::internal_error(format!("the call ended: {join}"), None))
}

fn start(
    balancer: &Arc<Balancer>,
    tool: &str,
    arguments: Value,
    options: CallOptions,
    capabilities: Option<rmcp::model::ClientCapabilities>,
    notify: UpstreamHandle,
) -> Suspended {
    let (asks, receiver) = mpsc::unbounded_channel();
    let upstream = RoundsUpstream {
        asks,
        capabilities,
        notify,
    };
    let options = options.with_upstream(UpstreamHandle(Arc::new(upstream)));
    let (balancer, name) = (Arc::clone(balancer), tool.to_string());
    let call = Box::pin(async move { balancer.call(&name, arguments, options).await });
    Suspended {
        tool: tool.to_string(),
        call: Running::Inline(call),
        asks: receiver,
        waiting: HashMap::new(),
        since: Instant::now(),
    }
}

/// The call `state` names, taken out of the waiting ones.
fn take(state: &str, tool: &str) -> Result<Suspended, McpError> {
    let mut all = SUSPENDED.lock();
    forget_unclaimed(&mut all);
    match all.remove(state) {
        Some(suspended) if suspended.tool == tool => Ok(suspended),
        Some(suspended) => {
            let named = suspended.tool.clone();
            all.insert(state.to_string(), suspended);
            Err(McpError::invalid_params(
                format!("the requestState belongs to a call of {named:?}, not {tool:?}"),
                None,
            ))
        }
        None => Err(McpError::invalid_params(
            "the requestState is unknown or expired: call the tool again without it",
            Some(json!({ "tool": tool })),
        )),
    }
}

/// Keeps the call until its client comes back, and tells the client what the server asks:
/// `first` and whatever else the server has asked by now.
fn suspend(mut suspended: Suspended, first: Ask) -> InputRequiredResult {
    let mut requests = InputRequests::new();
    let mut next = Some(first);
    while let Some(ask) = next.take() {
        let key = format!("r{}", suspended.waiting.len() + 1);
        let request = serde_json::from_value::<InputRequest>(
            json!({ "method": ask.method, "params": ask.params }),
        );
        match request {
            Ok(request) => {
                requests.insert(key.clone(), request);
                suspended.waiting.insert(key, ask.answer);
            }
            Err(problem) => {
                let _ = ask
                    .answer
                    .send(Err(error(-32602, format!("invalid params: {problem}"))));
            }
        }
        next = suspended.asks.try_recv().ok();
    }
    let state = crate::gateway::unguessable_id("round");
    suspended.since = Instant::now();
    suspended.call = suspended.call.detach();
    let mut all = SUSPENDED.lock();
    forget_unclaimed(&mut all);
    if all.len() >= MAX_SUSPENDED {
        // Dropped here: its requests fail and the call is cancelled.
        tracing::warn!(
            limit = MAX_SUSPENDED,
            "too many calls wait for their clients' answers; one more is cancelled"
        );
    } else {
        all.insert(state.clone(), suspended);
    }
    InputRequiredResult::new(Some(requests), Some(state))
}

/// Drops the calls whose clients did not come back in time.
fn forget_unclaimed(all: &mut HashMap<String, Suspended>) {
    all.retain(|_, suspended| suspended.since.elapsed() < UNCLAIMED);
}

/// The upstream of a call whose client takes `input_required` results.
struct RoundsUpstream {
    asks: mpsc::UnboundedSender<Ask>,
    capabilities: Option<rmcp::model::ClientCapabilities>,
    notify: UpstreamHandle,
}

impl Upstream for RoundsUpstream {
    fn request(&self, method: &str, params: Value) -> UpstreamFuture {
        let capabilities = serde_json::to_value(&self.capabilities).unwrap_or(Value::Null);
        if !declares(&capabilities, method) {
            let unsupported = unsupported(method);
            return Box::pin(async move { Err(unsupported) });
        }
        let (answer, answered) = oneshot::channel();
        let sent = self.asks.send(Ask {
            method: method.to_string(),
            params,
            answer,
        });
        Box::pin(async move {
            if sent.is_err() {
                return Err(error(-32603, "the client is gone"));
            }
            answered.await.unwrap_or_else(|_| {
                Err(error(-32603, "the client did not come back with an answer"))
            })
        })
    }

    fn notify(&self, method: &str, params: Value) {
        self.notify.0.notify(method, params);
    }
}
