//! The router: route table, fallback chain, one deadline, breakers, retry budget.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use flowbalancer_pool::{Payload, ProgressSink, Request, Response, ToolSpec, WorkerId};
use parking_lot::Mutex;

pub use crate::builder::{ConfigError, RouterBuilder};

use crate::breaker::{Admission, BreakerCell};
use crate::budget::Bucket;
use crate::error::{Attempt, Outcome, RouteError, SkipReason};
use crate::metrics::{TierMetrics, TierStats};
use crate::name::TierName;
use crate::table::{Chain, Route, RouteTable};
use crate::tier::{ErasedTier, ErrorClass};

/// The failure kind of a tier that ran out of the chain's deadline.
const DEADLINE_EXCEEDED: &str = "deadline_exceeded";

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

    fn chain_indexes(&self, method: &str) -> Chain {
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
    /// The chain is chosen, and the deadline starts, when this is called; the returned future
    /// runs the attempts.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub fn call_request(
        &self,
        request: Request,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Routed, RouteError>> + Send + '_ {
        let inner = &*self.inner;
        let chain = self.chain_indexes(&request.method);
        let method_name = Arc::clone(&request.method);
        // The request moves into the last attempt; earlier ones get a (cheap) clone.
        let request = Some(request);
        if !chain.is_empty()
            && let Some(budget) = &inner.budget
        {
            budget.lock().deposit_call();
        }
        let started = Instant::now();
        let limit = timeout.unwrap_or(inner.timeout);
        // `Duration::MAX` (or anything past the clock's range) means no deadline.
        let deadline = crate::breaker::saturating_after(started, limit);
        // Only what the attempts need is moved into the future: it stays small to move.
        self.run_chain(chain, request, method_name, started, limit, deadline)
    }

    /// The attempts of one routed call, in chain order.
    #[allow(clippy::manual_async_fn)] // on purpose: see the comment on the `async` block
    fn run_chain(
        &self,
        chain: Chain,
        mut request: Option<Request>,
        method_name: Arc<str>,
        started: Instant,
        limit: Duration,
        deadline: Instant,
    ) -> impl Future<Output = Result<Routed, RouteError>> + Send + '_ {
        // An `async` block, not an `async fn`: its captures are used in place, where an
        // `async fn` would keep its arguments twice in the future.
        async move {
            let inner = &*self.inner;
            let last = chain.count().saturating_sub(1);
            // The method as an owned string only for errors.
            let method = || method_name.to_string();
            if chain.is_empty() {
                return Err(RouteError::UnknownMethod { method: method() });
            }
            let mut attempts: Vec<Attempt> = Vec::new();
            let mut tried_any = false;
            for (position, index) in chain.iter().enumerate() {
                let entry = &inner.tiers[index];
                let now = if position == 0 {
                    started
                } else {
                    Instant::now()
                };
                if now >= deadline {
                    return Err(RouteError::DeadlineExceeded {
                        method: method(),
                        deadline: limit,
                        attempts,
                    });
                }
                let attempt = |worker: Option<WorkerId>, outcome: Outcome| Attempt {
                    tier: entry.name.to_string(),
                    worker,
                    started: now.duration_since(started),
                    elapsed: now.elapsed(),
                    outcome,
                };
                let admission = entry.breaker.admit();
                if admission == Admission::Rejected {
                    entry.metrics.skips.bump();
                    entry.metrics.fallbacks_out.bump();
                    attempts.push(attempt(
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
                    attempts.push(attempt(
                        None,
                        Outcome::Skipped {
                            reason: SkipReason::RetryBudgetExhausted,
                        },
                    ));
                    break;
                }
                // Counted as started for the metrics recorder; `Router::stats` counts a call
                // when it ends (served, failed or given up), which costs no atomic here.
                entry.metrics.calls_started.increment(1);
                // Started outside this future, so the tier's request never takes room in it.
                let Some(mut call) = start_attempt(entry, &mut request, position == last, deadline)
                else {
                    break;
                };
                // What the chain's deadline left this tier, and whether that was only a leftover:
                // earlier tiers used up part of the deadline, so running out of the rest is not
                // this tier's fault and does not count against its breaker. Worked out only
                // when the call failed.
                let leftover = || {
                    let left = deadline.saturating_duration_since(now);
                    (left, left.as_secs_f64() < 0.9 * limit.as_secs_f64())
                };
                let result = {
                    // Counts the call as given up, and gives the probe back, if this future is
                    // dropped mid-call.
                    let guard = AttemptGuard {
                        entry,
                        probe: admission == Admission::Probe,
                    };
                    // A tier that answers on its first poll needs no timer: the deadline's timer
                    // is set up only for a call that has to wait.
                    let first =
                        std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
                    let result = match first {
                        Poll::Ready(result) => Ok(result),
                        // Boxed, so the timer does not widen every call's future.
                        Poll::Pending => Box::pin(tokio::time::timeout_at(deadline, call)).await,
                    };
                    guard.disarm();
                    result
                };
                let worker = match &result {
                    Ok(Err(error)) => error.worker(),
                    _ => None,
                };
                let outcome = match result {
                    Ok(Ok(response)) => {
                        let done = Instant::now();
                        entry.breaker.on_success(done);
                        let metrics = &entry.metrics;
                        metrics.served(done.duration_since(now));
                        if position > 0 {
                            metrics.fallbacks_in.bump();
                        }
                        return Ok(Routed {
                            response,
                            tier: entry.name,
                            attempts,
                        });
                    }
                    Ok(Err(error)) => match error.class() {
                        ErrorClass::Caller => {
                            // The tier worked; the call was wrong.
                            entry.breaker.on_success(Instant::now());
                            entry.metrics.failure(error.kind());
                            return Err(RouteError::Rejected {
                                method: method(),
                                tier: entry.name.to_string(),
                                error,
                            });
                        }
                        ErrorClass::Unavailable => {
                            if admission == Admission::Probe {
                                entry.breaker.abandon_probe();
                            }
                            entry.metrics.skips.bump();
                            entry.metrics.failure(error.kind());
                            Outcome::Skipped {
                                reason: SkipReason::Unavailable {
                                    kind: error.kind().to_string(),
                                    message: error.to_string(),
                                },
                            }
                        }
                        // Retryable, and any class a later version adds.
                        _ => {
                            let (left, handed_leftover) = leftover();
                            let timed_out = error.is_deadline();
                            // A tier handed only what earlier tiers left of the chain's deadline
                            // is not at fault for running out of it.
                            if !(timed_out && handed_leftover) {
                                self.record_failure(index, &method_name, error.kind(), &error);
                            } else {
                                entry.metrics.failure(error.kind());
                                if admission == Admission::Probe {
                                    entry.breaker.abandon_probe();
                                }
                            }
                            tried_any = true;
                            if timed_out {
                                Outcome::TimedOut { after: left }
                            } else {
                                Outcome::Failed {
                                    kind: error.kind().to_string(),
                                    message: error.to_string(),
                                }
                            }
                        }
                    },
                    Err(_) => {
                        let (left, handed_leftover) = leftover();
                        if handed_leftover {
                            // Only the leftover of the chain's deadline: not this tier's fault.
                            entry.metrics.failure(DEADLINE_EXCEEDED);
                            if admission == Admission::Probe {
                                entry.breaker.abandon_probe();
                            }
                        } else {
                            self.record_failure(
                                index,
                                &method_name,
                                DEADLINE_EXCEEDED,
                                &"the chain's deadline passed",
                            );
                        }
                        tried_any = true;
                        Outcome::TimedOut { after: left }
                    }
                };
                entry.metrics.fallbacks_out.bump();
                attempts.push(Attempt {
                    tier: entry.name.to_string(),
                    worker,
                    started: now.duration_since(started),
                    elapsed: now.elapsed(),
                    outcome,
                });
            }
            if Instant::now() >= deadline {
                Err(RouteError::DeadlineExceeded {
                    method: method(),
                    deadline: limit,
                    attempts,
                })
            } else {
                Err(RouteError::AllTiersFailed {
                    method: method(),
                    attempts,
                })
            }
        }
    }

    /// A failure counts against the tier's breaker — unless opening it would leave `method`
    /// with no usable tier.
    fn record_failure(
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

/// Starts one attempt at `entry`: the last attempt takes the request, earlier ones a clone,
/// each carrying the chain's deadline. `None` when the request was already taken.
fn start_attempt<'a>(
    entry: &'a TierEntry,
    request: &mut Option<Request>,
    last: bool,
    deadline: Instant,
) -> Option<crate::tier::TierFuture<'a, crate::tier::TierFailure>> {
    let mut tier_request = if last {
        request.take()?
    } else {
        request.clone()?
    };
    tier_request.meta.deadline = Some(deadline.into_std());
    Some(entry.tier.call(tier_request))
}

/// Armed while a tier runs a call: if the call future is dropped then, the call counts as
/// given up and an unreported half-open probe is returned.
struct AttemptGuard<'a> {
    entry: &'a TierEntry,
    probe: bool,
}

impl AttemptGuard<'_> {
    /// The tier answered (or the deadline passed): its outcome is counted elsewhere.
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        self.entry.metrics.given_up.bump();
        if self.probe {
            self.entry.breaker.abandon_probe();
        }
    }
}
