//! Credentials minted for one approved call: given to its body, revoked
//! however it ends, on record, and revoked at restart if a crash left one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::test_support::{Traces, events, records, reopened, sink_keyed};
use super::*;
use crate::{ChainWriter, Credential, Event, KeyId, MemorySink, MockBroker, WriterSecret};

fn sink() -> Arc<MemorySink> {
    sink_keyed("27")
}

fn policy() -> Policy {
    Policy::new("export", ["mock"], Duration::from_secs(60))
        .approvers(["mock:ci"])
        .credential("warehouse", "select-table", Duration::from_secs(300))
}

fn gate_with(sink: Arc<dyn crate::AuditSink>, broker: Arc<MockBroker>, policy: Policy) -> Gate {
    Gate::builder(sink)
        .approver("mock", Arc::new(MockApprover::approve_all("ci")))
        .broker("warehouse", broker)
        .policy(policy)
        .build()
        .unwrap()
}

fn args() -> CanonicalJson {
    CanonicalJson::from_serialize(&json!({"table": "users"})).unwrap()
}

fn call() -> Call {
    Call::new("crm::export", "export", args()).takes_credential()
}

async fn confirmed(gate: &Gate) -> Confirmed {
    gate.approve(call())
        .await
        .unwrap()
        .confirm_args(&args())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_body_gets_a_credential_minted_for_it_and_revoked_when_it_ends() {
    let (sink, broker) = (sink(), Arc::new(MockBroker::new(["select-table"])));
    let gate = gate_with(sink.clone(), broker.clone(), policy());
    let seen = confirmed(&gate)
        .await
        .execute_with_credential(|credential: Credential| {
            let broker = broker.clone();
            async move {
                assert_eq!(broker.live().len(), 1, "live while the body runs");
                Ok::<_, ApprovalError>(credential.handle().id.clone())
            }
        })
        .await
        .unwrap();
    assert!(broker.live().is_empty());
    assert_eq!(broker.revoked(), std::slice::from_ref(&seen));
    assert_eq!(
        events(&sink),
        [
            "requested",
            "reviewed",
            "approved",
            "credential_minted",
            "credential_revoked",
            "executed"
        ]
    );
    let all = records(&sink);
    let (minted, revoked) = (&all[3], &all[4]);
    assert_eq!(minted["request_id"], all[0]["request_id"]);
    assert_eq!(minted["broker"], "warehouse");
    assert_eq!(minted["credential_id"], seen.as_str());
    assert_eq!(
        minted["scope"],
        json!({"args": {"table": "users"}, "template": "select-table"})
    );
    // Its expiry is the policy's lifetime from now, at most.
    let expires =
        crate::clock::parse_ts(minted["expires_at"].as_str().unwrap().as_bytes()).unwrap();
    let latest = crate::SystemClock.now() + Duration::from_secs(300);
    assert!(expires <= latest && expires > latest - Duration::from_secs(30));
    assert_eq!(revoked["credential_id"], seen.as_str());
    assert_eq!(revoked["why"], "the body ended");
    // The secret is nowhere on record.
    let log = String::from_utf8(sink.bytes()).unwrap();
    assert!(!log.contains("secret-for-"), "{log}");
}

#[tokio::test]
async fn a_failing_or_panicking_body_s_credential_is_revoked_too() {
    let (sink, broker) = (sink(), Arc::new(MockBroker::new(["select-table"])));
    let gate = gate_with(sink.clone(), broker.clone(), policy());
    let failed = confirmed(&gate)
        .await
        .execute_with_credential(|_credential| async {
            Err::<(), _>(ApprovalError::Runtime("disk full".into()))
        })
        .await;
    assert!(matches!(failed, Err(ApprovalError::Runtime(_))));
    assert!(broker.live().is_empty());
    let approval = confirmed(&gate).await;
    let panicked = tokio::spawn(async move {
        approval
            .execute_with_credential(|_credential| async {
                if true {
                    panic!("body panicked");
                }
                Ok::<(), ApprovalError>(())
            })
            .await
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    assert!(broker.live().is_empty(), "revoked before the panic went on");
    assert_eq!(broker.minted().len(), 2);
    let outcomes: Vec<_> = records(&sink)
        .iter()
        .filter(|r| r["event"] == "executed")
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["error", "panicked"]);
    assert_eq!(
        events(&sink)
            .iter()
            .filter(|e| *e == "credential_revoked")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_body_dropped_mid_run_has_its_credential_revoked() {
    let (sink, broker) = (sink(), Arc::new(MockBroker::new(["select-table"])));
    let gate = gate_with(sink.clone(), broker.clone(), policy());
    let approval = confirmed(&gate).await;
    let (started, started_rx) = tokio::sync::oneshot::channel();
    let running = tokio::spawn(approval.execute_with_credential(|_credential| async move {
        started.send(()).unwrap();
        std::future::pending::<Result<(), ApprovalError>>().await
    }));
    started_rx.await.unwrap();
    assert_eq!(broker.live().len(), 1);
    running.abort();
    for _ in 0..200 {
        if broker.live().is_empty() && events(&sink).contains(&"credential_revoked".into()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(broker.live().is_empty());
    let revoked = records(&sink).pop().unwrap();
    assert_eq!(revoked["event"], "credential_revoked");
    assert_eq!(revoked["why"], "the caller stopped waiting on the body");
}

#[tokio::test]
async fn when_the_broker_cannot_mint_the_body_does_not_run_and_the_request_is_cancelled() {
    let (sink, broker) = (sink(), Arc::new(MockBroker::new(["select-table"])));
    let gate = gate_with(sink.clone(), broker.clone(), policy());
    broker.fail_mint(true);
    let ran = AtomicBool::new(false);
    let err = confirmed(&gate)
        .await
        .execute_with_credential(|_credential| async {
            ran.store(true, Ordering::SeqCst);
            Ok::<(), ApprovalError>(())
        })
        .await
        .unwrap_err();
    let ApprovalError::Credential {
        broker: name,
        source,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(name, "warehouse");
    assert!(source.to_string().contains("mint refused"), "{source}");
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(
        events(&sink),
        ["requested", "reviewed", "approved", "cancelled"]
    );
    assert_eq!(
        records(&sink)[3]["why"],
        "the credential broker could not mint the call's credential"
    );
}

/// A broker that mints credentials living longer than it was asked.
#[derive(Debug, Default)]
struct Overreaching(MockBroker);

#[async_trait::async_trait]
impl crate::CredentialBroker for Overreaching {
    fn check_template(&self, _template: &str) -> Result<(), crate::BrokerError> {
        Ok(())
    }

    async fn mint(
        &self,
        request: crate::MintRequest<'_>,
    ) -> Result<Credential, crate::BrokerError> {
        let scope = CanonicalJson::from_serialize(&json!({"all": true})).unwrap();
        let id = format!("long-{}", request.request.id);
        let late = request.expires_at + Duration::from_secs(1);
        Ok(Credential::new(id, scope, late))
    }

    async fn revoke(&self, credential: &crate::CredentialHandle) -> Result<(), crate::BrokerError> {
        self.0.revoke(credential).await
    }
}

/// A broker whose scope error quotes the argument, as real ones do.
#[derive(Debug, Default)]
struct Quoting;

#[async_trait::async_trait]
impl crate::CredentialBroker for Quoting {
    fn check_template(&self, _template: &str) -> Result<(), crate::BrokerError> {
        Ok(())
    }

    async fn mint(
        &self,
        request: crate::MintRequest<'_>,
    ) -> Result<Credential, crate::BrokerError> {
        Err(request.scope_error(format!("no table {}", request.request.args.as_str())))
    }

    async fn revoke(
        &self,
        _credential: &crate::CredentialHandle,
    ) -> Result<(), crate::BrokerError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_mint_is_traced_by_its_kind_never_the_arguments_it_quotes() {
    let traces = Traces::default();
    let _guard = traces.install();
    let sink = sink();
    let gate = Gate::builder(sink.clone())
        .approver("mock", Arc::new(MockApprover::approve_all("ci")))
        .broker("warehouse", Arc::new(Quoting))
        .policy(policy())
        .build()
        .unwrap();
    let err = confirmed(&gate)
        .await
        .execute_with_credential(|_credential| async { Ok::<(), ApprovalError>(()) })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("could not mint"), "{err}");
    let text = traces.text();
    let line = text
        .lines()
        .find(|l| l.contains("could not mint the call's credential"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("error=\"scope\"") || line.contains("error=scope"),
        "{line}"
    );
    assert!(
        !text.contains("users"),
        "an argument reached the traces: {text}"
    );
}

#[tokio::test]
async fn a_credential_longer_lived_than_the_policy_allows_is_revoked_and_not_used() {
    let sink = sink();
    let broker = Arc::new(Overreaching::default());
    let gate = Gate::builder(sink.clone())
        .approver("mock", Arc::new(MockApprover::approve_all("ci")))
        .broker("warehouse", broker.clone())
        .policy(policy())
        .build()
        .unwrap();
    let err = confirmed(&gate)
        .await
        .execute_with_credential(|_credential| async { Ok::<(), ApprovalError>(()) })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApprovalError::Credential { source, .. } if source.to_string().contains("longer than the policy")),
        "{err}"
    );
    assert_eq!(broker.0.revoked().len(), 1, "revoked, never handed over");
    assert_eq!(
        events(&sink),
        ["requested", "reviewed", "approved", "cancelled"]
    );
}

#[tokio::test]
async fn a_call_and_its_policy_must_agree_on_a_credential_before_anyone_is_asked() {
    let (sink, broker) = (sink(), Arc::new(MockBroker::new(["select-table"])));
    let gate = Gate::builder(sink.clone())
        .approver("mock", Arc::new(MockApprover::approve_all("ci")))
        .broker("warehouse", broker.clone())
        .policy(policy())
        .policy(Policy::new("plain", ["mock"], Duration::from_secs(60)).approvers(["mock:ci"]))
        .build()
        .unwrap();
    let without = Call::new("crm::export", "export", args());
    let err = gate.approve(without).await.unwrap_err();
    assert!(
        matches!(&err, ApprovalError::CredentialMismatch { policy, policy_mints: true } if policy == "export"),
        "{err}"
    );
    let with = Call::new("crm::export", "plain", args()).takes_credential();
    let err = gate.approve(with).await.unwrap_err();
    assert!(
        matches!(&err, ApprovalError::CredentialMismatch { policy, policy_mints: false } if policy == "plain"),
        "{err}"
    );
    assert!(events(&sink).is_empty(), "refused before any record");
    // A body run without the credential its policy mints would hold the
    // process's privileges: refused, on record.
    let ran = AtomicBool::new(false);
    let err = confirmed(&gate)
        .await
        .execute(async {
            ran.store(true, Ordering::SeqCst);
            Ok::<(), ApprovalError>(())
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApprovalError::CredentialMismatch { .. }),
        "{err}"
    );
    assert!(!ran.load(Ordering::SeqCst));
    assert!(broker.minted().is_empty());
    assert_eq!(
        events(&sink),
        ["requested", "reviewed", "approved", "cancelled"]
    );
}

#[test]
fn a_policy_s_broker_and_template_are_checked_when_the_gate_is_built() {
    let build = |policy: Policy| {
        Gate::builder(sink())
            .approver("mock", Arc::new(MockApprover::approve_all("ci")))
            .broker("warehouse", Arc::new(MockBroker::new(["select-table"])))
            .policy(policy)
            .build()
            .map(drop)
            .unwrap_err()
    };
    let base = || Policy::new("export", ["mock"], Duration::from_secs(60));
    let err = build(base().credential("vault", "select-table", Duration::from_secs(60)));
    assert!(
        matches!(&err, ConfigError::UnknownBroker { policy, broker } if policy == "export" && broker == "vault"),
        "{err}"
    );
    let err = build(base().credential("warehouse", "drop-table", Duration::from_secs(60)));
    assert!(
        matches!(&err, ConfigError::Broker { broker, cause, .. } if broker == "warehouse" && cause.contains("drop-table")),
        "{err}"
    );
    let err = build(base().credential("warehouse", "select-table", Duration::ZERO));
    assert!(
        matches!(&err, ConfigError::InvalidPolicy { problem, .. } if problem.contains("zero lifetime")),
        "{err}"
    );
    let err = build(
        base()
            .credential("warehouse", "select-table", Duration::from_secs(60))
            .in_shadow(),
    );
    assert!(
        matches!(&err, ConfigError::InvalidPolicy { problem, .. } if problem.contains("shadow")),
        "{err}"
    );
}

#[test]
fn a_policy_without_a_credential_keeps_its_digest() {
    let plain = Policy::new("export", ["mock"], Duration::from_secs(60));
    let json = CanonicalJson::from_serialize(&plain).unwrap();
    assert!(!json.as_str().contains("credential"), "{}", json.as_str());
    let minting = plain
        .clone()
        .credential("warehouse", "select-table", Duration::from_secs(60));
    assert_ne!(plain.digest(), minting.digest());
    let json = CanonicalJson::from_serialize(&minting).unwrap();
    assert!(
        json.as_str().contains(
            r#""credential":{"broker":"warehouse","lifetime_ms":60000,"template":"select-table"}"#
        ),
        "{}",
        json.as_str()
    );
}

/// What a run that crashed mid-body leaves in its log: an approved
/// request and a credential minted for it, never revoked.
async fn crashed_run(sink: &dyn crate::AuditSink, request_id: &str, credential_id: &str) {
    let writer = sink.chain_writer();
    let args = args();
    let events = [
        Event::Requested {
            request_id: request_id.into(),
            action: "crm::export".into(),
            policy: "export".into(),
            policy_digest: policy().digest(),
            binding: writer.binding("crm::export", &args),
            args,
            skipped: vec![],
            actor: crate::Actor::new("agent-7"),
            resource: None,
            reason: None,
            deferred: false,
        },
        Event::Approved {
            request_id: request_id.into(),
            policy: "export".into(),
            reviewers: vec![],
        },
        Event::CredentialMinted {
            request_id: request_id.into(),
            broker: "warehouse".into(),
            credential_id: credential_id.into(),
            scope: CanonicalJson::from_serialize(&json!({"select": ["users"]})).unwrap(),
            expires_at: crate::SystemClock.now() + Duration::from_secs(300),
        },
    ];
    for event in events {
        sink.append_event(event).await.unwrap();
    }
}

#[tokio::test]
async fn a_credential_a_crash_left_is_revoked_at_restart_and_again_if_that_failed() {
    use crate::JsonlFileSink;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let secret = WriterSecret::from_hex(&"28".repeat(32)).unwrap();
    let writer = || Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &secret));
    {
        let sink = JsonlFileSink::open(&path, writer()).unwrap();
        crashed_run(&sink, "01J00000000000000000000001", "role-1").await;
    }
    let lines = |path: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };

    // The broker is down at the first restart: the credential is left,
    // on no record as revoked.
    let broker = Arc::new(MockBroker::new(["select-table"]));
    broker.fail_revoke(true);
    {
        let sink = reopened(&path, writer()).await;
        let gate = gate_with(sink, broker.clone(), policy());
        let recovery = gate.recover().await.unwrap();
        assert_eq!(recovery.credentials_left, ["role-1"]);
        assert!(recovery.credentials_revoked.is_empty());
        assert_eq!(recovery.unknown, ["01J00000000000000000000001"]);
        gate.shutdown().await.unwrap();
    }
    assert!(
        lines(&path)
            .iter()
            .all(|r| r["event"] != "credential_revoked")
    );

    // The next restart revokes it, once.
    broker.fail_revoke(false);
    for expected in [vec!["role-1".to_owned()], vec![]] {
        let sink = reopened(&path, writer()).await;
        let gate = gate_with(sink, broker.clone(), policy());
        let recovery = gate.recover().await.unwrap();
        assert_eq!(recovery.credentials_revoked, expected);
        assert!(recovery.credentials_left.is_empty());
        gate.shutdown().await.unwrap();
    }
    assert_eq!(broker.revoked(), ["role-1"]);
    let revoked: Vec<_> = lines(&path)
        .into_iter()
        .filter(|r| r["event"] == "credential_revoked")
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["request_id"], "01J00000000000000000000001");
    assert_eq!(revoked[0]["broker"], "warehouse");
    assert_eq!(revoked[0]["why"], "found minted and not revoked at restart");
}

#[test]
fn a_policy_file_names_its_credential_and_a_wrong_member_fails_at_its_line() {
    let text = "[[policy]]\nname = \"export\"\nroutes = [\"mock\"]\ntimeout_ms = 60000\n\
                credential = { broker = \"warehouse\", template = \"select-table\", lifetime_ms = 300000 }\n";
    let file = PolicyFile::parse(text, "policies.toml").unwrap();
    let credential = file.policies()[0].credential.as_ref().unwrap();
    assert_eq!(credential.broker, "warehouse");
    assert_eq!(credential.template, "select-table");
    assert_eq!(credential.lifetime(), Duration::from_secs(300));
    let wrong = text.replace("lifetime_ms", "lifetime");
    let err = PolicyFile::parse(&wrong, "policies.toml").unwrap_err();
    assert!(
        matches!(&err, ConfigError::PolicyFile { line: 5, cause, .. } if cause.contains("lifetime")),
        "{err}"
    );
}
