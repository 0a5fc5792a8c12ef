//! What the gate tells approvers after the fact: votes, endings, recovery.

use std::sync::Arc;

use super::request::{ApprovalRequest, Decision};
use approval_audit::{Reviewer, Vote};

/// Something an approver hears about after it happened, through
/// [`Approver::notify`](super::Approver::notify): to update a message,
/// close a ticket, take buttons down.
///
/// Each approver's notices run on an outbox task of its own, in the order
/// they happened, never on the caller's path; a failed `notify` is retried
/// with backoff. Later versions add kinds, so a
/// `match` needs a `_` arm.
///
/// ```
/// use approval_core::Notice;
///
/// fn describe(notice: &Notice) -> String {
///     match notice {
///         Notice::Voted { request, reviewer, .. } => format!("{} voted on {}", reviewer.id, request.id),
///         Notice::Settled { request, decision } => format!("{} ended: {decision:?}", request.id),
///         Notice::Recovered(recovery) => format!("{} closed at restart", recovery.cancelled.len()),
///         _ => "something else".to_owned(),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Notice {
    /// A vote the gate recorded that did not settle the request yet (a
    /// policy needing more approvals), from whichever channel it came: every
    /// route of the request hears it. The vote that settles a request comes
    /// with [`Settled`](Notice::Settled).
    Voted {
        /// The request voted on.
        request: Arc<ApprovalRequest>,
        /// Who voted, as recorded.
        reviewer: Reviewer,
        /// The vote.
        vote: Vote,
    },
    /// How a request ended, once, after the outcome was recorded: every
    /// route of the request hears it.
    Settled {
        /// The request.
        request: Arc<ApprovalRequest>,
        /// How it ended.
        decision: Arc<Decision>,
    },
    /// What [`Gate::recover`](super::Gate::recover) closed at start-up:
    /// requests a previous run left open, now `cancelled`, whose messages
    /// may still show live buttons. Every approver hears it once.
    Recovered(Arc<Recovery>),
    /// A request still open when its policy's reminder time came
    /// ([`Policy::remind_after`](super::Policy::remind_after)): every route
    /// of the request hears it once, to nudge who may still vote. Not a
    /// record: nothing about the request changed.
    Reminder {
        /// The request.
        request: Arc<ApprovalRequest>,
    },
    /// A request still open at its policy's escalation time
    /// ([`Policy::escalate_after`](super::Policy::escalate_after)), after its
    /// `escalated` record: delivered to `routes` as well, and `groups`'
    /// members may vote too. Every route of the request, old and new,
    /// hears it once.
    Escalated {
        /// The request.
        request: Arc<ApprovalRequest>,
        /// The routes it went to as well.
        routes: Vec<String>,
        /// The groups whose members may vote as well.
        groups: Vec<String>,
    },
    /// A call ran under the grant that `request`'s approval made, after
    /// its `grant_used` record: every route of that request hears it.
    GrantUsed {
        /// The request whose approval made the grant.
        request: Arc<ApprovalRequest>,
        /// The covered call's own request id.
        use_request_id: String,
        /// Which use it was, from 1.
        use_number: u32,
        /// How many uses the grant has.
        uses: u32,
    },
    /// The grant that `request`'s approval made was revoked, after its
    /// `grant_revoked` record: every route of that request hears it.
    GrantRevoked {
        /// The request whose approval made the grant.
        request: Arc<ApprovalRequest>,
        /// Who revoked it, where a person did.
        by: Option<Reviewer>,
    },
}

impl Notice {
    /// The request it is about, if one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Voted { request, .. }
            | Self::Settled { request, .. }
            | Self::Reminder { request }
            | Self::Escalated { request, .. }
            | Self::GrantUsed { request, .. }
            | Self::GrantRevoked { request, .. } => Some(&request.id),
            Self::Recovered(_) => None,
        }
    }

    /// A short name for logs: `voted`, `settled`, `recovered`, `reminder`,
    /// `escalated`, `grant_used`, `grant_revoked`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Voted { .. } => "voted",
            Self::Settled { .. } => "settled",
            Self::Recovered(_) => "recovered",
            Self::Reminder { .. } => "reminder",
            Self::Escalated { .. } => "escalated",
            Self::GrantUsed { .. } => "grant_used",
            Self::GrantRevoked { .. } => "grant_revoked",
        }
    }
}

/// What [`Gate::recover`](super::Gate::recover) found and closed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Requests that had no outcome, now `cancelled`.
    pub cancelled: Vec<String>,
    /// Approved requests whose body was not known to finish, now
    /// `executed` with outcome `unknown`.
    pub unknown: Vec<String>,
    /// Deferred requests still within their deadline, open again (with
    /// the votes recorded before the restart) and delivered anew.
    pub reopened: Vec<String>,
    /// Deferred requests whose deadline passed while the process was down,
    /// now `expired`.
    pub expired: Vec<String>,
    /// Credentials the previous run minted for a body and did not revoke
    /// (by id), now revoked and recorded `credential_revoked`.
    pub credentials_revoked: Vec<String>,
    /// Credentials found the same way that could not be revoked (their
    /// broker failed or is not registered; each is traced): they stop
    /// working at their expiry, and the next recover tries again.
    pub credentials_left: Vec<String>,
}
