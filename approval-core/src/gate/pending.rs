//! A request the gate holds: its votes so far, its decision, its one
//! waiter.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};

use tokio::time::Instant;

use super::deadline::{Deadlines, Key};
use super::limits::ActorSlot;
use super::lock;
use super::policy::PolicyEntry;
use super::request::{ApprovalRequest, Decision};
use approval_audit::{Reviewer, Vote};

/// A request the gate holds, open or lately settled.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) request: Arc<ApprovalRequest>,
    pub(crate) entry: Arc<PolicyEntry>,
    /// When the gate's timer expires it.
    pub(crate) deadline: Instant,
    /// Whether the binding covers exactly the recorded arguments (nothing
    /// was redacted).
    pub(crate) binds_recorded: bool,
    /// Whether nobody waits: a deferred call comes back for it, so it stays
    /// open across a shutdown and a restart.
    deferred: AtomicBool,
    /// Made by the first vote: most requests never see two at once, and
    /// an open request costs its 40 bytes only once someone votes.
    votes_lock: OnceLock<Box<tokio::sync::Mutex<()>>>,
    pub(crate) state: Mutex<VoteState>,
    /// Refused votes recorded against it (bounded).
    pub(crate) refusals_recorded: std::sync::atomic::AtomicU32,
    /// Whether its policy's escalation happened (recorded `escalated`):
    /// its escalation routes and groups count from then on.
    escalated: AtomicBool,
}

/// A vote the gate accepted.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The person, or the identity when the directory does not know it.
    pub(crate) who: String,
    pub(crate) channel: String,
    pub(crate) vote: Vote,
    pub(crate) comment: Option<String>,
    /// The grant asked for with an approval.
    pub(crate) grant: Option<approval_audit::GrantTerms>,
    /// As recorded; `id` is the channel identity.
    pub(crate) reviewer: Reviewer,
}

#[derive(Debug, Default)]
pub(crate) struct VoteState {
    pub(crate) votes: Vec<Accepted>,
    /// Shared: the waiting call, later voters and the approvers' notices
    /// all read the one decision.
    pub(crate) decision: Option<Arc<Decision>>,
    /// The actor's place in its quota, given back when the request ends.
    pub(crate) slot: Option<ActorSlot>,
    /// Its place on the gate's timer, while open.
    pub(crate) timer: Option<Key>,
    /// The one waiter (the request's [`Ticket`](super::Ticket)), woken
    /// when the decision is set or its deadline needs it; a waker here
    /// instead of a `Notify` keeps both the request and the waiting future
    /// small.
    pub(crate) waiter: Option<Waker>,
}

impl Pending {
    pub(crate) fn new(
        request: Arc<ApprovalRequest>,
        entry: Arc<PolicyEntry>,
        binds_recorded: bool,
        deferred: bool,
        slot: Option<ActorSlot>,
        time_left: std::time::Duration,
    ) -> Self {
        let deadline = Instant::now() + time_left.min(entry.policy.timeout());
        Self {
            request,
            entry,
            deadline,
            binds_recorded,
            deferred: AtomicBool::new(deferred),
            votes_lock: OnceLock::new(),
            state: Mutex::new(VoteState {
                slot,
                ..VoteState::default()
            }),
            refusals_recorded: std::sync::atomic::AtomicU32::new(0),
            escalated: AtomicBool::new(false),
        }
    }

    /// Serialises the votes of this request, across their audit writes.
    pub(crate) fn votes_lock(&self) -> &tokio::sync::Mutex<()> {
        self.votes_lock.get_or_init(Box::default)
    }

    /// Whether nobody waits for it (a deferred call, or one its policy
    /// queued when a route was down).
    pub(crate) fn is_deferred(&self) -> bool {
        self.deferred.load(Ordering::Acquire)
    }

    /// Makes it deferred (queued, once that is recorded).
    pub(crate) fn set_deferred(&self) {
        self.deferred.store(true, Ordering::Release);
    }

    /// Whether it was escalated.
    pub(crate) fn escalated(&self) -> bool {
        self.escalated.load(Ordering::Acquire)
    }

    /// Marks it escalated (once its record is written).
    pub(crate) fn set_escalated(&self) {
        self.escalated.store(true, Ordering::Release);
    }

    /// The routes it has been delivered to.
    pub(crate) fn routes(&self) -> impl Iterator<Item = &String> {
        self.entry.policy.routes_with(self.escalated())
    }

    /// The groups whose members may vote on it.
    pub(crate) fn groups(&self) -> impl Iterator<Item = &String> {
        self.entry.policy.groups_with(self.escalated())
    }

    pub(crate) fn decision(&self) -> Option<Arc<Decision>> {
        lock(&self.state).decision.clone()
    }

    /// Wakes the waiter, if one waits: it looks at the decision and the
    /// deadline again.
    pub(crate) fn wake_waiter(&self) {
        let waiter = lock(&self.state).waiter.take();
        if let Some(waker) = waiter {
            waker.wake();
        }
    }

    /// Resolves with the decision once it is set, or with `None` when the
    /// waiter is woken without one (its deadline needs it), or, while
    /// `timer_watch`, as soon as the gate's timer has stopped.
    pub(crate) fn woken(
        &self,
        deadlines: &Deadlines<Pending>,
        timer_watch: bool,
    ) -> impl Future<Output = Option<Arc<Decision>>> {
        let mut registered = false;
        std::future::poll_fn(move |cx| {
            let mut state = lock(&self.state);
            if let Some(decision) = &state.decision {
                return Poll::Ready(Some(decision.clone()));
            }
            if registered && state.waiter.is_none() {
                return Poll::Ready(None);
            }
            match &mut state.waiter {
                Some(waker) => waker.clone_from(cx.waker()),
                None => state.waiter = Some(cx.waker().clone()),
            }
            registered = true;
            // Checked after registering, under the lock the timer's end
            // takes to wake: either it sees this waker or this sees it.
            if timer_watch && !deadlines.running() {
                state.waiter = None;
                return Poll::Ready(None);
            }
            Poll::Pending
        })
    }

    pub(crate) fn set_deadline_key(&self, key: Key) {
        let mut state = lock(&self.state);
        if state.decision.is_none() {
            state.timer = Some(key);
        }
    }
}
