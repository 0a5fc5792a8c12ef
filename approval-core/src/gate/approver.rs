//! The extension point for channels: deliver a request, report votes, hear
//! the outcome.

use std::fmt;
use std::sync::{Arc, Weak};

use async_trait::async_trait;

use super::GateInner;
use super::recover::Recovery;
use super::request::{ApprovalRequest, Ballot, BallotOutcome, Decision};
use crate::ApprovalError;
use crate::record::{RejectReason, Reviewer, Vote};

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
    fn attach(&self, ballots: Ballots) {
        let _ = ballots;
    }

    /// Shows `request` to reviewers. An error means it could not be
    /// delivered; the call then fails closed.
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError>;

    /// Hears how a request ended, once, right after the outcome is
    /// recorded: to update a message, close a ticket. By default, nothing.
    ///
    /// It runs on the gate's path and must not block or wait: hand slow work
    /// (an HTTP call) to a task of the approver's own, on a runtime it owns
    /// or was built on. (A plain `fn`'s call may run on a runtime that ends
    /// when the call returns, so a task spawned on the current runtime
    /// here could be dropped unfinished.) A panic here is caught and
    /// reported by the panic hook; the call goes on.
    fn settled(&self, request: &Arc<ApprovalRequest>, decision: &Decision) {
        let _ = (request, decision);
    }

    /// Hears a vote the gate recorded that did not settle the request yet
    /// (a policy needing more approvals), from whichever channel it came:
    /// to show it beside the request. The vote that settles it comes with
    /// [`settled`](Self::settled). By default, nothing; the same rules as
    /// `settled` apply: do not block here.
    fn voted(&self, request: &Arc<ApprovalRequest>, reviewer: &Reviewer, vote: Vote) {
        let _ = (request, reviewer, vote);
    }

    /// Hears what [`Gate::recover`](super::Gate::recover) closed at
    /// start-up: requests a previous run left open, now `cancelled`, whose
    /// messages may still show live buttons. Called once per approver,
    /// after the records are written. By default, nothing. The same rules
    /// as [`settled`](Self::settled) apply: do not block here.
    fn recovered(&self, recovery: &Recovery) {
        let _ = recovery;
    }
}

/// Why an approver could not deliver a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApproverError {
    /// The channel could not be reached.
    #[error("channel unreachable: {0}")]
    Unreachable(String),
    /// The channel refused the request (bad credentials, unknown channel).
    #[error("channel refused the request: {0}")]
    Refused(String),
}

/// Where an approver's channel reports votes.
#[derive(Debug, Clone)]
pub struct Ballots {
    pub(super) gate: Weak<GateInner>,
}

impl Ballots {
    /// Hands a vote to the gate, which checks it, records it durably as
    /// `reviewed` or `rejected_vote`, and settles the request when the
    /// policy's rule is met.
    pub async fn cast(&self, ballot: Ballot) -> Result<BallotOutcome, ApprovalError> {
        let gate = self.gate.upgrade().ok_or(ApprovalError::GateClosed)?;
        // Boxed, so a channel's future that casts stays small.
        Box::pin(gate.cast(ballot)).await
    }

    /// Hands the gate a vote another process took and forwarded here (see
    /// [`Coordinator`](super::Coordinator)): checked and recorded like any
    /// other, but never forwarded again.
    pub async fn cast_forwarded(&self, ballot: Ballot) -> Result<BallotOutcome, ApprovalError> {
        let gate = self.gate.upgrade().ok_or(ApprovalError::GateClosed)?;
        Box::pin(gate.cast_here_or_forward(ballot, false)).await
    }

    /// Records, as `rejected_vote` with no reviewer, a vote the channel
    /// refused before it could trust what it says (`why`:
    /// [`BadSignature`](RejectReason::BadSignature) or
    /// [`Replayed`](RejectReason::Replayed)), if the request it names is
    /// one this gate knows (open or settled). Returns whether it was
    /// recorded; a request id nobody knows leaves nothing in the log, so
    /// strangers cannot fill it with names of their choosing.
    pub async fn refuse(
        &self,
        request_id: &str,
        channel: &str,
        why: RejectReason,
    ) -> Result<bool, ApprovalError> {
        let gate = self.gate.upgrade().ok_or(ApprovalError::GateClosed)?;
        Box::pin(gate.refuse(request_id, channel, why)).await
    }
}
