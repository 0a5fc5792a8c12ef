//! Submitting a request: checked, recorded, put on the gate's table and
//! timer, delivered to every route at once; and the ticket that waits.

use std::future::Future;
use std::sync::Arc;

use super::actor::current_actor;
use super::approval::Approval;
use super::limits::ActorSlot;
use super::pending::Pending;
use super::policy::PolicyEntry;
use super::request::{self, ApprovalRequest, Decision};
use super::{Call, Gate, GateInner, NO_ACTOR};
use crate::error::ApprovalError;
use crate::error::ApproverError;
use approval_audit::Actor;

/// A request built and ready to record.
pub(crate) struct Prepared {
    pub(crate) entry: Arc<PolicyEntry>,
    /// The actor's place in its quota of open requests.
    slot: Option<ActorSlot>,
    pub(crate) request: Arc<ApprovalRequest>,
    /// Whether the binding covers exactly the recorded arguments (nothing
    /// was redacted).
    binds_recorded: bool,
}

/// A submitted request, as its caller holds it: wait for the decision with
/// [`decision`](Ticket::decision) (or [`Gate::wait`]).
///
/// Dropping a ticket cancels its request (recorded `cancelled`), so nothing
/// approvable is left behind by a caller that gave up; a caller that means
/// to come back later [`detach`](Ticket::detach)es it instead, and the
/// request then ends by vote, by [`Gate::cancel`] or at its deadline.
#[derive(Debug)]
#[must_use = "dropping a ticket cancels its request"]
pub struct Ticket {
    gate: Arc<GateInner>,
    pending: Arc<Pending>,
    armed: bool,
}

impl Ticket {
    /// The request.
    pub fn request(&self) -> &Arc<ApprovalRequest> {
        &self.pending.request
    }

    /// The request's id.
    pub fn request_id(&self) -> &str {
        &self.pending.request.id
    }

