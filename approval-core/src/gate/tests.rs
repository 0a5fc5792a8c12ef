//! The gate's flow: each ending, each vote check, and the exact records.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::error::ApproverError;
use crate::{ChainWriter, KeyId, MemorySink, WriterSecret};
use approval_audit::{Actor, Event, RejectReason, Reviewer, Vote};

fn sink() -> Arc<MemorySink> {
    let secret = WriterSecret::from_hex(&"11".repeat(32)).unwrap();
    Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))))
}

/// The records so far, as (event, record).
fn events(sink: &MemorySink) -> Vec<(String, Value)> {
    String::from_utf8(sink.bytes())
        .unwrap()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            (record["event"].as_str().unwrap().to_owned(), record)
        })
        .collect()
}

fn names(sink: &MemorySink) -> Vec<String> {
    events(sink).into_iter().map(|(event, _)| event).collect()
}

fn directory() -> Directory {
    Directory::new()
        .person("alice", ["slack:UALICE", "teams:alice-oid"])
        .person("bob", ["slack:UBOB"])
        .person("carol", ["slack:UCAROL"])
        .person("dave", ["slack:UDAVE"])
        .person("ci", ["mock:ci"])
        .group("security", ["alice", "bob"])
}

fn gate(sink: &Arc<MemorySink>, approver: Arc<dyn Approver>, policy: Policy) -> Gate {
    Gate::builder(sink.clone())
        .approver("mock", approver)
        .policy(policy)
        .directory(directory())
        .build()
        .unwrap()
}

fn policy() -> Policy {
    Policy::new("export", ["mock"], Duration::from_secs(60)).approvers(["mock:ci"])
}

fn call() -> Call {
    let args = CanonicalJson::from_serialize(&json!({"table": "users", "rows": 10})).unwrap();
    Call::new("crm::export", "export", args).resource("warehouse/users")
}

fn agent() -> Actor {
    Actor::new("agent-7").on_behalf_of("dave")
}

/// Runs a gated body that notes whether it ran.
async fn run(gate: &Gate, ran: &Arc<AtomicBool>) -> Result<u32, ApprovalError> {
    let ran = ran.clone();
    with_actor(
        agent(),
        gate.run(call(), || Ok(None), async move {
            ran.store(true, Ordering::SeqCst);
            Ok::<_, ApprovalError>(7)
        }),
    )
    .await
}

#[tokio::test]
async fn an_approved_call_runs_once_and_is_recorded_in_order() {
    let sink = sink();
    let mock = Arc::new(MockApprover::approve_all("ci"));
    let gate = gate(&sink, mock.clone(), policy());
    let ran = Arc::new(AtomicBool::new(false));
    assert_eq!(run(&gate, &ran).await.unwrap(), 7);
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(
        names(&sink),
        ["requested", "reviewed", "approved", "executed"]
    );
    let records = events(&sink);
    let requested = &records[0].1;
    assert_eq!(requested["action"], "crm::export");
    assert_eq!(requested["policy"], "export");
    assert_eq!(requested["args"], json!({"rows": 10, "table": "users"}));
    assert_eq!(
        requested["actor"],
        json!({"id": "agent-7", "on_behalf_of": "dave"})
    );
    assert_eq!(requested["resource"], "warehouse/users");
    assert_eq!(
        requested["policy_digest"],
        approval_audit::hex::encode(&policy().digest())
    );
    assert_eq!(records[1].1["channel"], "mock");
    assert_eq!(
        records[1].1["reviewer"],
        json!({"id": "mock:ci", "person": "ci"})
    );
    assert_eq!(
        records[2].1["reviewers"],
        json!([{"id": "mock:ci", "person": "ci"}])
    );
    assert_eq!(records[3].1["outcome"], "ok");
    // The request the approver saw is the one recorded.
    let seen = &mock.requests()[0];
    assert_eq!(requested["request_id"], seen.id.as_str());
    assert_eq!(
        requested["binding"],
        approval_audit::hex::encode(&seen.binding)
    );
    // All records share the request id.
    assert!(
        records
            .iter()
            .all(|(_, r)| r["request_id"] == seen.id.as_str())
    );
}

#[tokio::test]
async fn a_denied_call_never_runs_and_returns_the_comment() {
    let sink = sink();
    let gate = gate(
        &sink,
        Arc::new(MockApprover::deny_all("ci", "use the replica")),
        policy(),
    );
    let ran = Arc::new(AtomicBool::new(false));
    let err = run(&gate, &ran).await.unwrap_err();
    assert!(!ran.load(Ordering::SeqCst));
    let ApprovalError::Denied { reviewer, comment } = err else {
        panic!("{err}")
    };
    assert_eq!(
        (reviewer.id.as_str(), comment.as_deref()),
        ("mock:ci", Some("use the replica"))
    );
    assert_eq!(names(&sink), ["requested", "reviewed", "denied"]);
    assert_eq!(events(&sink)[1].1["comment"], "use the replica");
}

#[tokio::test]
async fn an_unknown_policy_fails_closed_before_anything_is_asked() {
    let sink = sink();
    let mock = Arc::new(MockApprover::approve_all("ci"));
    let gate = gate(&sink, mock.clone(), policy());
    let ran = Arc::new(AtomicBool::new(false));
    let mut unknown = call();
    unknown.policy = "nope".into();
    let err = gate
        .run(unknown, || Ok(None), async { Ok::<_, ApprovalError>(()) })
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::UnknownPolicy { ref policy } if policy == "nope"));
    assert!(!ran.load(Ordering::SeqCst));
    assert!(mock.requests().is_empty());
    assert!(sink.is_empty());
}

#[tokio::test(start_paused = true)]
async fn nobody_deciding_in_time_is_expired_not_denied() {
    let sink = sink();
    let gate = gate(&sink, Arc::new(MockApprover::silent("ci")), policy());
    let ran = Arc::new(AtomicBool::new(false));
    let err = run(&gate, &ran).await.unwrap_err();
    assert!(
        matches!(err, ApprovalError::Expired { ref policy, timeout } if policy == "export" && timeout == Duration::from_secs(60)),
        "{err}"
    );
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(names(&sink), ["requested", "expired"]);
    assert_eq!(events(&sink)[1].1["timeout_ms"], 60_000);
}

