//! The request table's life cycle: submit, status, wait, cancel, expiry on
//! the gate's timer, concurrent delivery, notices and shutdown.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::test_support::{Traces, events, records, reopened, sink_keyed};
use super::*;
use crate::error::ApproverError;
use crate::{ChainWriter, KeyId, MemorySink, WriterSecret};
use approval_audit::{Actor, RejectReason, Vote};

fn sink() -> Arc<MemorySink> {
    sink_keyed("22")
}

fn call() -> Call {
    let args = CanonicalJson::from_serialize(&json!({"table": "users"})).unwrap();
    Call::new("crm::export", "export", args)
}

fn directory() -> Directory {
    Directory::new()
        .person("alice", ["mock:alice"])
        .person("bob", ["mock:bob"])
        .person("dave", ["mock:dave"])
        .person("ci", ["mock:ci"])
        .group("security", ["bob", "dave"])
}

fn one_route(approver: Arc<dyn Approver>, timeout: Duration) -> (Gate, Arc<MemorySink>) {
    let sink = sink();
    let gate = Gate::builder(sink.clone())
        .approver("mock", approver)
        .policy(Policy::new("export", ["mock"], timeout).approvers(["alice", "mock:ci"]))
        .directory(directory())
        .notice_retry(4, Duration::from_millis(100), Duration::from_secs(1))
        .build()
        .unwrap();
    (gate, sink)
}

