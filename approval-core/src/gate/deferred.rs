//! Deferred calls: the caller does not wait. Its first call answers
//! `Pending`; the same call with the same arguments, by the same actor,
//! comes back later and runs once if approved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tracing::Instrument;

use super::approval::Approval;
use super::pending::Pending;
use super::request::{ApprovalRequest, Decision};
use super::{Call, Gate, GateInner, lock};
use crate::error::ApprovalError;

/// Which later call a deferred request answers: the same binding (action
/// and unredacted arguments), from the same actor for the same person.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CallKey {
    binding: [u8; 32],
    actor: Option<(String, Option<String>)>,
}

impl CallKey {
    pub(crate) fn of(request: &ApprovalRequest) -> Self {
        Self {
            binding: request.binding,
            actor: request
                .actor
                .as_ref()
                .map(|a| (a.id.clone(), a.on_behalf_of.clone())),
        }
    }
}

#[derive(Debug)]
enum Slot {
    /// Open, or decided and not yet come back for.
    Waiting(Arc<Pending>),
    /// Approved and run: the same call is refused until `until`.
    Used { request_id: String, until: Instant },
}

/// The deferred requests by the call they answer.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    by_call: Mutex<HashMap<CallKey, Slot>>,
}

/// Past this many entries, each new one first sweeps out the finished.
const SWEEP_ABOVE: usize = 4096;

/// What a deferred call found for itself.
enum Found {
    Nothing,
    Open(Arc<ApprovalRequest>),
    Approved(Arc<Pending>),
    Refused(Arc<Pending>, Arc<Decision>),
    Used(String),
}

impl Deferred {
    /// Looks up `key`, and takes an approval it finds (an approval is used
    /// once): all under one lock, so two calls cannot both take it.
    fn take(&self, key: &CallKey) -> Found {
        let mut by_call = lock(&self.by_call);
        let found = match by_call.get(key) {
            None => return Found::Nothing,
            Some(Slot::Used { request_id, until }) if Instant::now() < *until => {
                return Found::Used(request_id.clone());
            }
            Some(Slot::Used { .. }) => Found::Nothing,
            Some(Slot::Waiting(pending)) => match pending.decision() {
                None => return Found::Open(pending.request.clone()),
                // An approval is good until the request's deadline.
                Some(decision) if matches!(*decision, Decision::Approved { .. }) => {
                    if Instant::now() < pending.deadline {
                        Found::Approved(pending.clone())
                    } else {
                        Found::Refused(pending.clone(), Arc::new(Decision::Expired))
                    }
                }
                Some(decision) => Found::Refused(pending.clone(), decision),
            },
        };
        match &found {
            Found::Approved(pending) => {
                let used = Slot::Used {
                    request_id: pending.request.id.clone(),
                    until: pending.deadline,
                };
                by_call.insert(key.clone(), used);
            }
            // A refusal is told once; the next call asks anew.
            _ => {
                by_call.remove(key);
            }
        }
        found
    }

    pub(crate) fn insert(&self, key: CallKey, pending: Arc<Pending>) {
        let mut by_call = lock(&self.by_call);
        if by_call.len() >= SWEEP_ABOVE {
            let now = Instant::now();
            by_call.retain(|_, slot| match slot {
                Slot::Used { until, .. } => now < *until,
                Slot::Waiting(pending) => pending.decision().is_none() || now < pending.deadline,
            });
        }
        by_call.insert(key, Slot::Waiting(pending));
    }
}

impl Gate {
    /// Asks for approval of `call` without waiting: the first call records
    /// and delivers the request and answers [`ApprovalError::Pending`] with
    /// its id. The same call with the same arguments by the same actor,
    /// made again later, gets the [`Approval`] (once) if it was approved
    /// before its deadline, the refusal (denied, expired, cancelled) if not,
    /// and `Pending` again while it is open. After the approval was used,
    /// the same call is refused ([`ApprovalError::AlreadyUsed`]) until the
    /// request's deadline, then asks anew.
    ///
    /// A deferred request survives a restart of the process until its
    /// deadline: [`Gate::recover`] reopens it, and votes cast after the
    /// restart count. (One approved but not yet come back for when the
    /// process ended is closed like any approved request whose body may
    /// have run: `executed` with outcome `unknown`; the call asks again.)
    ///
    /// This is what `#[requires_approval(policy = "...", defer)]` calls.
    pub fn approve_deferred(
        &self,
        call: Call,
    ) -> impl Future<Output = Result<Approval, ApprovalError>> + use<> {
        // The actor's slot is taken only if a new request is made.
        let prepared = self.prepare(call, false).map_err(Box::new);
        let span = super::submit::Prepared::span(&prepared);
        let gate = self.clone();
        let deferred = async move {
            let mut prepared = prepared.map_err(|e| *e)?;
            // In shadow mode, or exempted by a rule, nothing is held, so
            // there is nothing to come back for: it runs now.
            if prepared.entry.runs_unheld() {
                return gate
                    .clone()
                    .open(Ok(prepared), false)
                    .await?
                    .decision()
                    .await;
            }
            let key = CallKey::of(&prepared.request);
            let inner = &gate.inner;
            match inner.deferred.take(&key) {
                Found::Nothing => {}
                Found::Open(request) => return Err(pending_error(&request)),
                Found::Approved(pending) => {
                    tracing::info!(request_id = %pending.request.id, "deferred call came back approved");
                    return Ok(Approval::new(inner.clone(), pending.clone()));
                }
                Found::Refused(pending, decision) => {
                    return Err(inner.conclusion(&pending, &decision).err().unwrap_or(
                        ApprovalError::Expired {
                            policy: pending.entry.policy.name.clone(),
                            timeout: pending.entry.policy.timeout(),
                        },
                    ));
                }
                Found::Used(request_id) => return Err(ApprovalError::AlreadyUsed { request_id }),
            }
            prepared.take_slot(inner)?;
            let ticket = gate.clone().open(Ok(prepared), true).await?;
            let pending = ticket.pending().clone();
            // Delivery may have settled it already (a channel that votes at
            // once): the next call finds the decision.
            inner.deferred.insert(key, pending.clone());
            let request = pending.request.clone();
            ticket.detach();
            Err(pending_error(&request))
        };
        deferred.instrument(span)
    }
}

impl GateInner {
    /// Makes a request reopened at restart findable by its call again.
    pub(crate) fn remember_deferred(&self, pending: &Arc<Pending>) {
        self.deferred
            .insert(CallKey::of(&pending.request), pending.clone());
    }
}

fn pending_error(request: &ApprovalRequest) -> ApprovalError {
    ApprovalError::Pending {
        request_id: request.id.clone(),
        expires_at: request.expires_at,
    }
}
