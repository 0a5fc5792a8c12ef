//! The proof that one call was approved, and running its body.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::GateInner;
use super::ballot_box::constant_time_eq;
use super::policy::PolicyEntry;
use super::request::ApprovalRequest;
use super::table::Pending;
use crate::canonical::CanonicalJson;
use crate::error::ApprovalError;
use crate::record::{Event, Outcome};

/// Proof that one call was approved, for exactly its arguments; only the
/// gate makes one ([`Gate::approve`](super::Gate::approve),
/// [`Ticket::decision`](super::Ticket::decision)), and
/// [`execute`](Approval::execute) uses it up.
#[derive(Debug)]
#[must_use = "an approval does nothing until its body is executed"]
pub struct Approval {
    gate: Arc<GateInner>,
    request: Arc<ApprovalRequest>,
    entry: Arc<PolicyEntry>,
    binds_recorded: bool,
}

impl Approval {
    pub(crate) fn new(gate: Arc<GateInner>, pending: &Pending) -> Self {
        Self {
            gate,
            request: pending.request.clone(),
            entry: pending.entry.clone(),
            binds_recorded: pending.binds_recorded,
        }
    }

    /// The approved request.
    pub fn request(&self) -> &ApprovalRequest {
        &self.request
    }

    /// Checks that `args` (unredacted, as when the call was made) still bind
    /// to what was approved; if they changed while waiting, records the
    /// request as cancelled and refuses.
    pub async fn confirm_args(&self, args: &CanonicalJson) -> Result<(), ApprovalError> {
        // Without redactions the binding is a MAC of the recorded arguments:
        // the same bytes bind the same, with no second MAC to compute.
        let unchanged = if self.binds_recorded && args.as_str() == self.request.args.as_str() {
            true
        } else {
            let writer = self.gate.sink.chain_writer();
            constant_time_eq(
                &writer.binding(&self.request.action, args),
                &self.request.binding,
            )
        };
        if unchanged {
            return Ok(());
        }
        tracing::warn!(request_id = %self.request.id, "arguments changed while waiting; not run");
        self.gate
            .sink
            .append_event(Event::Cancelled {
                request_id: self.request.id.clone(),
                why: "arguments changed while waiting".into(),
            })
            .await?;
        Err(ApprovalError::ArgumentsChanged)
    }

    /// Runs the approved body and records how it ended (`executed`: `ok`,
    /// `error`, or `panicked`, after which the panic goes on).
    pub async fn execute<T, E, F>(self, body: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<ApprovalError> + std::fmt::Display,
    {
        let result = CatchUnwind(Box::pin(body)).await;
        // Decided before the write: the future must not hold the panic
        // payload (which is not `Sync`) across an await.
        let (outcome, error) = self.outcome_of(&result);
        self.record(outcome, error).await?;
        match result {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// How a body's result is recorded (`Err` is a panic).
    pub(crate) fn outcome_of<T, E: std::fmt::Display>(
        &self,
        result: &Result<Result<T, E>, Box<dyn std::any::Any + Send>>,
    ) -> (Outcome, Option<String>) {
        match result {
            Ok(Ok(_)) => (Outcome::Ok, None),
            Ok(Err(e)) => (
                Outcome::Error,
                self.entry.policy.record_error_text.then(|| e.to_string()),
            ),
            Err(_) => (Outcome::Panicked, None),
        }
    }

    /// Records `executed`.
    pub(crate) async fn record(
        &self,
        outcome: Outcome,
        error: Option<String>,
    ) -> Result<(), ApprovalError> {
        tracing::info!(request_id = %self.request.id, outcome = outcome.as_str(), "body ran");
        self.gate
            .sink
            .append_event(Event::Executed {
                request_id: self.request.id.clone(),
                outcome,
                error,
            })
            .await?;
        Ok(())
    }
}

/// Runs a future, turning a panic inside it into an `Err` so it can be
/// recorded before it goes on.
pub(crate) struct CatchUnwind<F>(pub(crate) Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
