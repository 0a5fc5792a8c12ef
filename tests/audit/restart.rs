//! A gate process killed mid-wait, then restarted on the same log: the
//! request it left open is closed as cancelled and can never be approved;
//! an approved call whose body never finished is recorded as unknown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    Ballot, BallotOutcome, ChainWriter, Gate, JsonlFileSink, KeyId, Keyring, MockApprover, Policy,
    RejectReason, Vote, WriterSecret, verify,
};

const KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// Starts the waiter in `mode`, waits until it is ready, kills it; returns
/// the id of its request.
fn kill_mid_call(log: &std::path::Path, mode: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_approval-test-gated"))
        .args([log.to_str().unwrap(), KEY, mode])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let id = loop {
        let line = lines.next().expect("the waiter printed nothing").unwrap();
        if let Some(id) = line.strip_prefix("ready ") {
            break id.to_owned();
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    id
}

fn restarted_gate(log: &std::path::Path) -> Gate {
    let secret = WriterSecret::from_hex(KEY).unwrap();
    let writer = Arc::new(ChainWriter::new(KeyId::new("gw").unwrap(), &secret));
    let sink = Arc::new(JsonlFileSink::open(log, writer).unwrap());
    Gate::builder(sink)
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .policy(Policy::new("p", ["mock"], Duration::from_secs(60)).approvers(["mock:ci"]))
        .build()
        .unwrap()
}

fn events_of(log: &std::path::Path, id: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("\"request_id\":\"{id}\"")))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}{}",
                v["event"].as_str().unwrap(),
                v.get("outcome")
                    .and_then(|o| o.as_str())
                    .map(|o| format!(":{o}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_restart_closes_what_a_killed_process_left_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let waiting = kill_mid_call(&log, "wait");
    let running = kill_mid_call(&log, "run");
    assert_eq!(events_of(&log, &waiting), ["requested"]);
    assert_eq!(
        events_of(&log, &running),
        ["requested", "reviewed", "approved"]
    );

    let gate = restarted_gate(&log);
    let recovery = gate.recover().await.unwrap();
    assert_eq!(recovery.cancelled, std::slice::from_ref(&waiting));
    assert_eq!(recovery.unknown, std::slice::from_ref(&running));
    assert_eq!(events_of(&log, &waiting), ["requested", "cancelled"]);
    assert_eq!(
        events_of(&log, &running),
        ["requested", "reviewed", "approved", "executed:unknown"]
    );

    // A late vote for the closed request is refused, and recorded so.
    let late = Ballot::from_parts(waiting.clone(), [0; 32], "mock:ci", "mock", Vote::Approve);
    assert_eq!(
        gate.cast(late).await.unwrap(),
        BallotOutcome::Rejected(RejectReason::Settled)
    );

    // A second recovery finds nothing more to close.
    let again = gate.recover().await.unwrap();
    assert!(again.cancelled.is_empty() && again.unknown.is_empty());
    drop(gate);
    let keyring = Keyring::new().with(
        KeyId::new("gw").unwrap(),
        WriterSecret::from_hex(KEY).unwrap().record_key(),
    );
    verify(std::fs::File::open(&log).unwrap(), &keyring).unwrap();
}