/// Starts a gated call in the background and waits until its request is
/// delivered; returns the call's handle and the request.
async fn start(
    gate: &Gate,
    mock: &Arc<MockApprover>,
    ran: &Arc<AtomicBool>,
) -> (
    tokio::task::JoinHandle<Result<u32, ApprovalError>>,
    Arc<ApprovalRequest>,
) {
    let delivered = mock.requests().len();
    let handle = tokio::spawn({
        let (gate, ran) = (gate.clone(), ran.clone());
        async move { run(&gate, &ran).await }
    });
    loop {
        if let Some(request) = mock.requests().get(delivered) {
            return (handle, request.clone());
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn two_approvals_count_people_not_identities_and_absorb_redelivery() {
    let sink = sink();
    let mock = Arc::new(MockApprover::silent("ci"));
    let gate = gate(
        &sink,
        mock.clone(),
        policy().required(2).groups(["security"]),
    );
    let ran = Arc::new(AtomicBool::new(false));
    let (call, request) = start(&gate, &mock, &ran).await;
    let vote = |who: &str, channel: &str, vote| Ballot::new(&request, who, channel, vote);

    let first = gate
        .cast(vote("slack:UALICE", "slack", Vote::Approve))
        .await
        .unwrap();
    assert_eq!(first, BallotOutcome::Counted { decision: None });
    // Slack redelivers the same click: absorbed, not counted, not recorded.
    let again = gate
        .cast(vote("slack:UALICE", "slack", Vote::Approve))
        .await
        .unwrap();
    assert_eq!(again, BallotOutcome::Absorbed);
    // Alice again through Teams is still Alice: one person, one vote.
    let teams = gate
        .cast(vote("teams:alice-oid", "teams", Vote::Approve))
        .await
        .unwrap();
    assert_eq!(teams, BallotOutcome::Rejected(RejectReason::AlreadyVoted));
    assert!(
        !ran.load(Ordering::SeqCst),
        "one person is not two approvals"
    );
    let second = gate
        .cast(vote("slack:UBOB", "slack", Vote::Approve))
        .await
        .unwrap();
    assert!(matches!(
        second,
        BallotOutcome::Counted {
            decision: Some(Decision::Approved { .. })
        }
    ));
    assert_eq!(call.await.unwrap().unwrap(), 7);
    assert_eq!(
        names(&sink),
        [
            "requested",
            "reviewed",
            "rejected_vote",
            "reviewed",
            "approved",
            "executed"
        ]
    );
    let records = events(&sink);
    assert_eq!(records[2].1["why"], "already_voted");
    assert_eq!(
        records[1].1["reviewer"],
        json!({"id": "slack:UALICE", "person": "alice"})
    );
    assert_eq!(records[4].1["reviewers"].as_array().unwrap().len(), 2);
    // Late votes are refused as settled.
    let late = gate
        .cast(vote("slack:UCAROL", "slack", Vote::Deny))
        .await
        .unwrap();
    assert_eq!(late, BallotOutcome::Rejected(RejectReason::Settled));
}

#[tokio::test]
async fn each_refused_vote_is_recorded_with_its_reason_and_changes_nothing() {
    let sink = sink();
    let mock = Arc::new(MockApprover::silent("ci"));
    let directory_with_dave = Directory::new()
        .person("dave", ["slack:UDAVE"])
        .person("alice", ["slack:UALICE"])
        .person("carol", ["slack:UCAROL"])
        .person("ci", ["mock:ci"]);
    let gate = Gate::builder(sink.clone())
        .approver("mock", mock.clone())
        .policy(policy().approvers(["dave", "alice"]))
        .directory(directory_with_dave)
        .build()
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let (call, request) = start(&gate, &mock, &ran).await;

    // The person the agent acts for, whatever the policy says.
    let own = gate
        .cast(Ballot::new(&request, "slack:UDAVE", "slack", Vote::Approve))
        .await
        .unwrap();
    assert_eq!(own, BallotOutcome::Rejected(RejectReason::SelfApproval));
    // The agent itself, through any identity.
    let agent_vote = gate
        .cast(Ballot::new(&request, "agent-7", "api", Vote::Approve))
        .await
        .unwrap();
    assert_eq!(
        agent_vote,
        BallotOutcome::Rejected(RejectReason::SelfApproval)
    );
    // Not named by the policy.
    let carol = gate
        .cast(Ballot::new(
            &request,
            "slack:UCAROL",
            "slack",
            Vote::Approve,
        ))
        .await
        .unwrap();
    assert_eq!(carol, BallotOutcome::Rejected(RejectReason::NotEligible));
    // An identity the directory does not know.
    let stranger = gate
        .cast(Ballot::new(
            &request,
            "slack:UNOBODY",
            "slack",
            Vote::Approve,
        ))
        .await
        .unwrap();
    assert_eq!(stranger, BallotOutcome::Rejected(RejectReason::NotEligible));
    // Bound to another binding.
    let mut forged = Ballot::new(&request, "slack:UALICE", "slack", Vote::Approve);
    forged.binding[0] ^= 1;
    let forged = gate.cast(forged).await.unwrap();
    assert_eq!(forged, BallotOutcome::Rejected(RejectReason::WrongBinding));
    // Another request id.
    let mut elsewhere = Ballot::new(&request, "slack:UALICE", "slack", Vote::Approve);
    elsewhere.request_id = "01NOPE".into();
    let elsewhere = gate.cast(elsewhere).await.unwrap();
    assert_eq!(
        elsewhere,
        BallotOutcome::Rejected(RejectReason::UnknownRequest)
    );
    assert!(!ran.load(Ordering::SeqCst));

    // Then a real approval settles it.
    gate.cast(Ballot::new(
        &request,
        "slack:UALICE",
        "slack",
        Vote::Approve,
    ))
    .await
    .unwrap();
    call.await.unwrap().unwrap();
    let whys: Vec<Value> = events(&sink)
        .into_iter()
        .filter(|(e, _)| e == "rejected_vote")
        .map(|(_, r)| r["why"].clone())
        .collect();
    assert_eq!(
        whys,
        [
            "self_approval",
            "self_approval",
            "not_eligible",
            "not_eligible",
            "wrong_binding",
            "unknown_request"
        ]
    );
}

#[tokio::test]
async fn a_policy_may_demand_distinct_channels() {
    let sink = sink();
    let mock = Arc::new(MockApprover::silent("ci"));
    let gate = gate(
        &sink,
        mock.clone(),
        policy()
            .required(2)
            .groups(["security"])
            .approvers(["carol"])
            .distinct_channels(),
    );
    let ran = Arc::new(AtomicBool::new(false));
    let (call, request) = start(&gate, &mock, &ran).await;
    for who in ["slack:UALICE", "slack:UBOB"] {
        let outcome = gate
            .cast(Ballot::new(&request, who, "slack", Vote::Approve))
            .await
            .unwrap();
        assert_eq!(outcome, BallotOutcome::Counted { decision: None }, "{who}");
    }
    assert!(!ran.load(Ordering::SeqCst), "two people, one channel");
    let carol = Ballot::new(&request, "slack:UCAROL", "teams", Vote::Approve);
    assert!(matches!(
        gate.cast(carol).await.unwrap(),
        BallotOutcome::Counted {
            decision: Some(Decision::Approved { .. })
        }
    ));
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_dropped_call_is_cancelled_at_once_and_cannot_be_approved_later() {
    let sink = sink();
    let mock = Arc::new(MockApprover::silent("ci"));
    let gate = gate(&sink, mock.clone(), policy());
    let ran = Arc::new(AtomicBool::new(false));
    let (call, request) = start(&gate, &mock, &ran).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    let late = gate
        .cast(Ballot::new(&request, "mock:ci", "mock", Vote::Approve))
        .await
        .unwrap();
    assert_eq!(late, BallotOutcome::Rejected(RejectReason::Settled));
    // The cancelled record is written right after the drop.
    for _ in 0..100 {
        if names(&sink).contains(&"cancelled".to_owned()) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let names = names(&sink);
    assert!(names.contains(&"cancelled".to_owned()), "{names:?}");
    assert!(!names.contains(&"approved".to_owned()));
    assert!(!ran.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_redacted_argument_changed_while_waiting_stops_the_call() {
    // The record shows only the secret's digest; the binding covers the
    // secret itself, so a change to it is caught by the binding, not by the
    // recorded bytes (which stay the same).
    let sink = sink();
    let gate = gate(&sink, Arc::new(MockApprover::approve_all("ci")), policy());
    let recorded =
        CanonicalJson::from_serialize(&json!({"table": "users", "token": {"redacted": "00"}}))
            .unwrap();
    let clear = |token: &str| {
        CanonicalJson::from_serialize(&json!({"table": "users", "token": token})).unwrap()
    };
    let mut redacted_call = Call::new("crm::export", "export", recorded);
    redacted_call.binding_args = Some(clear("s3cret"));

    let approve = || with_actor(agent(), gate.approve(redacted_call.clone()));
    let confirmed = approve()
        .await
        .unwrap()
        .confirm_args(&clear("s3cret"))
        .await;
    assert!(confirmed.is_ok());
    let err = approve()
        .await
        .unwrap()
        .confirm_args(&clear("other"))
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::ArgumentsChanged), "{err}");
    // Handing back the recorded form (digest in place of the secret) is a
    // change too: the binding is over the secret.
    let recorded_again =
        CanonicalJson::from_serialize(&json!({"table": "users", "token": {"redacted": "00"}}))
            .unwrap();
    let err = approve()
        .await
        .unwrap()
        .confirm_args(&recorded_again)
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::ArgumentsChanged), "{err}");
    assert_eq!(
        names(&sink),
        [
            "requested",
            "reviewed",
            "approved",
            "requested",
            "reviewed",
            "approved",
            "cancelled",
            "requested",
            "reviewed",
            "approved",
            "cancelled"
        ]
    );
}

#[tokio::test]
async fn arguments_changed_while_waiting_stop_the_call() {
    let sink = sink();
    let gate = gate(&sink, Arc::new(MockApprover::approve_all("ci")), policy());
    let ran = Arc::new(AtomicBool::new(false));
    let changed = CanonicalJson::from_serialize(&json!({"table": "admins", "rows": 10})).unwrap();
    let flag = ran.clone();
    let err = with_actor(
        agent(),
        gate.run(call(), move || Ok(Some(changed)), async move {
            flag.store(true, Ordering::SeqCst);
            Ok::<_, ApprovalError>(())
        }),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ApprovalError::ArgumentsChanged), "{err}");
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(
        names(&sink),
        ["requested", "reviewed", "approved", "cancelled"]
    );
    // Unchanged arguments pass the same check.
    let same = CanonicalJson::from_serialize(&json!({"table": "users", "rows": 10})).unwrap();
    with_actor(
        agent(),
        gate.run(call(), move || Ok(Some(same)), async {
            Ok::<_, ApprovalError>(())
        }),
    )
    .await
    .unwrap();
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("disk full at /srv/secret-path")]
    DiskFull,
    #[error(transparent)]
    Approval(#[from] ApprovalError),
}

#[tokio::test]
async fn a_failed_body_is_recorded_without_its_text_unless_the_policy_opts_in() {
    for (policy, expected) in [
        (policy(), None),
        (
            policy().record_error_text(),
            Some("disk full at /srv/secret-path"),
        ),
    ] {
        let sink = sink();
        let gate = gate(&sink, Arc::new(MockApprover::approve_all("ci")), policy);
        let err = gate
            .run(call(), || Ok(None), async {
                Err::<(), _>(BodyError::DiskFull)
            })
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::DiskFull));
        let executed = events(&sink).pop().unwrap().1;
        assert_eq!(executed["outcome"], "error");
        assert_eq!(executed.get("error").and_then(Value::as_str), expected);
    }
}

