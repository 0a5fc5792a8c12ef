//! The gate: every gated call asks, waits for people to decide through
//! verified channels, and runs only when approved, with each step recorded
//! on the audit chain first.
//!
//! One concern a module: [`builder`] checks the setup; [`submit`] records
//! and delivers a request; [`table`] holds each request until it ends (and
//! [`deadline`] ends it on time); [`ballot_box`] checks and counts votes;
//! [`approval`] is the proof that runs a body; [`outbox`] tells approvers
//! what happened ([`notice`]), off the caller's path.

mod actor;
mod ambient;
mod approval;
mod approver;
mod background;
mod ballot_box;
mod broker;
mod builder;
mod call;
mod conditions;
mod coordinator;
mod credential;
mod deadline;
mod deferred;
mod directory;
mod grant;
mod hours;
mod limits;
#[cfg(any(test, feature = "mock"))]
mod mock;
mod notice;
mod outbox;
mod pending;
mod policy;
mod policy_file;
mod recover;
mod request;
mod submit;
mod table;
mod terminal;

#[cfg(test)]
mod conditions_tests;
#[cfg(test)]
mod credential_tests;
#[cfg(test)]
mod grant_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::Instrument;

pub use actor::{current_actor, with_actor, with_actor_sync};
pub(crate) use ambient::ambient_gate;
pub use approval::{Approval, Confirmed};
pub use approver::{Approver, Ballots, GateBallots};
pub use ballot_box::RefusalCounts;
#[cfg(any(test, feature = "mock"))]
pub use broker::MockBroker;
pub use broker::{Credential, CredentialBroker, CredentialHandle, MintRequest};
pub use builder::{ConfigError, GateBuilder};
pub use call::Call;
pub use conditions::{ConditionError, Conditions, Facts, Rule};
pub use coordinator::{Coordinator, Forwarded, Settlement};
pub use directory::{Directory, normal_identity};
pub use grant::GrantView;
pub use hours::{AttendedHours, HoursError};
#[cfg(any(test, feature = "mock"))]
pub use mock::{MockApprover, ScriptedMock};
pub use notice::{Notice, Recovery};
pub use policy::{
    CredentialPolicy, DEFAULT_MAX_PENDING_PER_ACTOR, GrantPolicy, Policy, Unreachable,
};
pub use policy_file::PolicyFile;
pub use request::{ApprovalRequest, Ballot, BallotOutcome, Decision, EarlierDecision};
pub use submit::Ticket;
pub use table::{RequestView, VoteView};
pub use terminal::TerminalApprover;

use crate::error::ApprovalError;
use approval_audit::AuditSink;
use approval_audit::CanonicalJson;
use approval_audit::Clock;
use background::Background;
use deadline::Deadlines;
use outbox::Outbox;
use pending::Pending;
use policy::Policies;
use table::Table;

/// Puts a human in front of each gated call.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use approval_core::{
///     Actor, Approver, ApproverError, ApprovalRequest, Ballot, Ballots, CanonicalJson, Call,
///     ChainWriter, Directory, Gate, KeyId, MemorySink, Policy, Vote, WriterSecret, with_actor,
/// };
///
/// /// Approves every request as "ci-bot"; a stand-in for a real channel.
/// #[derive(Debug)]
/// struct AutoApprove;
///
/// #[async_trait::async_trait]
/// impl Approver for AutoApprove {
///     async fn deliver(&self, request: Arc<ApprovalRequest>, ballots: Ballots) -> Result<(), ApproverError> {
///         tokio::spawn(async move {
///             let vote = Ballot::new(&request, "custom:ci-bot", "custom", Vote::Approve);
///             if let Err(e) = ballots.cast(vote).await {
///                 eprintln!("vote not taken: {e}");
///             }
///         });
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
/// let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
///     .approver("bot", Arc::new(AutoApprove))
///     .policy(Policy::new("export", ["bot"], Duration::from_secs(60)).approvers(["custom:ci-bot"]))
///     .directory(Directory::new())
///     .build()?;
/// let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "users"}))?;
/// let rows = with_actor(Actor::new("agent-7"), gate.run(
///     Call::new("crm::export", "export", args),
///     || Ok(None),
///     async { Ok::<_, approval_core::ApprovalError>(42) },
/// ))
/// .await?;
/// assert_eq!(rows, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