#[tokio::test(start_paused = true)]
async fn a_request_nobody_waits_for_expires_at_its_deadline_and_is_recorded() {
    let (gate, sink) = one_route(
        Arc::new(MockApprover::silent("ci")),
        Duration::from_secs(60),
    );
    let id = gate.submit(call()).await.unwrap().detach();
    assert!(gate.status(&id).unwrap().is_open());
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(
        gate.status(&id).unwrap().is_open(),
        "not before its deadline"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = gate.status(&id).unwrap();
    assert_eq!(view.decision, Some(Decision::Expired));
    assert!(view.may_vote.is_empty());
    assert_eq!(events(&sink), ["requested", "expired"]);
    // A vote after the deadline is refused as settled.
    let request = view.request;
    let late = Ballot::new(&request, "mock:ci", "mock", Vote::Approve);
    assert_eq!(
        gate.cast(late).await.unwrap(),
        BallotOutcome::Rejected(crate::RejectReason::Settled)
    );
}

/// Delivers only when told to; until then its `deliver` does not return.
#[derive(Debug, Default)]
struct Stuck {
    release: tokio::sync::Notify,
    delivering: AtomicU32,
}

#[async_trait::async_trait]
impl Approver for Stuck {
    async fn deliver(&self, _: Arc<ApprovalRequest>, _: Ballots) -> Result<(), ApproverError> {
        self.delivering.fetch_add(1, Ordering::SeqCst);
        self.release.notified().await;
        Ok(())
    }
}

#[tokio::test]
async fn every_route_is_delivered_at_once_so_a_slow_one_holds_up_no_other() {
    let sink = sink();
    let stuck = Arc::new(Stuck::default());
    // The stuck route comes first: one after another, the quick route
    // would never see the request.
    let gate = Gate::builder(sink.clone())
        .approver("a-stuck", stuck.clone())
        .approver("b-quick", Arc::new(MockApprover::approve_all("ci")))
        .policy(
            Policy::new("export", ["a-stuck", "b-quick"], Duration::from_secs(60))
                .approvers(["mock:ci"]),
        )
        .build()
        .unwrap();
    let submitting = tokio::spawn({
        let gate = gate.clone();
        async move { gate.submit(call()).await.map(Ticket::detach) }
    });
    // The quick route's vote settles it while the other is still delivering.
    let settled = loop {
        if events(&sink).last().map(String::as_str) == Some("approved") {
            break records(&sink);
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(stuck.delivering.load(Ordering::SeqCst), 1);
    assert!(
        !submitting.is_finished(),
        "the stuck route has not returned"
    );
    let id = settled[0]["request_id"].as_str().unwrap().to_owned();
    assert!(matches!(
        gate.status(&id).unwrap().decision,
        Some(Decision::Approved { .. })
    ));
    stuck.release.notify_one();
    assert_eq!(submitting.await.unwrap().unwrap(), id);
}

#[tokio::test(start_paused = true)]
async fn a_route_still_delivering_at_the_deadline_leaves_the_request_expired() {
    let stuck = Arc::new(Stuck::default());
    let (gate, sink) = one_route(stuck.clone(), Duration::from_secs(5));
    let ticket = gate.submit(call()).await.unwrap();
    assert!(matches!(
        ticket.decision().await,
        Err(ApprovalError::Expired { policy, .. }) if policy == "export"
    ));
    assert_eq!(events(&sink), ["requested", "expired"]);
}

#[tokio::test]
async fn status_shows_votes_and_who_may_still_vote_and_cancel_ends_it() {
    let sink = sink();
    let gate = Gate::builder(sink.clone())
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .policy(
            Policy::new("export", ["mock"], Duration::from_secs(60))
                .approvers(["alice"])
                .groups(["security"])
                .required(2),
        )
        .directory(directory())
        .build()
        .unwrap();
    // Dave asks (through an agent): he may not vote on his own request.
    // (`submit` builds the request when called: inside the actor's scope.)
    let ticket = with_actor(Actor::new("agent-7").on_behalf_of("dave"), async {
        gate.submit(call()).await
    })
    .await
    .unwrap();
    let id = ticket.request_id().to_owned();
    assert_eq!(gate.status(&id).unwrap().may_vote, ["alice", "bob"]);
    let request = ticket.request().clone();
    gate.cast(Ballot::new(&request, "mock:bob", "mock", Vote::Approve).comment("fine"))
        .await
        .unwrap();
    let view = gate.status(&id).unwrap();
    assert_eq!(view.may_vote, ["alice"]);
    assert_eq!(view.votes.len(), 1);
    assert_eq!(view.votes[0].reviewer.id, "mock:bob");
    assert_eq!(view.votes[0].comment.as_deref(), Some("fine"));
    assert_eq!(gate.open_requests().len(), 1);

    let standing = gate.cancel(&id, "change freeze").await.unwrap();
    assert_eq!(
        standing,
        Decision::Cancelled {
            why: "change freeze".into()
        }
    );
    assert!(matches!(
        ticket.decision().await,
        Err(ApprovalError::Cancelled { why }) if why == "change freeze"
    ));
    assert!(gate.open_requests().is_empty());
    assert_eq!(events(&sink), ["requested", "reviewed", "cancelled"]);
    // Cancelling again changes nothing: the first ending stands.
    assert_eq!(gate.cancel(&id, "again").await.unwrap(), standing);
    assert_eq!(events(&sink).len(), 3);
    assert!(matches!(
        gate.cancel("no-such-id", "x").await,
        Err(ApprovalError::UnknownRequest { request_id }) if request_id == "no-such-id"
    ));
}

#[tokio::test]
async fn a_dropped_ticket_cancels_and_a_detached_one_stays_open() {
    let (gate, sink) = one_route(
        Arc::new(MockApprover::silent("ci")),
        Duration::from_secs(60),
    );
    let dropped = gate.submit(call()).await.unwrap();
    let dropped_id = dropped.request_id().to_owned();
    drop(dropped);
    let kept = gate.submit(call()).await.unwrap().detach();
    // The cancellation is recorded on the gate's own task.
    while events(&sink).len() < 3 {
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        gate.status(&dropped_id).unwrap().decision,
        Some(Decision::Cancelled { why }) if why == "caller stopped waiting"
    ));
    assert!(gate.status(&kept).unwrap().is_open());
    let of = |id: &str| -> Vec<String> {
        records(&sink)
            .iter()
            .filter(|r| r["request_id"] == id)
            .map(|r| r["event"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(of(&dropped_id), ["requested", "cancelled"]);
    assert_eq!(of(&kept), ["requested"]);
}

/// Fails its first `failures` notices, then hears them.
#[derive(Debug)]
struct Flaky {
    failures: AtomicU32,
    heard: Mutex<Vec<String>>,
    slow: Duration,
}

#[async_trait::async_trait]
impl Approver for Flaky {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError> {
        MockApprover::approve_all("ci")
            .deliver(request, ballots)
            .await
    }

    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        tokio::time::sleep(self.slow).await;
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ApproverError::Unreachable("channel down".into()));
        }
        lock(&self.heard).push(notice.kind().to_owned());
        Ok(())
    }
}

/// Shows nothing, hears every notice (with its request's id), and keeps
/// the ballots it was handed.
#[derive(Debug, Default)]
struct Listener {
    heard: Mutex<Vec<(String, Option<String>)>>,
    delivered: Mutex<Vec<(Arc<ApprovalRequest>, Ballots)>>,
}

#[async_trait::async_trait]
impl Approver for Listener {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError> {
        lock(&self.delivered).push((request, ballots));
        Ok(())
    }

    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        let heard = (
            notice.kind().to_owned(),
            notice.request_id().map(str::to_owned),
        );
        lock(&self.heard).push(heard);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_request_s_reviewers_are_reminded_once_at_its_policy_s_time() {
    let listener = Arc::new(Listener::default());
    let gate = Gate::builder(sink())
        .approver("mock", listener.clone())
        .policy(
            Policy::new("export", ["mock"], Duration::from_secs(600))
                .approvers(["alice"])
                .remind_after(Duration::from_secs(60)),
        )
        .directory(directory())
        .build()
        .unwrap();
    let open = gate.submit(call()).await.unwrap();
    let settled = gate.submit(call().reason("another")).await.unwrap();
    let (open_id, settled_id) = (open.detach(), settled.request_id().to_owned());
    gate.cancel(&settled_id, "decided before the reminder")
        .await
        .unwrap();
    assert!(settled.decision().await.is_err());

    tokio::time::sleep(Duration::from_secs(59)).await;
    gate.drain_notices().await;
    let reminders = |listener: &Listener| {
        lock(&listener.heard)
            .iter()
            .filter(|(kind, _)| kind == "reminder")
            .map(|(_, id)| id.clone().unwrap())
            .collect::<Vec<_>>()
    };
    assert!(reminders(&listener).is_empty(), "reminded early");
    tokio::time::sleep(Duration::from_secs(2)).await;
    gate.drain_notices().await;
    // Only the open one, once: the settled one is skipped.
    assert_eq!(reminders(&listener), std::slice::from_ref(&open_id));
    tokio::time::sleep(Duration::from_secs(300)).await;
    gate.drain_notices().await;
    assert_eq!(reminders(&listener), std::slice::from_ref(&open_id));
    assert!(
        gate.status(&open_id).unwrap().is_open(),
        "a reminder decides nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_request_is_escalated_on_record_to_more_routes_and_groups_at_its_time() {
    let (desk, pager) = (Arc::new(Listener::default()), Arc::new(Listener::default()));
    let sink = sink();
    let gate = Gate::builder(sink.clone())
        .approver("mock", desk.clone())
        .approver("pager", pager.clone())
        .policy(
            Policy::new("export", ["mock"], Duration::from_secs(600))
                .approvers(["alice"])
                .required(2)
                .escalate_after(Duration::from_secs(60), ["pager"], ["security"]),
        )
        .directory(directory())
        .build()
        .unwrap();
    let ticket = gate.submit(call()).await.unwrap();
    let (request, desk_ballots) = lock(&desk.delivered)[0].clone();
    let vote = |who: &str| Ballot::new(&request, format!("mock:{who}"), "mock", Vote::Approve);
    // Before: bob (security) may not vote, and the pager has nothing.
    assert!(matches!(
        desk_ballots.cast(vote("bob")).await.unwrap(),
        BallotOutcome::Rejected(RejectReason::NotEligible)
    ));
    assert!(lock(&pager.delivered).is_empty());
    assert!(
        !gate
            .status(&request.id)
            .unwrap()
            .may_vote
            .contains(&"bob".to_owned())
    );

    tokio::time::sleep(Duration::from_secs(61)).await;
    gate.drain_notices().await;
    // Recorded, delivered to the pager, told to both routes.
    assert_eq!(events(&sink), ["requested", "rejected_vote", "escalated"]);
    let escalated = &records(&sink)[2];
    assert_eq!(escalated["routes"], json!(["pager"]));
    assert_eq!(escalated["groups"], json!(["security"]));
    let pager_ballots = lock(&pager.delivered)[0].1.clone();
    for listener in [&desk, &pager] {
        assert!(
            lock(&listener.heard)
                .iter()
                .any(|(kind, _)| kind == "escalated")
        );
    }
    let may_vote = gate.status(&request.id).unwrap().may_vote;
    assert!(may_vote.contains(&"dave".to_owned()), "{may_vote:?}");
    // Now dave votes through the pager, bob through the desk: approved.
    let through_pager = Ballot::new(&request, "mock:dave", "pager", Vote::Approve);
    assert!(matches!(
        pager_ballots.cast(through_pager).await.unwrap(),
        BallotOutcome::Counted { decision: None }
    ));
    assert!(matches!(
        desk_ballots.cast(vote("bob")).await.unwrap(),
        BallotOutcome::Counted { decision: Some(_) }
    ));
    assert!(ticket.decision().await.is_ok());
    assert_eq!(
        events(&sink),
        [
            "requested",
            "rejected_vote",
            "escalated",
            "reviewed",
            "reviewed",
            "approved"
        ]
    );
}

#[tokio::test]
async fn a_deferred_request_keeps_its_escalation_across_a_restart() {
    use crate::JsonlFileSink;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let secret = WriterSecret::from_hex(&"25".repeat(32)).unwrap();
    let writer = || Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &secret));
    let runs = Arc::new(AtomicU32::new(0));
    let start = |sink: Arc<JsonlFileSink>| {
        Gate::builder(sink)
            .approver("mock", Arc::new(MockApprover::silent("ci")))
            .policy(
                Policy::new("export", ["mock"], Duration::from_secs(600))
                    .approvers(["alice"])
                    .escalate_after(
                        Duration::from_millis(100),
                        Vec::<String>::new(),
                        ["security"],
                    ),
            )
            .directory(directory())
            .build()
            .unwrap()
    };
    let id = {
        let gate = start(Arc::new(JsonlFileSink::open(&path, writer()).unwrap()));
        let id = pending_id(deferred_export(&gate, agent(), &runs).await);
        while !file_events(&path).contains(&"escalated".to_owned()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        id
    };

    // The restart: reopened, still escalated, and not escalated twice.
    let gate = start(reopened(&path, writer()).await);
    assert_eq!(
        gate.recover().await.unwrap().reopened,
        std::slice::from_ref(&id)
    );
    let request = gate.status(&id).unwrap().request;
    // Bob is in security, which only the escalation lets vote.
    let counted = gate
        .cast(Ballot::new(&request, "mock:bob", "mock", Vote::Approve))
        .await
        .unwrap();
    assert!(
        matches!(counted, BallotOutcome::Counted { decision: Some(_) }),
        "{counted:?}"
    );
    assert_eq!(deferred_export(&gate, agent(), &runs).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let escalations = file_events(&path)
        .iter()
        .filter(|e| *e == "escalated")
        .count();
    assert_eq!(escalations, 1);
}

/// The `event` of each record in the log file at `path`.
fn file_events(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            record["event"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn in_shadow_mode_a_call_runs_at_once_recorded_as_what_it_would_have_required() {
    let listener = Arc::new(Listener::default());
    let sink = sink();
    let trial = Policy::new("export", ["mock"], Duration::from_secs(600))
        .approvers(["alice"])
        .in_shadow();
    let digest = trial.digest();
    let gate = Gate::builder(sink.clone())
        .approver("mock", listener.clone())
        .policy(trial)
        .directory(directory())
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    // Blocking and deferred alike: not held, run once each.
    let approval = with_actor(agent(), async { gate.approve(call()).await })
        .await
        .unwrap();
    let ran = approval
        .confirm_args(&call().args)
        .await
        .unwrap()
        .execute(async { Ok::<_, ApprovalError>(7) })
        .await
        .unwrap();
    assert_eq!(ran, 7);
    assert_eq!(deferred_export(&gate, agent(), &runs).await.unwrap(), 1);
    gate.drain_notices().await;
    // Nobody was asked, nothing is left open.
    assert!(lock(&listener.delivered).is_empty());
    assert!(lock(&listener.heard).is_empty());
    assert_eq!(
        events(&sink),
        ["would_require", "executed", "would_require", "executed"]
    );
    let record = &records(&sink)[0];
    assert_eq!(record["policy"], "export");
    assert_eq!(
        record["policy_digest"],
        approval_audit::hex::encode(&digest)
    );
    assert_eq!(record["actor"]["on_behalf_of"], "dave");
    assert!(record.get("deferred").is_none());
    assert!(
        gate.status(record["request_id"].as_str().unwrap())
            .is_none()
    );
    // The mode is part of the policy, and of its digest.
    let held = Policy::new("export", ["mock"], Duration::from_secs(600)).approvers(["alice"]);
    assert_ne!(held.digest(), digest);
}

/// A channel that is down.
#[derive(Debug)]
struct Down;

#[async_trait::async_trait]
impl Approver for Down {
    async fn deliver(&self, _: Arc<ApprovalRequest>, _: Ballots) -> Result<(), ApproverError> {
        Err(ApproverError::Unreachable("connection refused".into()))
    }
}

#[tokio::test]
async fn an_unreachable_route_denies_unless_the_policy_says_wait_and_never_allows() {
    let gate_with = |unreachable| {
        let (desk, sink) = (Arc::new(Listener::default()), sink());
        let gate = Gate::builder(sink.clone())
            .approver("mock", desk.clone())
            .approver("down", Arc::new(Down))
            .policy(
                Policy::new("export", ["mock", "down"], Duration::from_secs(600))
                    .approvers(["alice"])
                    .when_unreachable(unreachable),
            )
            .directory(directory())
            .build()
            .unwrap();
        (gate, sink, desk)
    };
    // The default: refused at once, on record.
    let (gate, sink, _) = gate_with(Unreachable::Deny);
    let refused = gate.submit(call()).await.err().unwrap();
    assert!(
        matches!(&refused, ApprovalError::ApproverUnavailable { route, .. } if route == "down"),
        "{refused:?}"
    );
    assert_eq!(events(&sink), ["requested", "cancelled"]);
    assert_eq!(records(&sink)[1]["why"], "approver down unavailable");

    // `wait`: open for the route that got it; nothing runs until it decides.
    let (gate, sink, desk) = gate_with(Unreachable::Wait);
    let ticket = gate.submit(call()).await.unwrap();
    assert!(gate.status(ticket.request_id()).unwrap().is_open());
    assert_eq!(events(&sink), ["requested"]);
    let (request, ballots) = lock(&desk.delivered)[0].clone();
    ballots
        .cast(Ballot::new(&request, "mock:alice", "mock", Vote::Deny))
        .await
        .unwrap();
    assert!(matches!(
        ticket.decision().await,
        Err(ApprovalError::Denied { .. })
    ));
    assert_eq!(events(&sink), ["requested", "reviewed", "denied"]);
    // The mode is in the policy's JSON, and so in its digest.
    let policy =
        Policy::new("p", ["mock"], Duration::from_secs(1)).when_unreachable(Unreachable::Wait);
    assert!(
        serde_json::to_string(&policy)
            .unwrap()
            .contains(r#""unreachable":"wait""#)
    );
}

#[tokio::test]
async fn a_queued_request_answers_pending_outlives_a_restart_and_runs_once_when_approved() {
    use crate::JsonlFileSink;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let secret = WriterSecret::from_hex(&"26".repeat(32)).unwrap();
    let writer = || Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &secret));
    let start = |sink: Arc<JsonlFileSink>, desk: Arc<Listener>| {
        Gate::builder(sink)
            .approver("mock", desk)
            .approver("down", Arc::new(Down))
            .policy(
                Policy::new("export", ["mock", "down"], Duration::from_secs(600))
                    .approvers(["alice"])
                    .when_unreachable(Unreachable::Queue),
            )
            .directory(directory())
            .build()
            .unwrap()
    };
    // A blocking call: the pager is down, so it is queued, not refused.
    let id = {
        let gate = start(
            Arc::new(JsonlFileSink::open(&path, writer()).unwrap()),
            Arc::default(),
        );
        let queued = with_actor(agent(), gate.submit(call()))
            .await
            .err()
            .unwrap();
        let ApprovalError::Pending { request_id, .. } = queued else {
            panic!("not queued: {queued:?}");
        };
        assert!(gate.status(&request_id).unwrap().is_open());
        request_id
    };
    assert_eq!(file_events(&path), ["requested", "queued"]);

    // The restart keeps it (deferred by its `queued` record); Alice approves.
    let desk = Arc::new(Listener::default());
    let gate = start(
        Arc::new(JsonlFileSink::open(&path, writer()).unwrap()),
        desk.clone(),
    );
    let recovery = gate.recover().await.unwrap();
    assert_eq!(recovery.reopened, std::slice::from_ref(&id));
    let (request, ballots) = lock(&desk.delivered)[0].clone();
    ballots
        .cast(Ballot::new(&request, "mock:alice", "mock", Vote::Approve))
        .await
        .unwrap();
    // The same call, come back for: runs once, then is used up.
    let runs = Arc::new(AtomicU32::new(0));
    assert_eq!(deferred_export(&gate, agent(), &runs).await.unwrap(), 1);
    assert!(matches!(
        deferred_export(&gate, agent(), &runs).await,
        Err(ApprovalError::AlreadyUsed { .. })
    ));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_escalation_needs_a_time_shorter_than_the_timeout_and_somewhere_to_go() {
    let build = |policy: Policy| {
        Gate::builder(sink())
            .approver("mock", Arc::new(Listener::default()))
            .policy(policy.approvers(["alice"]))
            .directory(directory())
            .build()
            .unwrap_err()
            .to_string()
    };
    let base = || Policy::new("p", ["mock"], Duration::from_secs(60));
    let none: [&str; 0] = [];
    assert_eq!(
        build(base().escalate_after(Duration::from_secs(60), ["mock"], none)),
        "policy p escalates at once or only after its timeout"
    );
    assert_eq!(
        build(base().escalate_after(Duration::from_secs(1), none, none)),
        "policy p escalates to no route and no group"
    );
    let unknown_route = build(base().escalate_after(Duration::from_secs(1), ["pager"], none));
    assert!(unknown_route.contains("pager"), "{unknown_route}");
    let unknown_group = build(base().escalate_after(Duration::from_secs(1), none, ["nobody"]));
    assert!(unknown_group.contains("nobody"), "{unknown_group}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_notice_is_retried_and_traced_and_the_outcome_stands() {
    let traces = Traces::default();
    let _guard = traces.install();
    let flaky = Arc::new(Flaky {
        failures: AtomicU32::new(2),
        heard: Mutex::default(),
        slow: Duration::ZERO,
    });
    let (gate, sink) = one_route(flaky.clone(), Duration::from_secs(60));
    let value = gate
        .run(call(), || Ok(None), async { Ok::<_, ApprovalError>(7) })
        .await
        .unwrap();
    assert_eq!(value, 7, "the call ran though its channel's notice failed");
    gate.drain_notices().await;
    assert_eq!(*lock(&flaky.heard), ["settled"], "heard on the third try");
    assert_eq!(
        events(&sink),
        ["requested", "reviewed", "approved", "executed"]
    );
    let text = traces.text();
    let id = records(&sink)[0]["request_id"].as_str().unwrap().to_owned();
    let retries: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("approver notice failed; retrying"))
        .collect();
    assert_eq!(retries.len(), 2, "{text}");
    for line in retries {
        assert!(
            line.contains(&id) && line.contains("channel down"),
            "{line}"
        );
        assert!(
            line.contains(r#"route="mock""#) && line.contains("WARN"),
            "{line}"
        );
    }

    // Past its tries: given up, traced as an error; nothing else changes.
    flaky.failures.store(10, Ordering::SeqCst);
    gate.run(call(), || Ok(None), async { Ok::<_, ApprovalError>(8) })
        .await
        .unwrap();
    gate.drain_notices().await;
    assert_eq!(lock(&flaky.heard).len(), 1);
    assert!(
        traces
            .text()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("giving up") && l.contains("attempts=4")),
        "{}",
        traces.text()
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_open_requests_drains_notices_and_refuses_new_ones() {
    let flaky = Arc::new(Flaky {
        failures: AtomicU32::new(0),
        heard: Mutex::default(),
        slow: Duration::from_secs(3),
    });
    let sink = sink();
    let gate = Gate::builder(sink.clone())
        .approver("mock", flaky.clone())
        .approver("quiet", Arc::new(MockApprover::silent("ci")))
        .policy(Policy::new("export", ["mock"], Duration::from_secs(60)).approvers(["mock:ci"]))
        .policy(Policy::new("quiet", ["quiet"], Duration::from_secs(60)).approvers(["mock:ci"]))
        .build()
        .unwrap();
    // One approved (its notice takes 3 s to deliver), one left open.
    gate.run(call(), || Ok(None), async { Ok::<_, ApprovalError>(()) })
        .await
        .unwrap();
    let mut quiet = call();
    quiet.policy = "quiet".into();
    let open = gate.submit(quiet).await.unwrap();
    assert!(lock(&flaky.heard).is_empty(), "still being delivered");

    gate.shutdown().await.unwrap();
    assert_eq!(*lock(&flaky.heard), ["settled"], "drained before returning");
    assert!(matches!(
        open.decision().await,
        Err(ApprovalError::Cancelled { why }) if why == "gate shut down"
    ));
    assert!(matches!(
        gate.submit(call()).await,
        Err(ApprovalError::GateClosed)
    ));
    let names = events(&sink);
    assert_eq!(
        names,
        [
            "requested",
            "reviewed",
            "approved",
            "executed",
            "requested",
            "cancelled"
        ]
    );
}

fn deferred_gate(sink: Arc<dyn crate::AuditSink>, clock: Option<Arc<dyn Clock>>) -> Gate {
    let mut builder = Gate::builder(sink)
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .policy(Policy::new("export", ["mock"], Duration::from_secs(600)).approvers(["alice"]))
        .directory(directory());
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    builder.build().unwrap()
}

fn agent() -> Actor {
    Actor::new("agent-7").on_behalf_of("dave")
}

/// A deferred call of the export, by `actor`; `runs` counts bodies run.
async fn deferred_export(
    gate: &Gate,
    actor: Actor,
    runs: &Arc<AtomicU32>,
) -> Result<u32, ApprovalError> {
    let runs = runs.clone();
    with_actor(actor, async {
        let approval = gate.approve_deferred(call()).await?;
        approval
            .confirm_args(&call().args)
            .await?
            .execute(async move { Ok::<_, ApprovalError>(runs.fetch_add(1, Ordering::SeqCst) + 1) })
            .await
    })
    .await
}

fn pending_id(result: Result<u32, ApprovalError>) -> String {
    match result {
        Err(ApprovalError::Pending { request_id, .. }) => request_id,
        other => panic!("not pending: {other:?}"),
    }
}

#[tokio::test]
async fn a_deferred_call_is_pending_then_runs_once_when_approved_then_is_refused() {
    let sink = sink();
    let gate = deferred_gate(sink.clone(), None);
    let runs = Arc::new(AtomicU32::new(0));
    let id = pending_id(deferred_export(&gate, agent(), &runs).await);
    // Asked again while open: the same request, nothing new recorded.
    assert_eq!(pending_id(deferred_export(&gate, agent(), &runs).await), id);
    assert_eq!(events(&sink), ["requested"]);
    assert_eq!(records(&sink)[0]["deferred"], true);
    // Another actor's same call is its own request.
    let other = pending_id(deferred_export(&gate, Actor::new("agent-9"), &runs).await);
    assert_ne!(other, id);

    let request = gate.status(&id).unwrap().request;
    gate.cast(Ballot::new(&request, "mock:alice", "mock", Vote::Approve))
        .await
        .unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "nothing runs until the call comes back"
    );
    assert_eq!(deferred_export(&gate, agent(), &runs).await.unwrap(), 1);
    // Replayed after it ran: refused, and the body does not run again.
    assert!(matches!(
        deferred_export(&gate, agent(), &runs).await,
        Err(ApprovalError::AlreadyUsed { request_id }) if request_id == id
    ));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let of_id: Vec<String> = records(&sink)
        .iter()
        .filter(|r| r["request_id"] == id.as_str())
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(of_id, ["requested", "reviewed", "approved", "executed"]);
}

#[tokio::test]
async fn a_denied_deferred_call_gets_its_refusal_once_then_asks_anew() {
    let sink = sink();
    let gate = deferred_gate(sink.clone(), None);
    let runs = Arc::new(AtomicU32::new(0));
    let id = pending_id(deferred_export(&gate, agent(), &runs).await);
    let request = gate.status(&id).unwrap().request;
    gate.cast(Ballot::new(&request, "mock:alice", "mock", Vote::Deny).comment("not today"))
        .await
        .unwrap();
    assert!(matches!(
        deferred_export(&gate, agent(), &runs).await,
        Err(ApprovalError::Denied { comment: Some(c), .. }) if c == "not today"
    ));
    let again = pending_id(deferred_export(&gate, agent(), &runs).await);
    assert_ne!(again, id);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // Shutdown leaves a deferred request open for the next run.
    gate.shutdown().await.unwrap();
    assert!(gate.status(&again).unwrap().is_open());
}

#[tokio::test]
async fn a_deferred_request_survives_a_restart_and_a_vote_after_it_runs_it_once() {
    use crate::{JsonlFileSink, Keyring, ManualClock};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let clock = Arc::new(ManualClock::new(crate::SystemClock.now()));
    let secret = WriterSecret::from_hex(&"24".repeat(32)).unwrap();
    let writer =
        || Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &secret).with_clock(clock.clone()));
    let runs = Arc::new(AtomicU32::new(0));

    // First run: asked for, one vote of two (Bob's), then the process ends.
    let two = || {
        Policy::new("export", ["mock"], Duration::from_secs(600))
            .approvers(["alice", "bob"])
            .required(2)
    };
    let start = |sink: Arc<JsonlFileSink>| {
        Gate::builder(sink)
            .approver("mock", Arc::new(MockApprover::silent("ci")))
            .policy(two())
            .directory(directory())
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let (id, blocking) = {
        let gate = start(Arc::new(JsonlFileSink::open(&path, writer()).unwrap()));
        let id = pending_id(deferred_export(&gate, agent(), &runs).await);
        let request = gate.status(&id).unwrap().request;
        gate.cast(Ballot::new(&request, "mock:bob", "mock", Vote::Approve))
            .await
            .unwrap();
        // A blocking caller's request is closed at restart, as before.
        let blocking = gate.submit(call()).await.unwrap().detach();
        (id, blocking)
    };

    // Second run, five minutes later: reopened with Bob's vote.
    clock.advance(Duration::from_secs(300));
    let sink = Arc::new(JsonlFileSink::open(&path, writer()).unwrap());
    let gate = start(sink.clone());
    let recovery = gate.recover().await.unwrap();
    assert_eq!(recovery.reopened, std::slice::from_ref(&id));
    assert_eq!(
        recovery.cancelled,
        std::slice::from_ref(&blocking),
        "the detached blocking one"
    );
    let view = gate.status(&id).unwrap();
    assert!(view.is_open());
    assert_eq!(view.votes.len(), 1);
    assert_eq!(view.may_vote, ["alice"]);
    assert_eq!(pending_id(deferred_export(&gate, agent(), &runs).await), id);
    // Alice's vote after the restart settles it; the call then runs once.
    let request = view.request;
    let outcome = gate
        .cast(Ballot::new(&request, "mock:alice", "mock", Vote::Approve))
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        BallotOutcome::Counted { decision: Some(Decision::Approved { ref reviewers }) } if reviewers.len() == 2
    ));
    assert_eq!(deferred_export(&gate, agent(), &runs).await.unwrap(), 1);
    assert!(deferred_export(&gate, agent(), &runs).await.is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    drop(gate);
    drop(sink);

    // The chain verifies, and the request's records tell the story.
    let log = std::fs::read(&path).unwrap();
    let keyring = Keyring::new().with(KeyId::new("k").unwrap(), secret.record_key());
    let report = crate::verify(&log[..], &keyring).unwrap();
    assert_eq!(report.records, 7, "{report:?}");
    let of_id: Vec<String> = String::from_utf8(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["request_id"] == id.as_str())
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        of_id,
        ["requested", "reviewed", "reviewed", "approved", "executed"]
    );
}

#[tokio::test]
async fn a_deferred_request_whose_deadline_passed_while_down_is_expired_at_restart() {
    use crate::{JsonlFileSink, ManualClock};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let clock = Arc::new(ManualClock::new(crate::SystemClock.now()));
    let secret = WriterSecret::from_hex(&"25".repeat(32)).unwrap();
    let writer =
        || Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &secret).with_clock(clock.clone()));
    let runs = Arc::new(AtomicU32::new(0));
    let id = {
        let sink = Arc::new(JsonlFileSink::open(&path, writer()).unwrap());
        let gate = deferred_gate(sink, Some(clock.clone()));
        pending_id(deferred_export(&gate, agent(), &runs).await)
    };
    clock.advance(Duration::from_secs(601));
    let sink = Arc::new(JsonlFileSink::open(&path, writer()).unwrap());
    let gate = deferred_gate(sink, Some(clock.clone()));
    let recovery = gate.recover().await.unwrap();
    assert_eq!(recovery.expired, std::slice::from_ref(&id));
    assert!(recovery.reopened.is_empty());
    let again = pending_id(deferred_export(&gate, agent(), &runs).await);
    assert_ne!(again, id, "asked anew");
}

#[test]
fn a_waiter_keeps_its_deadline_itself_once_the_gate_s_runtime_is_gone() {
    // The gate's timer and outboxes run on a runtime of their own, which
    // shuts down while a caller (on another runtime) waits.
    let gate_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sink = sink();
    let gate = Gate::builder(sink.clone())
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .policy(Policy::new("export", ["mock"], Duration::from_millis(300)).approvers(["alice"]))
        .directory(directory())
        .runtime(gate_runtime.handle().clone())
        .build()
        .unwrap();
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let outcome = caller.block_on(async {
        let ticket = with_actor(agent(), gate.submit(call())).await.unwrap();
        gate_runtime.shutdown_background();
        tokio::time::timeout(Duration::from_secs(10), ticket.decision())
            .await
            .expect("the waiter returned")
    });
    assert!(
        matches!(outcome, Err(ApprovalError::Expired { .. })),
        "{outcome:?}"
    );
    // At its deadline, not before, and not never.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(
        events(&sink).contains(&"expired".to_owned()),
        "{:?}",
        events(&sink)
    );
}

#[tokio::test]
async fn outside_attended_hours_a_request_is_denied_queued_or_waits_as_its_policy_says() {
    use crate::ManualClock;
    // Saturday 3 January 1970, 12:00 UTC; the desk attends weekdays 9 to 6.
    let saturday = unix_epoch_plus(2 * 86_400 + 12 * 3600);
    let gate_with = |unreachable, clock: Arc<ManualClock>| {
        let (desk, sink) = (Arc::new(Listener::default()), sink());
        let office = AttendedHours::new(
            ["mon", "tue", "wed", "thu", "fri"],
            "09:00",
            "18:00",
            "+00:00",
        )
        .unwrap();
        let gate = Gate::builder(sink.clone())
            .approver("mock", desk.clone())
            .policy(
                Policy::new("export", ["mock"], Duration::from_secs(3 * 86_400))
                    .approvers(["alice"])
                    .attended(office)
                    .when_unreachable(unreachable),
            )
            .directory(directory())
            .clock(clock)
            .build()
            .unwrap();
        (gate, sink, desk)
    };

    // The default: denied at once, on record, and nobody is bothered.
    let clock = Arc::new(ManualClock::new(saturday));
    let (gate, sink, desk) = gate_with(Unreachable::Deny, clock.clone());
    let refused = gate.submit(call()).await.err().unwrap();
    assert!(
        matches!(&refused, ApprovalError::Unattended { policy } if policy == "export"),
        "{refused:?}"
    );
    assert_eq!(events(&sink), ["requested", "cancelled"]);
    assert_eq!(
        records(&sink)[1]["why"],
        "outside the policy's attended hours (mon,tue,wed,thu,fri 09:00-18:00 UTC+00:00)"
    );
    assert!(lock(&desk.delivered).is_empty());
    // On Monday morning the same call is asked as usual.
    clock.advance(Duration::from_secs(2 * 86_400 - 2 * 3600));
    let ticket = gate.submit(call()).await.unwrap();
    assert_eq!(lock(&desk.delivered).len(), 1);
    assert!(gate.status(ticket.request_id()).unwrap().is_open());

    // `queue`: delivered, recorded `queued`, the caller told to come back;
    // approved on Monday, the same call then runs once.
    let (gate, sink, desk) = gate_with(Unreachable::Queue, Arc::new(ManualClock::new(saturday)));
    let queued = with_actor(agent(), gate.submit(call()))
        .await
        .err()
        .unwrap();
    let ApprovalError::Pending { request_id, .. } = queued else {
        panic!("not queued: {queued:?}");
    };
    assert_eq!(events(&sink), ["requested", "queued"]);
    let queued_record = &records(&sink)[1];
    assert_eq!(
        queued_record["attended"],
        "mon,tue,wed,thu,fri 09:00-18:00 UTC+00:00"
    );
    assert!(queued_record.get("route").is_none());
    let (request, ballots) = lock(&desk.delivered)[0].clone();
    assert_eq!(request.id, request_id);
    ballots
        .cast(Ballot::new(&request, "mock:alice", "mock", Vote::Approve))
        .await
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    assert_eq!(deferred_export(&gate, agent(), &runs).await.unwrap(), 1);

    // `wait`: delivered and open; it runs only if someone approves.
    let (gate, sink, desk) = gate_with(Unreachable::Wait, Arc::new(ManualClock::new(saturday)));
    let ticket = gate.submit(call()).await.unwrap();
    assert_eq!(events(&sink), ["requested"]);
    let (request, ballots) = lock(&desk.delivered)[0].clone();
    ballots
        .cast(Ballot::new(&request, "mock:alice", "mock", Vote::Deny))
        .await
        .unwrap();
    assert!(matches!(
        ticket.decision().await,
        Err(ApprovalError::Denied { .. })
    ));
}

/// That many seconds after 1970 began (a Thursday).
fn unix_epoch_plus(secs: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn a_policy_file_s_attended_hours_are_checked_at_their_line() {
    let text = "[[policy]]\nname = \"export\"\nroutes = [\"mock\"]\ntimeout_ms = 60000\n\
                attended = { days = [\"mon\", \"fri\"], from = \"09:00\", to = \"18:00\", utc_offset = \"+02:00\" }\n";
    let file = PolicyFile::parse(text, "policies.toml").unwrap();
    let hours = file.policies()[0].attended.as_ref().unwrap();
    assert_eq!(hours.to_string(), "mon,fri 09:00-18:00 UTC+02:00");
    // The canonical form names them as written, so the digest covers them.
    let json = CanonicalJson::from_serialize(&file.policies()[0]).unwrap();
    assert!(
        json.as_str().contains(
            r#""attended":{"days":["mon","fri"],"from":"09:00","to":"18:00","utc_offset":"+02:00"}"#
        ),
        "{}",
        json.as_str()
    );
    let wrong = text.replace("18:00", "6pm");
    let err = PolicyFile::parse(&wrong, "policies.toml").unwrap_err();
    assert!(
        matches!(&err, ConfigError::PolicyFile { line: 5, cause, .. } if cause.contains("not a time of day")),
        "{err}"
    );
}
