//! The router: route table, fallback chain, one deadline, breakers, retry budget.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use flowbalancer_pool::{Payload, ProgressSink, Request, Response, ToolSpec};
use parking_lot::Mutex;

pub use crate::builder::{ConfigError, RouterBuilder};

use crate::attempt::{AttemptGuard, AttemptPlace, poll_attempt, start_attempt};
use crate::breaker::{Admission, BreakerCell};
use crate::budget::Bucket;
use crate::call::{CallClock, RouteCall};
use crate::error::{Attempt, Outcome, RouteError, SkipReason};
use crate::metrics::{TierMetrics, TierStats};
use crate::name::TierName;
use crate::table::{Chain, Route, RouteTable};
use crate::tier::ErasedTier;

/// The failure kind of a tier that ran out of the chain's deadline.
pub(crate) const DEADLINE_EXCEEDED: &str = "deadline_exceeded";

/// One tier as the router holds it.
pub(crate) struct TierEntry {
    pub(crate) name: TierName,
    pub(crate) tier: Arc<dyn ErasedTier>,
    /// Methods declared in the config, overriding what the tier says.
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) breaker: BreakerCell,
    pub(crate) metrics: TierMetrics,
}

impl TierEntry {
    fn offers(&self, method: &str) -> Option<bool> {
        match &self.methods {
            Some(methods) => Some(methods.iter().any(|m| m == method)),
            None => self.tier.offers(method),
        }
    }
}

/// Options of one routed call.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// The deadline for the whole chain (default: the router's).
    pub timeout: Option<Duration>,
    /// The session, for affinity in the pools.
    pub session: Option<String>,
    /// Where the serving worker's progress reports go (none: nobody listens).
    pub progress: Option<ProgressSink>,
    /// The caller's side, for workers that ask it things while the call runs (an MCP
    /// server's sampling or elicitation requests).
    pub upstream: Option<flowbalancer_pool::UpstreamHandle>,
}

impl CallOptions {
    /// The same options with a deadline for the whole chain.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The same options in `session` (affinity in the pools).
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// The same options with a progress sink for the serving worker's reports.
    pub fn progress(mut self, progress: ProgressSink) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The same options with the caller's side attached.
    pub fn with_upstream(mut self, upstream: flowbalancer_pool::UpstreamHandle) -> Self {
        self.upstream = Some(upstream);
        self
    }
}

/// A served call and where it was served.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Routed {
    /// The worker's answer.
    pub response: Response,
    /// The tier that served it.
    pub tier: TierName,
    /// The tiers tried or skipped before it.
    pub attempts: Vec<Attempt>,
}

impl Routed {
    /// The result payload.
    pub fn payload(&self) -> &Payload {
        &self.response.payload
    }
}

/// What a router and its clones share.
pub(crate) struct Inner {
    pub(crate) tiers: Vec<TierEntry>,
    pub(crate) routes: RouteTable,
    pub(crate) budget: Option<Mutex<Bucket>>,
    pub(crate) timeout: Duration,
    /// Held while deciding to open a breaker: two tiers failing at the same moment must not
    /// both see the other one usable and both open.
    pub(crate) opening: Mutex<()>,
}

/// Routes calls to tiers by method, falls back through every tier that offers the method
/// within one deadline, and fails with every attempt when none serves it.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use flowbalancer_pool::{in_process, Pool, Payload};
/// use flowbalancer_tiers::{CallOptions, Router};
/// use serde_json::json;
///
/// let hot = Pool::builder(in_process(|r| async move { Ok(r.payload) })).size(1).build().await?;
/// let cold = Pool::builder(in_process(|_| async move { Ok(Payload::json(json!("cold"))) })).size(1).build().await?;
/// let router = Router::builder()
///     .tier("hot", hot)
///     .tier("cold", cold)
///     .route("fib", "cold")
///     .build()?;
/// let routed = router.call("echo", json!({"text": "hi"}), CallOptions::default()).await?;
/// assert_eq!(routed.tier, "hot");
/// assert_eq!(router.call("fib", json!({}), CallOptions::default()).await?.tier, "cold");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Router {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("tiers", &self.tier_names())
            .finish()
    }
}