#[derive(Debug)]
pub(crate) struct GateInner {
    sink: Arc<dyn AuditSink>,
    approvers: HashMap<String, Arc<dyn Approver>>,
    brokers: HashMap<String, Arc<dyn broker::CredentialBroker>>,
    policies: Policies,
    directory: Directory,
    clock: Arc<dyn Clock>,
    recovery_margin: std::time::Duration,
    coordinator: Option<Arc<dyn Coordinator>>,
    table: Table,
    deferred: deferred::Deferred,
    per_actor: limits::Counts,
    deadlines: Arc<Deadlines<Pending>>,
    /// When open requests' reviewers are reminded (policies that say so).
    reminders: Arc<Deadlines<Pending>>,
    /// When open requests are escalated (policies that say so).
    escalations: Arc<Deadlines<Pending>>,
    /// Each route's notices, by route name.
    outboxes: HashMap<String, Outbox>,
    background: Background,
    /// Set by [`Gate::shutdown`]: no new requests.
    closing: AtomicBool,
    /// Votes refused without a record: see [`RefusalCounts`].
    refusals: ballot_box::Refusals,
    /// Grants approvals made, while they can cover a call.
    grants: grant::Grants,
}

impl GateInner {
    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

impl Drop for GateInner {
    fn drop(&mut self) {
        self.deadlines.close();
        self.reminders.close();
        self.escalations.close();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; if something did, the data
    // is still consistent (every update is a single assignment).
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    /// HMAC-SHA256 of `data` under the audit writer's digest key.
    pub(crate) fn digest(&self, data: &[u8]) -> [u8; 32] {
        self.inner.sink.chain_writer().digest(data)
    }

    /// Checks that every gated function linked into this program names a
    /// policy this gate has: call it at start-up, so a missing policy is
    /// reported before any call is made (each call would fail closed).
    pub fn check_registry(&self) -> Result<(), ConfigError> {
        let functions = crate::registry::gated_functions();
        let missing: Vec<(String, String)> = functions
            .iter()
            .filter(|f| !self.inner.policies.contains_key(f.policy()))
            .map(|f| (f.action(), f.policy().to_owned()))
            .collect();
        if !missing.is_empty() {
            return Err(ConfigError::MissingPolicies { missing });
        }
        let mismatched: Vec<(String, String)> = functions
            .iter()
            .filter(|f| {
                self.inner
                    .policies
                    .get(f.policy())
                    .is_some_and(|entry| entry.policy.credential.is_some() != f.takes_credential())
            })
            .map(|f| (f.action(), f.policy().to_owned()))
            .collect();
        if mismatched.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::CredentialMismatch { mismatched })
        }
    }

    /// Where channels report votes.
    pub fn ballots(&self) -> Ballots {
        Ballots {
            gate: Arc::downgrade(&self.inner),
            route: None,
        }
    }

    /// Where the approver registered as `route` reports votes: each is
    /// stamped with the route, and counts only on requests routed there.
    pub(crate) fn ballots_for(&self, route: &str) -> Ballots {
        Ballots {
            gate: Arc::downgrade(&self.inner),
            route: Some(route.into()),
        }
    }

    /// Hands a vote to the gate; see [`Ballots::cast`].
    pub async fn cast(&self, ballot: Ballot) -> Result<BallotOutcome, ApprovalError> {
        self.inner.cast(ballot).await
    }