#[tokio::test]
async fn a_panicking_body_is_recorded_before_the_panic_goes_on() {
    let sink = sink();
    let gate = gate(&sink, Arc::new(MockApprover::approve_all("ci")), policy());
    let task = tokio::spawn({
        let gate = gate.clone();
        async move {
            gate.run(call(), || Ok(None), async {
                if true {
                    panic!("boom");
                }
                Ok::<(), ApprovalError>(())
            })
            .await
        }
    });
    assert!(task.await.unwrap_err().is_panic());
    let executed = events(&sink).pop().unwrap().1;
    assert_eq!(
        (executed["event"].as_str(), executed["outcome"].as_str()),
        (Some("executed"), Some("panicked"))
    );
}

#[tokio::test]
async fn actors_are_recorded_or_their_absence_is_and_may_be_required() {
    let sink = sink();
    let gate = gate(&sink, Arc::new(MockApprover::approve_all("ci")), policy());
    gate.run(call(), || Ok(None), async { Ok::<_, ApprovalError>(()) })
        .await
        .unwrap();
    assert_eq!(events(&sink)[0].1["actor"], json!({"id": NO_ACTOR}));

    let strict = self::gate(
        &sink,
        Arc::new(MockApprover::approve_all("ci")),
        policy().require_actor(),
    );
    let err = strict
        .run(call(), || Ok(None), async { Ok::<_, ApprovalError>(()) })
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::NoActor { ref policy } if policy == "export"));
    // Scopes nest; the innermost wins.
    let inner = with_actor(
        Actor::new("outer"),
        with_actor(Actor::new("inner"), async { current_actor() }),
    )
    .await;
    assert_eq!(inner.unwrap().id, "inner");
}

#[tokio::test]
async fn a_flooding_actor_fails_closed_with_its_own_error() {
    let sink = sink();
    let mock = Arc::new(MockApprover::silent("ci"));
    let gate = gate(&sink, mock.clone(), policy().max_pending_per_actor(1));
    let ran = Arc::new(AtomicBool::new(false));
    let (first, request) = start(&gate, &mock, &ran).await;
    let err = run(&gate, &ran).await.unwrap_err();
    assert!(
        matches!(err, ApprovalError::TooManyPending { ref actor, limit: 1 } if actor == "agent-7"),
        "{err}"
    );
    gate.cast(Ballot::new(&request, "mock:ci", "mock", Vote::Approve))
        .await
        .unwrap();
    first.await.unwrap().unwrap();
    // The slot is free again once the first request settled.
    let (second, request) = start(&gate, &mock, &ran).await;
    gate.cast(Ballot::new(&request, "mock:ci", "mock", Vote::Approve))
        .await
        .unwrap();
    second.await.unwrap().unwrap();
}

#[derive(Debug)]
struct Unreachable;

#[async_trait::async_trait]
impl Approver for Unreachable {
    async fn deliver(&self, _: Arc<ApprovalRequest>, _: Ballots) -> Result<(), ApproverError> {
        Err(ApproverError::Unreachable("connection refused".into()))
    }
}

#[tokio::test]
async fn an_approver_that_cannot_deliver_fails_the_call_closed() {
    let sink = sink();
    let gate = gate(&sink, Arc::new(Unreachable), policy());
    let ran = Arc::new(AtomicBool::new(false));
    let err = run(&gate, &ran).await.unwrap_err();
    assert!(
        matches!(err, ApprovalError::ApproverUnavailable { ref route, .. } if route == "mock"),
        "{err}"
    );
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(names(&sink), ["requested", "cancelled"]);
}

