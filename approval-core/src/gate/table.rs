//! The request table: every request from `requested` to its ending lives
//! here, owned by the gate, not by the caller's future.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;
use tokio::time::Instant;

use super::approval::Approval;
use super::deadline::{self, Deadlines};
use super::directory::normal_form;
use super::notice::Notice;
use super::pending::Pending;
use super::request::{ApprovalRequest, Decision};
use super::{GateInner, lock};
use crate::error::ApprovalError;
use approval_audit::AuditError;
use approval_audit::{PendingRecord, Reviewer, Vote};

/// A held request as a set member, keyed by its own id: the tables look it
/// up by `&str` without keeping a copy of the id.
#[derive(Debug, Clone)]
struct ById(Arc<Pending>);

impl std::borrow::Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.request.id
    }
}

impl std::hash::Hash for ById {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow` requires the two to agree.
        self.0.request.id.as_str().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.request.id == other.0.request.id
    }
}

impl Eq for ById {}

/// Open requests, the lately settled ones, and how calls ended by binding.
#[derive(Debug, Default)]
pub(crate) struct Table {
    open: Mutex<HashSet<ById, FxBuildHasher>>,
    /// Requests settled lately, so a late vote is told `settled` and
    /// `status` still answers.
    recent: Mutex<Recent>,
    /// How recent requests ended, by binding, for reviewers of the next.
    history: Mutex<History>,
}

impl Table {
    pub(crate) fn open(&self, id: &str) -> Option<Arc<Pending>> {
        lock(&self.open).get(id).map(|held| held.0.clone())
    }

    pub(crate) fn all_open(&self) -> Vec<Arc<Pending>> {
        lock(&self.open).iter().map(|held| held.0.clone()).collect()
    }

    /// An open or lately settled request.
    pub(crate) fn find(&self, id: &str) -> Option<Arc<Pending>> {
        self.open(id)
            .or_else(|| lock(&self.recent).by_id.get(id).map(|held| held.0.clone()))
    }

    pub(crate) fn settled_lately(&self, id: &str) -> bool {
        let recent = lock(&self.recent);
        recent.by_id.contains(id) || recent.is_closed(id)
    }

    /// Marks an id the log shows closed (recovery), with no request held.
    pub(crate) fn closed_at_restart(&self, id: &str) {
        lock(&self.recent).insert_closed(id);
    }

    pub(crate) fn insert(&self, pending: &Arc<Pending>) {
        lock(&self.open).insert(ById(pending.clone()));
    }

    /// Moves a request from open to lately settled.
    fn retire(&self, pending: &Arc<Pending>) {
        lock(&self.open).remove(pending.request.id.as_str());
        lock(&self.recent).insert(pending);
    }

    /// How earlier requests with `binding` ended, oldest first.
    pub(crate) fn earlier(&self, binding: &[u8; 32]) -> Vec<super::EarlierDecision> {
        lock(&self.history)
            .by_binding
            .get(binding)
            .map(|list| {
                list.iter()
                    .map(|(request_id, decision)| super::EarlierDecision {
                        request_id: request_id.clone(),
                        decision: Decision::clone(decision),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Recent decisions by binding: at most `PER_BINDING` each, for at most
/// `BINDINGS` bindings, the oldest binding forgotten first.
#[derive(Debug, Default)]
struct History {
    /// Most bindings are asked for once: their one decision stays inline.
    by_binding: HashMap<[u8; 32], SmallVec<[Ended; 1]>, DigestHash>,
    order: VecDeque<[u8; 32]>,
}

impl History {
    const PER_BINDING: usize = 8;
    const BINDINGS: usize = 10_000;

    fn add(&mut self, binding: [u8; 32], request_id: &str, decision: &Arc<Decision>) {
        let earlier = (request_id.to_owned(), decision.clone());
        let list = self.by_binding.entry(binding).or_insert_with(|| {
            self.order.push_back(binding);
            SmallVec::new()
        });
        if list.len() == Self::PER_BINDING {
            list.remove(0);
        }
        list.push(earlier);
        if self.order.len() > Self::BINDINGS
            && let Some(old) = self.order.pop_front()
        {
            self.by_binding.remove(&old);
        }
    }
}

/// A request id and how that request ended.
type Ended = (String, Arc<Decision>);

/// Hashes keys that are already uniform and secret, binding digests (HMAC
/// outputs), by their first eight bytes: nobody who cannot compute the
/// HMAC can pick keys that collide, so a keyed hash would add only cost.
type DigestHash = std::hash::BuildHasherDefault<DigestHasher>;

#[derive(Debug, Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut head = [0u8; 8];
        let n = bytes.len().min(8);
        head[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(head);
    }
}

/// The most recent settled requests, oldest dropped first: the last
/// [`HELD`](Self::HELD) whole (for `status`), and beyond them a keyed
/// 64-bit digest of the ids of the last [`KNOWN`](Self::KNOWN), with the
/// ids closed at restart (so a late vote is told `settled`).
///
/// Holding every request for longer would keep its memory until it is
/// cold: freeing 10,000 requests later cost the gate 7% of a call. A
/// digest collision (about one in 10^15 per lookup, and the key is secret)
/// would only tell an unknown id's voter `settled` instead: refused alike.
#[derive(Debug, Default)]
struct Recent {
    by_id: HashSet<ById, FxBuildHasher>,
    held: VecDeque<ById>,
    /// Digests of ids no longer held: settled earlier, or closed at
    /// restart.
    closed: HashSet<u64, FxBuildHasher>,
    closed_order: VecDeque<u64>,
    /// The key of those digests, random per gate.
    key: std::hash::RandomState,
}

impl Recent {
    /// How many settled requests are held whole.
    const HELD: usize = 1_000;
    /// How many settled or closed ids are known beyond those.
    const KNOWN: usize = 10_000;

    fn insert(&mut self, pending: &Arc<Pending>) {
        let held = ById(pending.clone());
        if !self.by_id.insert(held.clone()) {
            return;
        }
        self.held.push_back(held);
        if self.held.len() > Self::HELD
            && let Some(old) = self.held.pop_front()
        {
            self.by_id.remove(&old);
            self.insert_closed(&old.0.request.id);
        }
    }

    fn digest(&self, id: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.key, id)
    }

    fn is_closed(&self, id: &str) -> bool {
        self.closed.contains(&self.digest(id))
    }

    fn insert_closed(&mut self, id: &str) {
        let digest = self.digest(id);
        if !self.closed.insert(digest) {
            return;
        }
        self.closed_order.push_back(digest);
        if self.closed_order.len() > Self::KNOWN
            && let Some(old) = self.closed_order.pop_front()
        {
            self.closed.remove(&old);
        }
    }
}

/// A request as the gate holds it now: what channels and consoles show
/// instead of keeping copies of their own. See [`Gate::status`](super::Gate::status).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestView {
    /// Whether its policy's escalation happened: its escalation routes
    /// and groups count too (`request.policy.escalate_routes`,
    /// `escalate_groups`).
    pub escalated: bool,
    /// The request.
    pub request: Arc<ApprovalRequest>,
    /// How it ended; `None` while open.
    pub decision: Option<Decision>,
    /// The votes counted so far, in order.
    pub votes: Vec<VoteView>,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Who may still vote while it is open: the policy's approvers and its
    /// groups' members (directory names, or channel identities where the
    /// policy names one), less those who voted and the requester. Empty
    /// once settled.
    pub may_vote: Vec<String>,
}

impl RequestView {
    /// Whether it is still open.
    pub fn is_open(&self) -> bool {
        self.decision.is_none()
    }

    /// How many more approvals its policy needs, from the votes so far.
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use approval_core::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
    /// # let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
    /// #     .approver("mock", Arc::new(MockApprover::silent("ci")))
    /// #     .policy(Policy::new("export", ["mock"], Duration::from_secs(60)).approvers(["mock:a", "mock:b"]).required(2))
    /// #     .build()?;
    /// # let args = CanonicalJson::from_serialize(&serde_json::json!({}))?;
    /// let ticket = gate.submit(Call::new("crm::export", "export", args)).await?;
    /// assert_eq!(gate.status(ticket.request_id()).unwrap().approvals_needed(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn approvals_needed(&self) -> u32 {
        let approvals = self
            .votes
            .iter()
            .filter(|v| v.vote == Vote::Approve)
            .count();
        self.request
            .policy
            .required
            .saturating_sub(u32::try_from(approvals).unwrap_or(u32::MAX))
    }
}

/// One counted vote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VoteView {
    /// Who voted, as recorded.
    pub reviewer: Reviewer,
    /// The vote.
    pub vote: Vote,
    /// The channel it came through.
    pub channel: String,
    /// The reviewer's comment.
    pub comment: Option<String>,
}

impl GateInner {
    /// The request `pending` as it stands.
    pub(crate) fn view(&self, pending: &Pending) -> RequestView {
        let request = &pending.request;
        let policy = &pending.entry.policy;
        let state = lock(&pending.state);
        let votes = state
            .votes
            .iter()
            .map(|v| VoteView {
                reviewer: v.reviewer.clone(),
                vote: v.vote,
                channel: v.channel.clone(),
                comment: v.comment.clone(),
            })
            .collect();
        let may_vote = if state.decision.is_some() {
            Vec::new()
        } else {
            let requesters = self.directory.requesters(request.actor.as_deref());
            let mut who: Vec<String> = policy
                .approvers
                .iter()
                .map(String::as_str)
                .chain(pending.groups().flat_map(|g| self.directory.members(g)))
                .filter(|w| {
                    let key = self.directory.voter_key(w);
                    !requesters.iter().any(|r| *r == key || *r == normal_form(w))
                        && !state.votes.iter().any(|v| v.who == key)
                })
                .map(str::to_owned)
                .collect();
            who.sort_unstable();
            who.dedup();
            who
        };
        RequestView {
            request: request.clone(),
            decision: state.decision.as_deref().cloned(),
            votes,
            expires_at: request.expires_at,
            may_vote,
            escalated: pending.escalated(),
        }
    }

    /// Puts a recorded request on the table and the timer.
    pub(crate) fn register(&self, pending: &Arc<Pending>) {
        self.table.insert(pending);
        let key = self.deadlines.add(pending.deadline, pending);
        pending.set_deadline_key(key);
        if let Some(after) = pending.entry.policy.reminder() {
            let at = Instant::now() + after;
            // Left on the reminder timer when it settles first (it is then
            // skipped): a settled request costs that timer only its entry.
            if at < pending.deadline {
                self.reminders.add(at, pending);
            }
        }
        if let Some(after) = pending.entry.policy.escalation()
            && !pending.escalated()
        {
            let at = Instant::now() + after;
            if at < pending.deadline {
                self.escalations.add(at, pending);
            }
        }
    }

    /// Settles `pending` with `decision` unless it is settled already;
    /// records it first. Returns the decision that stands.
    pub(crate) async fn finish(
        &self,
        pending: &Arc<Pending>,
        decision: Decision,
    ) -> Result<Arc<Decision>, ApprovalError> {
        let _votes = pending.votes_lock().lock().await;
        self.settle(pending, decision, None).await
    }

    /// Settles `pending` with `decision`, recording it first, unless it is
    /// settled already; returns the decision that stands. The caller holds
    /// `votes_lock`, so no other vote can settle it in between.
    ///
    /// `preceding` (the deciding vote's `reviewed` record) is written in the
    /// same append, before the outcome: one write, not two.
    pub(crate) async fn settle(
        &self,
        pending: &Arc<Pending>,
        decision: Decision,
        preceding: Option<PendingRecord>,
    ) -> Result<Arc<Decision>, ApprovalError> {
        if let Some(existing) = pending.decision() {
            if let Some(record) = preceding {
                self.sink.append(vec![record]).await?;
            }
            return Ok(existing);
        }
        // With other processes, the shared store says whether it stands.
        let decision = match &self.coordinator {
            Some(coordinator) => match coordinator.settle(&pending.request, &decision).await {
                Ok(super::Settlement::Settled) => decision,
                Ok(super::Settlement::Already { why }) => Decision::Cancelled {
                    why: format!("ended elsewhere: {why}"),
                },
                // An approval the store has not accepted does not stand:
                // the vote fails, and the request stays open.
                Err(e) if matches!(decision, Decision::Approved { .. }) => {
                    return Err(ApprovalError::Coordination(e));
                }
                // Any other ending runs nothing, so it stands here; the
                // store's row lapses with its lease.
                Err(error) => {
                    tracing::warn!(request_id = %pending.request.id, %error, "the shared store did not take the ending; its lease will lapse");
                    decision
                }
            },
            None => decision,
        };
        let record = outcome_record(pending, &decision)?;
        let (batch, grant) = match (preceding, self.grant_for(pending, &decision)?) {
            (Some(first), None) => (vec![first, record], None),
            (None, None) => (vec![record], None),
            // Rare: made with the approval, in the same append.
            (first, Some((grant, granted))) => {
                let batch = first.into_iter().chain([record, granted]).collect();
                (batch, Some(grant))
            }
        };
        self.sink.append(batch).await?;
        let decision = {
            let mut state = lock(&pending.state);
            // A dropped caller flips the state without the votes lock (it
            // cannot wait in `Drop`): its cancellation stands.
            if let Some(existing) = &state.decision {
                return Ok(existing.clone());
            }
            let decision = Arc::new(decision);
            state.decision = Some(decision.clone());
            decision
        };
        self.release(pending);
        if let Some(grant) = grant {
            self.hold_grant(grant);
        }
        self.announce(pending, &decision);
        Ok(decision)
    }

    /// Ends `pending` as `cancelled` at once, without waiting (a dropped
    /// waiter cannot wait): no later vote can approve it; the record, the
    /// shared store and the notices follow on the gate's own task.
    pub(crate) fn abandon(self: &Arc<Self>, pending: &Arc<Pending>, why: &'static str) {
        let decision = Arc::new(Decision::Cancelled { why: why.into() });
        {
            let mut state = lock(&pending.state);
            if state.decision.is_some() {
                return;
            }
            state.decision = Some(decision.clone());
        }
        self.release(pending);
        let gate = self.clone();
        let pending = pending.clone();
        self.background.spawn(async move {
            let request = &pending.request;
            if let Err(error) = gate
                .sink
                .append(vec![PendingRecord::cancelled(&request.id, why)])
                .await
            {
                // The restart scan closes it instead.
                tracing::error!(request_id = %request.id, %error, "could not record the cancellation");
            }
            // Other processes learn it ended (else its row stays open, and
            // renewed, until this process stops).
            if let Some(coordinator) = &gate.coordinator
                && let Err(error) = coordinator.settle(request, &decision).await
            {
                tracing::warn!(request_id = %request.id, %error, "the shared store did not take the cancellation; its lease will lapse");
            }
            gate.announce(&pending, &decision);
        });
    }

    /// Gives back what an open request holds: its actor's slot, its place
    /// on the timer and in the open table.
    fn release(&self, pending: &Arc<Pending>) {
        let (slot, timer) = {
            let mut state = lock(&pending.state);
            (state.slot.take(), state.timer.take())
        };
        if let Some(key) = timer {
            self.deadlines.remove(key);
        }
        drop(slot);
        self.table.retire(pending);
    }

    /// Wakes whoever waits and tells the request's routes how it ended.
    fn announce(&self, pending: &Arc<Pending>, decision: &Arc<Decision>) {
        let request = &pending.request;
        lock(&self.table.history).add(request.binding, &request.id, decision);
        pending.wake_waiter();
        tracing::info!(
            request_id = %request.id,
            action = %request.action,
            policy = %request.policy.name,
            outcome = decision.outcome(),
            "request settled"
        );
        self.post_to_routes(
            pending,
            &Notice::Settled {
                request: request.clone(),
                decision: decision.clone(),
            },
        );
    }

    /// Queues `notice` for every route of `request`'s policy (not its
    /// escalation routes): for news about a request no longer open.
    pub(crate) fn post_to_policy_routes(&self, request: &ApprovalRequest, notice: &Notice) {
        for route in &request.policy.routes {
            if let Some(outbox) = self.outboxes.get(route) {
                outbox.post(notice.clone());
            }
        }
    }

    /// Queues `notice` for every route `pending` went to.
    pub(crate) fn post_to_routes(&self, pending: &Pending, notice: &Notice) {
        for route in pending.routes() {
            if let Some(outbox) = self.outboxes.get(route) {
                outbox.post(notice.clone());
            }
        }
    }

    /// Waits for `pending`'s decision; the gate's timer ends it at its
    /// deadline (and, should that timer's runtime be gone, so does this).
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` would keep its arguments twice in every waiting call"
    )]
    pub(crate) fn decided<'a>(
        &'a self,
        pending: &'a Arc<Pending>,
    ) -> impl Future<Output = Result<Arc<Decision>, ApprovalError>> + 'a {
        async move {
            loop {
                // The gate's timer keeps the deadline (no timer per waiter);
                // it wakes this waiter should it end.
                if self.deadlines.running() {
                    if let Some(decision) = pending.woken(&self.deadlines, true).await {
                        return Ok(decision);
                    }
                    // Past the deadline with no decision: the timer could not
                    // record the expiry; this waiter tries, and returns why not.
                    if pending.decision().is_none() && Instant::now() >= pending.deadline {
                        return Box::pin(self.finish(pending, Decision::Expired)).await;
                    }
                    continue;
                }
                // Boxed: rare, and kept out of every waiting call's future.
                let woken = pending.woken(&self.deadlines, false);
                match Box::pin(tokio::time::timeout_at(pending.deadline, woken)).await {
                    Ok(Some(decision)) => return Ok(decision),
                    Ok(None) => {}
                    // A vote may settle it first: the decision that stands wins.
                    Err(_) => return Box::pin(self.finish(pending, Decision::Expired)).await,
                }
            }
        }
    }

    /// The caller's result for a decision on `pending`.
    pub(crate) fn conclusion(
        self: &Arc<Self>,
        pending: &Arc<Pending>,
        decision: &Decision,
    ) -> Result<Approval, ApprovalError> {
        let policy = &pending.entry.policy;
        match decision {
            Decision::Approved { .. } => Ok(Approval::new(self.clone(), pending.clone())),
            Decision::Denied { reviewer, comment } => Err(ApprovalError::Denied {
                reviewer: reviewer.clone(),
                comment: comment.clone(),
            }),
            Decision::Expired => Err(ApprovalError::Expired {
                policy: policy.name.clone(),
                timeout: policy.timeout(),
            }),
            Decision::Cancelled { why } => Err(ApprovalError::Cancelled { why: why.clone() }),
        }
    }
}

