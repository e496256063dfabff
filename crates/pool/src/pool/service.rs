//! The pool as a tower `Service`: `poll_ready` is honest backpressure.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{Inner, Pool};
use crate::error::PoolError;
use crate::request::{Request, Response};
use crate::worker::Worker;

/// The future of a call through the pool's `Service` impl.
pub type PoolFuture = Pin<Box<dyn Future<Output = Result<Response, PoolError>> + Send>>;

/// A pool is a `tower::Service<Request>`, so tower's layers (timeout, concurrency limit,
/// retry, load shedding) wrap it.
///
/// `poll_ready` is ready while the pool can take a call at once or queue it: a worker has
/// room, or the admission queue has a free place (or the pool has no worker yet, so the call
/// learns why at once). Otherwise it waits until a worker comes free. Once the pool is shutting
/// down it returns [`PoolError::ShuttingDown`]. Readiness is not a reservation: a call made
/// after `poll_ready` can still meet a queue that filled in between, and gets
/// [`PoolError::Overloaded`].
///
/// `pool.call(request)` is the inherent [`Pool::call`]; through tower, use `ServiceExt::ready`
/// or `Service::call(&mut pool, request)`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use flowbalancer_pool::{in_process, Pool, Request};
/// use serde_json::json;
/// use tower_service::Service;
///
/// let mut pool = Pool::builder(in_process(|r| async move { Ok(r.payload) })).size(1).build().await?;
/// std::future::poll_fn(|cx| pool.poll_ready(cx)).await?;
/// let response = Service::call(&mut pool, Request::new("echo", json!(1))).await?;
/// assert_eq!(response.payload.as_json(), Some(&json!(1)));
/// # Ok::<(), flowbalancer_pool::PoolError>(())
/// # }).unwrap();
/// ```
impl<W: Worker> tower_service::Service<Request> for Pool<W> {
    type Response = Response;
    type Error = PoolError;
    type Future = PoolFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PoolError>> {
        self.inner.poll_capacity(cx)
    }

    fn call(&mut self, request: Request) -> PoolFuture {
        let pool = self.clone();
        Box::pin(async move { pool.call(request).await })
    }
}

impl<W: Worker> Inner<W> {
    fn poll_capacity(self: &Arc<Self>, cx: &mut Context<'_>) -> Poll<Result<(), PoolError>> {
        if self.is_shutting_down() {
            return Poll::Ready(Err(self.shutting_down_error()));
        }
        let mut state = self.state.lock();
        let capacity = self.config.queue_capacity;
        let exclusive = self.config.affinity == crate::config::AffinityMode::Exclusive;
        let room = state.entries.is_empty()
            || state.waiters.len() < capacity
            || state.has_free_worker(self.config.max_in_flight, exclusive)
            || state.waiters.iter().filter(|w| !w.tx.is_closed()).count() < capacity;
        if room {
            return Poll::Ready(Ok(()));
        }
        if !state.ready_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.ready_wakers.push(cx.waker().clone());
        }
        // The queue is full, so callers already wait and releases take the lock; said again
        // for the waker just added.
        self.publish_demand(&state);
        Poll::Pending
    }
}
