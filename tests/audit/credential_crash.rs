//! A process killed while an approved body runs on its minted PostgreSQL
//! role: the role outlives the crash, and the restart's recovery drops it,
//! on record, so no credential is left live.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    ChainWriter, Gate, JsonlFileSink, KeyId, Keyring, MockApprover, Policy, WriterSecret, verify,
};
use approval_postgres::{PostgresBroker, RoleTemplate, TablePrivilege};

#[path = "../../approval-postgres/tests/cluster/mod.rs"]
mod cluster;

const KEY: &str = "6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d";

async fn role_exists(admin: &tokio_postgres::Client, role: &str) -> bool {
    admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn a_credential_live_when_its_process_was_killed_is_revoked_at_restart() {
    let cluster = cluster::Cluster::start_with_passwords();
    let admin = cluster.database().connect().await.unwrap();
    admin
        .batch_execute("CREATE TABLE users (id int); INSERT INTO users VALUES (1)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");

    // The first run mints a role for the body, and is killed in it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_approval-test-minter"))
        .args([&cluster.url(), log.to_str().unwrap(), KEY])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .expect("the minter printed nothing")
        .unwrap();
    let role = line
        .strip_prefix("minted ")
        .and_then(|rest| rest.strip_suffix(" for users"))
        .unwrap_or_else(|| panic!("unexpected: {line}"))
        .to_owned();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        role_exists(&admin, &role).await,
        "the crash left {role} live"
    );

    // The restart finds it minted and not revoked, and drops it.
    let secret = WriterSecret::from_hex(KEY).unwrap();
    let writer = Arc::new(ChainWriter::new(KeyId::new("m").unwrap(), &secret));
    let sink = Arc::new(JsonlFileSink::open(&log, writer).unwrap());
    let broker = PostgresBroker::new(cluster.database()).template(
        "read-table",
        RoleTemplate::new().grant([TablePrivilege::Select], "table"),
    );
    let gate = Gate::builder(sink)
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .broker("warehouse", Arc::new(broker))
        .policy(
            Policy::new("export", ["mock"], Duration::from_secs(60))
                .approvers(["mock:ci"])
                .credential("warehouse", "read-table", Duration::from_secs(600)),
        )
        .build()
        .unwrap();
    let recovery = gate.recover().await.unwrap();
    assert_eq!(recovery.credentials_revoked, std::slice::from_ref(&role));
    assert!(recovery.credentials_left.is_empty());
    assert_eq!(recovery.unknown.len(), 1, "the body's end is unknown");
    assert!(!role_exists(&admin, &role).await, "dropped at restart");

    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<_> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "requested",
            "reviewed",
            "approved",
            "credential_minted",
            "executed",
            "credential_revoked"
        ]
    );
    assert_eq!(events[5]["credential_id"], role.as_str());
    assert_eq!(events[5]["why"], "found minted and not revoked at restart");
    let keyring = Keyring::new().with(KeyId::new("m").unwrap(), secret.record_key());
    let report = verify(text.as_bytes(), &keyring).unwrap();
    assert_eq!(report.records, 6);
}
