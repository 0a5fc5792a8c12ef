//! Quickstart: an audit chain written, then verified, with nothing to set
//! up.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! It makes a fresh development key (a new one on every run: no key is
//! built in), records two approval requests the way the gate records them
//! (one approved and run, one denied with a comment), verifies the log, and
//! prints the `approval verify` command that checks it again. Files go to
//! `./approval-quickstart/`.

#![allow(clippy::print_stdout, reason = "an example talks to its user")]

use std::path::Path;
use std::sync::Arc;

use approval_core::{
    Actor, ActorKind, AuditSink, CanonicalJson, ChainWriter, Event, JsonlFileSink, KeyId, Keyring,
    Outcome, Reviewer, Vote, WriterSecret, verify,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new("approval-quickstart");
    std::fs::create_dir_all(dir)?;
    let (log, key_file) = (dir.join("audit.jsonl"), dir.join("dev.key"));
    let verify_file = dir.join("dev.key.verify");
    // Each run starts a new log under a new key; remove the last run's.
    for file in [&log, &key_file, &verify_file] {
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }

    let key_id = KeyId::new("dev")?;
    let secret = WriterSecret::generate()?;
    secret.write_new_file(&key_file)?;
    secret.record_key().write_new_file(&verify_file)?;
    println!(
        "Made a fresh DEVELOPMENT key ({}); every run makes a new one.",
        key_file.display()
    );

    let writer = Arc::new(ChainWriter::new(key_id.clone(), &secret));
    let sink = JsonlFileSink::open(&log, writer.clone())?;
    let actor = Actor::new("report-agent")
        .kind(ActorKind::Agent)
        .model("example-model")
        .on_behalf_of("alice@example.com");
    let reviewer = Reviewer::new("terminal:bob").person("bob").display("Bob");

    // 1. Export a table: approved by Bob, then run.
    let args =
        CanonicalJson::from_serialize(&serde_json::json!({"table": "customers", "rows": 5000}))?;
    sink.append_event(Event::Requested {
        request_id: "01-export".into(),
        action: "billing::export_table".into(),
        policy: "data-export".into(),
        policy_digest: [0; 32],
        binding: writer.binding("billing::export_table", &args),
        args,
        skipped: vec![],
        actor: actor.clone(),
        resource: Some("warehouse/customers".into()),
        reason: Some("monthly revenue report".into()),
    })
    .await?;
    for event in [
        Event::Reviewed {
            request_id: "01-export".into(),
            reviewer: reviewer.clone(),
            vote: Vote::Approve,
            channel: "terminal".into(),
            comment: None,
        },
        Event::Approved {
            request_id: "01-export".into(),
            policy: "data-export".into(),
            reviewers: vec![reviewer.clone()],
        },
        Event::Executed {
            request_id: "01-export".into(),
            outcome: Outcome::Ok,
            error: None,
        },
    ] {
        sink.append_event(event).await?;
    }
    println!("Recorded: billing::export_table requested, approved by Bob, executed.");

    // 2. Rotate a signing key: denied by Bob with a comment.
    let args = CanonicalJson::from_serialize(&serde_json::json!({"key": "payments-signing"}))?;
    sink.append_event(Event::Requested {
        request_id: "02-rotate".into(),
        action: "keys::rotate".into(),
        policy: "key-rotation".into(),
        policy_digest: [0; 32],
        binding: writer.binding("keys::rotate", &args),
        args,
        skipped: vec![],
        actor,
        resource: Some("kms/payments".into()),
        reason: Some("scheduled rotation".into()),
    })
    .await?;
    for event in [
        Event::Reviewed {
            request_id: "02-rotate".into(),
            reviewer: reviewer.clone(),
            vote: Vote::Deny,
            channel: "terminal".into(),
            comment: Some("not during the release freeze".into()),
        },
        Event::Denied {
            request_id: "02-rotate".into(),
            policy: "key-rotation".into(),
            reviewers: vec![reviewer],
        },
    ] {
        sink.append_event(event).await?;
    }
    println!("Recorded: keys::rotate requested, denied by Bob: \"not during the release freeze\".");
    drop(sink);

    // An auditor needs only the verification key.
    let keyring = Keyring::new().with(key_id, approval_core::RecordKey::read_file(&verify_file)?);
    let report = verify(std::fs::File::open(&log)?, &keyring)?;
    println!(
        "\nVerified {}: {} records, head {}.",
        log.display(),
        report.records,
        report.head_hex()
    );
    println!("Check it yourself:");
    println!(
        "  cargo run -q -p approval-cli -- verify {} --key dev={}",
        log.display(),
        verify_file.display()
    );
    Ok(())
}
