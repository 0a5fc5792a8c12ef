//! The extension point for channels: deliver a request, report votes, hear
//! the outcome.

use std::fmt;
use std::sync::{Arc, Weak};

use async_trait::async_trait;

use super::GateInner;
use super::notice::Notice;
use super::request::{ApprovalRequest, Ballot, BallotOutcome};
use crate::error::{ApprovalError, ApproverError};
use approval_audit::RejectReason;

/// A channel through which people approve or deny requests: Slack, Teams,
/// an HTTP API, a terminal, a ticket system.
///
/// `deliver` shows the request to reviewers and returns; votes come back at
/// any time, from any task, through [`Ballots::cast`]. The gate, not the
/// approver, checks every vote (eligible, not the requester, bound to this
/// request and binding, not a repeat) and records it.
#[async_trait]
pub trait Approver: Send + Sync + fmt::Debug {
    /// Hears, once the gate is built, where its votes go: a channel that
    /// receives votes on its own (an endpoint, a socket) can take them from
    /// the first moment, before it delivered anything (a click on a message
    /// a previous run left is then refused and recorded, not lost). The
    /// same `Ballots` come with every [`deliver`](Self::deliver). By
    /// default, nothing.
    ///
    /// An approver serves one gate: one that keeps its ballots refuses
    /// another gate's ([`GateBallots`] does both), and that gate's
    /// [`build`](super::GateBuilder::build) then fails with
    /// [`ConfigError::Approver`](super::ConfigError::Approver).
    fn attach(&self, _ballots: Ballots) -> Result<(), ApproverError> {
        Ok(())
    }

    /// Shows `request` to reviewers. An error means it could not be
    /// delivered; the call then fails closed.
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError>;

    /// Hears what happened after the fact (see [`Notice`]): a vote that
    /// did not settle the request yet, how it ended, what a restart
    /// closed. By default, nothing.
    ///
    /// It runs on the gate's outbox task for this approver, one notice at a
    /// time in the order they happened, never on a caller's path: it may
    /// make network calls. An error is retried with backoff (see
    /// [`GateBuilder::notice_retry`](super::GateBuilder::notice_retry)) and
    /// each failure is a `tracing` event; the request's outcome, already
    /// recorded, does not change.
    async fn notify(&self, _notice: &Notice) -> Result<(), ApproverError> {
        Ok(())
    }

    /// Whether [`notify`](Self::notify) is worth calling. An approver that
    /// hears nothing says `false`, and the gate keeps no outbox for it
    /// (no task, no queued notice per request). By default, `true`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use approval_core::{ApprovalRequest, Approver, ApproverError, Ballots};
    ///
    /// /// Hands requests to a queue; hears nothing after.
    /// #[derive(Debug)]
    /// struct Queue;
    ///
    /// #[async_trait::async_trait]
    /// impl Approver for Queue {
    ///     async fn deliver(&self, _: Arc<ApprovalRequest>, _: Ballots) -> Result<(), ApproverError> {
    ///         Ok(())
    ///     }
    ///     fn hears_notices(&self) -> bool {
    ///         false
    ///     }
    /// }
    /// assert!(!Queue.hears_notices());
    /// ```
    fn hears_notices(&self) -> bool {
        true
    }
}

/// Where a channel keeps the ballots of the one gate it serves: the first
/// gate's are kept, and another gate's are refused (its votes would be
/// cast into the wrong gate).
///
/// ```
/// use std::sync::Arc;
/// use approval_core::{ChainWriter, Gate, GateBallots, KeyId, MemorySink, WriterSecret};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let gate = || -> Result<Gate, Box<dyn std::error::Error>> {
///     let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
///     Ok(Gate::builder(Arc::new(MemorySink::new(writer))).build()?)
/// };
/// let (first, second) = (gate()?, gate()?);
/// let kept = GateBallots::default();
/// assert!(kept.get().is_none());
/// kept.attach(first.ballots())?;
/// kept.attach(first.ballots())?; // the same gate again: kept
/// assert!(kept.attach(second.ballots()).is_err());
/// assert!(kept.get().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct GateBallots(std::sync::Mutex<Option<Ballots>>);

impl GateBallots {
    /// Keeps `ballots` unless another gate's are kept: then refused.
    pub fn attach(&self, ballots: Ballots) -> Result<(), ApproverError> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*kept {
            // A gate that is gone (its build failed, or it was dropped)
            // holds nothing: the new one takes its place.
            Some(held) if held.gate.strong_count() == 0 => {
                *kept = Some(ballots);
                Ok(())
            }
            Some(held) if !Weak::ptr_eq(&held.gate, &ballots.gate) => Err(ApproverError::Refused(
                "this approver already serves another gate; build one approver per gate".into(),
            )),
            // One route per approver: its ballots are stamped with it, so a
            // second route's votes would be refused as `wrong_route`.
            Some(held) if held.route != ballots.route => Err(ApproverError::Refused(
                "this approver already serves another route of this gate; register one approver per route".into(),
            )),
            Some(_) => Ok(()),
            None => {
                *kept = Some(ballots);
                Ok(())
            }
        }
    }

    /// The ballots kept, if a gate was attached.
    pub fn get(&self) -> Option<Ballots> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Where an approver's channel reports votes.