#[test]
fn setup_mistakes_are_found_at_build_time() {
    let build = |policy: Policy| {
        Gate::builder(sink())
            .approver("mock", Arc::new(MockApprover::silent("ci")))
            .policy(policy)
            .build()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        build(Policy::new("p", ["slack"], Duration::from_secs(1))),
        "policy p routes to slack, which is not a registered approver"
    );
    assert_eq!(
        build(policy().required(0)),
        "policy export needs at least one approval"
    );
    assert_eq!(
        build(Policy::new(
            "p",
            Vec::<String>::new(),
            Duration::from_secs(1)
        )),
        "policy p has no route to any approver"
    );
    // A deadline past what a clock holds panicked the first call.
    assert_eq!(
        build(Policy::new("p", ["mock"], Duration::MAX).approvers(["alice"])),
        "policy p has a timeout longer than 366 days"
    );
    for after in [
        Duration::ZERO,
        Duration::from_secs(1),
        Duration::from_secs(5),
    ] {
        assert_eq!(
            build(
                Policy::new("p", ["mock"], Duration::from_secs(1))
                    .approvers(["alice"])
                    .remind_after(after)
            ),
            "policy p reminds at once or only after its timeout",
            "{after:?}"
        );
    }
    let twice = Gate::builder(sink())
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .policy(policy())
        .policy(policy())
        .build()
        .unwrap_err();
    assert_eq!(twice.to_string(), "policy export is defined twice");
}

#[test]
fn request_ids_are_unique_and_sort_by_time() {
    use std::time::UNIX_EPOCH;
    let early =
        request::new_request_id(UNIX_EPOCH + Duration::from_millis(1_795_513_267_000)).unwrap();
    let late =
        request::new_request_id(UNIX_EPOCH + Duration::from_millis(1_795_513_267_001)).unwrap();
    let again =
        request::new_request_id(UNIX_EPOCH + Duration::from_millis(1_795_513_267_001)).unwrap();
    assert_eq!(early.len(), 26);
    assert!(early < late);
    assert_ne!(late, again);
}

/// Ids were a process-wide random start plus a counter: one id told the
/// next. Each id's 80 low bits are now drawn afresh.
#[test]
fn a_request_id_does_not_tell_the_next() {
    fn tail(id: &str) -> u128 {
        const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let value = id.chars().fold(0u128, |v, c| {
            v << 5 | u128::try_from(ALPHABET.find(c).expect("base32")).expect("small")
        });
        value & ((1 << 80) - 1)
    }
    let now = std::time::UNIX_EPOCH + Duration::from_millis(1_795_513_267_000);
    let tails: Vec<u128> = (0..64)
        .map(|_| tail(&request::new_request_id(now).unwrap()))
        .collect();
    let mut changed_bits = 0;
    for pair in tails.windows(2) {
        assert_ne!(pair[1], pair[0].wrapping_add(1), "a counter");
        changed_bits += (pair[0] ^ pair[1]).count_ones();
    }
    // 40 of 80 bits change between random draws; a counter changes ~2.
    assert!(
        changed_bits / 63 >= 30,
        "{changed_bits} bits changed in 63 ids"
    );
}

#[test]
fn the_gate_and_its_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let sink = sink();
    let gate = gate(&sink, Arc::new(MockApprover::approve_all("ci")), policy());
    send(&gate);
    send(&gate.run(call(), || Ok(None), async { Ok::<_, ApprovalError>(()) }));
    send(&gate.cast(Ballot {
        request_id: "r".into(),
        binding: [0; 32],
        identity: "x".into(),
        channel: "y".into(),
        vote: Vote::Approve,
        comment: None,
        display: None,
        grant: None,
        route: None,
    }));
    let approver: Arc<dyn Approver> = Arc::new(Unreachable);
    send(&approver);
}

#[test]
fn a_policy_file_loads_policies_and_the_directory() {
    let text = r#"
[[policy]]
name = "export"
routes = ["mock"]
required = 2
groups = ["security"]
approvers = ["mock:ci"]
timeout_ms = 60000

[people]
alice = ["slack:UALICE"]
bob = ["slack:UBOB"]
ci = ["mock:ci"]

[groups]
security = ["alice", "bob"]
"#;
    let file = PolicyFile::parse(text, "policies.toml").unwrap();
    let from_code = policy().required(2).groups(["security"]);
    assert_eq!(file.policies(), std::slice::from_ref(&from_code));
    // Same JSON shape, same digest, whichever way it was built.
    assert_eq!(file.policies()[0].digest(), from_code.digest());
    let directory = file.directory();
    assert_eq!(directory.person_of("slack:UBOB"), Some("bob"));
    assert!(directory.in_group("alice", "security"));
    Gate::builder(sink())
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .policy_file(&file)
        .build()
        .unwrap();
}

#[test]
fn a_bad_policy_file_names_file_line_and_cause() {
    let cases = [
        (
            "[[policy]]\nname = \"a\"\nroutes = [\"m\"]\ntimeout_ms = 5\nrequierd = 2\n",
            5,
            "unknown field `requierd`",
        ),
        (
            "[[policy]]\nname = \"a\"\nroutes = \"m\"\ntimeout_ms = 5\n",
            3,
            "invalid type",
        ),
        (
            "[[policy]]\nname = \"a\"\nroutes = [\"m\"]\n",
            1,
            "missing field `timeout_ms`",
        ),
        ("[people]\nalice = [\"slack:U1\"\n", 2, ""),
    ];
    for (text, line, cause) in cases {
        let err = PolicyFile::parse(text, "/etc/approval/policies.toml").unwrap_err();
        let ConfigError::PolicyFile {
            path,
            line: at,
            cause: why,
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(path, std::path::Path::new("/etc/approval/policies.toml"));
        assert_eq!(*at, line, "{text:?}: {err}");
        assert!(why.contains(cause), "{text:?}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("/etc/approval/policies.toml:{line}: ")),
            "{err}"
        );
    }
    let missing = PolicyFile::load("/nonexistent/policies.toml").unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/policies.toml:0: "),
        "{missing}"
    );
}

#[tokio::test]
async fn non_finite_arguments_are_refused_before_anything_is_asked() {
    let sink = sink();
    let gate = gate(&sink, Arc::new(MockApprover::approve_all("ci")), policy());
    let mut args = crate::private::Args::new(&gate);
    args.arg_in(None, "ratio", &f64::NAN);
    let err = args.call("a", "export", None, None).unwrap_err();
    assert!(
        matches!(
            err,
            ApprovalError::InvalidArguments(crate::CanonicalError::NonFinite)
        ),
        "{err}"
    );
    assert!(sink.is_empty());
}

