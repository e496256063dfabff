//! The `Tier` trait: anything calls can be routed to.

use std::future::Future;
use std::pin::Pin;

use flowbalancer_pool::{Pool, PoolError, Request, Response, ToolSpec, Worker};

/// A boxed future of a tier call.
pub type TierFuture<'a> = Pin<Box<dyn Future<Output = Result<Response, PoolError>> + Send + 'a>>;

/// A backend the router can send calls to: a [`Pool`], or anything else (tests, remote
/// services) that answers with a `Response` or a classified `PoolError`.
pub trait Tier: Send + Sync + 'static {
    /// Runs one call.
    fn call(&self, request: Request) -> TierFuture<'_>;

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
}

impl<W: Worker> Tier for Pool<W> {
    fn call(&self, request: Request) -> TierFuture<'_> {
        Box::pin(Pool::call(self, request))
    }

    fn offers(&self, method: &str) -> Option<bool> {
        Pool::offers(self, method)
    }

    fn tools(&self) -> Vec<ToolSpec> {
        Pool::tools(self)
    }
}
