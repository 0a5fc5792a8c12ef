//! The actor in scope: who makes the gated calls.

use std::future::Future;
use std::sync::Arc;

use approval_audit::Actor;

tokio::task_local! {
    // Shared: every request made in the scope holds the one actor.
    static ACTOR: Arc<Actor>;
}

/// Runs `future` with `actor` in scope for every gated call it makes,
/// across `.await`s; scopes nest (the innermost wins).
///
/// A task-local does not follow `tokio::spawn`: a spawned task starts with
/// no actor, and its requests say so (`actor` `{"id":"none"}`), unless it
/// sets its own scope.
///
/// ```
/// use approval_core::{current_actor, with_actor, Actor};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let id = with_actor(Actor::new("agent-7"), async {
///     current_actor().map(|a| a.id.clone())
/// })
/// .await;
/// assert_eq!(id.as_deref(), Some("agent-7"));
/// assert!(current_actor().is_none());
/// # }
/// ```
pub fn with_actor<F: Future>(actor: Actor, future: F) -> impl Future<Output = F::Output> {
    // Not an `async fn`, which would hold `future` twice.
    ACTOR.scope(Arc::new(actor), future)
}

/// Runs `f` with `actor` in scope, for synchronous code.
pub fn with_actor_sync<R>(actor: Actor, f: impl FnOnce() -> R) -> R {
    ACTOR.sync_scope(Arc::new(actor), f)
}

/// The actor in scope, if any.
pub fn current_actor() -> Option<Arc<Actor>> {
    ACTOR.try_with(Clone::clone).ok()
}
