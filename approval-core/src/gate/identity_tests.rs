//! Identities and the requester: names compared in normal form, actor and
//! principal resolved through the directory, unknown principals refused,
//! and policies that name people the directory cannot place refused at
//! build (issue 24).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::{ChainWriter, KeyId, MemorySink, WriterSecret};
use approval_audit::{Actor, RejectReason, Vote};

fn sink() -> Arc<MemorySink> {
    let secret = WriterSecret::from_hex(&"33".repeat(32)).unwrap();
    Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))))
}

fn events(sink: &MemorySink) -> Vec<Value> {
    String::from_utf8(sink.bytes())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn directory() -> Directory {
    Directory::new()
        .person("alice", ["slack:UALICE", "email:alice@corp.com"])
        .person("bob", ["slack:UBOB"])
}

fn policy() -> Policy {
    Policy::new("export", ["slack"], Duration::from_secs(60)).approvers(["alice", "bob"])
}

fn gate(sink: &Arc<MemorySink>, policy: Policy) -> Gate {
    Gate::builder(sink.clone())
        .approver("slack", Arc::new(MockApprover::silent("ci")))
        .policy(policy)
        .directory(directory())
        .build()
        .unwrap()
}

fn call() -> Call {
    let args = CanonicalJson::from_serialize(&json!({"table": "users"})).unwrap();
    Call::new("crm::export", "export", args)
}

/// Submits [`call`] as an agent acting for `principal`.
async fn submit_for(gate: &Gate, principal: &str) -> Result<Arc<ApprovalRequest>, ApprovalError> {
    let actor = Actor::new("agent-7").on_behalf_of(principal);
    let id = with_actor(actor, gate.submit(call())).await?.detach();
    Ok(gate.status(&id).unwrap().request)
}

#[tokio::test]
async fn a_principal_spelt_otherwise_is_still_the_requester() {
    // Before, `Alice` and `ALICE@corp.com` were "not alice", so alice could
    // approve what an agent asked for in her name.
    for principal in ["Alice", " alice ", "EMAIL:ALICE@CORP.COM"] {
        let sink = sink();
        let gate = gate(&sink, policy());
        let request = submit_for(&gate, principal).await.unwrap();
        for identity in ["slack:UALICE", "Slack:ualice"] {
            let own = gate
                .cast(Ballot::new(&request, identity, "slack", Vote::Approve))
                .await
                .unwrap();
            assert_eq!(
                own,
                BallotOutcome::Rejected(RejectReason::SelfApproval),
                "{principal} voting as {identity}"
            );
        }
        // Someone else still may.
        let bob = gate
            .cast(Ballot::new(&request, "slack:UBOB", "slack", Vote::Approve))
            .await
            .unwrap();
        assert!(
            matches!(
                bob,
                BallotOutcome::Counted {
                    decision: Some(Decision::Approved { .. })
                }
            ),
            "{bob:?}"
        );
        // Alice is not shown as someone who may vote.
        let records = events(&sink);
        let refused: Vec<_> = records
            .iter()
            .filter(|r| r["event"] == "rejected_vote")
            .map(|r| r["why"].as_str().unwrap())
            .collect();
        assert_eq!(refused, ["self_approval", "self_approval"], "{principal}");
    }
}

#[tokio::test]
async fn the_requester_is_not_listed_among_who_may_vote() {
    let sink = sink();
    let gate = gate(&sink, policy());
    let request = submit_for(&gate, "ALICE").await.unwrap();
    assert_eq!(gate.status(&request.id).unwrap().may_vote, ["bob"]);
}

#[tokio::test]
async fn a_principal_the_directory_does_not_know_is_refused_before_anything_is_asked() {
    let sink = sink();
    let gate = gate(&sink, policy());
    let err = submit_for(&gate, "alice@corp.com").await.unwrap_err();
    assert!(
        matches!(
            &err,
            ApprovalError::UnknownPrincipal { principal, policy }
                if principal == "alice@corp.com" && policy == "export"
        ),
        "{err}"
    );
    assert!(events(&sink).is_empty(), "nothing recorded, nothing asked");
    // A known principal is not refused.
    submit_for(&gate, "bob").await.unwrap();
}

#[tokio::test]
async fn a_policy_may_allow_unknown_principals_and_says_so_in_its_digest() {
    let sink = sink();
    let open = policy().allow_unknown_principal();
    assert_ne!(open.digest(), policy().digest(), "the opt-out is on record");
    let gate = gate(&sink, open.clone());
    let request = submit_for(&gate, "mallory@corp.com").await.unwrap();
    let records = events(&sink);
    assert_eq!(records[0]["event"], "requested");
    assert_eq!(
        records[0]["policy_digest"],
        approval_audit::hex::encode(&open.digest())
    );
    let alice = gate
        .cast(Ballot::new(
            &request,
            "slack:UALICE",
            "slack",
            Vote::Approve,
        ))
        .await
        .unwrap();
    assert!(
        matches!(
            alice,
            BallotOutcome::Counted {
                decision: Some(Decision::Approved { .. })
            }
        ),
        "{alice:?}"
    );
}

#[tokio::test]
async fn a_gate_without_a_directory_takes_any_principal() {
    let sink = sink();
    let gate = Gate::builder(sink.clone())
        .approver("slack", Arc::new(MockApprover::silent("ci")))
        .policy(Policy::new("export", ["slack"], Duration::from_secs(60)).approvers(["slack:UBOB"]))
        .build()
        .unwrap();
    let request = submit_for(&gate, "anyone").await.unwrap();
    // Identities still compare in normal form.
    let bob = gate
        .cast(Ballot::new(&request, "SLACK:UBOB", "slack", Vote::Approve))
        .await
        .unwrap();
    assert!(
        matches!(
            bob,
            BallotOutcome::Counted {
                decision: Some(Decision::Approved { .. })
            }
        ),
        "{bob:?}"
    );
}

#[tokio::test]
async fn one_person_counts_once_however_their_identity_is_spelt() {
    let sink = sink();
    let gate = gate(&sink, policy().required(2));
    let request = submit_for(&gate, "bob").await.unwrap();
    let first = gate
        .cast(Ballot::new(
            &request,
            "slack:UALICE",
            "slack",
            Vote::Approve,
        ))
        .await
        .unwrap();
    assert!(
        matches!(first, BallotOutcome::Counted { decision: None }),
        "{first:?}"
    );
    let again = gate
        .cast(Ballot::new(
            &request,
            "SLACK:UALICE",
            "slack",
            Vote::Approve,
        ))
        .await
        .unwrap();
    assert_eq!(again, BallotOutcome::Absorbed);
    assert!(gate.status(&request.id).unwrap().is_open());
}

#[test]
fn build_refuses_an_approver_the_directory_does_not_map() {
    // Before, `teams:6f1c` (alice's unmapped Teams id) let alice count
    // twice toward a quorum of two.
    let err = Gate::builder(sink())
        .approver("slack", Arc::new(MockApprover::silent("ci")))
        .policy(policy().approvers(["teams:6f1c"]).required(2))
        .directory(directory())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::UnmappedApprover { policy, approver }
                if policy == "export" && approver == "teams:6f1c"
        ),
        "{err}"
    );
    // A mapped identity, in any case, is fine.
    Gate::builder(sink())
        .approver("slack", Arc::new(MockApprover::silent("ci")))
        .policy(policy().approvers(["SLACK:UBOB"]))
        .directory(directory())
        .build()
        .unwrap();
}