#[tokio::test]
async fn reviewers_see_how_the_same_call_ended_before() {
    let sink = sink();
    let mock = Arc::new(MockApprover::with("ci", |request| {
        // Deny the first time, approve once reviewers can see the denial.
        Some(if request.earlier.is_empty() {
            (Vote::Deny, Some("wrong table".to_owned()))
        } else {
            (Vote::Approve, None)
        })
    }));
    let gate = gate(&sink, mock.clone(), policy());
    let ran = Arc::new(AtomicBool::new(false));
    assert!(matches!(
        run(&gate, &ran).await,
        Err(ApprovalError::Denied { .. })
    ));
    assert_eq!(run(&gate, &ran).await.unwrap(), 7);
    let requests = mock.requests();
    assert!(requests[0].earlier.is_empty());
    let earlier = &requests[1].earlier;
    assert_eq!(earlier.len(), 1);
    assert_eq!(earlier[0].request_id, requests[0].id);
    assert!(matches!(
        &earlier[0].decision,
        Decision::Denied { comment: Some(c), .. } if c == "wrong table"
    ));
    // Other arguments are another call, with no history.
    let other = Call::new(
        "crm::export",
        "export",
        CanonicalJson::from_serialize(&json!({"table": "orders", "rows": 10})).unwrap(),
    );
    // (so the mock, seeing no history, denies it).
    let denied = gate
        .run(other, || Ok(None), async { Ok::<_, ApprovalError>(()) })
        .await;
    assert!(matches!(denied, Err(ApprovalError::Denied { .. })));
    assert!(mock.requests()[2].earlier.is_empty());
}

#[tokio::test]
async fn recovery_refuses_a_log_other_processes_may_write() {
    let memory = sink();
    let gate = Gate::builder(Arc::new(Remote(memory.clone())))
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .policy(policy())
        .build()
        .unwrap();
    let err = gate.recover().await.unwrap_err();
    assert!(
        matches!(err, ApprovalError::Recovery(ref why) if why.contains("other writers")),
        "{err}"
    );
    assert!(memory.is_empty(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_deciding_votes_settle_once_and_each_voter_hears_what_stands() {
    for _ in 0..50 {
        let sink = sink();
        let mock = Arc::new(MockApprover::silent("ci"));
        // Writes that yield, as real ones do, so the two votes interleave.
        let gate = Gate::builder(Arc::new(Remote(sink.clone())))
            .approver("mock", mock.clone())
            .policy(policy().groups(["security"]))
            .directory(directory())
            .build()
            .unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let (call, request) = start(&gate, &mock, &ran).await;
        // Alice approves on one route while Bob denies on another.
        let alice = Ballot::new(&request, "slack:UALICE", "slack", Vote::Approve);
        let bob = Ballot::new(&request, "slack:UBOB", "teams", Vote::Deny);
        let (a, b) = (
            tokio::spawn({
                let gate = gate.clone();
                async move { gate.cast(alice).await }
            }),
            tokio::spawn({
                let gate = gate.clone();
                async move { gate.cast(bob).await }
            }),
        );
        let outcomes = [a.await.unwrap().unwrap(), b.await.unwrap().unwrap()];
        let settled: Vec<&Decision> = outcomes
            .iter()
            .filter_map(|o| match o {
                BallotOutcome::Counted { decision: Some(d) } => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(settled.len(), 1, "{outcomes:?}");
        assert!(
            outcomes.contains(&BallotOutcome::Rejected(RejectReason::Settled)),
            "{outcomes:?}"
        );
        let result = call.await.unwrap();
        match settled[0] {
            Decision::Approved { .. } => assert_eq!(result.unwrap(), 7),
            Decision::Denied { .. } => assert!(matches!(result, Err(ApprovalError::Denied { .. }))),
            other => panic!("{other:?}"),
        }
        let names = names(&sink);
        let outcomes_recorded = names
            .iter()
            .filter(|n| *n == "approved" || *n == "denied")
            .count();
        assert_eq!(outcomes_recorded, 1, "{names:?}");
    }
}

/// A sink as a shared store looks to the gate: writes yield before they
/// land, and other processes may write too (not the sole writer).
#[derive(Debug)]
struct Remote(Arc<MemorySink>);

#[async_trait::async_trait]
impl AuditSink for Remote {
    async fn append(
        &self,
        records: Vec<crate::PendingRecord>,
    ) -> Result<Vec<crate::Receipt>, crate::AuditError> {
        tokio::task::yield_now().await;
        self.0.append(records).await
    }
    fn read_back(&self) -> Result<Box<dyn std::io::Read + Send>, crate::AuditError> {
        self.0.read_back()
    }
    fn chain_writer(&self) -> &Arc<ChainWriter> {
        self.0.chain_writer()
    }
}

/// Votes as the mock it wraps, and notes each `settled` notice with the
/// log's events at that moment.
#[derive(Debug)]
struct Notified {
    mock: Arc<MockApprover>,
    sink: Arc<MemorySink>,
    notices: Mutex<Vec<(String, Decision, Vec<String>)>>,
}

impl Notified {
    fn new(mock: MockApprover, sink: &Arc<MemorySink>) -> Arc<Self> {
        Arc::new(Self {
            mock: Arc::new(mock),
            sink: sink.clone(),
            notices: Mutex::default(),
        })
    }

    fn notices(&self) -> Vec<(String, Decision, Vec<String>)> {
        lock(&self.notices).clone()
    }
}

#[async_trait::async_trait]
impl Approver for Notified {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError> {
        self.mock.deliver(request, ballots).await
    }

    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        if let Notice::Settled { request, decision } = notice {
            let heard = (
                request.id.clone(),
                Decision::clone(decision),
                names(&self.sink),
            );
            lock(&self.notices).push(heard);
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn approvers_hear_each_ending_once_after_it_is_recorded() {
    let sink = sink();
    let ran = Arc::new(AtomicBool::new(false));

    // Approved and denied: heard once each, after the outcome's record
    // (on the outbox task, so perhaps after the body ran too).
    let approving = Notified::new(MockApprover::approve_all("ci"), &sink);
    let approving_gate = gate(&sink, approving.clone(), policy());
    run(&approving_gate, &ran).await.unwrap();
    approving_gate.drain_notices().await;
    let notices = approving.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        matches!(&notices[0].1, Decision::Approved { reviewers } if reviewers[0].id == "mock:ci")
    );
    assert!(
        notices[0].2.iter().any(|r| r == "approved"),
        "heard after its record"
    );

    let denying = Notified::new(MockApprover::deny_all("ci", "no"), &sink);
    let denying_gate = gate(&sink, denying.clone(), policy());
    run(&denying_gate, &ran).await.unwrap_err();
    denying_gate.drain_notices().await;
    let notices = denying.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        matches!(&notices[0].1, Decision::Denied { comment: Some(c), .. } if c == "no"),
        "{notices:?}"
    );
    assert!(
        notices[0].2.iter().any(|r| r == "denied"),
        "heard after its record"
    );

    // Expired.
    let silent = Notified::new(MockApprover::silent("ci"), &sink);
    let silent_gate = gate(&sink, silent.clone(), policy());
    run(&silent_gate, &ran).await.unwrap_err();
    silent_gate.drain_notices().await;
    let notices = silent.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].1, Decision::Expired);
    assert!(
        notices[0].2.iter().any(|r| r == "expired"),
        "heard after its record"
    );

    // A dropped call: heard after its `cancelled` record is written.
    let waiting = Notified::new(MockApprover::silent("ci"), &sink);
    let gate_waiting = gate(&sink, waiting.clone(), policy());
    let (call, request) = start(&gate_waiting, &waiting.mock, &ran).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    for _ in 0..100 {
        if !waiting.notices().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let notices = waiting.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].0, request.id);
    assert!(
        matches!(&notices[0].1, Decision::Cancelled { why } if why == "caller stopped waiting")
    );
    assert!(
        notices[0].2.iter().any(|r| r == "cancelled"),
        "heard after its record"
    );
}

#[tokio::test]
async fn when_a_later_route_cannot_deliver_the_earlier_ones_hear_the_cancellation() {
    let sink = sink();
    let first = Notified::new(MockApprover::silent("ci"), &sink);
    let gate = Gate::builder(sink.clone())
        .approver("first", first.clone())
        .approver("broken", Arc::new(Unreachable))
        .policy(
            Policy::new("export", ["first", "broken"], Duration::from_secs(60))
                .approvers(["mock:ci"]),
        )
        .directory(directory())
        .build()
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let err = run(&gate, &ran).await.unwrap_err();
    assert!(
        matches!(err, ApprovalError::ApproverUnavailable { ref route, .. } if route == "broken"),
        "{err}"
    );
    gate.drain_notices().await;
    let notices = first.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        matches!(&notices[0].1, Decision::Cancelled { why } if why == "approver broken unavailable"),
        "{notices:?}"
    );
    assert_eq!(names(&sink), ["requested", "cancelled"]);
}

#[tokio::test]
async fn a_vote_that_settles_before_a_later_route_fails_stands() {
    let sink = sink();
    let gate = Gate::builder(sink.clone())
        .approver("first", Arc::new(MockApprover::approve_all("ci")))
        .approver("broken", Arc::new(Unreachable))
        .policy(
            Policy::new("export", ["first", "broken"], Duration::from_secs(60))
                .approvers(["mock:ci"]),
        )
        .directory(directory())
        .build()
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    assert_eq!(run(&gate, &ran).await.unwrap(), 7);
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(
        names(&sink),
        ["requested", "reviewed", "approved", "executed"]
    );
}

/// A memory sink whose writes can be made to fail.
#[derive(Debug)]
struct Flaky {
    inner: Arc<MemorySink>,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl AuditSink for Flaky {
    async fn append(
        &self,
        records: Vec<crate::PendingRecord>,
    ) -> Result<Vec<crate::Receipt>, crate::AuditError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(crate::AuditError::Closed);
        }
        self.inner.append(records).await
    }
    fn read_back(&self) -> Result<Box<dyn std::io::Read + Send>, crate::AuditError> {
        self.inner.read_back()
    }
    fn chain_writer(&self) -> &Arc<ChainWriter> {
        self.inner.chain_writer()
    }
}

