//! What a router sends calls to: the [`Tier`] trait, any tower `Service` as a tier
//! ([`ServiceTier`]), and the small [`TierError`] trait that tells the router how to treat a
//! failure.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use flowbalancer_pool::{
    FailureClass, Pool, PoolError, Request, Response, ToolSpec, Worker, WorkerId,
};
use serde::{Serialize, Serializer};

/// How the router treats a tier's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// The caller's mistake (bad params, unknown method) or the handler's own answer: any
    /// tier would say the same, so the router returns it at once, without fallback, and the
    /// tier's breaker does not count it.
    Caller,
    /// The tier could not take the call (overloaded, no worker, shutting down): the router
    /// skips to the next tier and counts no failure against this one.
    Unavailable,
    /// The call failed here (timeout, crash, protocol damage): the breaker counts it and the
    /// router tries the next tier.
    Retryable,
}

/// What a tier's error must tell the router. Implemented for [`PoolError`] and for tower's
/// boxed errors (`Box<dyn Error + Send + Sync>`, which a tower `Timeout` or `LoadShed` layer
/// returns); implement it for your own backend's error to make that backend a tier.
///
/// ```
/// use flowbalancer_tiers::{ErrorClass, TierError};
///
/// #[derive(Debug, thiserror::Error)]
/// enum HttpBackendError {
///     #[error("status {0}")]
///     Status(u16),
///     #[error("connection refused")]
///     Refused,
/// }
///
/// impl TierError for HttpBackendError {
///     fn class(&self) -> ErrorClass {
///         match self {
///             HttpBackendError::Status(400..=499) => ErrorClass::Caller,
///             HttpBackendError::Refused | HttpBackendError::Status(503) => ErrorClass::Unavailable,
///             HttpBackendError::Status(_) => ErrorClass::Retryable,
///         }
///     }
///     fn kind(&self) -> &'static str {
///         match self {
///             HttpBackendError::Status(_) => "status",
///             HttpBackendError::Refused => "refused",
///         }
///     }
/// }
/// assert_eq!(HttpBackendError::Status(404).class(), ErrorClass::Caller);
/// ```
pub trait TierError: fmt::Display + fmt::Debug + Send + Sync + 'static {
    /// How to treat it.
    fn class(&self) -> ErrorClass;

    /// A short stable name for metrics and attempts: `timeout`, `crashed`, `bad_params`, ….
    fn kind(&self) -> &'static str;

    /// Whether the call ran out of its deadline (the router does not count a tier that was
    /// handed only the leftover of the chain's deadline against its breaker).
    fn is_deadline(&self) -> bool {
        false
    }

    /// The worker involved, if one was.
    fn worker(&self) -> Option<WorkerId> {
        None
    }

    /// The error as structured JSON, for [`RouteError::to_json`](crate::RouteError::to_json)
    /// (default: `{"kind", "message"}`).
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "kind": self.kind(), "message": self.to_string() })
    }
}

impl TierError for PoolError {
    fn class(&self) -> ErrorClass {
        match PoolError::class(self) {
            FailureClass::Caller => ErrorClass::Caller,
            FailureClass::Unavailable => ErrorClass::Unavailable,
            // Failed, and any class a later pool adds: another tier may succeed.
            _ => ErrorClass::Retryable,
        }
    }

    fn kind(&self) -> &'static str {
        self.kind_name()
    }

    fn is_deadline(&self) -> bool {
        matches!(self, PoolError::DeadlineExceeded)
    }

    fn worker(&self) -> Option<WorkerId> {
        PoolError::worker(self)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(
            |e| serde_json::json!({ "kind": self.kind_name(), "message": e.to_string() }),
        )
    }
}

/// A boxed error, as tower's layers return: a [`PoolError`] inside keeps its class; anything
/// else (a tower `Elapsed`, `Overloaded`, your own error) is retryable under the kind
/// `service`. Map errors to your own [`TierError`] type for finer classes.
impl TierError for Box<dyn std::error::Error + Send + Sync> {
    fn class(&self) -> ErrorClass {
        match self.downcast_ref::<PoolError>() {
            Some(error) => TierError::class(error),
            None => ErrorClass::Retryable,
        }
    }

    fn kind(&self) -> &'static str {
        match self.downcast_ref::<PoolError>() {
            Some(error) => error.kind_name(),
            None => "service",
        }
    }

    fn is_deadline(&self) -> bool {
        self.downcast_ref::<PoolError>()
            .is_some_and(TierError::is_deadline)
    }

    fn worker(&self) -> Option<WorkerId> {
        self.downcast_ref::<PoolError>().and_then(PoolError::worker)
    }

    fn to_json(&self) -> serde_json::Value {
        match self.downcast_ref::<PoolError>() {
            Some(error) => TierError::to_json(error),
            None => serde_json::json!({ "kind": "service", "message": self.to_string() }),
        }
    }
}

/// A boxed future of a tier call.
pub type TierFuture<'a, E = PoolError> =
    Pin<Box<dyn Future<Output = Result<Response, E>> + Send + 'a>>;

/// A backend the router can send calls to: a [`Pool`], any tower `Service` (through
/// [`ServiceTier`]), or anything else that answers with a [`Response`] or an error the router
/// can classify ([`TierError`]).
pub trait Tier: Send + Sync + 'static {
    /// What a failed call returns.
    type Error: TierError;

    /// Runs one call. Return any `Send` future: an `async move` block, a boxed
    /// [`TierFuture`], or a call of your own backend.
    fn call(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, Self::Error>> + Send + '_;

    /// Whether this tier offers `method`: `Some(true)`/`Some(false)` when it knows (from its
    /// workers' hello), `None` when it does not say (then it is assumed to).
    fn offers(&self, method: &str) -> Option<bool> {
        let _ = method;
        None
    }

    /// The tools this tier offers, with their schemas (empty when it does not say).
    fn tools(&self) -> Vec<ToolSpec> {
        Vec::new()
    }

    /// The tool named `name`, if this tier offers it. The default looks through
    /// [`tools`](Self::tools); a tier that can find one tool without copying all of them
    /// should say so here.
    fn tool(&self, name: &str) -> Option<ToolSpec> {
        self.tools().into_iter().find(|t| t.name == name)
    }
}

