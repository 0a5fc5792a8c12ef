//! The request table's life cycle: submit, status, wait, cancel, expiry on
//! the gate's timer, concurrent delivery, notices and shutdown.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::record::{Actor, Vote};
use crate::{ChainWriter, KeyId, MemorySink, WriterSecret};

fn sink() -> Arc<MemorySink> {
    let secret = WriterSecret::from_hex(&"22".repeat(32)).unwrap();
    Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))))
}

fn records(sink: &MemorySink) -> Vec<Value> {
    String::from_utf8(sink.bytes())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn events(sink: &MemorySink) -> Vec<String> {
    records(sink)
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect()
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

/// Collects what `tracing` writes while it is in scope.
#[derive(Clone, Default)]
struct Traces(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Traces {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Traces {
    fn text(&self) -> String {
        String::from_utf8(lock(&self.0).clone()).unwrap()
    }

    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let traces = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || traces.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
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
