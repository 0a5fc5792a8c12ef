//! Policies' rules through the gate: the rule that holds sets the
//! approvals a call needs, a call no rule can be evaluated on is refused,
//! and the record names the rule.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::test_support::{Traces, events, records, reopened, sink_keyed};
use super::*;
use crate::error::ApproverError;
use crate::{ChainWriter, KeyId, MemorySink, WriterSecret};
use approval_audit::{Actor, Vote};

/// Two approvals above 10,000; none below 100; one between.
const PAYMENTS: &str = r#"
[[policy]]
name = "payment"
routes = ["desk"]
groups = ["finance"]
timeout_ms = 600000
rules = [
  { when = "context.args.amount > 10000", required = 2 },
  { when = "context.args.amount < 100", required = 0 },
]

[people]
alice = ["desk:alice"]
bob = ["desk:bob"]
dave = ["desk:dave"]

[groups]
finance = ["alice", "bob"]
"#;

/// A channel that keeps what it was given.
#[derive(Debug, Default)]
struct Desk {
    delivered: Mutex<Vec<Arc<ApprovalRequest>>>,
}

#[async_trait::async_trait]
impl Approver for Desk {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        _: Ballots,
    ) -> Result<(), ApproverError> {
        lock(&self.delivered).push(request);
        Ok(())
    }
}

fn file() -> PolicyFile {
    PolicyFile::parse(PAYMENTS, "payments.toml").unwrap()
}

fn gate_on(sink: Arc<dyn approval_audit::AuditSink>, desk: Arc<Desk>) -> Gate {
    let file = file();
    Gate::builder(sink)
        .approver("desk", desk)
        .policy_file(&file)
        .build()
        .unwrap()
}

fn pay(amount: serde_json::Value) -> Call {
    let args = CanonicalJson::from_serialize(&json!({ "amount": amount, "to": "acme" })).unwrap();
    Call::new("billing::pay", "payment", args).resource("stripe")
}

fn agent() -> Actor {
    Actor::new("billing-agent").on_behalf_of("dave")
}

fn sink() -> Arc<MemorySink> {
    sink_keyed("31")
}

/// Runs `call` to the end of its body, counting runs.
async fn run(gate: &Gate, call: Call, runs: &Arc<AtomicU32>) -> Result<u32, ApprovalError> {
    let args = call.args.clone();
    let runs = runs.clone();
    with_actor(agent(), async {
        gate.approve(call)
            .await?
            .confirm_args(&args)
            .await?
            .execute(async move { Ok::<_, ApprovalError>(runs.fetch_add(1, Ordering::SeqCst) + 1) })
            .await
    })
    .await
}

