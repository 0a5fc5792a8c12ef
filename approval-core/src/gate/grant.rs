//! Grants: an approval that covers up to N more calls like it within T
//! (same action, actor, policy and rule; the policy's pinned arguments
//! equal). The gate keeps them; each covered call is recorded
//! `grant_used`, numbered, after its grant's `granted` record, so a
//! verifier checks every use against its grant.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::pending::{Accepted, Pending};
use super::policy::PolicyEntry;
use super::request::{ApprovalRequest, Decision};
use super::submit::Ticket;
use super::{GateInner, lock};
use crate::Notice;
use crate::error::ApprovalError;
use approval_audit::{
    AuditError, CanonicalJson, Event, GrantTerms, PendingRecord, RejectReason, Reviewer, Vote,
};

/// A grant the gate holds.
#[derive(Debug)]
pub(crate) struct Grant {
    /// The approved request that made it; its id is the grant's.
    request: Arc<ApprovalRequest>,
    /// The policy digest it was made under: a changed policy covers nothing.
    digest: [u8; 32],
    /// The pinned arguments as the approved call's record has them.
    pinned: CanonicalJson,
    uses: u32,
    expires_at: SystemTime,
    reviewers: Vec<Reviewer>,
    state: Mutex<Uses>,
    /// Held while a use or the revocation is written, so uses are numbered
    /// in log order and none slips past a revocation.
    writing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Uses {
    used: u32,
    revoked: bool,
}

impl Grant {
    /// Whether, at `now` and with `uses` so far, it can cover a call.
    fn covers_at(&self, uses: &Uses, now: SystemTime) -> bool {
        !uses.revoked && uses.used < self.uses && now < self.expires_at
    }

    fn live(&self, now: SystemTime) -> bool {
        self.covers_at(&lock(&self.state), now)
    }

    fn view(&self) -> GrantView {
        let uses = lock(&self.state);
        GrantView {
            id: self.request.id.clone(),
            request: self.request.clone(),
            pinned: self.pinned.clone(),
            uses: self.uses,
            used: uses.used,
            expires_at: self.expires_at,
            revoked: uses.revoked,
            reviewers: self.reviewers.clone(),
        }
    }
}

/// A grant, as channels and the CLI list it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GrantView {
    /// The id of the request whose approval made it.
    pub id: String,
    /// That request: the action, policy, rule and actor it covers.
    pub request: Arc<ApprovalRequest>,
    /// The arguments a covered call must have equal, as recorded.
    pub pinned: CanonicalJson,
    /// How many more calls it covers in all.
    pub uses: u32,
    /// How many it has covered.
    pub used: u32,
    /// When it stops covering any call.
    pub expires_at: SystemTime,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Who made it.
    pub reviewers: Vec<Reviewer>,
}

/// The grants a gate holds: made by approvals, dropped once spent,
/// expired or revoked. They live in this process only (a restart forgets
/// them, so uses are lost, never gained).
#[derive(Debug, Default)]
pub(crate) struct Grants {
    held: Mutex<Vec<Arc<Grant>>>,
}

impl Grants {
    /// The grants held, those that can cover nothing at `now` dropped.
    fn live(&self, now: SystemTime) -> std::sync::MutexGuard<'_, Vec<Arc<Grant>>> {
        let mut held = lock(&self.held);
        held.retain(|g| g.live(now));
        held
    }

    fn find(&self, id: &str) -> Option<Arc<Grant>> {
        lock(&self.held)
            .iter()
            .find(|g| g.request.id == id)
            .cloned()
    }

    /// The live grants that could cover `request` under `entry`, dropping
    /// those that can cover nothing any more.
    fn candidates(
        &self,
        request: &ApprovalRequest,
        entry: &PolicyEntry,
        now: SystemTime,
    ) -> Vec<Arc<Grant>> {
        let held = self.live(now);
        if held.is_empty() {
            return Vec::new();
        }
        let Some(actor) = request.actor.as_deref() else {
            return Vec::new();
        };
        let mut found: Vec<Arc<Grant>> =
            held.iter()
                .filter(|g| {
                    let granted = &g.request;
                    g.digest == entry.digest
                        && granted.action == request.action
                        && granted.policy.name == entry.policy.name
                        && granted.rule == request.rule
                        && granted.actor.as_deref().is_some_and(|a| {
                            a.id == actor.id && a.on_behalf_of == actor.on_behalf_of
                        })
                })
                .cloned()
                .collect();
        drop(held);
        if found.is_empty() {
            return found;
        }
        let pinned_names = entry.policy.grant.as_ref().map_or(&[][..], |g| &g.pinned);
        match pinned(&request.args, pinned_names) {
            Some(values) => found.retain(|g| g.pinned == values),
            None => found.clear(),
        }
        found
    }
}

