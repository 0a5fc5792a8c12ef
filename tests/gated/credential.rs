//! `#[requires_approval(.., credential = name)]`: the body gets the
//! credential minted for its approved call (callers do not pass it), and
//! it is revoked when the body ends; the same for a plain `fn`. (A
//! function and a policy that disagree are refused: `registry.rs`.)

use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    Actor, ApprovalError, ChainWriter, Credential, Gate, KeyId, MemorySink, MockApprover,
    MockBroker, Policy, WriterSecret, requires_approval, with_actor,
};

use crate::shapes::events;

#[requires_approval(policy = "minting", credential = login)]
async fn export(table: String, login: Credential) -> Result<String, ApprovalError> {
    Ok(format!("{table} as {}", login.login().unwrap()))
}

#[requires_approval(policy = "minting", credential = login)]
fn export_blocking(table: &str, login: Credential) -> Result<(String, usize), ApprovalError> {
    Ok((table.to_owned(), login.secret("token").unwrap().len()))
}

/// Deferred: the first call answers `Pending`; the credential is minted
/// only when the same call comes back approved.
#[requires_approval(policy = "minting", defer, credential = login)]
async fn export_later(table: String, login: Credential) -> Result<String, ApprovalError> {
    Ok(format!("{table} as {}", login.login().unwrap()))
}

fn gate() -> (Gate, Arc<MemorySink>, Arc<MockBroker>) {
    let secret = WriterSecret::from_hex(&"35".repeat(32)).unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("c").unwrap(),
        &secret,
    ))));
    let broker = Arc::new(MockBroker::new(["read-table"]));
    let gate = Gate::builder(sink.clone())
        .approver("mock", Arc::new(MockApprover::approve_all("ci")))
        .broker("warehouse", broker.clone())
        .policy(
            Policy::new("minting", ["mock"], Duration::from_secs(30))
                .approvers(["mock:ci"])
                .credential("warehouse", "read-table", Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    (gate, sink, broker)
}

#[tokio::test]
async fn the_body_gets_its_call_s_credential_and_callers_do_not_pass_it() {
    let (gate, sink, broker) = gate();
    let done = gate.scope(export("users".into())).await.unwrap();
    let minted = broker.minted();
    assert_eq!(minted.len(), 1);
    assert_eq!(done, format!("users as {}", minted[0]));
    assert!(broker.live().is_empty(), "revoked when the body ended");
    let records = events(&sink);
    assert_eq!(
        records[0]["args"],
        serde_json::json!({"table": "users"}),
        "not recorded as an argument"
    );
    assert_eq!(records[3]["event"], "credential_minted");
    assert_eq!(records[3]["scope"]["template"], "read-table");

    assert_eq!(broker.minted().len(), 1);
}

#[test]
fn a_blocking_body_gets_its_credential_and_it_is_revoked_after() {
    let (gate, _sink, broker) = gate();
    let (table, token) = gate.sync_scope(|| export_blocking("orders")).unwrap();
    assert_eq!(table, "orders");
    assert!(token > 0);
    assert_eq!(broker.minted().len(), 1);
    assert!(broker.live().is_empty());
}

#[tokio::test]
async fn a_deferred_call_gets_its_credential_only_when_it_comes_back_approved() {
    let (gate, _sink, broker) = gate();
    let call = || {
        gate.scope(with_actor(
            Actor::new("agent-7"),
            export_later("users".into()),
        ))
    };
    let first = call().await;
    assert!(
        matches!(first, Err(ApprovalError::Pending { .. })),
        "{first:?}"
    );
    assert!(
        broker.minted().is_empty(),
        "nothing minted for a pending call"
    );
    // The mock approves at once; the same call, come back for, runs.
    let mut done = None;
    for _ in 0..200 {
        match call().await {
            Err(ApprovalError::Pending { .. }) => tokio::task::yield_now().await,
            other => {
                done = Some(other);
                break;
            }
        }
    }
    let done = done.expect("approved").unwrap();
    assert_eq!(done, format!("users as {}", broker.minted()[0]));
    assert_eq!(broker.minted().len(), 1);
    assert!(broker.live().is_empty(), "revoked when the body ended");
}
