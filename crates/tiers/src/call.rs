//! The future of one routed call.
//!
//! Most calls are served by the first tier of their chain, so that attempt has a small future
//! of its own: it is started when the call is made (the request moves straight into the
//! tier's call), it sets up the deadline's timer only if the tier does not answer at once,
//! and it keeps what a fallback needs (the request and the rest of the chain) in one box,
//! only when the chain has a fallback. A call that goes on past its first tier, or whose
//! first tier's breaker is open, continues in [`Router::run_chain`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use flowbalancer_pool::Request;
use tokio::time::{Instant, Sleep};

use crate::attempt::{AttemptPlace, given_up, poll_attempt, start_attempt};
use crate::breaker::Admission;
use crate::error::RouteError;
use crate::router::{Routed, Router, TierEntry};
use crate::table::Chain;
use crate::tier::{TierFailure, TierFuture};

/// When a call started, its deadline, and the time the deadline allowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallClock {
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    pub(crate) limit: Duration,
}

/// What the chain needs after its first attempt: the request (the first attempt ran on a
/// clone) and the chain itself.
struct Rest {
    request: Request,
    chain: Chain,
}

/// The future of one routed call; see the module docs.
pub(crate) struct RouteCall<'a> {
    state: State<'a>,
}

enum State<'a> {
    /// No tier offers the method.
    Unknown(Arc<str>),
    /// The first attempt is running.
    First(First<'a>),
    /// The call goes on through the chain.
    Chain(Pin<Box<dyn Future<Output = Result<Routed, RouteError>> + Send + 'a>>),
    /// The call has ended.
    Done,
}

/// The first attempt of a call. Kept within two cache lines: every call's future is moved
/// at least once, and a bigger one is moved by a `memcpy` call.
struct First<'a> {
    router: &'a Router,
    call: TierFuture<'a, TierFailure>,
    /// The deadline's timer, set up when the tier does not answer on the first poll.
    timer: Option<Pin<Box<Sleep>>>,
    /// The tier, and its index in the router.
    entry: &'a TierEntry,
    index: usize,
    /// Whether the breaker admitted the call as its half-open probe.
    probe: bool,
    /// Whether the tier is still running the call: dropped then, the call counts as given
    /// up, and a probe is returned.
    running: bool,
    clock: CallClock,
    /// The method, for errors (the request moved into the tier's call).
    method: Arc<str>,
    /// Only when the chain has more than one tier.
    rest: Option<Box<Rest>>,
}

impl<'a> RouteCall<'a> {
    /// Chooses the chain, starts the deadline and the first attempt.
    pub(crate) fn start(router: &'a Router, request: Request, timeout: Option<Duration>) -> Self {
        let inner = &*router.inner;
        let chain = router.chain_indexes(&request.method);
        let Some(index) = chain.iter().next() else {
            return Self {
                state: State::Unknown(request.method),
            };
        };
        if let Some(budget) = &inner.budget {
            budget.lock().deposit_call();
        }
        let started = Instant::now();
        let limit = timeout.unwrap_or(inner.timeout);
        let clock = CallClock {
            started,
            // `Duration::MAX` (or anything past the clock's range) means no deadline.
            deadline: crate::breaker::saturating_after(started, limit),
            limit,
        };
        let method = Arc::clone(&request.method);
        let entry = &inner.tiers[index];
        let admission = entry.breaker.admit();
        if admission == Admission::Rejected {
            // The general path skips the tier and goes on. It asks the breaker again, which is
            // harmless: a rejection changed no state.
            let rest = router.run_chain(chain, 0, Some(request), method, Vec::new(), false, clock);
            return Self {
                state: State::Chain(Box::pin(rest)),
            };
        }
        // Counted as started for the metrics recorder; `Router::stats` counts a call when it
        // ends (served, failed or given up), which costs no atomic here.
        entry.metrics.calls_started.increment(1);
        let (tier_request, rest) = if chain.count() == 1 {
            (request, None)
        } else {
            (request.clone(), Some(Box::new(Rest { request, chain })))
        };
        let call = start_attempt(entry, tier_request, clock.deadline);
        Self {
            state: State::First(First {
                router,
                call,
                timer: None,
                entry,
                index,
                probe: admission == Admission::Probe,
                running: true,
                clock,
                method,
                rest,
            }),
        }
    }
}

impl Drop for First<'_> {
    fn drop(&mut self) {
        if self.running {
            given_up(self.entry, self.probe);
        }
    }
}

impl Future for RouteCall<'_> {
    type Output = Result<Routed, RouteError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let first = match &mut this.state {
                State::First(first) => first,
                State::Chain(chain) => {
                    let end = std::task::ready!(chain.as_mut().poll(cx));
                    this.state = State::Done;
                    return Poll::Ready(end);
                }
                State::Unknown(method) => {
                    let method = method.to_string();
                    this.state = State::Done;
                    return Poll::Ready(Err(RouteError::UnknownMethod { method }));
                }
                State::Done => return Poll::Pending,
            };
            let result = std::task::ready!(poll_attempt(
                &mut first.call,
                &mut first.timer,
                first.clock.deadline,
                cx
            ));
            first.running = false;
            let router = first.router;
            let place = AttemptPlace {
                entry: first.entry,
                index: first.index,
                position: 0,
                admission: if first.probe {
                    Admission::Probe
                } else {
                    Admission::Allowed
                },
                now: first.clock.started,
                started: first.clock.started,
                deadline: first.clock.deadline,
                limit: first.clock.limit,
            };
            let mut attempts = Vec::new();
            let mut tried_any = false;
            if let Some(end) =
                router.settle(&place, result, &first.method, &mut attempts, &mut tried_any)
            {
                this.state = State::Done;
                return Poll::Ready(end);
            }
            // The first tier failed: on through the rest of the chain.
            let (request, chain) = match first.rest.take() {
                Some(rest) => (Some(rest.request), rest.chain),
                None => {
                    let mut chain = Chain::default();
                    chain.push(first.index);
                    (None, chain)
                }
            };
            let method = Arc::clone(&first.method);
            let clock = first.clock;
            let rest = router.run_chain(chain, 1, request, method, attempts, tried_any, clock);
            // Dropping the first attempt's state here: its call has ended.
            this.state = State::Chain(Box::pin(rest));
        }
    }
}
