//! `#[requires_approval(.., defer)]`: the first call answers `Pending` at
//! once; the same call, once approved, runs exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use approval_core::{
    Actor, ApprovalError, Ballot, ChainWriter, Gate, KeyId, MemorySink, MockApprover, Policy, Vote,
    WriterSecret, requires_approval, with_actor,
};

use crate::shapes::events;

static EXPORTS: AtomicUsize = AtomicUsize::new(0);

#[requires_approval(policy = "p", defer)]
async fn export(table: &str) -> Result<usize, ApprovalError> {
    let _ = table;
    Ok(EXPORTS.fetch_add(1, Ordering::SeqCst) + 1)
}

#[requires_approval(policy = "p", defer)]
fn export_blocking(table: &str) -> Result<String, ApprovalError> {
    Ok(format!("exported {table}"))
}

fn gate() -> (Gate, Arc<MemorySink>) {
    let secret = WriterSecret::from_hex(&"31".repeat(32)).unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("d").unwrap(),
        &secret,
    ))));
    let gate = Gate::builder(sink.clone())
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .policy(Policy::new("p", ["mock"], Duration::from_secs(60)).approvers(["mock:ci"]))
        .build()
        .unwrap();
    (gate, sink)
}

fn approve(gate: &Gate, id: &str) -> impl Future<Output = ()> {
    let request = gate.status(id).expect("open").request;
    let gate = gate.clone();
    async move {
        gate.cast(Ballot::new(&request, "mock:ci", "mock", Vote::Approve))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_deferred_function_answers_pending_then_runs_once_after_approval() {
    let (gate, sink) = gate();
    let call = || gate.scope(with_actor(Actor::new("agent-7"), export("users")));
    let before = EXPORTS.load(Ordering::SeqCst);
    let Err(ApprovalError::Pending { request_id, .. }) = call().await else {
        panic!("not pending");
    };
    assert!(matches!(
        call().await,
        Err(ApprovalError::Pending { request_id: again, .. }) if again == request_id
    ));
    assert_eq!(EXPORTS.load(Ordering::SeqCst), before, "nothing ran yet");
    approve(&gate, &request_id).await;
    assert_eq!(call().await.unwrap(), before + 1);
    assert!(matches!(
        call().await,
        Err(ApprovalError::AlreadyUsed { request_id: used }) if used == request_id
    ));
    assert_eq!(
        EXPORTS.load(Ordering::SeqCst),
        before + 1,
        "ran exactly once"
    );
    let names: Vec<_> = events(&sink)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["requested", "reviewed", "approved", "executed"]);
    // Other arguments are another call: a request of their own.
    let other = gate
        .scope(with_actor(Actor::new("agent-7"), export("orders")))
        .await;
    assert!(matches!(other, Err(ApprovalError::Pending { request_id: o, .. }) if o != request_id));
}

#[test]
fn a_deferred_plain_fn_does_not_block() {
    let (gate, _) = gate();
    let Err(ApprovalError::Pending { request_id, .. }) =
        gate.sync_scope(|| export_blocking("users"))
    else {
        panic!("not pending");
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(approve(&gate, &request_id));
    assert_eq!(
        gate.sync_scope(|| export_blocking("users")).unwrap(),
        "exported users"
    );
}
