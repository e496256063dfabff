//! `with_scope`: run a body with a scope that is closed whatever the body does.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::task::Poll;

use crate::scope::{Scope, ScopeHandle};

/// Runs `body` with a fresh [`Scope`] and closes the scope when the body ends — on `Ok`, on
/// `Err`, on panic (the panic resumes after the cleanup) — and cleans it up synchronously when
/// the returned future is dropped mid-body. Failures of the close are logged with `tracing`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use flowbalancer_lifecycle::with_scope;
///
/// let path = with_scope(|scope| async move {
///     let file = scope.temp_file()?;
///     Ok::<_, flowbalancer_lifecycle::ScopeError>(file.path().to_path_buf())
/// })
/// .await?;
/// assert!(!path.exists(), "removed when the body returned");
/// # Ok::<(), flowbalancer_lifecycle::ScopeError>(())
/// # }).unwrap();
/// ```
pub async fn with_scope<F, Fut, T>(body: F) -> T
where
    F: FnOnce(ScopeHandle) -> Fut,
    Fut: Future<Output = T>,
{
    with_scope_in(Scope::new(), body).await
}

/// [`with_scope`] with a scope you configured.
pub async fn with_scope_in<F, Fut, T>(scope: Scope, body: F) -> T
where
    F: FnOnce(ScopeHandle) -> Fut,
    Fut: Future<Output = T>,
{
    // If this future is dropped mid-body, `scope` drops with it and cleans up synchronously.
    let mut body = Box::pin(body(scope.handle()));
    let outcome = poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| body.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        },
    )
    .await;
    drop(body);
    let report = scope.close().await;
    if !report.is_clean() {
        tracing::warn!(%report, "with_scope: cleanup failures");
    }
    match outcome {
        Ok(value) => value,
        Err(panic) => resume_unwind(panic),
    }
}