#[test]
fn build_refuses_a_group_the_directory_does_not_have() {
    let err = Gate::builder(sink())
        .approver("slack", Arc::new(MockApprover::silent("ci")))
        .policy(policy().groups(["admins"]))
        .directory(directory())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::UnknownGroup { policy, group } if policy == "export" && group == "admins"
        ),
        "{err}"
    );
    Gate::builder(sink())
        .approver("slack", Arc::new(MockApprover::silent("ci")))
        .policy(policy().groups(["Admins"]))
        .directory(directory().group("admins", ["alice"]))
        .build()
        .unwrap();
}

#[test]
fn a_policy_file_escalating_to_an_unknown_group_fails_at_its_line() {
    let text = r#"
[[policy]]
name = "export"
routes = ["slack"]
approvers = ["alice"]
timeout_ms = 60000
escalate_after_ms = 30000
escalate_groups = ["leads"]

[people]
alice = ["slack:UALICE"]
"#;
    let err = PolicyFile::parse(text, "policies.toml").unwrap_err();
    let ConfigError::PolicyFile { line, cause, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(*line, 8, "{cause}");
    assert!(
        cause.contains("names group leads, which is not in [groups]"),
        "{cause}"
    );
    let known = format!("{text}\n[groups]\nleads = [\"alice\"]\n");
    let file = PolicyFile::parse(&known, "policies.toml").unwrap();
    assert_eq!(file.policies()[0].escalate_groups, ["leads"]);
    assert_eq!(
        file.policies()[0].escalation(),
        Some(std::time::Duration::from_secs(30))
    );
}

#[test]
fn a_policy_file_naming_an_unmapped_approver_fails_at_its_line() {
    let text = r#"
[[policy]]
name = "export"
routes = ["slack"]
required = 2
approvers = [
  "alice",
  "teams:6f1c",
]
timeout_ms = 60000

[people]
alice = ["slack:UALICE"]
"#;
    let err = PolicyFile::parse(text, "policies.toml").unwrap_err();
    let ConfigError::PolicyFile { path, line, cause } = &err else {
        panic!("{err}");
    };
    assert_eq!((path.to_str(), *line), (Some("policies.toml"), 8));
    assert!(cause.contains("teams:6f1c"), "{cause}");
    // The same file with the identity mapped loads.
    let mapped = text.replace(
        r#"alice = ["slack:UALICE"]"#,
        r#"alice = ["slack:UALICE", "teams:6f1c"]"#,
    );
    PolicyFile::parse(&mapped, "policies.toml").unwrap();
}

#[test]
fn a_policy_file_naming_an_unknown_group_fails_at_its_line() {
    let text = r#"[[policy]]
name = "export"
routes = ["slack"]
groups = ["admins"]
timeout_ms = 60000

[people]
alice = ["slack:UALICE"]
"#;
    let err = PolicyFile::parse(text, "policies.toml").unwrap_err();
    let ConfigError::PolicyFile { line, cause, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(*line, 4);
    assert!(cause.contains("group admins"), "{cause}");
    let with_group = format!("{text}\n[groups]\nadmins = [\"alice\"]\n");
    PolicyFile::parse(&with_group, "policies.toml").unwrap();
}