    /// Waits for the decision: the [`Approval`] that runs the body once, or
    /// the refusal (denied, expired, cancelled) as an [`ApprovalError`].
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` would keep the ticket twice in every waiting call"
    )]
    pub fn decision(mut self) -> impl Future<Output = Result<Approval, ApprovalError>> {
        async move {
            let decision = self.gate.decided(&self.pending).await?;
            self.armed = false;
            self.gate.conclusion(&self.pending, &decision)
        }
    }

    pub(crate) fn pending(&self) -> &Arc<Pending> {
        &self.pending
    }

    /// A call under a policy in shadow mode, exempted by a rule, or
    /// covered by a grant: settled as approved (by nobody, or by the
    /// grant's `reviewers`) and on no table, so its decision is the proof
    /// that runs the body.
    pub(crate) fn unheld(
        gate: Arc<GateInner>,
        request: Arc<ApprovalRequest>,
        entry: Arc<PolicyEntry>,
        binds_recorded: bool,
        reviewers: Vec<approval_audit::Reviewer>,
    ) -> Self {
        let pending = Arc::new(Pending::new(
            request,
            entry,
            binds_recorded,
            false,
            None,
            std::time::Duration::ZERO,
        ));
        super::lock(&pending.state).decision = Some(Arc::new(Decision::Approved { reviewers }));
        Self {
            gate,
            pending,
            armed: false,
        }
    }

    /// Leaves the request open without waiting; returns its id.
    pub fn detach(mut self) -> String {
        self.armed = false;
        self.pending.request.id.clone()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.armed {
            self.gate.abandon(&self.pending, "caller stopped waiting");
        }
    }
}

/// The members of `request`'s `requested` record (or of a record that
/// stands for it), borrowed.
pub(crate) fn asked<'a>(
    request: &'a ApprovalRequest,
    entry: &'a PolicyEntry,
    deferred: bool,
) -> approval_audit::Requested<'a> {
    static NOBODY: std::sync::LazyLock<Actor> = std::sync::LazyLock::new(|| Actor::new(NO_ACTOR));
    approval_audit::Requested {
        request_id: &request.id,
        action: &request.action,
        policy: &entry.policy.name,
        policy_digest: &entry.digest,
        args: &request.args,
        skipped: &request.skipped,
        binding: &request.binding,
        actor: request.actor.as_deref().unwrap_or(&NOBODY),
        resource: request.resource.as_deref(),
        reason: request.reason.as_deref(),
        deferred,
        rule: request.rule,
    }
}

impl Prepared {
    /// The span a request's work runs in: its id, action and policy, never
    /// its arguments.
    pub(crate) fn span(prepared: &Result<Self, Box<ApprovalError>>) -> tracing::Span {
        match prepared {
            Ok(p) => tracing::info_span!(
                "approval",
                request_id = %p.request.id,
                action = %p.request.action,
                policy = %p.entry.policy.name,
            ),
            Err(_) => tracing::Span::none(),
        }
    }

    /// Takes the actor's slot, if not taken yet.
    pub(crate) fn take_slot(&mut self, gate: &Arc<GateInner>) -> Result<(), ApprovalError> {
        if self.slot.is_none() {
            let limit = self.entry.policy.max_pending_per_actor;
            self.slot = Some(ActorSlot::take(gate, self.request.actor.as_deref(), limit)?);
        }
        Ok(())
    }
}

impl Gate {
    /// Looks up the policy, takes the actor's slot (if `with_slot`), and
    /// builds the request.
    pub(crate) fn prepare(&self, call: Call, with_slot: bool) -> Result<Prepared, ApprovalError> {
        let inner = &self.inner;
        let entry = inner
            .policies
            .get(call.policy.as_ref())
            .cloned()
            .ok_or_else(|| ApprovalError::UnknownPolicy {
                policy: call.policy.to_string(),
            })?;
        let policy = &entry.policy;
        if policy.credential.is_some() != call.takes_credential {
            return Err(ApprovalError::CredentialMismatch {
                policy: policy.name.clone(),
                policy_mints: policy.credential.is_some(),
            });
        }
        let actor = current_actor();
        if actor.is_none() && policy.require_actor {
            return Err(ApprovalError::NoActor {
                policy: policy.name.clone(),
            });
        }
        // A principal the directory cannot place could approve their own
        // request under another spelling: refuse it unless the policy
        // says otherwise.
        if let Some(principal) = actor.as_ref().and_then(|a| a.on_behalf_of.as_deref())
            && !policy.allow_unknown_principal
            && !inner.directory.is_empty()
            && inner.directory.resolve(principal).is_none()
        {
            tracing::info!(policy = %policy.name, "refused: the principal is unknown to the directory");
            return Err(ApprovalError::UnknownPrincipal {
                principal: principal.to_owned(),
                policy: policy.name.clone(),
            });
        }
        let rule = match &entry.conditions {
            None => None,
            Some(conditions) => {
                let facts = super::Facts::new(&call.action, &call.args)
                    .actor(actor.as_deref())
                    .resource(call.resource.as_deref());
                conditions.applicable(&facts).map_err(|e| {
                    tracing::warn!(policy = %policy.name, rule = e.rule, "refused: a rule of the policy cannot be evaluated on this call");
                    ApprovalError::Condition {
                        policy: policy.name.clone(),
                        rule: e.rule,
                    }
                })?
            }
        };
        let entry = match rule {
            Some(at) => entry.under_rule(at),
            None => entry,
        };
        // A rule's place fits u32: policy files cannot hold 2^32 rules.
        let rule = rule.and_then(|at| u32::try_from(at).ok());
        let policy = &entry.policy;
        let slot = if with_slot {
            Some(ActorSlot::take(
                inner,
                actor.as_deref(),
                policy.max_pending_per_actor,
            )?)
        } else {
            None
        };
        let now = inner.clock.now();
        let binding = inner
            .sink
            .chain_writer()
            .binding(&call.action, call.binding_args());
        let binds_recorded = call.binding_args().as_str() == call.args.as_str();
        let request = Arc::new(ApprovalRequest {
            id: request::new_request_id(now).map_err(|_| ApprovalError::Random)?,
            binding,
            earlier: inner.table.earlier(&binding),
            action: call.action,
            policy: policy.clone(),
            rule,
            args: call.args,
            skipped: call.skipped,
            actor,
            resource: call.resource,
            reason: call.reason,
            expires_at: now + policy.timeout(),
        });
        Ok(Prepared {
            entry,
            slot,
            request,
            binds_recorded,
        })
    }

    /// Records `prepared` as `requested`, puts it on the table and the
    /// timer, and delivers it to every route at once.
    pub(crate) async fn open(
        self,
        prepared: Result<Prepared, Box<ApprovalError>>,
        deferred: bool,
    ) -> Result<Ticket, ApprovalError> {
        let inner = &self.inner;
        let Prepared {
            entry,
            slot,
            request,
            binds_recorded,
        } = prepared.map_err(|e| *e)?;
        if inner.is_closing() {
            return Err(ApprovalError::GateClosed);
        }
        // A call a grant covers runs now, recorded as that grant's use.
        // (Boxed, and apart from the record below: only policies that
        // allow grants pay for it.)
        if entry.policy.grant.is_some()
            && !entry.runs_unheld()
            && let Some(ticket) =
                Box::pin(inner.use_grant(&request, &entry, binds_recorded)).await?
        {
            return Ok(ticket);
        }
        // Durable before any reviewer can see the request.
        let record = {
            let asked = asked(&request, &entry, deferred);
            if entry.policy.shadow {
                approval_audit::PendingRecord::would_require(&asked)
            } else if entry.policy.required == 0 {
                approval_audit::PendingRecord::exempted(&asked)
            } else {
                approval_audit::PendingRecord::requested(&asked)
            }
            .map_err(ApprovalError::InvalidArguments)?
        };
        inner.sink.append(vec![record]).await?;
        if entry.runs_unheld() {
            if entry.policy.shadow {
                tracing::info!(request_id = %request.id, action = %request.action, policy = %entry.policy.name, "shadow mode: would require approval; runs now");
            } else {
                tracing::info!(request_id = %request.id, action = %request.action, policy = %entry.policy.name, rule = request.rule, "exempted by a rule of its policy; runs now");
            }
            return Ok(Ticket::unheld(
                inner.clone(),
                request,
                entry,
                binds_recorded,
                Vec::new(),
            ));
        }
        tracing::info!(
            request_id = %request.id,
            action = %request.action,
            policy = %entry.policy.name,
            deferred,
            "request recorded"
        );

        let time_left = entry.policy.timeout();
        let pending = Arc::new(Pending::new(
            request,
            entry,
            binds_recorded,
            deferred,
            slot,
            time_left,
        ));
        inner.register(&pending);
        // From here on, dropping the ticket cancels the request.
        let mut ticket = Ticket {
            gate: inner.clone(),
            pending,
            armed: true,
        };
        let pending = &ticket.pending;
        let request = &pending.request;
        // Other processes learn who waits before any reviewer sees it.
        if let Some(coordinator) = &inner.coordinator
            && let Err(e) = coordinator.opened(request, pending.is_deferred()).await
        {
            let why = format!("not shared with the other processes: {e}");
            let standing = Box::pin(inner.finish(pending, Decision::Cancelled { why })).await;
            ticket.armed = false;
            standing?;
            return Err(ApprovalError::Coordination(e));
        }

        let unreachable = pending.entry.policy.unreachable;
        // Outside the policy's attended hours nobody is there to decide:
        // its unattended mode says what happens, never an approval.
        let unattended = pending
            .entry
            .policy
            .attended
            .as_ref()
            .filter(|hours| !hours.contains(inner.clock.now()));
        if let Some(hours) = unattended {
            tracing::warn!(request_id = %request.id, %hours, "asked outside the policy's attended hours");
            if unreachable == super::Unreachable::Deny {
                let why = format!("outside the policy's attended hours ({hours})");
                let standing = Box::pin(inner.finish(pending, Decision::Cancelled { why })).await;
                ticket.armed = false;
                standing?;
                return Err(ApprovalError::Unattended {
                    policy: pending.entry.policy.name.clone(),
                });
            }
        }
        let mut undelivered = inner.deliver_all(pending).await;
        if let Some(hours) = unattended
            && unreachable == super::Unreachable::Queue
            && undelivered.is_none()
            && !pending.is_deferred()
        {
            ticket.armed = false;
            return Err(inner.queue(pending, None, Some(hours.to_string())).await);
        }
        if let Some((route, _)) = &undelivered
            && unreachable != super::Unreachable::Deny
            && tokio::time::Instant::now() < pending.deadline
        {
            // The other routes (and the decision API) may still decide.
            tracing::warn!(request_id = %request.id, route, "a route is unreachable; the request stays open (its policy says so)");
            if unreachable == super::Unreachable::Queue && !pending.is_deferred() {
                ticket.armed = false;
                return Err(inner.queue(pending, Some(route.clone()), None).await);
            }
            undelivered = None;
        }
        if let Some((route, source)) = undelivered {
            // A delivery still running at the deadline: the request has
            // expired (the timer says the same).
            let ending = if tokio::time::Instant::now() >= pending.deadline {
                Decision::Expired
            } else {
                Decision::Cancelled {
                    why: format!("approver {route} unavailable"),
                }
            };
            let standing = Box::pin(inner.finish(pending, ending)).await?;
            // Reviewers on another route may have decided first: that
            // decision stands, and the ticket gives it.
            if matches!(*standing, Decision::Cancelled { .. }) {
                ticket.armed = false;
                return Err(ApprovalError::ApproverUnavailable { route, source });
            }
        }
        Ok(ticket)
    }
}

impl GateInner {
    /// Makes an open request deferred because its policy queues when
    /// unattended (`route` down, or asked outside `attended` hours): the
    /// shared ledger first, then on record (the restart must find it
    /// deferred). Gives the caller's answer: `Pending`, or why it could
    /// not be queued (the request is then cancelled).
    async fn queue(
        &self,
        pending: &Arc<Pending>,
        route: Option<String>,
        attended: Option<String>,
    ) -> ApprovalError {
        let request = &pending.request;
        if let Some(coordinator) = &self.coordinator
            && let Err(e) = coordinator.deferred(request).await
        {
            let why = format!("could not be queued with the other processes: {e}");
            return match Box::pin(self.finish(pending, Decision::Cancelled { why })).await {
                Ok(_) => ApprovalError::Coordination(e),
                Err(written) => written,
            };
        }
        let queued = approval_audit::Event::Queued {
            request_id: request.id.clone(),
            route,
            attended,
        };
        if let Err(e) = self.sink.append_event(queued).await {
            return e.into();
        }
        pending.set_deferred();
        self.remember_deferred(pending);
        ApprovalError::Pending {
            request_id: request.id.clone(),
            expires_at: request.expires_at,
        }
    }

    /// Delivers `pending` through every route of its policy at once: a slow
    /// channel does not hold up the others, and none may take longer than
    /// the request has. Returns the first route that failed.
    pub(crate) async fn deliver_all(
        self: &Arc<Self>,
        pending: &Arc<Pending>,
    ) -> Option<(String, ApproverError)> {
        let mut routes = pending.routes();
        if let (Some(route), None) = (routes.next(), routes.next()) {
            self.deliver(route, pending).await.err()
        } else {
            futures_util::future::join_all(
                pending.routes().map(|route| self.deliver(route, pending)),
            )
            .await
            .into_iter()
            .find_map(Result::err)
        }
    }

    /// Delivers `pending` through `route`, within its deadline.
    pub(crate) async fn deliver(
        self: &Arc<Self>,
        route: &str,
        pending: &Arc<Pending>,
    ) -> Result<(), (String, ApproverError)> {
        let request = &pending.request;
        let Some(approver) = self.approvers.get(route) else {
            return Err((
                route.to_owned(),
                ApproverError::Unreachable("not registered".into()),
            ));
        };
        let ballots = super::Ballots {
            gate: Arc::downgrade(self),
            route: Some(route.into()),
        };
        let delivered =
            tokio::time::timeout_at(pending.deadline, approver.deliver(request.clone(), ballots))
                .await
                .unwrap_or_else(|_| {
                    Err(ApproverError::Unreachable(
                        "delivery did not finish before the request's deadline".into(),
                    ))
                });
        match delivered {
            Ok(()) => {
                tracing::info!(request_id = %request.id, route, "request delivered");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(request_id = %request.id, route, %error, "request not delivered");
                Err((route.to_owned(), error))
            }
        }
    }
}