    /// Asks for approval of `call`, waits for the decision, and runs `body`
    /// only if approved. `rebind` recomputes the unredacted arguments just
    /// before the body runs (`Ok(None)` when they cannot change); if they
    /// differ from what was approved, the body does not run.
    ///
    /// Every ending but the body's own result is an [`ApprovalError`],
    /// converted into the body's error type.
    pub async fn run<T, E, F>(
        &self,
        call: Call,
        rebind: impl FnOnce() -> Result<Option<CanonicalJson>, ApprovalError>,
        body: F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<ApprovalError> + std::fmt::Display,
    {
        // Owned arguments cannot change while waiting; `rebind` recomputes
        // those that can.
        let unchanged = call.binding_args().clone();
        let approval = self.approve(call).await?;
        let args = rebind()?.unwrap_or(unchanged);
        approval.confirm_args(&args).await?.execute(body).await
    }

    /// Asks for approval of `call` and waits for the decision: [`submit`]
    /// then [`Ticket::decision`]. The [`Approval`] it returns is the only
    /// way to run a gated body. Dropping the future cancels the request.
    ///
    /// The request is built (policy, actor, binding) when this is called;
    /// nothing is recorded or delivered until the future is polled.
    ///
    /// [`submit`]: Gate::submit
    pub fn approve(
        &self,
        call: Call,
    ) -> impl Future<Output = Result<Approval, ApprovalError>> + use<> {
        // Built outside the waiting future, so it holds neither the call nor
        // the actor while it waits (an `async fn` keeps its arguments for
        // its whole life); the rare error is boxed for the same reason.
        // Opening (recording, delivering) runs boxed: its state is freed
        // once the request is open, and what stays while it waits is only
        // the wait's.
        let prepared = self.prepare(call, true).map_err(Box::new);
        let span = submit::Prepared::span(&prepared);
        let gate = self.clone();
        let opening = Box::pin(async move { gate.open(prepared, false).await });
        async move {
            let ticket = opening.await?;
            ticket.decision().await
        }
        .instrument(span)
    }

    /// Submits `call` for approval and returns once it is recorded
    /// (`requested`), on the gate's table and timer, and delivered to every
    /// route of its policy (all at once). Wait for the decision with the
    /// [`Ticket`]; dropping it cancels the request, and
    /// [`Ticket::detach`] leaves it open.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use approval_core::*;
    /// # /// Shows requests somewhere people vote later.
    /// # #[derive(Debug)]
    /// # struct Queue;
    /// # #[async_trait::async_trait]
    /// # impl Approver for Queue {
    /// #     async fn deliver(&self, _: Arc<ApprovalRequest>, _: Ballots) -> Result<(), ApproverError> {
    /// #         Ok(())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
    /// # let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
    /// #     .approver("queue", Arc::new(Queue))
    /// #     .policy(Policy::new("export", ["queue"], Duration::from_secs(60)).approvers(["alice"]))
    /// #     .build()?;
    /// let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "users"}))?;
    /// let ticket = gate.submit(Call::new("crm::export", "export", args)).await?;
    /// let view = gate.status(ticket.request_id()).expect("on the table");
    /// assert!(view.is_open());
    /// assert_eq!(view.may_vote, ["alice"]);
    /// // Nobody answers here: give up, which records `cancelled`.
    /// let id = ticket.request_id().to_owned();
    /// gate.cancel(&id, "example over").await?;
    /// assert!(matches!(ticket.decision().await, Err(ApprovalError::Cancelled { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub fn submit(&self, call: Call) -> impl Future<Output = Result<Ticket, ApprovalError>> {
        let gate = self.clone();
        // Prepared when first polled, so the actor is the one in scope
        // where the future runs (`with_actor(a, gate.submit(call))`).
        async move {
            let prepared = gate.prepare(call, true).map_err(Box::new);
            let span = submit::Prepared::span(&prepared);
            gate.open(prepared, false).instrument(span).await
        }
    }

    /// Waits for `ticket`'s decision; the same as [`Ticket::decision`].
    pub async fn wait(&self, ticket: Ticket) -> Result<Approval, ApprovalError> {
        ticket.decision().await
    }

    /// The request `request_id` as the gate holds it (open, or settled
    /// lately: the last 10,000 are kept), or `None`.
    pub fn status(&self, request_id: &str) -> Option<RequestView> {
        let pending = self.inner.table.find(request_id)?;
        Some(self.inner.view(&pending))
    }