/// How long to wait before trying again to record an expiry the sink
/// refused.
const EXPIRY_RETRY: Duration = Duration::from_secs(1);

/// The gate's timer task: records `expired` for each request at its
/// deadline, until the gate is dropped.
pub(crate) fn expiry_timer(
    gate: Weak<GateInner>,
    deadlines: Arc<Deadlines<Pending>>,
) -> impl Future<Output = ()> {
    // Dropped with the task, however it ends (its runtime shut down): the
    // waiters are told, and keep their deadlines themselves from then on.
    let gone = TimerGone {
        gate: gate.clone(),
        deadlines: deadlines.clone(),
    };
    let run = deadline::run(deadlines.clone(), move |pending| {
        let Some(gate) = gate.upgrade() else {
            return ControlFlow::Break(());
        };
        let deadlines = deadlines.clone();
        let expiring = gate.clone();
        // Each on its own: one slow write does not hold up the others.
        gate.background.spawn(async move {
            let gate = expiring;
            if let Err(error) = gate.finish(&pending, Decision::Expired).await {
                tracing::error!(
                    request_id = %pending.request.id,
                    %error,
                    "could not record the expiry; trying again"
                );
                let key = deadlines.add(Instant::now() + EXPIRY_RETRY, &pending);
                pending.set_deadline_key(key);
                // Its waiter tries to record it itself, and hears why not.
                pending.wake_waiter();
            }
        });
        ControlFlow::Continue(())
    });
    async move {
        let _gone = gone;
        run.await;
    }
}

