//! Quickstart: an agent tries two privileged actions; you decide on this
//! terminal; the audit log is verified at the end.
//!
//! ```sh
//! cargo run --example quickstart          # decide on this terminal
//! cargo run --example quickstart -- --web # or in the review console, in a browser
//! ```
//!
//! Nothing to configure: it makes a fresh development key (a new one on
//! every run; no key is built in), writes the log and the verification key
//! to `./approval-quickstart/`, and prints the `approval verify` command
//! that checks the log again.

#![allow(clippy::print_stdout, reason = "an example talks to its user")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use approval_core::checkpoint::{
    Checkpoint, Checkpointing, SigningKey, check_log, checkpoint_path,
};
use approval_core::{
    Actor, ActorKind, ApprovalError, AuditSink, ChainWriter, Directory, Gate, JsonlFileSink, KeyId,
    Keyring, Policy, RecordKey, TerminalApprover, WriterSecret, requires_approval, verify,
    with_actor,
};
use approval_http::{ApiApprover, ReviewerTokens, api};
use approval_listener::Server;
use tracing_subscriber::EnvFilter;

/// Exports a table from the warehouse: a person approves every call.
#[requires_approval(
    policy = "data-export",
    resource = format!("warehouse/{table}"),
    reason = "monthly revenue report"
)]
async fn export_table(table: &str, rows: u64) -> Result<u64, ApprovalError> {
    Ok(rows)
}

/// Rotates a signing key: a person approves every call.
#[requires_approval(policy = "key-rotation", resource = format!("kms/{key}"), reason = "scheduled rotation")]
async fn rotate_key(key: &str) -> Result<String, ApprovalError> {
    Ok(format!("{key} rotated"))
}

/// A random token for the console's one reviewer: 128 bits, hex.
fn one_time_token() -> Result<String, Box<dyn std::error::Error>> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `RUST_LOG=info` shows a line per step (recorded, delivered, voted,
    // settled, ran); nothing by default.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    // `--web`: decide in the review console in a browser instead.
    let web = std::env::args().skip(1).any(|a| a == "--web");
    let dir = Path::new("approval-quickstart");
    std::fs::create_dir_all(dir)?;
    let (log, key_file) = (dir.join("audit.jsonl"), dir.join("dev.key"));
    let verify_file = dir.join("dev.key.verify");
    let signing_file = dir.join("dev.signing");
    let checkpoint_file = checkpoint_path(&log);
    // Each run starts a new log under new keys; remove the last run's.
    for file in [
        &log,
        &key_file,
        &verify_file,
        &signing_file,
        &checkpoint_file,
    ] {
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

    // Checkpoints, signed with a development signing key, let an auditor
    // see a log cut off or rewritten with the public key alone.
    let signing = SigningKey::generate("quickstart.example/approvals")?;
    signing.write_new_file(&signing_file)?;
    let public = signing.verifier();
    let sink = JsonlFileSink::open_with_checkpoints(
        &log,
        Arc::new(ChainWriter::new(key_id.clone(), &secret)),
        Checkpointing::new(signing),
    )?;
    let sink: Arc<dyn AuditSink> = Arc::new(sink);
    let timeout = Duration::from_secs(300);
    let mut gate = Gate::builder(sink.clone());
    let mut server = None;
    let you = if web {
        // The review console on a loopback port, with a one-time token.
        let token = one_time_token()?;
        let tokens = ReviewerTokens::new().reviewer("you", &ReviewerTokens::hash(&token))?;
        let keyring = Keyring::new().with(key_id.clone(), secret.record_key());
        let console = Arc::new(
            ApiApprover::new(tokens)
                .audit(sink.clone(), keyring)
                .plain_http_cookies(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!(
            "Review console: http://{}/console  (sign in with the token {token})",
            listener.local_addr()?
        );
        let router = api::router(console.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // The listener's limits (header read timeout, connection cap) keep
        // slow clients from holding the console.
        let serving = tokio::spawn(Server::new().serve(listener, router, async move {
            // Told to stop, or the quickstart is gone: stop either way.
            match stopped.await {
                Ok(()) | Err(_) => {}
            }
        }));
        server = Some((stop, serving));
        gate = gate.approver("reviewers", console).directory(
            Directory::new()
                .person("you", ["api:you"])
                .person("alice", ["alice@example.com"]),
        );
        "you".to_owned()
    } else {
        let terminal = TerminalApprover::for_current_user();
        let you = terminal.identity();
        gate = gate.approver("reviewers", Arc::new(terminal));
        you
    };
    let gate = gate
        .policy(Policy::new("data-export", ["reviewers"], timeout).approvers([you.clone()]))
        .policy(Policy::new("key-rotation", ["reviewers"], timeout).approvers([you.clone()]))
        .build()?;
    gate.check_registry()?;
    // Close whatever an earlier run left open (nothing, on a fresh log).
    gate.recover().await?;

    let agent = Actor::new("report-agent")
        .kind(ActorKind::Agent)
        .model("example-model")
        .on_behalf_of("alice@example.com");
    println!("An agent acting for alice@example.com will now try two privileged actions.");
    if web {
        println!("You decide, as {you}, in the review console.");
    } else {
        println!("You decide, as {you}, on this terminal.");
    }
    with_actor(
        agent,
        gate.scope(async {
            match export_table("customers", 5000).await {
                Ok(rows) => println!("export_table ran: {rows} rows exported."),
                Err(e) => println!("export_table did not run: {e}"),
            }
            match rotate_key("payments-signing").await {
                Ok(done) => println!("rotate_key ran: {done}."),
                Err(e) => println!("rotate_key did not run: {e}"),
            }
        }),
    )
    .await;

    // Closing the log signs a checkpoint of everything in it. The console
    // holds the log too: it stops first, letting open connections finish.
    if let Some((stop, serving)) = server {
        // The console may have stopped on its own (an error it reported).
        if stop.send(()).is_err() {
            eprintln!("the review console had already stopped");
        }
        serving.await?;
    }
    drop(gate);
    // A channel's task may still be finishing the last vote, holding the
    // gate and its log for a moment: wait for it, so the log closes here,
    // signing its checkpoint, before it is read.
    for _ in 0..500 {
        if Arc::strong_count(&sink) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(sink);

    // An auditor needs only the verification key and the public key.
    let keyring = Keyring::new().with(key_id, RecordKey::read_file(&verify_file)?);
    let report = verify(std::fs::File::open(&log)?, &keyring)?;
    let checkpoint = Checkpoint::open(
        &std::fs::read(&checkpoint_file)?,
        std::slice::from_ref(&public),
    )?;
    let coverage = check_log(std::fs::File::open(&log)?, &checkpoint)?;
    println!(
        "\nVerified {}: {} records, head {}; {coverage}.",
        log.display(),
        report.records,
        report.head_hex()
    );
    println!("Check it yourself:");
    println!(
        "  cargo run -q -p approval-cli -- verify {} --key dev={} --checkpoint {} --trust {public}",
        log.display(),
        verify_file.display(),
        checkpoint_file.display()
    );
    Ok(())
}
