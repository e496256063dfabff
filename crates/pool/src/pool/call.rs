//! One call through the pool: checkout, the worker's call, and what happens when the caller
//! gives up before the worker answers.
//!
//! A worker's slot is free only once the worker has answered. A call given up on (the
//! caller's deadline passed, or the caller's future was dropped) is handed to a background
//! task that asks the worker to cancel it and keeps the slot taken until the answer comes; a
//! worker that does not answer within `cancel_grace` is killed and replaced. Workers whose
//! calls stop when their future is dropped (in-process ones) are free at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::dispatch::{Checkout, Discard, Outcome};
use super::{Inner, Pool};
use crate::error::PoolError;
use crate::request::{Payload, Request, Response, WorkerId};
use crate::worker::{ErrorKind, Worker, WorkerError};

/// The worker's call, owned so that it can outlive the caller.
type CallFuture = Pin<Box<dyn Future<Output = Result<Payload, WorkerError>> + Send>>;

/// Why a running call was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GiveUp {
    /// The caller's deadline passed.
    Deadline,
    /// The caller's future was dropped (a client cancel, a disconnect, a chain deadline).
    CallerGone,
}

/// A call running on a checked-out worker. Dropping it before [`Running::finish`] gives the
/// call up: see the module docs.
struct Running<W: Worker> {
    inner: Arc<Inner<W>>,
    checkout: Option<Checkout<'static, W>>,
    call: Option<CallFuture>,
    request_id: u64,
}

impl<W: Worker> Running<W> {
    /// The call finished (or is abandoned on purpose): hands back the checkout to settle.
    fn finish(mut self) -> Checkout<'static, W> {
        self.call = None;
        match self.checkout.take() {
            Some(checkout) => checkout,
            // Only `finish` and `drop` take it, and `finish` consumes `self`.
            None => unreachable!("a running call's checkout is taken once"),
        }
    }

    fn give_up(mut self, why: GiveUp) {
        if let (Some(checkout), Some(call)) = (self.checkout.take(), self.call.take()) {
            self.inner.give_up(checkout, call, self.request_id, why);
        }
    }
}

impl<W: Worker> Drop for Running<W> {
    fn drop(&mut self) {
        if let (Some(checkout), Some(call)) = (self.checkout.take(), self.call.take()) {
            self.inner
                .give_up(checkout, call, self.request_id, GiveUp::CallerGone);
        }
    }
}

impl<W: Worker> Inner<W> {
    /// Settles a call the caller no longer waits for.
    fn give_up(
        self: &Arc<Self>,
        checkout: Checkout<'static, W>,
        call: CallFuture,
        request_id: u64,
        why: GiveUp,
    ) {
        if !W::KEEPS_RUNNING_WHEN_DROPPED {
            // Dropping the future stopped the call: the worker is free now.
            drop(call);
            checkout.finish(Outcome::Cancelled);
            return;
        }
        let slot = Arc::clone(checkout.slot());
        slot.worker.cancel(request_id);
        self.counters.cancels.bump();
        let can_wait =
            tokio::runtime::Handle::try_current().is_ok() && !self.scope.handle().is_closed();
        if !can_wait {
            // No runtime, or the pool is closing: nobody can wait for the answer, so the
            // worker cannot be trusted with another call.
            drop(call);
            slot.worker.kill();
            checkout.finish(Outcome::Discard(Discard::CancelIgnored));
            return;
        }
        let victim = Arc::clone(&slot);
        let grace = self.config.cancel_grace;
        let pool = self.config.name.clone();
        let settle = async move {
            match tokio::time::timeout(grace, call).await {
                Ok(Ok(_)) => checkout.finish(Outcome::Done),
                Ok(Err(error)) => match error.kind {
                    ErrorKind::Crashed => checkout.finish(Outcome::Discard(Discard::Crashed)),
                    ErrorKind::ProtocolViolation => {
                        slot.worker.kill();
                        checkout.finish(Outcome::Discard(Discard::ProtocolViolation));
                    }
                    _ => checkout.finish(Outcome::Done),
                },
                Err(_) => {
                    if W::MAY_SURVIVE_UNANSWERED
                        && slot.worker.keep_after_unanswered(request_id).await
                    {
                        tracing::debug!(pool = %pool, worker = %slot.id, grace = ?grace, reason = ?why, "a call given up on was not answered within the cancel grace; the worker is well and keeps serving");
                        checkout.finish(Outcome::Done);
                        return;
                    }
                    tracing::warn!(
                        pool = %pool,
                        worker = %slot.id,
                        grace = ?grace,
                        reason = ?why,
                        "a call given up on was not answered within the cancel grace; killing the worker"
                    );
                    slot.worker.kill();
                    checkout.finish(Outcome::Discard(Discard::CancelIgnored));
                }
            }
        };
        if let Err(error) = self.scope.spawn(settle) {
            // The pool closed in between: the worker must not serve again.
            tracing::debug!(pool = %self.config.name, %error, "cannot wait for a cancelled call; killing its worker");
            victim.worker.kill();
        }
    }
}

