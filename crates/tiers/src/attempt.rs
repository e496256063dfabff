//! One attempt at one tier: starting it, guarding it while it runs, and what its result
//! means for the chain. Shared by the first attempt's own future ([`crate::call`]) and by the
//! general path through the chain ([`Router::run_chain`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use flowbalancer_pool::Request;
use tokio::time::{Instant, Sleep};

use crate::breaker::Admission;
use crate::error::{Attempt, Outcome, RouteError, SkipReason};
use crate::router::{DEADLINE_EXCEEDED, Routed, Router, TierEntry};
use crate::tier::{ErrorClass, TierFailure, TierFuture};

/// A tier's answer, or `Err` when the chain's deadline passed first.
pub(crate) type AttemptResult = Result<Result<flowbalancer_pool::Response, TierFailure>, Elapsed>;

/// The chain's deadline passed while a tier ran the call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Elapsed;

/// Where an attempt stands in its call: what settling its result needs to know.
pub(crate) struct AttemptPlace<'a> {
    pub(crate) entry: &'a TierEntry,
    /// The tier's index in the router.
    pub(crate) index: usize,
    /// The attempt's position in the chain (0: the primary).
    pub(crate) position: usize,
    pub(crate) admission: Admission,
    /// When the attempt started.
    pub(crate) now: Instant,
    /// When the call started.
    pub(crate) started: Instant,
    /// The chain's deadline, and the time it allowed.
    pub(crate) deadline: Instant,
    pub(crate) limit: Duration,
}

/// Starts one attempt at `entry` with `request`, which carries the chain's deadline.
pub(crate) fn start_attempt(
    entry: &TierEntry,
    mut request: Request,
    deadline: Instant,
) -> TierFuture<'_, TierFailure> {
    request.meta.deadline = Some(deadline.into_std());
    entry.tier.call(request)
}

/// Polls a running attempt: the tier's call, then the chain's deadline. The deadline's timer
/// is set up (boxed, so it does not widen the caller's future) only once the tier has not
/// answered on a poll: a tier that answers at once needs none.
pub(crate) fn poll_attempt(
    call: &mut TierFuture<'_, TierFailure>,
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<AttemptResult> {
    if let Poll::Ready(result) = call.as_mut().poll(cx) {
        return Poll::Ready(Ok(result));
    }
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    timer.as_mut().poll(cx).map(|()| Err(Elapsed))
}

/// Armed while a tier runs a call: if the call future is dropped then, the call counts as
/// given up and an unreported half-open probe is returned.
pub(crate) struct AttemptGuard<'a> {
    pub(crate) entry: &'a TierEntry,
    pub(crate) probe: bool,
}

impl AttemptGuard<'_> {
    /// The tier answered (or the deadline passed): its outcome is counted elsewhere.
    pub(crate) fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        given_up(self.entry, self.probe);
    }
}

/// A call dropped while `entry` ran it: counted as given up, and its half-open probe (if it
/// was one) returned, so that the next call may probe.
pub(crate) fn given_up(entry: &TierEntry, probe: bool) {
    entry.metrics.given_up.bump();
    if probe {
        entry.breaker.abandon_probe();
    }
}

impl Router {
    /// Counts an attempt's result at its tier and says what it means for the call: `Some`
    /// when the call ends with it (served, or the caller's mistake), `None` when the chain
    /// goes on (the attempt is then in `attempts`, and `tried_any` is set when it counted as
    /// a real try, which the retry budget charges for).
    pub(crate) fn settle(
        &self,
        place: &AttemptPlace<'_>,
        result: AttemptResult,
        method: &Arc<str>,
        attempts: &mut Vec<Attempt>,
        tried_any: &mut bool,
    ) -> Option<Result<Routed, RouteError>> {
        let entry = place.entry;
        let probe = place.admission == Admission::Probe;
        // What the chain's deadline left this tier, and whether that was only a leftover:
        // earlier tiers used up part of the deadline, so running out of the rest is not this
        // tier's fault and does not count against its breaker. Worked out only on failure.
        let leftover = || {
            let left = place.deadline.saturating_duration_since(place.now);
            (left, left.as_secs_f64() < 0.9 * place.limit.as_secs_f64())
        };
        let worker = match &result {
            Ok(Err(error)) => error.worker(),
            _ => None,
        };
        let outcome = match result {
            Ok(Ok(response)) => {
                let done = Instant::now();
                entry.breaker.on_success(done);
                entry.metrics.served(done.duration_since(place.now));
                if place.position > 0 {
                    entry.metrics.fallbacks_in.bump();
                }
                return Some(Ok(Routed {
                    response,
                    tier: entry.name,
                    attempts: std::mem::take(attempts),
                }));
            }
            Ok(Err(error)) => match error.class() {
                ErrorClass::Caller => {
                    // The tier worked; the call was wrong.
                    entry.breaker.on_success(Instant::now());
                    entry.metrics.failure(error.kind());
                    return Some(Err(RouteError::Rejected {
                        method: method.to_string(),
                        tier: entry.name.to_string(),
                        error,
                    }));
                }
                ErrorClass::Unavailable => {
                    if probe {
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
                    // A tier handed only what earlier tiers left of the chain's deadline is
                    // not at fault for running out of it.
                    if !(timed_out && handed_leftover) {
                        self.record_failure(place.index, method, error.kind(), &error);
                    } else {
                        entry.metrics.failure(error.kind());
                        if probe {
                            entry.breaker.abandon_probe();
                        }
                    }
                    *tried_any = true;
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
            Err(Elapsed) => {
                let (left, handed_leftover) = leftover();
                if handed_leftover {
                    // Only the leftover of the chain's deadline: not this tier's fault.
                    entry.metrics.failure(DEADLINE_EXCEEDED);
                    if probe {
                        entry.breaker.abandon_probe();
                    }
                } else {
                    self.record_failure(
                        place.index,
                        method,
                        DEADLINE_EXCEEDED,
                        &"the chain's deadline passed",
                    );
                }
                *tried_any = true;
                Outcome::TimedOut { after: left }
            }
        };
        entry.metrics.fallbacks_out.bump();
        attempts.push(place.record(worker, outcome));
        None
    }
}

impl AttemptPlace<'_> {
    /// The attempt as the error reports it.
    pub(crate) fn record(
        &self,
        worker: Option<flowbalancer_pool::WorkerId>,
        outcome: Outcome,
    ) -> Attempt {
        Attempt {
            tier: self.entry.name.to_string(),
            worker,
            started: self.now.duration_since(self.started),
            elapsed: self.now.elapsed(),
            outcome,
        }
    }
}
