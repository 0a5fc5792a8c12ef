//! `#[requires_approval]` on every function shape: an approval runs the
//! body once, a denial never runs it.

mod blocking;
mod credential;
mod deferred;
mod registry;
mod shapes;