impl<W: Worker> Tier for Pool<W> {
    type Error = PoolError;

    fn call(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, PoolError>> + Send + '_ {
        Pool::call(self, request)
    }

    fn offers(&self, method: &str) -> Option<bool> {
        Pool::offers(self, method)
    }

    fn tools(&self) -> Vec<ToolSpec> {
        Pool::tools(self)
    }

    fn tool(&self, name: &str) -> Option<ToolSpec> {
        Pool::tool(self, name)
    }
}

/// Any tower `Service<Request, Response = Response>` as a tier, for example a [`Pool`] wrapped
/// in tower layers. Each call clones the service, waits for `poll_ready`, then calls it. The
/// tier does not know its methods: declare them with
/// [`RouterBuilder::tier_with_methods`](crate::RouterBuilder::tier_with_methods) when the
/// router should know.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use flowbalancer_pool::{in_process, Pool};
/// use flowbalancer_tiers::{CallOptions, Router, ServiceTier};
/// use serde_json::json;
///
/// let pool = Pool::builder(in_process(|r| async move { Ok(r.payload) })).size(1).build().await?;
/// // A pool is itself a tower Service; so is a pool behind tower layers (timeout, limits, …).
/// let router = Router::builder().tier("wrapped", ServiceTier::new(pool)).build()?;
/// let routed = router.call("echo", json!({"x": 1}), CallOptions::default()).await?;
/// assert_eq!(routed.tier, "wrapped");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ServiceTier<S> {
    service: S,
}

impl<S> ServiceTier<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        Self { service }
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S> Tier for ServiceTier<S>
where
    S: tower_service::Service<Request, Response = Response> + Clone + Send + Sync + 'static,
    S::Error: TierError,
    S::Future: Send,
{
    type Error = S::Error;

    fn call(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, S::Error>> + Send + '_ {
        let mut service = self.service.clone();
        async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(request).await
        }
    }
}

/// A tier's failure as the router keeps it: its class and kind, its message, and the
/// original error (see [`downcast_ref`](Self::downcast_ref)). One pointer; cheap to clone.
#[derive(Clone)]
pub struct TierFailure(Arc<Failure>);

struct Failure {
    class: ErrorClass,
    kind: &'static str,
    deadline: bool,
    worker: Option<WorkerId>,
    message: String,
    json: serde_json::Value,
    error: Box<dyn Any + Send + Sync>,
}

impl TierFailure {
    /// Keeps `error`.
    pub fn new<E: TierError>(error: E) -> Self {
        Self(Arc::new(Failure {
            class: error.class(),
            kind: error.kind(),
            deadline: error.is_deadline(),
            worker: error.worker(),
            message: error.to_string(),
            json: error.to_json(),
            error: Box::new(error),
        }))
    }

    /// How the router treated it.
    pub fn class(&self) -> ErrorClass {
        self.0.class
    }

    /// Its short stable name (`bad_params`, `crashed`, …).
    pub fn kind(&self) -> &'static str {
        self.0.kind
    }

    /// Whether it was a deadline running out.
    pub fn is_deadline(&self) -> bool {
        self.0.deadline
    }

    /// The worker involved, if one was.
    pub fn worker(&self) -> Option<WorkerId> {
        self.0.worker
    }

    /// The original error, if it is an `E` (a [`PoolError`] for a pool tier).
    pub fn downcast_ref<E: 'static>(&self) -> Option<&E> {
        self.0.error.downcast_ref::<E>()
    }

    /// The error as structured JSON (the original error's own form when it has one).
    pub fn to_json(&self) -> serde_json::Value {
        self.0.json.clone()
    }
}

impl fmt::Debug for TierFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TierFailure")
            .field("class", &self.0.class)
            .field("kind", &self.0.kind)
            .field("message", &self.0.message)
            .finish()
    }
}

impl fmt::Display for TierFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for TierFailure {}

impl PartialEq for TierFailure {
    fn eq(&self, other: &Self) -> bool {
        self.0.class == other.0.class
            && self.0.kind == other.0.kind
            && self.0.message == other.0.message
    }
}

impl Serialize for TierFailure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.json.serialize(serializer)
    }
}

/// A tier with its error type erased, as the router stores it.
pub(crate) trait ErasedTier: Send + Sync + 'static {
    fn call(&self, request: Request) -> TierFuture<'_, TierFailure>;
    fn offers(&self, method: &str) -> Option<bool>;
    fn tools(&self) -> Vec<ToolSpec>;
    fn tool(&self, name: &str) -> Option<ToolSpec>;
}

impl<T: Tier> ErasedTier for T {
    fn call(&self, request: Request) -> TierFuture<'_, TierFailure> {
        let call = Tier::call(self, request);
        // One allocation per call: the tier's own future is not boxed.
        Box::pin(async move { call.await.map_err(TierFailure::new) })
    }

    fn offers(&self, method: &str) -> Option<bool> {
        Tier::offers(self, method)
    }

    fn tools(&self) -> Vec<ToolSpec> {
        Tier::tools(self)
    }

    fn tool(&self, name: &str) -> Option<ToolSpec> {
        Tier::tool(self, name)
    }
}