/// The `names` members of `args` (a canonical JSON object), as a canonical
/// JSON object; `None` when one is missing.
fn pinned(args: &CanonicalJson, names: &[String]) -> Option<CanonicalJson> {
    let mut all: Map<String, Value> = serde_json::from_str(args.as_str()).ok()?;
    let mut values = Map::new();
    for name in names {
        values.insert(name.clone(), all.remove(name)?);
    }
    CanonicalJson::from_value(&Value::Object(values)).ok()
}

/// What every approval that settled a request granted together: the
/// narrowest of their terms, if each asked for a grant.
pub(crate) fn agreed(votes: &[Accepted]) -> Option<GrantTerms> {
    votes
        .iter()
        .filter(|v| v.vote == Vote::Approve)
        .map(|v| v.grant)
        .reduce(|a, b| a.zip(b).map(|(a, b)| a.narrowest(b)))
        .flatten()
}

impl GateInner {
    /// The grant `pending`'s `decision` makes, with its `granted` record:
    /// an approval under a policy allowing grants, where every approval
    /// asked for one and the call can be covered (it has an actor and each
    /// pinned argument).
    pub(crate) fn grant_for(
        &self,
        pending: &Pending,
        decision: &Decision,
    ) -> Result<Option<(Box<Grant>, PendingRecord)>, ApprovalError> {
        let request = &pending.request;
        let (Some(caps), Decision::Approved { reviewers }) =
            (pending.entry.policy.grant.as_ref(), decision)
        else {
            return Ok(None);
        };
        let Some(terms) = agreed(&lock(&pending.state).votes) else {
            return Ok(None);
        };
        let Some(actor) = request.actor.as_deref() else {
            tracing::warn!(request_id = %request.id, "approved without the grant asked for: the call has no actor to cover");
            return Ok(None);
        };
        let Some(values) = pinned(&request.args, &caps.pinned) else {
            tracing::warn!(request_id = %request.id, "approved without the grant asked for: an argument its policy pins is not on record");
            return Ok(None);
        };
        let expires_at = self.clock.now() + terms.within();
        let record = PendingRecord::granted(&approval_audit::Granted {
            request_id: &request.id,
            action: &request.action,
            policy: &pending.entry.policy.name,
            policy_digest: &pending.entry.digest,
            rule: request.rule,
            actor,
            uses: terms.uses,
            expires_at,
            pinned: &values,
            reviewers,
        })
        .map_err(AuditError::from)?;
        let grant = Box::new(Grant {
            request: request.clone(),
            digest: pending.entry.digest,
            pinned: values,
            uses: terms.uses,
            expires_at,
            reviewers: reviewers.to_vec(),
            state: Mutex::default(),
            writing: tokio::sync::Mutex::new(()),
        });
        Ok(Some((grant, record)))
    }

    /// Starts holding a grant whose `granted` record is written.
    pub(crate) fn hold_grant(&self, grant: Box<Grant>) {
        tracing::info!(
            request_id = %grant.request.id,
            uses = grant.uses,
            "grant made: more calls like this one run without asking"
        );
        lock(&self.grants.held).push(Arc::from(grant));
    }

