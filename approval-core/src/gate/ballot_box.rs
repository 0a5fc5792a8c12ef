//! The ballot box: every vote a channel reports is checked here (bound to
//! its request, eligible, not the requester, not a repeat), recorded, and
//! counted toward the policy's rule.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use subtle::ConstantTimeEq;

use super::directory::normal_form;
use super::notice::Notice;
use super::pending::{Accepted, Pending};
use super::policy::Policy;
use super::request::{ApprovalRequest, Ballot, BallotOutcome, Decision};
use super::{Forwarded, GateInner, lock};
use crate::error::ApprovalError;
use approval_audit::AuditError;
use approval_audit::{Event, GrantTerms, PendingRecord, RejectReason, Reviewer, Vote};

/// What [`GateInner::admit`] found a vote to be.
enum Admission {
    /// A new vote, to count, with the grant it makes (its terms under the
    /// policy's caps).
    Count(Option<GrantTerms>),
    /// The same person's same vote again.
    Redelivered,
}

/// How many refused votes of an open or lately settled request are
/// recorded; past that they are counted and traced, so a holder of a
/// channel's secret cannot grow the log without limit.
pub(crate) const RECORDED_REFUSALS_PER_REQUEST: u32 = 32;

/// Votes refused without a record, counted.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    unauthenticated: AtomicU64,
    over_budget: AtomicU64,
}

/// How many votes the gate refused without writing a record. See
/// [`Gate::refusal_counts`](super::Gate::refusal_counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RefusalCounts {
    /// Votes a channel refused before it could trust them (bad signature,
    /// stale or replayed): nothing in them is trusted, so they are never
    /// written to the log.
    pub unauthenticated: u64,
    /// Authenticated refusals beyond the number recorded per request
    /// (32).
    pub over_budget: u64,
}

impl Refusals {
    pub(crate) fn counts(&self) -> RefusalCounts {
        RefusalCounts {
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            over_budget: self.over_budget.load(Ordering::Relaxed),
        }
    }
}

/// At most 64 characters of text a stranger sent, for a trace line.
fn clipped(text: &str) -> &str {
    text.char_indices()
        .nth(64)
        .map_or(text, |(end, _)| &text[..end])
}

impl GateInner {
    /// Counts a vote a channel refused before it could trust it; writes
    /// nothing (anyone who can reach a listener could fill the log, and
    /// an fsync would tell known request ids from unknown ones by time).
    pub(crate) fn refuse_unauthenticated(
        &self,
        request_id: &str,
        channel: &str,
        why: RejectReason,
    ) {
        let count = self
            .refusals
            .unauthenticated
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        tracing::warn!(
            request_id = ?clipped(request_id),
            channel,
            why = why.as_str(),
            count,
            "unauthenticated vote refused"
        );
    }