impl<W: Worker> Inner<W> {
    /// A call of a worker that may survive it ran past the call timeout: the worker decides
    /// in the background whether it keeps serving (see [`Worker::keep_after_unanswered`]).
    fn settle_unanswered(
        self: &Arc<Self>,
        checkout: Checkout<'static, W>,
        request_id: u64,
        after: std::time::Duration,
    ) {
        let slot = Arc::clone(checkout.slot());
        let victim = Arc::clone(&slot);
        let pool = self.config.name.clone();
        let settle = async move {
            if slot.worker.keep_after_unanswered(request_id).await {
                tracing::debug!(pool = %pool, worker = %slot.id, timeout = ?after, "a call timed out; the worker is well and keeps serving");
                checkout.finish(Outcome::Done);
            } else {
                tracing::warn!(pool = %pool, worker = %slot.id, timeout = ?after, "a call timed out and the worker is not well; killing it");
                slot.worker.kill();
                checkout.finish(Outcome::Discard(Discard::Timeout));
            }
        };
        if let Err(error) = self.scope.spawn(settle) {
            tracing::debug!(pool = %self.config.name, %error, "cannot check a worker after a timeout; it is killed");
            victim.worker.kill();
        }
    }
}

impl<W: Worker> Pool<W> {
    /// Runs `request` on a worker; see [`Pool`] for how failures are handled.
    ///
    /// A call given up on, because its deadline passed or because this future was dropped,
    /// is cancelled at the worker, and the worker takes no other call until it has answered
    /// (or has been killed and replaced after `cancel_grace`).
    ///
    /// # Errors
    ///
    /// Exactly one [`PoolError`] when the call does not produce a result.
    pub async fn call(&self, request: Request) -> Result<Response, PoolError> {
        let inner = &self.inner;
        inner.counters.calls.bump();
        let started = Instant::now();
        let deadline = request.meta.deadline;
        let mut tried: Vec<WorkerId> = Vec::new();
        let mut attempts = 0u32;
        let mut rebound = false;
        loop {
            attempts += 1;
            let granted = inner
                .checkout(request.meta.session.as_ref(), deadline, &tried)
                .await?;
            rebound |= granted.rebound;
            // A worker granted at once, on the first try: the call's start time is still
            // now (one clock read less per call).
            let now = if granted.queued || attempts > 1 {
                Instant::now()
            } else {
                started
            };
            let checkout = granted.checkout;
            let mut limit = inner.config.call_timeout;
            let mut limited_by_deadline = false;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(now);
                if left < limit {
                    limit = left;
                    limited_by_deadline = true;
                }
            }
            if limit.is_zero() {
                checkout.finish(Outcome::Unused);
                inner.counters.failure("deadline_exceeded");
                return Err(PoolError::DeadlineExceeded);
            }
            let worker = checkout.slot().id;
            let (checkout, result) = if W::KEEPS_RUNNING_WHEN_DROPPED {
                // The call must be able to outlive this future: own it, and hand it to a
                // settling task if the caller gives up (see the module docs).
                let call_slot = Arc::clone(checkout.slot());
                let call_request = request.clone();
                let mut running = Running {
                    inner: Arc::clone(inner),
                    checkout: Some(checkout.into_owned()),
                    call: Some(Box::pin(async move {
                        call_slot.worker.call(call_request).await
                    })),
                    request_id: request.meta.request_id,
                };
                let result = match running.call.as_mut() {
                    Some(call) => within(limit, call).await,
                    None => unreachable!("the call was just set"),
                };
                if result.is_err() && limited_by_deadline {
                    // The caller gave up; the worker is not at fault, but stays taken until
                    // it has stopped.
                    running.give_up(GiveUp::Deadline);
                    inner.counters.failure("deadline_exceeded");
                    return Err(PoolError::DeadlineExceeded);
                }
                (running.finish(), result)
            } else {
                // In-process: dropping the call's future stops it, so a caller that goes
                // away frees the worker through the checkout's own drop.
                let result = {
                    let call = std::pin::pin!(checkout.slot().worker.call(request.clone()));
                    within(limit, call).await
                };
                (checkout, result)
            };
            let error = match result {
                Ok(Ok(payload)) => {
                    checkout.finish(Outcome::Done);
                    inner.counters.successes.increment(1);
                    let elapsed = started.elapsed();
                    inner.latency.record(elapsed);
                    inner.counters.latency.record(elapsed.as_secs_f64());
                    return Ok(Response {
                        payload,
                        worker,
                        attempts,
                        rebound,
                    });
                }
                Ok(Err(error)) => match error.kind {
                    kind if kind.is_caller_error() => {
                        checkout.finish(Outcome::Done);
                        PoolError::Call { worker, error }
                    }
                    ErrorKind::Transient => {
                        checkout.finish(Outcome::Transient);
                        if attempts <= inner.config.transient_retries {
                            inner.counters.retries.bump();
                            tracing::debug!(pool = %inner.config.name, %worker, %error, "transient failure; retrying on another worker");
                            tried.push(worker);
                            continue;
                        }
                        PoolError::Call { worker, error }
                    }
                    ErrorKind::Crashed => {
                        checkout.finish(Outcome::Discard(Discard::Crashed));
                        PoolError::Crashed {
                            worker,
                            message: error.message,
                        }
                    }
                    _ => {
                        checkout.slot().worker.kill();
                        checkout.finish(Outcome::Discard(Discard::ProtocolViolation));
                        PoolError::ProtocolViolation {
                            worker,
                            message: error.message,
                        }
                    }
                },
                Err(_) if limited_by_deadline => {
                    // In-process: the call's future is gone, so the worker is free.
                    checkout.finish(Outcome::Done);
                    PoolError::DeadlineExceeded
                }
                Err(_) if W::MAY_SURVIVE_UNANSWERED => {
                    // One stuck call of a multiplexing worker: cancel it there, and let the
                    // worker say (in the background) whether it is still well.
                    checkout.slot().worker.cancel(request.meta.request_id);
                    inner.settle_unanswered(checkout.into_owned(), request.meta.request_id, limit);
                    PoolError::Timeout {
                        worker,
                        after: limit,
                    }
                }
                Err(_) => {
                    tracing::warn!(pool = %inner.config.name, %worker, timeout = ?limit, "call timed out; killing the worker");
                    checkout.slot().worker.kill();
                    checkout.finish(Outcome::Discard(Discard::Timeout));
                    PoolError::Timeout {
                        worker,
                        after: limit,
                    }
                }
            };
            inner.counters.failure(error.kind_name());
            return Err(error);
        }
    }
}

/// Runs `call` for at most `limit`, polling it once before arming the timer: a call that
/// answers on its first poll (an in-process worker) needs no timer at all.
async fn within<F: Future + Unpin>(
    limit: Duration,
    mut call: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut call).poll(cx))).await {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => tokio::time::timeout(limit, call).await,
    }
}
