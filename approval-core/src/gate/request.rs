//! What a reviewer is asked, what they answer, and how a request ends.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use super::policy::Policy;
use approval_audit::CanonicalJson;
use approval_audit::{Actor, GrantTerms, RejectReason, Reviewer, Vote};

/// One call waiting for approval, as every approver sees it. Facts the gate
/// derived (`action`, `policy`, `actor`, `binding`) are kept apart from text
/// the agent wrote (`args`, `resource`, `reason`), which channels must
/// escape for their medium.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApprovalRequest {
    /// Unique, time-sortable request id.
    pub id: String,
    /// The gated function's full path.
    pub action: Cow<'static, str>,
    /// The policy in force; its `required` is that of the rule that
    /// applies, if one does.
    pub policy: Arc<Policy>,
    /// The policy's rule that decided how many approvals the call needs,
    /// by its place in the policy file's `rules` (from 0), if one did.
    pub rule: Option<u32>,
    /// The arguments, skipped ones absent and redacted ones as digests.
    pub args: CanonicalJson,
    /// Names of parameters left out of `args`.
    pub skipped: Vec<String>,
    /// The keyed binding digest a vote must name.
    pub binding: [u8; 32],
    /// Who asks; `None` when no actor was in scope.
    pub actor: Option<Arc<Actor>>,
    /// The system acted on (agent text).
    pub resource: Option<String>,
    /// Why (agent text).
    pub reason: Option<String>,
    /// When the request expires.
    pub expires_at: SystemTime,
    /// How earlier requests for the same call (same binding) ended, oldest
    /// first: a resubmitted denied call shows its denial.
    pub earlier: Vec<EarlierDecision>,
}

/// How an earlier request for the same call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EarlierDecision {
    /// That request's id.
    pub request_id: String,
    /// How it ended.
    pub decision: Decision,
}

/// A reviewer's vote as a channel reports it, before the gate checks it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Ballot {
    /// The request voted on.
    pub request_id: String,
    /// The binding digest the reviewer was shown.
    pub binding: [u8; 32],
    /// The voter's channel identity, qualified: `slack:U123`.
    pub identity: String,
    /// The channel: `slack`, `teams`, `api`, `terminal`, `mock`, …
    pub channel: String,
    /// The vote.
    pub vote: Vote,
    /// The reviewer's comment.
    pub comment: Option<String>,
    /// A display name, where the channel gives one.
    pub display: Option<String>,
    /// With an approval: the grant the reviewer makes with it, this call
    /// and more like it (see [`GrantPolicy`](super::GrantPolicy)); set by
    /// [`granting`](Self::granting) or [`granting_widest`](Self::granting_widest).
    pub(crate) grant: Option<GrantAsk>,
    /// The route (registered approver) it came through: stamped by the
    /// [`Ballots`](super::Ballots) a route was handed, so a channel cannot
    /// vote on a request outside its policy's routes. `None` for a vote
    /// cast by code that holds the [`Gate`](super::Gate).
    pub(crate) route: Option<Arc<str>>,
}

impl Ballot {
    /// The route it came through, once a route's
    /// [`Ballots`](super::Ballots) stamped it.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The route it came through, for a ballot rebuilt elsewhere (a vote
    /// another process forwarded). A route's own
    /// [`Ballots`](super::Ballots) overwrites it with that route.
    #[must_use]
    pub fn through_route(mut self, route: impl Into<Arc<str>>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// A vote on `request` from `identity` through `channel`.
    pub fn new(
        request: &ApprovalRequest,
        identity: impl Into<String>,
        channel: impl Into<String>,
        vote: Vote,
    ) -> Self {
        Self {
            request_id: request.id.clone(),
            binding: request.binding,
            identity: identity.into(),
            channel: channel.into(),
            vote,
            comment: None,
            display: None,
            grant: None,
            route: None,
        }
    }

    /// A vote on the request `request_id`, naming the binding the reviewer
    /// was shown: what a channel endpoint builds from a callback.
    pub fn from_parts(
        request_id: impl Into<String>,
        binding: [u8; 32],
        identity: impl Into<String>,
        channel: impl Into<String>,
        vote: Vote,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            binding,
            identity: identity.into(),
            channel: channel.into(),
            vote,
            comment: None,
            display: None,
            grant: None,
            route: None,
        }
    }

