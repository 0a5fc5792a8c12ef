//! After a restart: close the requests the log shows still open.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use serde::Deserialize;

use super::broker::CredentialHandle;
use super::notice::Recovery;
use super::pending::{Accepted, Pending};
use super::{ApprovalRequest, Approver, Decision, Gate, GateInner, NO_ACTOR, Notice, lock};
use crate::error::ApprovalError;
use approval_audit::CanonicalJson;
use approval_audit::{Actor, ActorKind, Reviewer, Task, Vote};
use approval_audit::{Event, Outcome};

/// The members recovery reads from each record.
#[derive(Deserialize)]
struct Line {
    event: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    deferred: bool,
    /// Of `credential_minted` and `credential_revoked`.
    #[serde(default)]
    broker: Option<String>,
    #[serde(default)]
    credential_id: Option<String>,
    #[serde(default)]
    scope: Option<serde_json::Value>,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Default)]
struct State {
    settled: bool,
    approved: bool,
    /// `executed`, or `cancelled` after `approved`: nothing more to say.
    ended: bool,
}

impl Gate {
    /// Closes what a previous run of this program left open, as the log
    /// shows it: every request with no outcome is recorded `cancelled` (its
    /// waiter is gone, so it can never be approved), and every approved
    /// request with no `executed` gets `executed` with outcome `unknown`.
    /// Late votes for them are refused as `settled`.
    ///
    /// A deferred request (see [`Gate::approve_deferred`]) nobody waited
    /// for is reopened instead, with the votes recorded before, and
    /// delivered again, if its policy is unchanged (same digest) and its
    /// deadline has not passed (else `expired`). With a
    /// [`Coordinator`](super::Coordinator), the shared store is told which
    /// were reopened: it closes the previous run's other requests, and
    /// votes other processes take for a reopened one reach this run.
    ///
    /// Call it at start-up, before any gated call. It refuses to run on a
    /// log other processes may be writing ([`AuditSink::sole_writer`]):
    /// there, an open request may have a live waiter elsewhere.
    ///
    /// It reads only the end of the log ([`AuditSink::read_recent`]): the
    /// records written within the longest policy timeout, plus the
    /// [recovery margin](super::GateBuilder::recovery_margin), before the
    /// last one. A request still open when the process ended was asked for
    /// within its timeout of that last record (the gate records `expired`
    /// when the timeout passes), and so was its approval. A body still
    /// running longer than the margin after its approval when the process
    /// ended is not found; its `approved` record without `executed` says
    /// the same to an auditor.
    ///
    /// [`AuditSink::sole_writer`]: crate::AuditSink::sole_writer
    /// [`AuditSink::read_recent`]: crate::AuditSink::read_recent
    pub async fn recover(&self) -> Result<Recovery, ApprovalError> {
        let sink = &self.inner.sink;
        if !sink.sole_writer() {
            return Err(ApprovalError::Recovery(
                "the log may have other writers; their requests may still be waited on".into(),
            ));
        }
        let policies = self.inner.policies.values().map(|entry| &entry.policy);
        let longest_credential = policies
            .clone()
            .filter_map(|p| p.credential.as_ref().map(super::CredentialPolicy::lifetime))
            .max()
            .unwrap_or_default();
        // A credential is minted after its approval and may live its whole
        // lifetime, so its record may be that much older than the end.
        let window = policies
            .map(|policy| policy.timeout())
            .max()
            .unwrap_or_default()
            .saturating_add(self.inner.recovery_margin.max(longest_credential));
        let reader = sink.read_recent(window)?;
        // Requests still open or approved-but-not-run; settled ones leave.
        let mut open: HashMap<String, State> = HashMap::new();
        // Each open request's own records, to reopen the deferred ones:
        // `requested`, then its `reviewed` votes and `escalated`. A request
        // is deferred by its `requested` record, or by a later `queued`.
        let mut lines_of: HashMap<String, Vec<String>> = HashMap::new();
        let mut deferred: HashSet<String> = HashSet::new();
        // Credentials minted and not revoked, in the order minted.
        let mut live: Vec<CredentialHandle> = Vec::new();
        for line in BufReader::new(reader).lines() {
            let line = line.map_err(|e| ApprovalError::Recovery(e.to_string()))?;
            let mut record: Line = serde_json::from_str(&line)
                .map_err(|e| ApprovalError::Recovery(format!("unreadable record: {e}")))?;
            track_credentials(&mut record, &mut live)?;
            let Some(id) = record.request_id else {
                continue;
            };
            match record.event.as_str() {
                "requested" => {
                    if record.deferred {
                        deferred.insert(id.clone());
                    }
                    lines_of.insert(id.clone(), vec![line]);
                }
                "queued" => {
                    deferred.insert(id.clone());
                }
                "reviewed" | "escalated" => {
                    if let Some(lines) = lines_of.get_mut(&id) {
                        lines.push(line);
                    }
                }
                _ => {}
            }
            // Only `requested` opens a request (a late vote for one that
            // settled earlier must not reopen it), or an approval whose
            // request came before the window read, or a call a grant
            // covered (approved in advance, its body then run).
            match record.event.as_str() {
                "requested" => {
                    open.insert(id, State::default());
                    continue;
                }
                "approved" | "grant_used" => {
                    open.entry(id.clone()).or_default();
                }
                _ => {}
            }
            let Some(state) = open.get_mut(&id) else {
                continue;
            };
            match record.event.as_str() {
                "approved" | "grant_used" => {
                    state.settled = true;
                    state.approved = true;
                }
                "denied" | "expired" => state.settled = true,
                // After `approved`, the gate's word that the body did not
                // run (the arguments changed, or the caller left during
                // the approval's write): closed, not `unknown`.
                "cancelled" => {
                    state.settled = true;
                    state.ended = true;
                }
                "executed" => state.ended = true,
                _ => {}
            }
            if state.settled && (!state.approved || state.ended) {
                open.remove(&id);
                lines_of.remove(&id);
                deferred.remove(&id);
            }
        }
        let mut recovery = Recovery::default();
        let mut to_deliver = Vec::new();
        let mut ids: Vec<_> = open.into_iter().collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, state) in ids {
            if state.approved {
                sink.append_event(Event::Executed {
                    request_id: id.clone(),
                    outcome: Outcome::Unknown,
                    error: None,
                })
                .await?;
                recovery.unknown.push(id.clone());
            } else if !state.settled {
                let reopened = deferred
                    .contains(&id)
                    .then(|| lines_of.get(&id))
                    .flatten()
                    .map(|lines| self.inner.reopen(lines));
                let why = match reopened {
                    Some(Ok(Reopened::Open(pending))) => {
                        recovery.reopened.push(id.clone());
                        to_deliver.push(pending);
                        continue;
                    }
                    Some(Ok(Reopened::Expired { policy, timeout_ms })) => {
                        sink.append_event(Event::Expired {
                            request_id: id.clone(),
                            policy,
                            timeout_ms,
                        })
                        .await?;
                        recovery.expired.push(id.clone());
                        self.inner.table.closed_at_restart(&id);
                        continue;
                    }
                    Some(Err(why)) => why,
                    None => "the process waiting for it ended; closed at restart".into(),
                };
                sink.append_event(Event::Cancelled {
                    request_id: id.clone(),
                    why,
                })
                .await?;
                recovery.cancelled.push(id.clone());
            } else {
                continue;
            }
            self.inner.table.closed_at_restart(&id);
        }
        // The shared store closes the previous run's other requests too, so
        // no other process counts a vote on them, and hands this run the
        // votes for the reopened ones (the table holds them by now).
        if let Some(coordinator) = &self.inner.coordinator {
            let reopened: Vec<_> = to_deliver.iter().map(|p| p.request.clone()).collect();
            coordinator
                .recovered(&reopened)
                .await
                .map_err(ApprovalError::Coordination)?;
        }
        self.revoke_left(live, &mut recovery).await;
        // Each approver once, though several routes may name it.
        let recovery = Arc::new(recovery);
        let mut told: Vec<&Arc<dyn Approver>> = Vec::new();
        let mut routes: Vec<_> = self.inner.approvers.iter().collect();
        routes.sort_by(|a, b| a.0.cmp(b.0));
        for (route, approver) in routes {
            if told.iter().any(|t| Arc::ptr_eq(t, approver)) {
                continue;
            }
            told.push(approver);
            if let Some(outbox) = self.inner.outboxes.get(route) {
                outbox.post(Notice::Recovered(recovery.clone()));
            }
        }
        // Reopened requests go to their routes again (their old messages
        // were left by a process that ended).
        for pending in to_deliver {
            let inner = self.inner.clone();
            if let Some((route, error)) = inner.deliver_all(&pending).await {
                tracing::warn!(request_id = %pending.request.id, route, %error, "a reopened request could not be delivered");
                if pending.entry.policy.unreachable != super::Unreachable::Deny {
                    // Its policy keeps it open for the routes that got it.
                    continue;
                }
                let why = format!("approver {route} unavailable");
                inner.finish(&pending, Decision::Cancelled { why }).await?;
            }
        }
        tracing::info!(
            reopened = recovery.reopened.len(),
            expired = recovery.expired.len(),
            cancelled = recovery.cancelled.len(),
            unknown = recovery.unknown.len(),
            credentials_revoked = recovery.credentials_revoked.len(),
            credentials_left = recovery.credentials_left.len(),
            "recovered the previous run's open requests"
        );
        Ok(Recovery::clone(&recovery))
    }
}