/// A task that hands `due` each request of `queue` at its time, until the
/// gate is dropped: reminders, escalations.
pub(crate) fn milestone_timer(
    gate: Weak<GateInner>,
    queue: Arc<Deadlines<Pending>>,
    due: impl Fn(&Arc<GateInner>, Arc<Pending>) + Send + 'static,
) -> impl Future<Output = ()> {
    deadline::run(queue, move |pending| {
        let Some(gate) = gate.upgrade() else {
            return ControlFlow::Break(());
        };
        if pending.decision().is_none() {
            due(&gate, pending);
        }
        ControlFlow::Continue(())
    })
}

impl GateInner {
    /// Tells every route of `pending` (still open) to remind its reviewers.
    pub(crate) fn remind(self: &Arc<Self>, pending: Arc<Pending>) {
        let request = &pending.request;
        tracing::info!(request_id = %request.id, policy = %request.policy.name, "reminding the reviewers");
        self.post_to_routes(
            &pending,
            &Notice::Reminder {
                request: request.clone(),
            },
        );
    }

    /// Escalates `pending` if still open: records `escalated` first (a
    /// wider set of voters is evidence), then delivers it to its policy's
    /// escalation routes and tells every route. A log that cannot take the
    /// record leaves it as it was, and it is tried again shortly.
    pub(crate) async fn escalate(self: &Arc<Self>, pending: &Arc<Pending>) {
        let request = &pending.request;
        let policy = &pending.entry.policy;
        {
            // No vote is counted against the old rule while this is written.
            let _votes = pending.votes_lock().lock().await;
            if pending.decision().is_some() || pending.escalated() {
                return;
            }
            let event = approval_audit::Event::Escalated {
                request_id: request.id.clone(),
                routes: policy.escalate_routes.clone(),
                groups: policy.escalate_groups.clone(),
            };
            if let Err(error) = self.sink.append_event(event).await {
                tracing::error!(request_id = %request.id, %error, "could not record the escalation; trying again");
                let again = Instant::now() + EXPIRY_RETRY;
                if again < pending.deadline {
                    self.escalations.add(again, pending);
                }
                return;
            }
            pending.set_escalated();
        }
        tracing::info!(request_id = %request.id, policy = %policy.name, "request escalated");
        for route in &policy.escalate_routes {
            // A route that cannot be reached is traced; the others stand.
            if self.deliver(route, pending).await.is_err() {
                continue;
            }
        }
        self.post_to_routes(
            pending,
            &Notice::Escalated {
                request: request.clone(),
                routes: policy.escalate_routes.clone(),
                groups: policy.escalate_groups.clone(),
            },
        );
    }
}

/// Tells the waiters when the timer task ends.
struct TimerGone {
    gate: Weak<GateInner>,
    deadlines: Arc<Deadlines<Pending>>,
}

impl Drop for TimerGone {
    fn drop(&mut self) {
        self.deadlines.stopped();
        if let Some(gate) = self.gate.upgrade() {
            for pending in gate.table.all_open() {
                pending.wake_waiter();
            }
        }
    }
}

/// The record of `decision` on `pending`.
fn outcome_record(pending: &Pending, decision: &Decision) -> Result<PendingRecord, AuditError> {
    let id = &pending.request.id;
    let policy = &pending.entry.policy;
    match decision {
        Decision::Approved { reviewers } => {
            PendingRecord::decided("approved", id, &policy.name, reviewers)
        }
        Decision::Denied { reviewer, .. } => {
            PendingRecord::decided("denied", id, &policy.name, std::slice::from_ref(reviewer))
        }
        Decision::Expired => PendingRecord::expired(id, &policy.name, policy.timeout_ms),
        Decision::Cancelled { why } => Ok(PendingRecord::cancelled(id, why)),
    }
    .map_err(AuditError::from)
}