    /// Runs `request` under a live grant that covers it, if one does:
    /// records it `grant_used` and gives the ticket that runs its body.
    pub(crate) async fn use_grant(
        self: &Arc<Self>,
        request: &Arc<ApprovalRequest>,
        entry: &Arc<PolicyEntry>,
        binds_recorded: bool,
    ) -> Result<Option<Ticket>, ApprovalError> {
        // Only the granted call's own actor, acting for the same person, is
        // covered: its approvers could not be its requester (refused as
        // self-approval), so a grant never covers a call of theirs.
        for grant in self.grants.candidates(request, entry, self.clock.now()) {
            let _writing = grant.writing.lock().await;
            let use_number = {
                let mut uses = lock(&grant.state);
                if !grant.covers_at(&uses, self.clock.now()) {
                    continue;
                }
                // Spent before the write: a use whose record may have been
                // written is never given back.
                uses.used += 1;
                uses.used
            };
            // A covered call never waits, so it is never recorded deferred.
            let asked = super::submit::asked(request, entry, false);
            let record = PendingRecord::grant_used(&asked, &grant.request.id, use_number)
                .map_err(ApprovalError::InvalidArguments)?;
            self.sink.append(vec![record]).await?;
            tracing::info!(
                request_id = %request.id,
                grant = %grant.request.id,
                use_number,
                uses = grant.uses,
                "covered by a grant; runs now"
            );
            self.post_to_policy_routes(
                &grant.request,
                &Notice::GrantUsed {
                    request: grant.request.clone(),
                    use_request_id: request.id.clone(),
                    use_number,
                    uses: grant.uses,
                },
            );
            return Ok(Some(Ticket::unheld(
                self.clone(),
                request.clone(),
                entry.clone(),
                binds_recorded,
                grant.reviewers.clone(),
            )));
        }
        Ok(None)
    }

    /// The grants held that can still cover a call.
    pub(crate) fn grants(&self) -> Vec<GrantView> {
        let held = self.grants.live(self.clock.now());
        held.iter().map(|g| g.view()).collect()
    }

    /// Revokes the grant `grant_id` for `identity` through `route` (`None`
    /// for code holding the gate): they must be one who may approve under
    /// its policy through that route, or the requester giving it up.
    pub(crate) async fn revoke_grant(
        &self,
        grant_id: &str,
        identity: &str,
        channel: &str,
        route: Option<&str>,
    ) -> Result<GrantView, ApprovalError> {
        let grant = self
            .grants
            .find(grant_id)
            .ok_or_else(|| ApprovalError::UnknownGrant {
                grant_id: grant_id.to_owned(),
            })?;
        let request = &grant.request;
        let person = self.directory.person_of(identity).map(str::to_owned);
        let who = self.directory.voter_key(identity);
        match self.eligibility(
            request,
            &request.policy,
            false,
            route,
            identity,
            person.as_deref(),
            &who,
        ) {
            Ok(()) | Err(RejectReason::SelfApproval) => {}
            Err(why) => {
                tracing::info!(grant = %grant_id, channel, why = why.as_str(), "grant revocation refused");
                return Err(ApprovalError::RevokeRefused {
                    grant_id: grant_id.to_owned(),
                    why,
                });
            }
        }
        let _writing = grant.writing.lock().await;
        if lock(&grant.state).revoked {
            return Ok(grant.view());
        }
        let mut reviewer = Reviewer::new(identity);
        reviewer.person = person;
        self.sink
            .append_event(Event::GrantRevoked {
                request_id: request.id.clone(),
                reviewer: Some(reviewer.clone()),
                channel: channel.to_owned(),
                why: "revoked by a reviewer".to_owned(),
            })
            .await?;
        lock(&grant.state).revoked = true;
        tracing::info!(grant = %grant_id, channel, "grant revoked");
        self.post_to_policy_routes(
            request,
            &Notice::GrantRevoked {
                request: request.clone(),
                by: Some(reviewer),
            },
        );
        Ok(grant.view())
    }
}