/// Keeps `live` up to date with one record: a `credential_minted` adds
/// its credential, a `credential_revoked` removes it.
fn track_credentials(
    record: &mut Line,
    live: &mut Vec<CredentialHandle>,
) -> Result<(), ApprovalError> {
    let unreadable =
        |what: &str| ApprovalError::Recovery(format!("unreadable {} record: {what}", record.event));
    match record.event.as_str() {
        "credential_minted" => {
            let (Some(request_id), Some(broker), Some(id), Some(scope), Some(expires_at)) = (
                record.request_id.clone(),
                record.broker.take(),
                record.credential_id.take(),
                record.scope.take(),
                record.expires_at.take(),
            ) else {
                return Err(unreadable("a member is missing"));
            };
            live.push(CredentialHandle {
                request_id,
                broker,
                id,
                scope: CanonicalJson::from_value(&scope).map_err(|_| unreadable("scope"))?,
                expires_at: approval_audit::clock::parse_ts(expires_at.as_bytes())
                    .ok_or_else(|| unreadable("expires_at"))?,
            });
        }
        "credential_revoked" => {
            let (Some(broker), Some(id)) = (&record.broker, &record.credential_id) else {
                return Err(unreadable("a member is missing"));
            };
            live.retain(|c| (&c.broker, &c.id) != (broker, id));
        }
        _ => {}
    }
    Ok(())
}