#[tokio::test]
async fn a_waiter_whose_expiry_cannot_be_recorded_hears_why_not_and_does_not_hang() {
    let flaky = Arc::new(Flaky {
        inner: sink(),
        failing: AtomicBool::new(false),
    });
    let gate = Gate::builder(flaky.clone())
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .policy(Policy::new("export", ["mock"], Duration::from_millis(200)).approvers(["alice"]))
        .directory(directory())
        .build()
        .unwrap();
    let args = CanonicalJson::from_serialize(&json!({"table": "users"})).unwrap();
    let ticket = gate
        .submit(Call::new("crm::export", "export", args))
        .await
        .unwrap();
    // The log goes away before the deadline: nobody can record the expiry.
    flaky.failing.store(true, Ordering::SeqCst);
    let outcome = tokio::time::timeout(Duration::from_secs(10), ticket.decision())
        .await
        .expect("the waiter returned");
    assert!(
        matches!(outcome, Err(ApprovalError::Audit(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_vote_that_cannot_be_recorded_is_not_counted() {
    let memory = sink();
    let flaky = Arc::new(Flaky {
        inner: memory.clone(),
        failing: AtomicBool::new(false),
    });
    let mock = Arc::new(MockApprover::silent("ci"));
    let gate = Gate::builder(flaky.clone())
        .approver("mock", mock.clone())
        .policy(policy().required(2).groups(["security"]))
        .directory(directory())
        .build()
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let (call, request) = start(&gate, &mock, &ran).await;
    let vote = |who: &str| Ballot::new(&request, who, "slack", Vote::Approve);

    // Alice's vote (not deciding) and then Bob's (deciding) fail to record:
    // each is refused with the sink's error and leaves no trace.
    flaky.failing.store(true, Ordering::SeqCst);
    let err = gate.cast(vote("slack:UALICE")).await.unwrap_err();
    assert!(matches!(err, ApprovalError::Audit(_)), "{err}");
    flaky.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        gate.cast(vote("slack:UALICE")).await.unwrap(),
        BallotOutcome::Counted { decision: None },
        "the failed vote must not count as already given"
    );
    flaky.failing.store(true, Ordering::SeqCst);
    let err = gate.cast(vote("slack:UBOB")).await.unwrap_err();
    assert!(matches!(err, ApprovalError::Audit(_)), "{err}");
    flaky.failing.store(false, Ordering::SeqCst);
    tokio::task::yield_now().await;
    assert!(
        !call.is_finished(),
        "a vote that was not recorded settled the call"
    );

    // Bob again: now it is written with the outcome, in one append.
    let outcome = gate.cast(vote("slack:UBOB")).await.unwrap();
    assert!(
        matches!(outcome, BallotOutcome::Counted { decision: Some(Decision::Approved { ref reviewers }) } if reviewers.len() == 2),
        "{outcome:?}"
    );
    assert_eq!(call.await.unwrap().unwrap(), 7);
    assert_eq!(
        names(&memory),
        ["requested", "reviewed", "reviewed", "approved", "executed"]
    );
}

fn requested(id: &str) -> Event {
    Event::Requested {
        request_id: id.into(),
        action: "crm::export".into(),
        policy: "export".into(),
        policy_digest: [0; 32],
        args: CanonicalJson::from_serialize(&json!({})).unwrap(),
        skipped: Vec::new(),
        binding: [0; 32],
        actor: Actor::new("agent-7"),
        resource: None,
        reason: None,
        deferred: false,
    }
}

#[tokio::test]
async fn recovery_reads_back_only_the_longest_timeout_and_the_margin() {
    use crate::{JsonlFileSink, ManualClock};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        std::time::UNIX_EPOCH + Duration::from_secs(1_795_513_267),
    ));
    let secret = WriterSecret::from_hex(&"42".repeat(32)).unwrap();
    let writer =
        || Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &secret).with_clock(clock.clone()));
    let path = dir.path().join("log.jsonl");
    let minutes = |n: u64| Duration::from_secs(60 * n);
    {
        let sink = JsonlFileSink::open(&path, writer()).unwrap();
        let write = |event| sink.append_event(event);
        // Outside any window (never left open by a live gate, which would
        // have recorded `expired`): not looked at.
        write(requested("ancient")).await.unwrap();
        clock.advance(minutes(100));
        // Asked before the window, approved inside it, never finished.
        write(requested("long-body")).await.unwrap();
        clock.advance(minutes(20));
        write(Event::Approved {
            request_id: "long-body".into(),
            policy: "export".into(),
            reviewers: vec![Reviewer::new("mock:ci")],
        })
        .await
        .unwrap();
        clock.advance(minutes(5));
        // Open when the process ended.
        write(requested("open")).await.unwrap();
    }
    // Timeout 1 minute + margin 10 minutes, before the last record: the
    // approval 5 minutes back is inside, the requests 25 and 125 minutes
    // back are not.
    let sink = Arc::new(JsonlFileSink::open(&path, writer()).unwrap());
    // One approver under two routes: told once, after the records.
    let heard = Arc::new(Recovered::default());
    *lock(&heard.path) = Some(path.clone());
    let gate = Gate::builder(sink.clone())
        .approver("mock", heard.clone())
        .approver("also-mock", heard.clone())
        .policy(Policy::new("export", ["mock", "also-mock"], minutes(1)).approvers(["mock:ci"]))
        .recovery_margin(minutes(10))
        .build()
        .unwrap();
    let recovery = gate.recover().await.unwrap();
    assert_eq!(recovery.cancelled, ["open"]);
    assert_eq!(recovery.unknown, ["long-body"]);
    gate.drain_notices().await;
    let log = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        *lock(&heard.told),
        [(recovery.clone(), log.lines().count())],
        "told once, with the records written"
    );
    // Late votes for both are refused as settled.
    let late = |id: &str| Ballot::from_parts(id, [0; 32], "mock:ci", "mock", Vote::Approve);
    for id in ["open", "long-body"] {
        assert_eq!(
            gate.cast(late(id)).await.unwrap(),
            BallotOutcome::Rejected(RejectReason::Settled)
        );
    }
}