    async fn reject(
        &self,
        ballot: &Ballot,
        reviewer: Option<Reviewer>,
        why: RejectReason,
    ) -> Result<BallotOutcome, ApprovalError> {
        tracing::info!(
            request_id = %ballot.request_id,
            channel = %ballot.channel,
            identity = %ballot.identity,
            why = why.as_str(),
            "vote refused"
        );
        if let Some(pending) = self.table.find(&ballot.request_id)
            && pending.refusals_recorded.fetch_add(1, Ordering::Relaxed)
                >= RECORDED_REFUSALS_PER_REQUEST
        {
            let count = self.refusals.over_budget.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                request_id = %ballot.request_id,
                channel = %ballot.channel,
                why = why.as_str(),
                count,
                "vote refused past the request's {RECORDED_REFUSALS_PER_REQUEST} recorded refusals; not recorded"
            );
            return Ok(BallotOutcome::Rejected(why));
        }
        self.sink
            .append_event(Event::RejectedVote {
                request_id: ballot.request_id.clone(),
                reviewer,
                channel: ballot.channel.clone(),
                why,
            })
            .await?;
        Ok(BallotOutcome::Rejected(why))
    }

    /// Whether `ballot` may count on `pending`: the checks core makes of
    /// every vote, in order. The caller holds the votes lock.
    fn admit(
        &self,
        pending: &Pending,
        ballot: &Ballot,
        person: Option<&str>,
        who: &str,
    ) -> Result<Admission, RejectReason> {
        let request = &pending.request;
        let policy = &pending.entry.policy;
        if lock(&pending.state).decision.is_some() {
            return Err(RejectReason::Settled);
        }
        if !bool::from(ballot.binding.ct_eq(&request.binding)) {
            return Err(RejectReason::WrongBinding);
        }
        self.eligibility(
            request,
            policy,
            pending.escalated(),
            ballot.route.as_deref(),
            &ballot.identity,
            person,
            who,
        )?;
        // A grant goes with an approval, within the policy's caps.
        let grant = match ballot.grant {
            None => None,
            Some(ask) => Some(
                ask.under(policy.grant.as_ref())
                    .filter(|_| ballot.vote == Vote::Approve)
                    .ok_or(RejectReason::GrantRefused)?,
            ),
        };
        let voter = normal_form(&ballot.identity);
        let state = lock(&pending.state);
        match state.votes.iter().find(|v| v.who == who) {
            None => Ok(Admission::Count(grant)),
            // A person's first vote is final; the same vote again is a
            // channel's redelivery, absorbed without a record.
            Some(v) if normal_form(&v.reviewer.id) == voter && v.vote == ballot.vote => {
                Ok(Admission::Redelivered)
            }
            Some(_) => Err(RejectReason::AlreadyVoted),
        }
    }

    /// Whether `identity` (whose person is `person`, voter key `who`) may
    /// vote on `request` through `route` by who they are, whatever the
    /// request's state: the route is one of the policy's, they are not the
    /// requester, and the policy names them or a group of theirs (once
    /// `escalated`, its escalation routes and groups count too).
    #[allow(clippy::too_many_arguments, reason = "the facts of one vote")]
    pub(crate) fn eligibility(
        &self,
        request: &ApprovalRequest,
        policy: &Policy,
        escalated: bool,
        route: Option<&str>,
        identity: &str,
        person: Option<&str>,
        who: &str,
    ) -> Result<(), RejectReason> {
        // A channel votes only on what was routed to it: a webhook's
        // shared secret does not reach a Teams-only request.
        if let Some(route) = route
            && !policy.routes_with(escalated).any(|r| **r == *route)
        {
            return Err(RejectReason::WrongRoute);
        }
        // Compared in normal form, each side resolved to its person: an
        // agent acting for `Alice` or `ALICE@corp.com` is alice's request.
        let voter = [normal_form(identity), normal_form(who)];
        let is_voter = |name: &str| voter.iter().any(|v| *v == name);
        if self
            .directory
            .requesters(request.actor.as_deref())
            .iter()
            .any(|r| is_voter(r))
        {
            return Err(RejectReason::SelfApproval);
        }
        let mut groups = policy.groups_with(escalated);
        let eligible = policy.approvers.iter().any(|a| is_voter(&normal_form(a)))
            || person.is_some_and(|p| groups.any(|g| self.directory.in_group(p, g)));
        if eligible {
            Ok(())
        } else {
            Err(RejectReason::NotEligible)
        }
    }

    /// Whether `identity` may vote on `request` through `route` by who they
    /// are (see [`eligibility`](Self::eligibility)).
    pub(crate) fn may_vote(
        &self,
        request: &ApprovalRequest,
        route: Option<&str>,
        identity: &str,
    ) -> bool {
        let person = self.directory.person_of(identity);
        let who = self.directory.voter_key(identity);
        let escalated = self
            .table
            .find(&request.id)
            .is_some_and(|pending| pending.escalated());
        self.eligibility(
            request,
            &request.policy,
            escalated,
            route,
            identity,
            person,
            &who,
        )
        .is_ok()
    }

    /// Records a vote refused before it could be read as one (a forged or
    /// stale signature), if it names a request this gate knows.
    pub(crate) async fn cast(&self, ballot: Ballot) -> Result<BallotOutcome, ApprovalError> {
        self.cast_here_or_forward(ballot, true).await
    }

    /// Casts `ballot`; a ballot for a request this process does not wait
    /// on goes to the coordinator when `may_forward` (never for a ballot
    /// that was itself forwarded here: it would go round).
    pub(crate) async fn cast_here_or_forward(
        &self,
        ballot: Ballot,
        may_forward: bool,
    ) -> Result<BallotOutcome, ApprovalError> {
        let person = self
            .directory
            .person_of(&ballot.identity)
            .map(str::to_owned);
        let mut reviewer = Reviewer::new(ballot.identity.clone());
        reviewer.person.clone_from(&person);
        reviewer.display.clone_from(&ballot.display);

        let Some(pending) = self.table.open(&ballot.request_id) else {
            let settled_here = self.table.settled_lately(&ballot.request_id);
            if !settled_here
                && may_forward
                && let Some(coordinator) = &self.coordinator
            {
                match Box::pin(coordinator.forward(&ballot))
                    .await
                    .map_err(ApprovalError::Coordination)?
                {
                    Forwarded::Answered(outcome) => return Ok(outcome),
                    // Nobody waits on it: refused here, recorded here.
                    Forwarded::NotWaiting(why) => {
                        return Box::pin(self.reject(&ballot, Some(reviewer), why)).await;
                    }
                }
            }
            let why = if settled_here {
                RejectReason::Settled
            } else {
                RejectReason::UnknownRequest
            };
            return Box::pin(self.reject(&ballot, Some(reviewer), why)).await;
        };
        let _votes = pending.votes_lock().lock().await;
        let request = &pending.request;
        let policy = &pending.entry.policy;
        // People, not identities: the requester may not approve in any
        // channel, whatever the policy says.
        let who = self.directory.voter_key(&ballot.identity);
        let grant = match self.admit(&pending, &ballot, person.as_deref(), &who) {
            Ok(Admission::Count(grant)) => grant,
            Ok(Admission::Redelivered) => return Ok(BallotOutcome::Absorbed),
            // Boxed: rare, and kept out of every vote's future.
            Err(why) => return Box::pin(self.reject(&ballot, Some(reviewer), why)).await,
        };
        let record = PendingRecord::reviewed(
            &request.id,
            &reviewer,
            ballot.vote,
            &ballot.channel,
            ballot.comment.as_deref(),
            grant,
        )
        .map_err(AuditError::from)?;
        // Counted now (this task holds the votes lock, so no other vote
        // sees it), taken back if it cannot be recorded.
        let reached = {
            let mut state = lock(&pending.state);
            let (vote, comment) = (ballot.vote, ballot.comment);
            state.votes.push(Accepted {
                who,
                channel: ballot.channel,
                vote,
                comment: comment.clone(),
                grant,
                reviewer,
            });
            decide(&state.votes, policy, vote, comment)
        };
        // Settled under the same lock as the vote, so a vote arriving on
        // another route cannot settle it differently in between.
        let written = match reached {
            Some(decision) => Box::pin(self.settle(&pending, decision, Some(record)))
                .await
                .map(|standing| Some(Decision::clone(&standing))),
            None => self
                .sink
                .append(vec![record])
                .await
                .map(|_| None)
                .map_err(Into::into),
        };
        match written {
            Ok(decision) => {
                if decision.is_none() {
                    self.tell_vote(&pending);
                }
                Ok(BallotOutcome::Counted { decision })
            }
            Err(e) => {
                lock(&pending.state).votes.pop();
                Err(e)
            }
        }
    }

    /// Tells every route of a request about the vote just recorded that
    /// did not settle it.
    fn tell_vote(&self, pending: &Arc<Pending>) {
        let Some((reviewer, vote, channel)) = lock(&pending.state)
            .votes
            .last()
            .map(|v| (v.reviewer.clone(), v.vote, v.channel.clone()))
        else {
            return;
        };
        tracing::info!(
            request_id = %pending.request.id,
            reviewer = %reviewer.id,
            channel = %channel,
            vote = vote.as_str(),
            "vote counted"
        );
        self.post_to_routes(
            pending,
            &Notice::Voted {
                request: pending.request.clone(),
                reviewer,
                vote,
            },
        );
    }
}

/// The policy's rule: any deny denies; enough approvals from different
/// people (through different channels, if the policy says) approve.
fn decide(
    votes: &[Accepted],
    policy: &Policy,
    last_vote: Vote,
    comment: Option<String>,
) -> Option<Decision> {
    if last_vote == Vote::Deny {
        // The deny is the last vote pushed.
        return votes.last().map(|last| Decision::Denied {
            reviewer: last.reviewer.clone(),
            comment,
        });
    }
    let approvals = || votes.iter().filter(|v| v.vote == Vote::Approve);
    let counted = if policy.distinct_channels {
        let mut channels: Vec<&str> = approvals().map(|v| v.channel.as_str()).collect();
        channels.sort_unstable();
        channels.dedup();
        channels.len()
    } else {
        approvals().count()
    };
    (counted >= usize::try_from(policy.required).unwrap_or(usize::MAX)).then(|| {
        Decision::Approved {
            reviewers: approvals().map(|v| v.reviewer.clone()).collect(),
        }
    })
}