impl Gate {
    /// Revokes the credentials the previous run minted and did not revoke
    /// (it ended mid-body): each is recorded `credential_revoked`, or, if
    /// its broker is gone or still fails, traced and listed as left.
    async fn revoke_left(&self, live: Vec<CredentialHandle>, recovery: &mut Recovery) {
        for handle in live {
            let revoked = match self.inner.brokers.get(&handle.broker) {
                Some(broker) => {
                    super::credential::revoke_and_record(
                        &self.inner,
                        broker.as_ref(),
                        &handle,
                        "found minted and not revoked at restart",
                    )
                    .await
                }
                None => {
                    tracing::error!(request_id = %handle.request_id, broker = %handle.broker, credential_id = %handle.id, "a credential the previous run left cannot be revoked: its broker is not registered");
                    false
                }
            };
            if revoked {
                recovery.credentials_revoked.push(handle.id);
            } else {
                recovery.credentials_left.push(handle.id);
            }
        }
    }
}

/// What became of a deferred request found open at restart.
enum Reopened {
    Open(Arc<Pending>),
    Expired { policy: String, timeout_ms: u64 },
}

/// The members of a `requested` record that rebuild its request.
#[derive(Deserialize)]
struct RequestedLine {
    request_id: String,
    action: String,
    policy: String,
    policy_digest: String,
    args: serde_json::Value,
    #[serde(default)]
    skipped: Vec<String>,
    binding: String,
    actor: ActorLine,
    resource: Option<String>,
    reason: Option<String>,
    /// The rule that set how many approvals it needs, if one did.
    rule: Option<u32>,
    ts: String,
}

#[derive(Deserialize)]
struct ActorLine {
    id: String,
    kind: Option<String>,
    model: Option<String>,
    on_behalf_of: Option<String>,
    task: Option<TaskLine>,
}

#[derive(Deserialize)]
struct TaskLine {
    id: String,
    description: Option<String>,
}

/// Only a record's `event`.
#[derive(Deserialize)]
struct EventLine {
    event: String,
}