    /// How many votes were refused without a record: unauthenticated
    /// ones (never recorded) and authenticated ones past a request's 32
    /// recorded refusals. A metric for operators: a rising count is
    /// someone probing a listener.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use approval_core::*;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
    /// let gate = Gate::builder(Arc::new(MemorySink::new(writer))).build()?;
    /// gate.ballots().refuse("req_1", "webhook", RejectReason::BadSignature);
    /// assert_eq!(gate.refusal_counts().unauthenticated, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn refusal_counts(&self) -> RefusalCounts {
        self.inner.refusals.counts()
    }

    /// The open requests, oldest first.
    pub fn open_requests(&self) -> Vec<RequestView> {
        let mut open: Vec<RequestView> = self
            .inner
            .table
            .all_open()
            .iter()
            .map(|p| self.inner.view(p))
            .collect();
        open.sort_by(|a, b| a.request.id.cmp(&b.request.id));
        open
    }

    /// Ends the open request `request_id` as `cancelled` (recorded with
    /// `why`), unless it was settled first; returns the decision that
    /// stands.
    pub async fn cancel(&self, request_id: &str, why: &str) -> Result<Decision, ApprovalError> {
        let pending =
            self.inner
                .table
                .find(request_id)
                .ok_or_else(|| ApprovalError::UnknownRequest {
                    request_id: request_id.to_owned(),
                })?;
        let decision = self
            .inner
            .finish(
                &pending,
                Decision::Cancelled {
                    why: why.to_owned(),
                },
            )
            .await?;
        Ok(Decision::clone(&decision))
    }

    /// The grants that can still cover a call (not spent, expired or
    /// revoked), as approvals with [`Ballot::granting`] made them.
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use approval_core::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let writer = Arc::new(ChainWriter::new(KeyId::new("k")?, &WriterSecret::generate()?));
    /// let desk = Arc::new(MockApprover::silent("desk"));
    /// let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
    ///     .approver("desk", desk.clone())
    ///     .policy(
    ///         Policy::new("data-export", ["desk"], Duration::from_secs(60))
    ///             .approvers(["desk:alice"])
    ///             .grants(5, Duration::from_secs(3600), ["table"]),
    ///     )
    ///     .build()?;
    /// let export = || {
    ///     let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "users"})).unwrap();
    ///     Call::new("crm::export", "data-export", args)
    /// };
    /// let agent = Actor::new("agent-7");
    /// let ticket = with_actor(agent.clone(), async { gate.submit(export()).await }).await?;
    /// # while desk.requests().is_empty() { tokio::task::yield_now().await; }
    /// let request = desk.requests()[0].clone();
    /// // Alice approves this export and up to two more of `users` within an hour.
    /// let terms = GrantTerms::new(2, Duration::from_secs(3600));
    /// gate.cast(Ballot::new(&request, "desk:alice", "desk", Vote::Approve).granting(terms)).await?;
    /// ticket.decision().await?;
    /// assert_eq!(gate.grants()[0].uses, 2);
    ///
    /// // The next export runs at once, its first use.
    /// let next = with_actor(agent, async { gate.approve(export()).await }).await?;
    /// assert_eq!(gate.grants()[0].used, 1);
    /// # drop(next);
    /// gate.revoke_grant(&request.id, "desk:alice", "cli").await?;
    /// assert!(gate.grants().is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn grants(&self) -> Vec<GrantView> {
        self.inner.grants()
    }

    /// Revokes the grant `grant_id` for `identity` (a qualified channel
    /// identity, `cli:alice`), recorded `grant_revoked` through `channel`:
    /// no later call is covered by it. They must be one who may approve
    /// under its policy, or its requester giving it up; a channel revokes
    /// through its route's [`Ballots::revoke_grant`] instead.
    pub async fn revoke_grant(
        &self,
        grant_id: &str,
        identity: &str,
        channel: &str,
    ) -> Result<GrantView, ApprovalError> {
        self.inner
            .revoke_grant(grant_id, identity, channel, None)
            .await
    }

    /// Waits until every approver has handled (delivered, or given up on
    /// after its retries) each notice posted so far.
    pub async fn drain_notices(&self) {
        futures_util::future::join_all(self.inner.outboxes.values().map(Outbox::drain)).await;
    }

    /// Shuts the gate down: refuses new requests (`GateClosed`), cancels
    /// the open ones that callers wait for (recorded `cancelled`; deferred
    /// ones stay open for the next run's [`recover`](Gate::recover)), and
    /// waits until every
    /// approver has heard what happened (the notice outboxes are drained).
    /// Records are durable when written, so the sink needs no sync after.
    pub async fn shutdown(&self) -> Result<(), ApprovalError> {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::Release);
        let mut first_error = None;
        for pending in inner.table.all_open() {
            // A deferred call's request outlives the process (reopened by
            // `recover`); a blocking caller's does not.
            if pending.is_deferred() {
                continue;
            }
            let why = Decision::Cancelled {
                why: "gate shut down".into(),
            };
            if let Err(error) = inner.finish(&pending, why).await {
                tracing::error!(request_id = %pending.request.id, %error, "could not record the cancellation at shutdown");
                first_error.get_or_insert(error);
            }
        }
        self.drain_notices().await;
        tracing::info!("gate shut down");
        first_error.map_or(Ok(()), Err)
    }
}

/// The `actor` recorded when none was in scope.
pub const NO_ACTOR: &str = "none";