    /// Adds a comment.
    #[must_use]
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// With an approval, grants this call and up to `terms.uses` more like
    /// it within `terms.within` (refused as `grant_refused` if its policy
    /// does not allow that much).
    #[must_use]
    pub fn granting(mut self, terms: GrantTerms) -> Self {
        self.grant = Some(GrantAsk::Terms(terms));
        self
    }

    /// With an approval, grants as much as the request's policy allows
    /// (its caps, [`GrantPolicy::widest`](super::GrantPolicy::widest)):
    /// what a channel's one "approve and grant" button asks. The gate
    /// reads the caps when it counts the vote; refused as `grant_refused`
    /// where the policy allows no grant.
    #[must_use]
    pub fn granting_widest(mut self) -> Self {
        self.grant = Some(GrantAsk::Widest);
        self
    }
}

/// The grant a ballot asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantAsk {
    /// These terms, if within the policy's caps.
    Terms(GrantTerms),
    /// The policy's caps.
    Widest,
}

impl GrantAsk {
    /// The terms granted under `caps` (the policy's), if it allows them.
    pub(crate) fn under(self, caps: Option<&super::GrantPolicy>) -> Option<GrantTerms> {
        let caps = caps?;
        match self {
            Self::Terms(terms) => caps.allows(&terms).then_some(terms),
            Self::Widest => Some(caps.widest()),
        }
    }
}

/// What the gate did with a ballot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BallotOutcome {
    /// Recorded as `reviewed`; `decision` is set if it settled the request.
    Counted {
        /// The outcome this vote reached, if any.
        decision: Option<Decision>,
    },
    /// The same person's same vote again (a channel's redelivery): absorbed,
    /// not counted, not recorded.
    Absorbed,
    /// Refused and recorded as `rejected_vote`.
    Rejected(RejectReason),
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// The policy's approvals were given.
    Approved {
        /// Whose votes settled it.
        reviewers: Vec<Reviewer>,
    },
    /// A reviewer denied it.
    Denied {
        /// Who denied.
        reviewer: Reviewer,
        /// Their comment, for the agent to read.
        comment: Option<String>,
    },
    /// Nobody decided in time.
    Expired,
    /// The caller gave up, or the gate shut down.
    Cancelled {
        /// Why.
        why: String,
    },
}

impl Decision {
    /// The word the audit log uses for it: `approved`, `denied`,
    /// `expired`, `cancelled`.
    ///
    /// ```
    /// assert_eq!(approval_core::Decision::Expired.outcome(), "expired");
    /// ```
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Approved { .. } => "approved",
            Self::Denied { .. } => "denied",
            Self::Expired => "expired",
            Self::Cancelled { .. } => "cancelled",
        }
    }
}

/// A new request id: 48 bits of milliseconds since 1970 and 80 random
/// bits, in Crockford base32 (26 characters), so ids sort by time and none
/// tells the next: the bits come from a CSPRNG seeded by the operating
/// system (`rand`'s thread generator, ChaCha12), fresh for each id.
pub(crate) fn new_request_id(now: SystemTime) -> Result<String, ring::error::Unspecified> {
    use rand::Rng as _;
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

    let mut random = rand::rng();
    let unique = (u128::from(random.next_u64()) << 16) | u128::from(random.next_u32() & 0xffff);
    let millis = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        & ((1 << 48) - 1);
    let value = u128::from(millis) << 80 | unique;
    Ok((0..26)
        .map(|i| char::from(ALPHABET[((value >> (5 * (25 - i))) & 31) as usize]))
        .collect())
}
