//! The shared message approver over a channel that records what it is
//! asked to show, through a real gate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use approval_channel::{MessageApprover, MessageChannel, MessageStore, MessageView};
use approval_core::{
    ApprovalError, ApprovalRequest, Approver, ApproverError, Ballot, BallotOutcome, Call,
    CanonicalJson, ChainWriter, Gate, KeyId, MemorySink, Notice, Policy, Recovery, Vote,
    WriterSecret,
};

/// What the channel was asked to show, in order, as short lines.
#[derive(Debug, Default)]
struct Fake {
    shown: Mutex<Vec<String>>,
    /// Updates still to fail before one gets through.
    failures: Mutex<u32>,
}

impl Fake {
    fn shown(&self) -> Vec<String> {
        self.shown.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl MessageChannel for Fake {
    type Message = String;

    fn name(&self) -> &'static str {
        "fake"
    }

    async fn post(&self, request: &ApprovalRequest) -> Result<String, ApproverError> {
        self.shown
            .lock()
            .unwrap()
            .push(format!("post {}", request.action));
        Ok(format!("msg-{}", request.id))
    }

    async fn update(&self, message: &String, view: &MessageView<'_>) -> Result<(), ApproverError> {
        {
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(ApproverError::Unreachable("fake outage".into()));
            }
        }
        let line = match view {
            MessageView::Open(status) => format!(
                "open {message}: {} vote(s), may vote {:?}",
                status.votes.len(),
                status.may_vote
            ),
            MessageView::Ended { decision, .. } => {
                format!("ended {message}: {}", decision.outcome())
            }
            MessageView::Left {
                request_id,
                cancelled,
            } => format!("left {request_id}: cancelled {cancelled}"),
            _ => "other".to_owned(),
        };
        self.shown.lock().unwrap().push(line);
        Ok(())
    }
}

fn gate(approver: Arc<MessageApprover<Fake>>) -> Gate {
    let secret = WriterSecret::from_hex(&"42".repeat(32)).unwrap();
    let writer = Arc::new(ChainWriter::new(KeyId::new("k1").unwrap(), &secret));
    Gate::builder(Arc::new(MemorySink::new(writer)))
        .approver("fake", approver)
        .notice_retry(5, Duration::from_millis(1), Duration::from_millis(5))
        .policy(
            Policy::new("export", ["fake"], Duration::from_secs(60))
                .approvers(["fake:alice", "fake:bob"])
                .required(2),
        )
        .build()
        .unwrap()
}

fn call() -> Call {
    let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "users"})).unwrap();
    Call::new("crm::export", "export", args)
}

async fn vote(approver: &MessageApprover<Fake>, id: &str, who: &str) -> BallotOutcome {
    let ballots = approver.ballots().expect("attached");
    let binding = ballots.status(id).expect("held").request.binding;
    let ballot = Ballot::from_parts(id, binding, format!("fake:{who}"), "fake", Vote::Approve);
    ballots.cast(ballot).await.expect("recorded")
}

#[tokio::test(flavor = "current_thread")]
async fn every_vote_and_the_outcome_are_shown_from_the_gate_and_the_entry_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Arc::new(
        MessageApprover::new(Fake::default())
            .message_store(MessageStore::open(dir.path()).unwrap()),
    );
    let gate = gate(approver.clone());
    let ticket = gate.submit(call()).await.unwrap();
    let id = ticket.request_id().to_owned();
    assert_eq!(approver.message_of(&id), Some(format!("msg-{id}")));
    // The message is remembered while the request is open.
    assert_eq!(
        MessageStore::<String>::open(dir.path())
            .unwrap()
            .all()
            .unwrap()
            .len(),
        1
    );

    assert!(matches!(
        vote(&approver, &id, "alice").await,
        BallotOutcome::Counted { decision: None }
    ));
    gate.drain_notices().await;
    assert!(matches!(
        vote(&approver, &id, "bob").await,
        BallotOutcome::Counted { decision: Some(_) }
    ));
    assert!(ticket.decision().await.is_ok());
    gate.drain_notices().await;

    assert_eq!(
        approver.channel().shown(),
        [
            "post crm::export".to_owned(),
            format!("open msg-{id}: 1 vote(s), may vote [\"fake:bob\"]"),
            format!("ended msg-{id}: approved"),
        ]
    );
    // Shown: its store entry is gone, so a restart leaves it alone.
    assert!(
        MessageStore::<String>::open(dir.path())
            .unwrap()
            .all()
            .unwrap()
            .is_empty()
    );
    // A late click is answered with the outcome.
    let late = approver.render(&id, |view| matches!(view, MessageView::Ended { .. }));
    assert_eq!(late, Some(true));
    // Only someone who may vote on it is shown it; nobody may any more.
    assert_eq!(approver.render_for(&id, "fake:mallory", |_| ()), None);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_update_is_retried_by_the_gate_and_the_outcome_stands() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Arc::new(
        MessageApprover::new(Fake::default())
            .message_store(MessageStore::open(dir.path()).unwrap()),
    );
    let gate = gate(approver.clone());
    let ticket = gate.submit(call()).await.unwrap();
    let id = ticket.request_id().to_owned();
    *approver.channel().failures.lock().unwrap() = 2;
    gate.cancel(&id, "test over").await.unwrap();
    assert!(matches!(
        ticket.decision().await,
        Err(ApprovalError::Cancelled { .. })
    ));
    gate.drain_notices().await;
    // Two failures, then the third try got through.
    assert_eq!(
        approver.channel().shown(),
        [
            "post crm::export".to_owned(),
            format!("ended msg-{id}: cancelled")
        ]
    );
    assert_eq!(*approver.channel().failures.lock().unwrap(), 0);
    assert!(
        MessageStore::<String>::open(dir.path())
            .unwrap()
            .all()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn after_a_restart_the_messages_a_previous_run_left_lose_their_buttons() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(dir.path()).unwrap();
    store
        .remember("cancelled-by-restart", &"msg-1".to_owned())
        .unwrap();
    store
        .remember("ended-while-down", &"msg-2".to_owned())
        .unwrap();
    store.remember("reopened", &"msg-3".to_owned()).unwrap();
    let approver = MessageApprover::new(Fake::default()).message_store(store);
    let mut recovery = Recovery::default();
    recovery.cancelled.push("cancelled-by-restart".to_owned());
    recovery.reopened.push("reopened".to_owned());
    approver
        .notify(&Notice::Recovered(Arc::new(recovery)))
        .await
        .unwrap();
    assert_eq!(
        approver.channel().shown(),
        [
            "left cancelled-by-restart: cancelled true",
            "left ended-while-down: cancelled false",
        ]
    );
    // The reopened request is delivered again; its entry stays.
    let left = MessageStore::<String>::open(dir.path())
        .unwrap()
        .all()
        .unwrap();
    assert_eq!(left, [("reopened".to_owned(), "msg-3".to_owned())]);
}