/// Remembers what recovery told it, and how long the log was by then.
#[derive(Debug, Default)]
struct Recovered {
    told: Mutex<Vec<(crate::Recovery, usize)>>,
    path: Mutex<Option<std::path::PathBuf>>,
}

#[async_trait::async_trait]
impl Approver for Recovered {
    async fn deliver(&self, _: Arc<ApprovalRequest>, _: Ballots) -> Result<(), ApproverError> {
        Ok(())
    }

    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        if let Notice::Recovered(recovery) = notice {
            let lines = lock(&self.path)
                .as_ref()
                .map_or(0, |p| std::fs::read_to_string(p).unwrap().lines().count());
            lock(&self.told).push((crate::Recovery::clone(recovery), lines));
        }
        Ok(())
    }
}

/// Keeps the ballots the gate attached.
#[derive(Debug, Default)]
struct Attached(Mutex<Vec<Ballots>>);

#[async_trait::async_trait]
impl Approver for Attached {
    async fn deliver(&self, _: Arc<ApprovalRequest>, _: Ballots) -> Result<(), ApproverError> {
        Ok(())
    }

    fn attach(&self, ballots: Ballots) -> Result<(), ApproverError> {
        lock(&self.0).push(ballots);
        Ok(())
    }
}

#[tokio::test]
async fn approvers_learn_where_votes_go_when_the_gate_is_built() {
    let sink = sink();
    let attached = Arc::new(Attached::default());
    let _gate = Gate::builder(sink.clone())
        .approver("mock", attached.clone())
        .policy(policy())
        .build()
        .unwrap();
    let ballots = lock(&attached.0).clone();
    assert_eq!(ballots.len(), 1);
    // Before any request: a vote is checked and recorded, not lost.
    let vote = Ballot::from_parts("nope", [0; 32], "mock:ci", "mock", Vote::Approve);
    assert_eq!(
        ballots[0].cast(vote).await.unwrap(),
        BallotOutcome::Rejected(RejectReason::UnknownRequest)
    );
    assert!(names(&sink).contains(&"rejected_vote".to_owned()));
}

#[tokio::test]
async fn a_forged_vote_is_counted_and_never_recorded_known_request_or_not() {
    let sink = sink();
    let attached = Arc::new(Attached::default());
    let gate = Gate::builder(sink.clone())
        .approver("mock", attached.clone())
        .policy(policy())
        .build()
        .unwrap();
    let ballots = lock(&attached.0)[0].clone();
    let waiting = tokio::spawn({
        let gate = gate.clone();
        async move { gate.approve(call()).await.map(|_| ()) }
    });
    let id = loop {
        if names(&sink).iter().any(|n| n == "requested") {
            let log = String::from_utf8(sink.bytes()).unwrap();
            let record: serde_json::Value =
                serde_json::from_str(log.lines().next().unwrap()).unwrap();
            break record["request_id"].as_str().unwrap().to_owned();
        }
        tokio::task::yield_now().await;
    };
    // An unsigned vote naming a known id wrote a durable record: anyone
    // who reached the port grew the log (and its fsync told known ids from
    // unknown ones). Now neither leaves anything; both are counted.
    let before = sink.bytes();
    ballots.refuse("made-up", "webhook", RejectReason::BadSignature);
    for _ in 0..100 {
        ballots.refuse(&id, "webhook", RejectReason::BadSignature);
    }
    assert_eq!(sink.bytes(), before, "nothing written");
    assert_eq!(gate.refusal_counts().unauthenticated, 101);
    // The request is untouched.
    assert!(!waiting.is_finished());
    waiting.abort();
}

/// Remembers the votes it heard of, and who delivered.
#[derive(Debug, Default)]
struct Heard {
    votes: Mutex<Vec<(String, Vote)>>,
    requests: Mutex<Vec<Arc<ApprovalRequest>>>,
}

#[async_trait::async_trait]
impl Approver for Heard {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        _: Ballots,
    ) -> Result<(), ApproverError> {
        lock(&self.requests).push(request);
        Ok(())
    }

    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        if let Notice::Voted { reviewer, vote, .. } = notice {
            lock(&self.votes).push((reviewer.id.clone(), *vote));
        }
        Ok(())
    }
}

#[tokio::test]
async fn every_route_hears_each_vote_that_does_not_settle_yet() {
    let sink = sink();
    let (slack, console) = (Arc::new(Heard::default()), Arc::new(Heard::default()));
    let gate = Gate::builder(sink.clone())
        .approver("slack", slack.clone())
        .approver("console", console.clone())
        .policy(
            Policy::new("export", ["slack", "console"], Duration::from_secs(60))
                .approvers(["alice", "bob"])
                .required(2),
        )
        .directory(
            Directory::new()
                .person("alice", ["slack:U0ALICE"])
                .person("bob", ["api:bob"]),
        )
        .build()
        .unwrap();
    let waiting = tokio::spawn({
        let gate = gate.clone();
        async move {
            let call = Call::new(
                "crm::export",
                "export",
                CanonicalJson::from_serialize(&serde_json::json!({})).unwrap(),
            );
            gate.approve(call).await.map(|_| ())
        }
    });
    let request = loop {
        if let Some(request) = lock(&console.requests).first().cloned() {
            break request;
        }
        tokio::task::yield_now().await;
    };
    let vote =
        |who: &str| Ballot::new(&request, who, who.split(':').next().unwrap(), Vote::Approve);
    gate.cast(vote("slack:U0ALICE")).await.unwrap();
    gate.drain_notices().await;
    // Both routes hear Alice's vote, though it came through one.
    for heard in [&slack, &console] {
        assert_eq!(
            *lock(&heard.votes),
            [("slack:U0ALICE".to_owned(), Vote::Approve)]
        );
    }
    // Bob's settles it: heard through `settled`, not here.
    gate.cast(vote("api:bob")).await.unwrap();
    waiting.await.unwrap().unwrap();
    gate.drain_notices().await;
    assert_eq!(lock(&console.votes).len(), 1);
}

