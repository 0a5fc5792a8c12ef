//! The proof that one call was approved, and running its body.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use subtle::ConstantTimeEq;

use super::GateInner;
use super::pending::Pending;
use super::request::ApprovalRequest;
use crate::error::ApprovalError;
use approval_audit::CanonicalJson;
use approval_audit::{Event, Outcome};

/// Proof that one call was approved, for exactly its arguments; only the
/// gate makes one ([`Gate::approve`](super::Gate::approve),
/// [`Ticket::decision`](super::Ticket::decision)). It runs nothing:
/// [`confirm_args`](Approval::confirm_args) turns it into a [`Confirmed`]
/// once the arguments are checked again, and only that runs the body.
#[derive(Debug)]
#[must_use = "an approval does nothing until its body is executed"]
pub struct Approval {
    gate: Arc<GateInner>,
    /// The settled request (its arguments, policy and binding): two
    /// pointers, as small as the waiting call's future can hold.
    pending: Arc<Pending>,
}

impl Approval {
    pub(crate) fn new(gate: Arc<GateInner>, pending: Arc<Pending>) -> Self {
        Self { gate, pending }
    }

    /// The approved request.
    pub fn request(&self) -> &ApprovalRequest {
        &self.pending.request
    }

    /// The gate that approved it.
    pub(crate) fn gate(&self) -> super::Gate {
        super::Gate {
            inner: self.gate.clone(),
        }
    }

    /// Checks that `args` (unredacted, as when the call was made) still bind
    /// to what was approved, and gives the proof that runs the body; if they
    /// changed while waiting, records the request as cancelled and refuses.
    pub async fn confirm_args(self, args: &CanonicalJson) -> Result<Confirmed, ApprovalError> {
        // Without redactions the binding is a MAC of the recorded arguments:
        // the same bytes bind the same, with no second MAC to compute.
        let request = self.request();
        let unchanged = if self.pending.binds_recorded && args.as_str() == request.args.as_str() {
            true
        } else {
            let writer = self.gate.sink.chain_writer();
            let binding = writer.binding(&request.action, args);
            bool::from(binding.ct_eq(&request.binding))
        };
        if unchanged {
            return Ok(Confirmed { approval: self });
        }
        tracing::warn!(request_id = %request.id, "arguments changed while waiting; not run");
        self.not_run("arguments changed while waiting").await?;
        Err(ApprovalError::ArgumentsChanged)
    }

    /// Records that the approved body will not run (`cancelled` after
    /// `approved`: a restart reads it as ended, not `unknown`).
    pub(crate) fn not_run<'a>(
        &'a self,
        why: &str,
    ) -> impl Future<Output = Result<(), ApprovalError>> + Send + use<'a> {
        // The sink's boxed future itself, as `Confirmed::record` does.
        self.gate
            .sink
            .append_event(Event::Cancelled {
                request_id: self.request().id.clone(),
                why: why.into(),
            })
            .map(|written| written.map(drop).map_err(ApprovalError::from))
    }
}

/// Proof that an approved call's arguments, checked again just before the
/// body runs, still bind to what was approved: made only by
/// [`Approval::confirm_args`], and used up by [`execute`](Self::execute),
/// the one way to run a gated body.
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use approval_core::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let writer = Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &WriterSecret::generate().unwrap()));
/// let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
///     .approver("mock", Arc::new(MockApprover::approve_all("ci")))
///     .policy(Policy::new("data-export", ["mock"], Duration::from_secs(5)).approvers(["mock:ci"]))
///     .build()?;
/// let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "users"}))?;
/// let approval = gate.approve(Call::new("crm::export", "data-export", args.clone())).await?;
/// let rows = approval
///     .confirm_args(&args)
///     .await?
///     .execute(async { Ok::<_, ApprovalError>(5000) })
///     .await?;
/// assert_eq!(rows, 5000);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a confirmed approval does nothing until its body is executed"]
pub struct Confirmed {
    approval: Approval,
}

impl Confirmed {
    /// The approved request.
    pub fn request(&self) -> &ApprovalRequest {
        self.approval.request()
    }

    /// Runs the approved body and records how it ended (`executed`: `ok`,
    /// `error`, or `panicked`, after which the panic goes on).
    pub fn execute<T, E, F>(self, body: F) -> impl Future<Output = Result<T, E>>
    where
        F: Future<Output = Result<T, E>>,
        E: From<ApprovalError> + std::fmt::Display,
    {
        // Not an `async fn`, which would keep `self` twice and a slot for
        // the body beside its box: the waiting call's future reserves room
        // for this one.
        let body = CatchUnwind(Box::pin(body));
        async move {
            if self.request().policy.credential.is_some() {
                // Boxed: the misuse's future is not carried by every call.
                Box::pin(self.refuse_without_credential()).await?;
            }
            let result = body.await;
            // Decided before the write: the future must not hold the panic
            // payload (which is not `Sync`) across an await.
            let (outcome, error) = self.outcome_of(&result);
            self.record(outcome, error).await?;
            match result {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    /// The gate that approved it.
    pub(crate) fn gate_inner(&self) -> &Arc<GateInner> {
        &self.approval.gate
    }

    /// Records that the body will not run.
    pub(crate) fn not_run<'a>(
        &'a self,
        why: &str,
    ) -> impl Future<Output = Result<(), ApprovalError>> + Send + use<'a> {
        self.approval.not_run(why)
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
                self.approval
                    .pending
                    .entry
                    .policy
                    .record_error_text
                    .then(|| e.to_string()),
            ),
            Err(_) => (Outcome::Panicked, None),
        }
    }

    /// Records `executed`.
    pub(crate) fn record(
        &self,
        outcome: Outcome,
        error: Option<String>,
    ) -> impl Future<Output = Result<(), ApprovalError>> + Send + '_ {
        let request = self.request();
        tracing::info!(request_id = %request.id, outcome = outcome.as_str(), "body ran");
        // The sink's future is boxed already: holding it alone, not an
        // `async` block's copies of it, keeps the waiting call small.
        self.approval
            .gate
            .sink
            .append_event(Event::Executed {
                request_id: request.id.clone(),
                outcome,
                error,
            })
            .map(|written| written.map(drop).map_err(ApprovalError::from))
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