impl Router {
    /// Configures a router.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::new()
    }

    /// The tiers, in fallback order.
    pub fn tier_names(&self) -> Vec<String> {
        self.inner
            .tiers
            .iter()
            .map(|t| t.name.to_string())
            .collect()
    }

    /// The tiers a call of `method` would try, in order: the primary, then its fallbacks
    /// (the route's own list, else every later tier), keeping only tiers that offer it.
    pub fn chain(&self, method: &str) -> Vec<String> {
        self.chain_indexes(method)
            .iter()
            .map(|i| self.inner.tiers[i].name.to_string())
            .collect()
    }

    pub(crate) fn chain_indexes(&self, method: &str) -> Chain {
        let route: &Route = self.inner.routes.route(method);
        let mut chain = Chain::default();
        for &i in &route.order {
            if self.inner.tiers[i].offers(method) != Some(false) {
                chain.push(i);
            }
        }
        chain
    }

    /// Routes one call; see [`Router`].
    ///
    /// # Errors
    ///
    /// [`RouteError::UnknownMethod`] at once when no tier offers the method,
    /// [`RouteError::Rejected`] at once for a caller error, otherwise
    /// [`RouteError::AllTiersFailed`] or [`RouteError::DeadlineExceeded`] with every attempt.
    pub async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
        options: CallOptions,
    ) -> Result<Routed, RouteError> {
        let mut request = Request::new(method, params);
        if let Some(session) = options.session {
            request = request.with_session(session);
        }
        if let Some(progress) = options.progress {
            request = request.with_progress(progress);
        }
        if let Some(upstream) = options.upstream {
            request = request.with_upstream(upstream);
        }
        self.call_request(request, options.timeout).await
    }

    /// Routes a prepared request (its own deadline, if any, is replaced by the chain's).
    ///
    /// The chain is chosen, the deadline starts and the first tier's call is made when this
    /// is called; the returned future runs the attempts.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub fn call_request(
        &self,
        request: Request,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Routed, RouteError>> + Send + '_ {
        RouteCall::start(self, request, timeout)
    }

    /// The attempts of one routed call from chain position `from` on, after `attempts`
    /// (`tried_any`: whether one of them counted as a real try, for the retry budget).
    #[allow(clippy::too_many_arguments)] // one call's state, handed over once
    #[allow(clippy::manual_async_fn)] // on purpose: see the comment on the `async` block
    pub(crate) fn run_chain(
        &self,
        chain: Chain,
        from: usize,
        mut request: Option<Request>,
        method: Arc<str>,
        mut attempts: Vec<Attempt>,
        mut tried_any: bool,
        clock: CallClock,
    ) -> impl Future<Output = Result<Routed, RouteError>> + Send + '_ {
        // An `async` block, not an `async fn`: its captures are used in place, where an
        // `async fn` would keep its arguments twice in the future.
        async move {
            let inner = &*self.inner;
            let last = chain.count().saturating_sub(1);
            for (position, index) in chain.iter().enumerate().skip(from) {
                let entry = &inner.tiers[index];
                let now = if position == 0 {
                    clock.started
                } else {
                    Instant::now()
                };
                if now >= clock.deadline {
                    return Err(RouteError::DeadlineExceeded {
                        method: method.to_string(),
                        deadline: clock.limit,
                        attempts,
                    });
                }
                let admission = entry.breaker.admit();
                let place = AttemptPlace {
                    entry,
                    index,
                    position,
                    admission,
                    now,
                    started: clock.started,
                    deadline: clock.deadline,
                    limit: clock.limit,
                };
                if admission == Admission::Rejected {
                    entry.metrics.skips.bump();
                    entry.metrics.fallbacks_out.bump();
                    attempts.push(place.record(
                        None,
                        Outcome::Skipped {
                            reason: SkipReason::BreakerOpen,
                        },
                    ));
                    continue;
                }
                if tried_any
                    && let Some(budget) = &inner.budget
                    && !budget.lock().try_withdraw()
                {
                    if admission == Admission::Probe {
                        entry.breaker.abandon_probe();
                    }
                    entry.metrics.skips.bump();
                    attempts.push(place.record(
                        None,
                        Outcome::Skipped {
                            reason: SkipReason::RetryBudgetExhausted,
                        },
                    ));
                    break;
                }
                // The last attempt takes the request; earlier ones get a (cheap) clone.
                let tier_request = if position == last {
                    request.take()
                } else {
                    request.clone()
                };
                let Some(tier_request) = tier_request else {
                    break;
                };
                entry.metrics.calls_started.increment(1);
                let mut call = start_attempt(entry, tier_request, clock.deadline);
                let result = {
                    let guard = AttemptGuard {
                        entry,
                        probe: admission == Admission::Probe,
                    };
                    let mut timer = None;
                    let result = std::future::poll_fn(|cx| {
                        poll_attempt(&mut call, &mut timer, clock.deadline, cx)
                    })
                    .await;
                    guard.disarm();
                    result
                };
                if let Some(end) =
                    self.settle(&place, result, &method, &mut attempts, &mut tried_any)
                {
                    return end;
                }
            }
            if Instant::now() >= clock.deadline {
                Err(RouteError::DeadlineExceeded {
                    method: method.to_string(),
                    deadline: clock.limit,
                    attempts,
                })
            } else {
                Err(RouteError::AllTiersFailed {
                    method: method.to_string(),
                    attempts,
                })
            }
        }
    }

    /// A failure counts against the tier's breaker — unless opening it would leave `method`
    /// with no usable tier.
    pub(crate) fn record_failure(
        &self,
        index: usize,
        method: &str,
        kind: &str,
        error: &dyn std::fmt::Display,
    ) {
        let entry = &self.inner.tiers[index];
        entry.metrics.failure(kind);
        let wants_open = entry.breaker.on_failure();
        if !wants_open {
            return;
        }
        // One decision at a time: another tier of the chain may be opening right now.
        let _deciding = self.inner.opening.lock();
        let others_usable = self.chain_indexes(method).iter().any(|i| {
            i != index
                && self.inner.tiers[i].breaker.state().0 != crate::breaker::BreakerState::Open
        });
        let breaker = &entry.breaker;
        if others_usable {
            let cooldown = breaker.open();
            entry.metrics.breaker_openings.increment(1);
            tracing::warn!(tier = %entry.name, ?cooldown, %error, "breaker opened");
        } else {
            breaker.stay_closed();
            tracing::warn!(tier = %entry.name, method, "breaker kept closed: the last usable tier for this method");
        }
    }

    /// Metrics of every tier, in fallback order.
    pub fn stats(&self) -> Vec<TierStats> {
        self.inner
            .tiers
            .iter()
            .map(|entry| {
                let metrics = &entry.metrics;
                let (breaker, breaker_transitions) = entry.breaker.state();
                TierStats {
                    name: entry.name.to_string(),
                    calls: metrics.calls(),
                    successes: metrics.latency.count(),
                    failures: metrics.failures.lock().clone(),
                    fallbacks_in: metrics.fallbacks_in.load(),
                    fallbacks_out: metrics.fallbacks_out.load(),
                    skips: metrics.skips.load(),
                    breaker,
                    breaker_transitions,
                    latency: metrics.latency.summary(),
                }
            })
            .collect()
    }

    /// Whether some tier says it offers `method` (its workers announced it, or the tier's
    /// declared methods list it): the names [`tools`](Self::tools) lists, and the declared
    /// ones. Cheap: no tool is copied.
    pub fn offers(&self, method: &str) -> bool {
        self.inner
            .tiers
            .iter()
            .any(|entry| entry.offers(method) == Some(true))
    }

    /// The tool named `name` as [`tools`](Self::tools) lists it (from the first tier in
    /// fallback order that announces it and may serve it), without copying the others.
    pub fn tool(&self, name: &str) -> Option<ToolSpec> {
        self.inner
            .tiers
            .iter()
            .filter(|entry| entry.offers(name) != Some(false))
            .find_map(|entry| entry.tier.tool(name))
    }

    /// The tools of every tier, each name once (the first tier in fallback order that
    /// announces a tool gives its description and schema). A tier with a declared method list
    /// contributes only those methods.
    pub fn tools(&self) -> Vec<ToolSpec> {
        let mut seen = std::collections::HashSet::new();
        let mut tools = Vec::new();
        for entry in &self.inner.tiers {
            for tool in entry.tier.tools() {
                if entry.offers(&tool.name) != Some(false) && seen.insert(tool.name.clone()) {
                    tools.push(tool);
                }
            }
        }
        tools
    }
}