#[derive(Deserialize)]
struct ReviewedLine {
    reviewer: ReviewerLine,
    vote: String,
    channel: String,
    comment: Option<String>,
    #[serde(default)]
    grant: Option<approval_audit::GrantTerms>,
}

#[derive(Deserialize)]
struct ReviewerLine {
    id: String,
    person: Option<String>,
    display: Option<String>,
}

impl GateInner {
    /// Rebuilds a deferred request from its records (`requested`, then its
    /// votes) and puts it back on the table and timer; `Err` says why it
    /// cannot be (it is then cancelled).
    fn reopen(&self, lines: &[String]) -> Result<Reopened, String> {
        let unreadable = |e: serde_json::Error| format!("its records could not be read back: {e}");
        let first = lines.first().ok_or("no `requested` record")?;
        let r: RequestedLine = serde_json::from_str(first).map_err(unreadable)?;
        let entry = self
            .policies
            .get(&r.policy)
            .ok_or_else(|| format!("policy {} is no longer configured", r.policy))?
            .clone();
        if approval_audit::hex::decode32(&r.policy_digest) != Some(entry.digest) {
            return Err(format!(
                "policy {} changed since it was asked for",
                r.policy
            ));
        }
        // The digest pins the rules, so the recorded rule is the one the
        // call fell under.
        let entry = match r.rule {
            Some(rule) => {
                let at = usize::try_from(rule).map_err(|e| e.to_string())?;
                if at >= entry.policy.rules.len() {
                    return Err(format!("policy {} has no rule {rule}", r.policy));
                }
                entry.under_rule(at)
            }
            None => entry,
        };
        let policy = entry.policy.clone();
        let asked_at = approval_audit::clock::parse_ts(r.ts.as_bytes()).ok_or("unreadable ts")?;
        let expires_at = asked_at + policy.timeout();
        let Ok(time_left) = expires_at.duration_since(self.clock.now()) else {
            return Ok(Reopened::Expired {
                policy: policy.name.clone(),
                timeout_ms: policy.timeout_ms,
            });
        };
        let actor = (r.actor.id != NO_ACTOR).then(|| {
            let mut actor = Actor::new(r.actor.id);
            actor.kind = r.actor.kind.as_deref().and_then(ActorKind::from_word);
            actor.model = r.actor.model;
            actor.on_behalf_of = r.actor.on_behalf_of;
            actor.task = r.actor.task.map(|t| Task::new(t.id, t.description));
            actor
        });
        let request = Arc::new(ApprovalRequest {
            id: r.request_id,
            binding: approval_audit::hex::decode32(&r.binding).ok_or("unreadable binding")?,
            earlier: Vec::new(),
            action: r.action.into(),
            policy: policy.clone(),
            rule: r.rule,
            args: CanonicalJson::from_value(&r.args).map_err(|e| e.to_string())?,
            skipped: r.skipped,
            actor: actor.map(Arc::new),
            resource: r.resource,
            reason: r.reason,
            expires_at,
        });
        // Redactions are not known from the record: the re-check before the
        // body recomputes the binding.
        let pending = Arc::new(Pending::new(request, entry, false, true, None, time_left));
        {
            let mut state = lock(&pending.state);
            for line in &lines[1..] {
                let kind: EventLine = serde_json::from_str(line).map_err(unreadable)?;
                if kind.event == "escalated" {
                    // Its escalation stands: those it added still count.
                    pending.set_escalated();
                    continue;
                }
                let v: ReviewedLine = serde_json::from_str(line).map_err(unreadable)?;
                let vote = match v.vote.as_str() {
                    "approve" => Vote::Approve,
                    "deny" => Vote::Deny,
                    other => return Err(format!("unknown vote {other}")),
                };
                let mut reviewer = Reviewer::new(v.reviewer.id);
                reviewer.person = v.reviewer.person;
                reviewer.display = v.reviewer.display;
                let who = match &reviewer.person {
                    Some(person) => self.directory.voter_key(person),
                    None => self.directory.voter_key(&reviewer.id),
                };
                state.votes.push(Accepted {
                    who,
                    channel: v.channel,
                    vote,
                    comment: v.comment,
                    grant: v.grant,
                    reviewer,
                });
            }
        }
        self.register(&pending);
        self.remember_deferred(&pending);
        Ok(Reopened::Open(pending))
    }
}
