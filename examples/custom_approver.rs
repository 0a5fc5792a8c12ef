//! A custom approver: `deliver` files a ticket and returns; the reviewer
//! votes later through `Ballots::cast`. `cargo run --example custom_approver`
#![allow(clippy::print_stdout, reason = "an example talks to its user")]

use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    ApprovalError, ApprovalRequest, Approver, ApproverError, Ballot, Ballots, ChainWriter,
    Directory, Gate, KeyId, MemorySink, Notice, Policy, Vote, WriterSecret, requires_approval,
};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// Files each request as a ticket in a queue the team's system drains.
#[derive(Debug)]
struct Tickets(UnboundedSender<(Arc<ApprovalRequest>, Ballots)>);

#[async_trait::async_trait]
impl Approver for Tickets {
    async fn deliver(&self, req: Arc<ApprovalRequest>, b: Ballots) -> Result<(), ApproverError> {
        let closed = |_| ApproverError::Unreachable("ticket queue closed".into());
        self.0.send((req, b)).map_err(closed)
    }

    // Optional: how requests end, told off the caller's path (retried).
    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        if let Notice::Settled { request, decision } = notice {
            println!("ticket {} closed: {}", request.id, decision.outcome());
        }
        Ok(())
    }
}

#[requires_approval(policy = "grant-role")]
async fn grant_admin(user: &str) -> Result<String, ApprovalError> {
    Ok(format!("{user} is now admin"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (queue, mut tickets) = unbounded_channel();
    let writer = ChainWriter::new(KeyId::new("dev")?, &WriterSecret::generate()?);
    let sink = Arc::new(MemorySink::new(Arc::new(writer)));
    let gate = Gate::builder(sink.clone())
        .approver("tickets", Arc::new(Tickets(queue)))
        .policy(Policy::new("grant-role", ["tickets"], Duration::from_secs(60)).approvers(["erin"]))
        .directory(Directory::new().person("erin", ["tickets:erin"]))
        .build()?;
    let call = tokio::spawn(gate.scope(grant_admin("frank")));
    // The ticket system's side: Erin reads the ticket and approves.
    let (request, ballots) = tickets.recv().await.ok_or("no ticket")?;
    println!("ticket {}: {}", request.id, request.action);
    let vote = Ballot::new(&request, "tickets:erin", "tickets", Vote::Approve);
    println!("erin's vote: {:?}", ballots.cast(vote).await);
    println!("{}", call.await??);
    gate.shutdown().await?; // lets the ticket system hear the outcome
    println!("{} audit records", sink.len());
    Ok(())
}
