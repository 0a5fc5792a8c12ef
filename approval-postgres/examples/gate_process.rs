//! One gate process among several on one PostgreSQL database: its audit
//! chain in the database (`PostgresSink`, named after the process), its
//! requests in the shared ledger (`PostgresCoordinator`), so that a vote
//! taken by any endpoint replica reaches it.
//!
//! ```sh
//! cargo run -p approval-postgres --example gate_process -- \
//!     postgres://approval@db.internal/approval agent-host-1 [LEASE_SECONDS]
//! ```
//!
//! It closes what its previous run left open, asks for approval of one
//! export, prints `waiting <request id> <binding>`, and waits: cast the
//! vote on any replica (a gate with a `PostgresCoordinator` of its own,
//! behind the Slack, Teams or HTTP endpoints). Its development writer key
//! is kept in `./approval-postgres-example/<process>.key`, and the key every
//! process and replica seals forwarded votes with in
//! `./approval-postgres-example/forwarding.key` (made by the first run).

#![allow(clippy::print_stdout, reason = "an example talks to its user")]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    ApprovalRequest, Approver, ApproverError, Ballots, Call, CanonicalJson, ChainWriter, Directory,
    Gate, KeyId, Policy, WriterSecret,
};
use approval_postgres::{Database, ForwardingKey, PostgresCoordinator, PostgresSink};
use async_trait::async_trait;

/// The route's approver in this process: reviewers vote on the replicas'
/// channels, so delivering is saying where the request is.
#[derive(Debug)]
struct Announce;

#[async_trait]
impl Approver for Announce {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        _ballots: Ballots,
    ) -> Result<(), ApproverError> {
        let binding = approval_core::hex::encode(&request.binding);
        println!("waiting {} {binding}", request.id);
        // The tests read this line to learn the request; a lost flush
        // only makes them wait for it.
        if let Err(error) = std::io::stdout().flush() {
            eprintln!("stdout: {error}");
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(process)) = (args.get(1), args.get(2)) else {
        return Err("usage: gate_process POSTGRES_URL PROCESS_NAME [LEASE_SECONDS]".into());
    };
    let lease = Duration::from_secs(args.get(3).map_or(Ok(30), |s| s.parse())?);

    let dir = std::path::Path::new("approval-postgres-example");
    std::fs::create_dir_all(dir)?;
    let key_file = dir.join(format!("{process}.key"));
    if !key_file.exists() {
        WriterSecret::generate()?.write_new_file(&key_file)?;
    }
    let writer = Arc::new(ChainWriter::new(
        KeyId::new("dev")?,
        &WriterSecret::read_file(&key_file)?,
    ));
    // One key for every process of the deployment (a development one
    // here, made by the first process run in this directory).
    let forwarding = dir.join("forwarding.key");
    if !forwarding.exists() {
        WriterSecret::generate()?.write_new_file(&forwarding)?;
    }
    let key = ForwardingKey::read_file(&forwarding)?;
    let database = Database::new(url)?;
    let sink = PostgresSink::connect(&database, process, writer).await?;
    let coordinator = Arc::new(PostgresCoordinator::connect(&database, process, lease, key).await?);
    let gate = Gate::builder(Arc::new(sink))
        .approver("replicas", Arc::new(Announce))
        .policy(
            Policy::new("data-export", ["replicas"], Duration::from_secs(600))
                .approvers(["alice", "bob"]),
        )
        .directory(
            Directory::new()
                .person("alice", ["api:alice"])
                .person("bob", ["api:bob"]),
        )
        .coordinator(coordinator.clone())
        .build()?;
    let recovery = gate.recover().await?;
    println!("closed {} left open", recovery.cancelled.len());

    let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "orders"}))?;
    let call = Call::new("warehouse::export", "data-export", args.clone());
    match gate.approve(call).await {
        Ok(approval) => {
            approval
                .confirm_args(&args)
                .await?
                .execute(async { Ok::<_, approval_core::ApprovalError>(()) })
                .await?;
            println!("approved");
        }
        Err(e) => println!("not approved: {e}"),
    }
    // Votes other replicas forwarded here and still being answered.
    coordinator.flush(Duration::from_secs(5)).await;
    Ok(())
}