#[derive(Debug, Clone)]
pub struct Ballots {
    pub(super) gate: Weak<GateInner>,
    /// The route these ballots come through (stamped on each), or `None`
    /// for the gate's own handle.
    pub(super) route: Option<Arc<str>>,
}

impl Ballots {
    /// Hands a vote to the gate, which checks it, records it durably as
    /// `reviewed` or `rejected_vote`, and settles the request when the
    /// policy's rule is met.
    pub async fn cast(&self, ballot: Ballot) -> Result<BallotOutcome, ApprovalError> {
        let gate = self.gate.upgrade().ok_or(ApprovalError::GateClosed)?;
        let ballot = self.stamp(ballot);
        // Boxed, so a channel's future that casts stays small.
        Box::pin(gate.cast(ballot)).await
    }

    /// The request `request_id` as the gate holds it now (see
    /// [`Gate::status`](super::Gate::status)): what a channel shows, rather
    /// than a copy of its own. `None` for an unknown request or a gate that
    /// is gone.
    pub fn status(&self, request_id: &str) -> Option<super::RequestView> {
        let gate = self.gate.upgrade()?;
        let pending = gate.table.find(request_id)?;
        Some(gate.view(&pending))
    }

    /// Whether `identity` (a channel identity, `teams:<id>`, `api:alice`)
    /// is among the reviewers who may vote on `request` through this
    /// channel: its policy names them or a group of theirs, they are not the
    /// requester, and the policy routes the request here. The votes so far
    /// and the request's state do not matter: this is who a channel shows
    /// a request to. `false` once the gate is gone.
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use approval_core::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let writer = Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &WriterSecret::generate().unwrap()));
    /// let mock = Arc::new(MockApprover::silent("ci"));
    /// let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
    ///     .approver("api", mock.clone())
    ///     .policy(Policy::new("data-export", ["api"], Duration::from_secs(60)).approvers(["alice"]))
    ///     .directory(Directory::new().person("alice", ["api:alice"]).person("eve", ["api:eve"]))
    ///     .build()
    ///     .unwrap();
    /// # let call = Call::new("crm::export", "data-export", CanonicalJson::from_serialize(&serde_json::json!({})).unwrap());
    /// let ticket = gate.submit(call).await.unwrap();
    /// # while mock.requests().is_empty() { tokio::task::yield_now().await; }
    /// let (request, ballots) = (mock.requests()[0].clone(), gate.ballots());
    /// assert!(ballots.may_vote(&request, "api:alice"));
    /// assert!(!ballots.may_vote(&request, "api:eve"));
    /// # drop(ticket);
    /// # }
    /// ```
    pub fn may_vote(&self, request: &super::ApprovalRequest, identity: &str) -> bool {
        self.gate
            .upgrade()
            .is_some_and(|gate| gate.may_vote(request, self.route.as_deref(), identity))
    }

    /// Hands the gate a vote another process took and forwarded here (see
    /// [`Coordinator`](super::Coordinator)): checked and recorded like any
    /// other, but never forwarded again.
    pub async fn cast_forwarded(&self, ballot: Ballot) -> Result<BallotOutcome, ApprovalError> {
        let gate = self.gate.upgrade().ok_or(ApprovalError::GateClosed)?;
        let ballot = self.stamp(ballot);
        Box::pin(gate.cast_here_or_forward(ballot, false)).await
    }

    /// Revokes the grant `grant_id` for `identity` through this channel
    /// (see [`Gate::revoke_grant`](super::Gate::revoke_grant)): refused
    /// when the grant's policy does not route to this channel.
    pub async fn revoke_grant(
        &self,
        grant_id: &str,
        identity: &str,
        channel: &str,
    ) -> Result<super::GrantView, ApprovalError> {
        let gate = self.gate.upgrade().ok_or(ApprovalError::GateClosed)?;
        Box::pin(gate.revoke_grant(grant_id, identity, channel, self.route.as_deref())).await
    }

    /// The grants the gate holds that can still cover a call.
    pub fn grants(&self) -> Vec<super::GrantView> {
        self.gate
            .upgrade()
            .map(|gate| gate.grants())
            .unwrap_or_default()
    }

    fn stamp(&self, mut ballot: Ballot) -> Ballot {
        if let Some(route) = &self.route {
            ballot.route = Some(route.clone());
        }
        ballot
    }

    /// Reports a vote the channel refused before it could trust what it
    /// says (`why`: [`BadSignature`](RejectReason::BadSignature) or
    /// [`Replayed`](RejectReason::Replayed)) and that names `request_id`.
    /// Nothing is written to the log (anyone who can reach a listener
    /// could fill it): the gate counts it
    /// ([`Gate::refusal_counts`](super::Gate::refusal_counts)) and emits a
    /// `tracing` warning.
    pub fn refuse(&self, request_id: &str, channel: &str, why: RejectReason) {
        match self.gate.upgrade() {
            Some(gate) => gate.refuse_unauthenticated(request_id, channel, why),
            None => tracing::warn!(
                channel,
                why = why.as_str(),
                "unauthenticated vote refused after the gate closed"
            ),
        }
    }
}
