//! The router as a tower `Service`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use flowbalancer_pool::Request;

use crate::error::RouteError;
use crate::router::{Routed, Router};

/// The future of a call through the router's `Service` impl.
pub type RouterFuture = Pin<Box<dyn Future<Output = Result<Routed, RouteError>> + Send>>;

/// A router is a `tower::Service<Request>`: each request is routed as by
/// [`Router::call_request`], within the request's own deadline when it has one (else the
/// router's).
///
/// `poll_ready` is always ready: which tier serves a call depends on its method, which
/// `poll_ready` does not see, and a tier that cannot take the call is skipped, not waited for.
/// The backpressure of a router is its tiers' `Overloaded` skips and, when every tier is full,
/// [`RouteError::AllTiersFailed`]. To wait instead of failing, put a tower concurrency limit
/// in front.
///
/// `router.call(…)` is the inherent [`Router::call`]; through tower, use `ServiceExt::ready`
/// or `Service::call(&mut router, request)`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use flowbalancer_pool::{in_process, Pool, Request};
/// use flowbalancer_tiers::Router;
/// use serde_json::json;
/// use tower_service::Service;
///
/// let pool = Pool::builder(in_process(|r| async move { Ok(r.payload) })).size(1).build().await?;
/// let mut router = Router::builder().tier("hot", pool).build()?;
/// std::future::poll_fn(|cx| router.poll_ready(cx)).await?;
/// let routed = Service::call(&mut router, Request::new("echo", json!("hi"))).await?;
/// assert_eq!(routed.tier, "hot");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
impl tower_service::Service<Request> for Router {
    type Response = Routed;
    type Error = RouteError;
    type Future = RouterFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RouteError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> RouterFuture {
        let router = self.clone();
        let timeout = request
            .meta
            .deadline
            .map(|deadline| deadline.saturating_duration_since(std::time::Instant::now()));
        Box::pin(async move { router.call_request(request, timeout).await })
    }
}