/// Waits until `desk` has been given `n` requests; the last.
async fn delivered(desk: &Desk, n: usize) -> Arc<ApprovalRequest> {
    loop {
        if let Some(last) = lock(&desk.delivered).get(n - 1) {
            return last.clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A payment of `amount` made on a fresh gate, waiting on its reviewers:
/// the gate, its log, the call's task, and the request its channel got.
async fn asked_to_pay(
    amount: i64,
) -> (
    Gate,
    Arc<MemorySink>,
    tokio::task::JoinHandle<Result<u32, ApprovalError>>,
    Arc<ApprovalRequest>,
) {
    let (sink, desk) = (sink(), Arc::new(Desk::default()));
    let gate = gate_on(sink.clone(), desk.clone());
    let call = {
        let gate = gate.clone();
        let runs = Arc::new(AtomicU32::new(0));
        tokio::spawn(async move { run(&gate, pay(json!(amount)), &runs).await })
    };
    let request = delivered(&desk, 1).await;
    (gate, sink, call, request)
}

#[tokio::test]
async fn above_the_threshold_two_approve_and_the_record_names_the_rule() {
    let (gate, sink, call, request) = asked_to_pay(20_000).await;
    // The channel shows what this call needs.
    assert_eq!((request.rule, request.policy.required), (Some(0), 2));
    let vote = |who: &str| Ballot::new(&request, format!("desk:{who}"), "desk", Vote::Approve);
    let first = gate.cast(vote("alice")).await.unwrap();
    assert!(
        matches!(first, BallotOutcome::Counted { decision: None }),
        "one approval is not enough above the threshold: {first:?}"
    );
    assert_eq!(gate.status(&request.id).unwrap().votes.len(), 1);
    gate.cast(vote("bob")).await.unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 1);
    assert_eq!(
        events(&sink),
        ["requested", "reviewed", "reviewed", "approved", "executed"]
    );
    let asked = &records(&sink)[0];
    assert_eq!(asked["rule"], 0);
    // The digest is the policy file's, rules and all.
    assert_eq!(
        asked["policy_digest"],
        approval_audit::hex::encode(&file().policies()[0].digest())
    );
}

#[tokio::test]
async fn between_the_thresholds_no_rule_applies_and_one_approval_is_enough() {
    let (gate, sink, call, request) = asked_to_pay(500).await;
    assert_eq!((request.rule, request.policy.required), (None, 1));
    gate.cast(Ballot::new(&request, "desk:alice", "desk", Vote::Approve))
        .await
        .unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 1);
    assert!(records(&sink)[0].get("rule").is_none());
}

#[tokio::test]
async fn below_the_threshold_the_call_runs_unheld_recorded_exempted() {
    let (sink, desk) = (sink(), Arc::new(Desk::default()));
    let gate = gate_on(sink.clone(), desk.clone());
    let runs = Arc::new(AtomicU32::new(0));
    assert_eq!(run(&gate, pay(json!(50)), &runs).await.unwrap(), 1);
    // Deferred alike: nothing to come back for.
    let deferred = with_actor(agent(), async {
        gate.approve_deferred(pay(json!(60))).await
    });
    deferred
        .await
        .unwrap()
        .confirm_args(&pay(json!(60)).args)
        .await
        .unwrap()
        .execute(async { Ok::<_, ApprovalError>(()) })
        .await
        .unwrap();
    assert!(lock(&desk.delivered).is_empty(), "nobody is asked");
    assert_eq!(
        events(&sink),
        ["exempted", "executed", "exempted", "executed"]
    );
    let exempted = &records(&sink)[0];
    assert_eq!(exempted["rule"], 1);
    assert_eq!(exempted["args"]["amount"], 50);
    assert_eq!(exempted["actor"]["id"], "billing-agent");
    assert!(exempted.get("deferred").is_none());
}

#[tokio::test]
async fn a_call_no_rule_can_be_evaluated_on_is_refused_before_anything_is_recorded() {
    let traces = Traces::default();
    let _trace = traces.install();
    let (sink, desk) = (sink(), Arc::new(Desk::default()));
    let gate = gate_on(sink.clone(), desk.clone());
    let runs = Arc::new(AtomicU32::new(0));
    // Numbers Cedar cannot hold, and types the rule does not compare:
    // none may slip under the two-approval rule to the default.
    for hostile in [json!(u64::MAX), json!(1e300), json!("20000"), json!(null)] {
        let refused = run(&gate, pay(hostile.clone()), &runs).await.unwrap_err();
        assert!(
            matches!(&refused, ApprovalError::Condition { policy, rule: 0 } if policy == "payment"),
            "{hostile}: {refused:?}"
        );
        assert!(refused.to_string().contains("rule 0"), "{refused}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(sink.bytes().is_empty(), "nothing is recorded");
    assert!(lock(&desk.delivered).is_empty(), "nobody is asked");
    // The trace names the rule, never the argument's value.
    let text = traces.text();
    assert!(text.contains("cannot be evaluated"), "{text}");
    assert!(!text.contains("18446744073709551615"), "{text}");
}

#[tokio::test]
async fn rules_see_the_actor_and_the_resource() {
    let sink = sink();
    let policy = Policy::new("payment", ["desk"], Duration::from_secs(600))
        .approvers(["desk:alice"])
        .rule(
            "context.resource == \"sandbox\" && context.actor.on_behalf_of == \"dave\"",
            0,
        );
    let gate = Gate::builder(sink.clone())
        .approver("desk", Arc::new(Desk::default()))
        .policy(policy)
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let sandbox = pay(json!(1_000_000)).resource("sandbox");
    assert_eq!(run(&gate, sandbox, &runs).await.unwrap(), 1);
    assert_eq!(events(&sink), ["exempted", "executed"]);
}

#[tokio::test]
async fn a_deferred_request_keeps_its_rule_across_a_restart() {
    use crate::JsonlFileSink;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let secret = WriterSecret::from_hex(&"32".repeat(32)).unwrap();
    let writer = || Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &secret));
    let large = || pay(json!(50_000));
    let id = {
        let gate = gate_on(
            Arc::new(JsonlFileSink::open(&path, writer()).unwrap()),
            Arc::new(Desk::default()),
        );
        match with_actor(agent(), gate.approve_deferred(large())).await {
            Err(ApprovalError::Pending { request_id, .. }) => request_id,
            other => panic!("not pending: {other:?}"),
        }
    };
    let gate = gate_on(reopened(&path, writer()).await, Arc::new(Desk::default()));
    assert_eq!(
        gate.recover().await.unwrap().reopened,
        std::slice::from_ref(&id)
    );
    let request = gate.status(&id).unwrap().request;
    assert_eq!((request.rule, request.policy.required), (Some(0), 2));
    let vote = |who: &str| Ballot::new(&request, format!("desk:{who}"), "desk", Vote::Approve);
    gate.cast(vote("alice")).await.unwrap();
    assert!(
        matches!(
            with_actor(agent(), gate.approve_deferred(large())).await,
            Err(ApprovalError::Pending { .. })
        ),
        "one approval of two does not run it"
    );
    gate.cast(vote("bob")).await.unwrap();
    let approval = with_actor(agent(), gate.approve_deferred(large()))
        .await
        .unwrap();
    assert_eq!(approval.request().id, id);
}

#[test]
fn a_bad_rule_is_an_error_at_its_line_and_rules_are_in_the_digest() {
    let bad = PAYMENTS.replace("context.args.amount < 100", "context.args.amount <");
    let err = PolicyFile::parse(&bad, "payments.toml").unwrap_err();
    assert!(
        matches!(&err, ConfigError::PolicyFile { line: 9, cause, .. } if cause.contains("rule 1")),
        "{err}"
    );
    // Built in code, it fails when the gate is built.
    let policy = Policy::new("payment", ["desk"], Duration::from_secs(600)).rule("(", 2);
    let err = Gate::builder(sink())
        .approver("desk", Arc::new(Desk::default()))
        .policy(policy)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Condition { policy, error } if policy == "payment" && error.rule == 0),
        "{err}"
    );
    // A rule that needs no approval cannot go with a minted credential.
    let minting = Policy::new("payment", ["desk"], Duration::from_secs(600))
        .credential("vault", "t", Duration::from_secs(60))
        .rule("true", 0);
    let err = Gate::builder(sink())
        .approver("desk", Arc::new(Desk::default()))
        .broker("vault", Arc::new(MockBroker::new(["t"])))
        .policy(minting)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("rule needing no approval"),
        "{err}"
    );
    let plain = Policy::new("payment", ["desk"], Duration::from_secs(600));
    assert_ne!(plain.clone().rule("true", 2).digest(), plain.digest());
    assert_ne!(
        plain.clone().rule("true", 2).digest(),
        plain.rule("true", 3).digest()
    );
}