/// A channel registered for other policies could approve any request
/// whose binding it learnt: its vote now counts only on requests routed
/// to it, and the refusal is recorded.
#[tokio::test]
async fn a_vote_through_a_channel_outside_the_request_s_routes_is_refused() {
    let sink = sink();
    let mock = Arc::new(MockApprover::silent("ci"));
    let webhook = Arc::new(Attached::default());
    let gate = Gate::builder(sink.clone())
        .approver("mock", mock.clone())
        .approver("webhook", webhook.clone())
        .policy(policy().approvers(["alice"]))
        .policy(Policy::new("other", ["webhook"], Duration::from_secs(60)).approvers(["alice"]))
        .directory(directory())
        .build()
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let (call, request) = start(&gate, &mock, &ran).await;
    let through_webhook = lock(&webhook.0)[0].clone();
    let outcome = through_webhook
        .cast(Ballot::new(
            &request,
            "slack:UALICE",
            "webhook",
            Vote::Approve,
        ))
        .await
        .unwrap();
    assert_eq!(outcome, BallotOutcome::Rejected(RejectReason::WrongRoute));
    let (_, refused) = events(&sink).pop().unwrap();
    assert_eq!(refused["event"], "rejected_vote");
    assert_eq!(refused["why"], "wrong_route");
    assert_eq!(refused["reviewer"]["id"], "slack:UALICE");
    assert!(gate.status(&request.id).unwrap().is_open());

    // The same person through the request's own route counts.
    let ballots = gate.ballots_for("mock");
    let outcome = ballots
        .cast(Ballot::new(&request, "slack:UALICE", "mock", Vote::Approve))
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        BallotOutcome::Counted {
            decision: Some(Decision::Approved { .. })
        }
    ));
    assert_eq!(call.await.unwrap().unwrap(), 7);
    assert!(ran.load(Ordering::SeqCst));
}

/// An authenticated channel may still send refused votes without end (a
/// reviewer the policy does not name, clicking on): the first 32 per
/// request are recorded, the rest counted.
#[tokio::test]
async fn refused_votes_recorded_per_request_are_bounded() {
    let sink = sink();
    let mock = Arc::new(MockApprover::silent("ci"));
    let gate = gate(&sink, mock.clone(), policy().approvers(["alice"]));
    let ran = Arc::new(AtomicBool::new(false));
    let (call, request) = start(&gate, &mock, &ran).await;
    for _ in 0..40 {
        let outcome = gate
            .cast(Ballot::new(
                &request,
                "slack:UCAROL",
                "slack",
                Vote::Approve,
            ))
            .await
            .unwrap();
        assert_eq!(outcome, BallotOutcome::Rejected(RejectReason::NotEligible));
    }
    let refused = names(&sink)
        .iter()
        .filter(|n| *n == "rejected_vote")
        .count();
    assert_eq!(refused, ballot_box::RECORDED_REFUSALS_PER_REQUEST as usize);
    assert_eq!(gate.refusal_counts().over_budget, 8);
    // The request still takes its real vote.
    gate.cast(Ballot::new(
        &request,
        "slack:UALICE",
        "slack",
        Vote::Approve,
    ))
    .await
    .unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 7);
}

/// `approved` then `cancelled` (the arguments changed while waiting, or
/// the caller left during the approval's write) is a call that never ran:
/// recovery added `executed` with outcome `unknown` for it.
#[tokio::test]
async fn recovery_leaves_an_approval_cancelled_before_its_body_closed() {
    let sink = sink();
    for event in [
        requested("changed"),
        Event::Approved {
            request_id: "changed".into(),
            policy: "export".into(),
            reviewers: vec![Reviewer::new("mock:ci")],
        },
        Event::Cancelled {
            request_id: "changed".into(),
            why: "the arguments changed while waiting".into(),
        },
    ] {
        sink.append_event(event).await.unwrap();
    }
    let gate = gate(&sink, Arc::new(MockApprover::silent("ci")), policy());
    let recovery = gate.recover().await.unwrap();
    assert!(recovery.unknown.is_empty(), "{recovery:?}");
    assert!(recovery.cancelled.is_empty(), "{recovery:?}");
    assert_eq!(
        names(&sink),
        ["requested", "approved", "cancelled"],
        "nothing appended"
    );
}

/// An agent could flood reviewers with as many requests as it liked
/// unless the operator set a limit: one is on by default.
#[tokio::test]
async fn one_actor_may_have_sixteen_requests_waiting_by_default() {
    let sink = sink();
    let mock = Arc::new(MockApprover::silent("ci"));
    let gate = gate(&sink, mock.clone(), policy());
    let mut tickets = Vec::new();
    for _ in 0..DEFAULT_MAX_PENDING_PER_ACTOR {
        tickets.push(
            with_actor(agent(), async { gate.submit(call()).await })
                .await
                .unwrap(),
        );
    }
    let err = with_actor(agent(), async { gate.submit(call()).await })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApprovalError::TooManyPending { ref actor, limit: 16 } if actor == "agent-7"),
        "{err}"
    );
    // Another actor is not held back by this one.
    let other = with_actor(Actor::new("agent-8"), async { gate.submit(call()).await }).await;
    assert!(other.is_ok());
    // Raised by the policy, it is the policy's number.
    let raised = gate_with(&sink, policy().max_pending_per_actor(u32::MAX));
    for _ in 0..=DEFAULT_MAX_PENDING_PER_ACTOR {
        with_actor(agent(), async { raised.submit(call()).await })
            .await
            .unwrap()
            .detach();
    }
}

fn gate_with(sink: &Arc<MemorySink>, policy: Policy) -> Gate {
    gate(sink, Arc::new(MockApprover::silent("ci")), policy)
}

/// The digest is over the policy's canonical JSON with members at their
/// defaults left out: a field a later version adds (at its default) does
/// not change the digest of a policy written before it.
#[test]
fn a_policy_s_digest_leaves_out_members_at_their_defaults() {
    let minimal = r#"{"name":"p","routes":["mock"],"timeout_ms":1000}"#;
    let expected: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, minimal.as_bytes())
        .as_ref()
        .try_into()
        .unwrap();
    let explicit: Policy = serde_json::from_str(
        r#"{"name":"p","routes":["mock"],"timeout_ms":1000,"required":1,"approvers":[],
            "groups":[],"distinct_channels":false,"record_error_text":false,
            "require_actor":false,"max_pending_per_actor":16,"rules":[]}"#,
    )
    .unwrap();
    let built = Policy::new("p", ["mock"], Duration::from_secs(1));
    assert_eq!(built.digest(), expected);
    assert_eq!(explicit.digest(), expected);
    // A member away from its default is in it.
    assert_ne!(built.clone().require_actor().digest(), expected);
    assert_ne!(built.clone().max_pending_per_actor(17).digest(), expected);
    // The reminder (added in 0.2) is absent unless set, and in it then.
    assert_eq!(
        serde_json::to_string(&built).unwrap(),
        r#"{"name":"p","routes":["mock"],"timeout_ms":1000}"#
    );
    let reminding = built.remind_after(Duration::from_millis(500));
    assert_ne!(reminding.digest(), expected);
    assert!(
        serde_json::to_string(&reminding)
            .unwrap()
            .contains(r#""remind_after_ms":500"#)
    );
}
