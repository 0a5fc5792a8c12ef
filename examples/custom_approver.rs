//! A custom approver: a team's own channel (here, a queue that a ticket
//! system would drain), end to end, in a few dozen lines.
//!
//! ```sh
//! cargo run --example custom_approver
//! ```
//!
//! `deliver` hands the request to the channel and returns; the channel's
//! reviewer votes later through `Ballots::cast`, naming the request id and
//! binding they were shown. The gate checks and records every vote.

#![allow(clippy::print_stdout, reason = "an example talks to its user")]

use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    ApprovalError, ApprovalRequest, Approver, ApproverError, Ballot, Ballots, ChainWriter,
    Directory, Gate, KeyId, MemorySink, Notice, Policy, Vote, WriterSecret, requires_approval,
};
use tokio::sync::mpsc;

/// A ticket: what the team's system shows a reviewer, and where to answer.
struct Ticket {
    request: Arc<ApprovalRequest>,
    ballots: Ballots,
}

/// The approver: files a ticket per request.
#[derive(Debug)]
struct TicketApprover {
    queue: mpsc::UnboundedSender<Ticket>,
}

#[async_trait::async_trait]
impl Approver for TicketApprover {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError> {
        self.queue
            .send(Ticket { request, ballots })
            .map_err(|_| ApproverError::Unreachable("ticket queue closed".into()))
    }

    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        if let Notice::Settled { request, decision } = notice {
            println!("ticket {} closed: {}", request.id, decision.outcome());
        }
        Ok(())
    }
}

#[requires_approval(policy = "grant-role", resource = format!("iam/{user}"))]
async fn grant_admin(user: &str) -> Result<String, ApprovalError> {
    Ok(format!("{user} is now admin"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (queue, mut tickets) = mpsc::unbounded_channel();
    let writer = Arc::new(ChainWriter::new(
        KeyId::new("dev")?,
        &WriterSecret::generate()?,
    ));
    let sink = Arc::new(MemorySink::new(writer));
    let gate = Gate::builder(sink.clone())
        .approver("tickets", Arc::new(TicketApprover { queue }))
        .policy(Policy::new("grant-role", ["tickets"], Duration::from_secs(60)).approvers(["erin"]))
        .directory(Directory::new().person("erin", ["tickets:erin"]))
        .build()?;

    // The ticket system's side: Erin reads the ticket and approves.
    tokio::spawn(async move {
        while let Some(Ticket { request, ballots }) = tickets.recv().await {
            println!(
                "ticket {}: {} on {:?}",
                request.id, request.action, request.resource
            );
            let vote = Ballot::new(&request, "tickets:erin", "tickets", Vote::Approve);
            let outcome = ballots.cast(vote).await;
            println!("erin's vote: {outcome:?}");
        }
    });

    println!("{}", gate.scope(grant_admin("frank")).await?);
    gate.shutdown().await?; // lets the ticket system hear the outcome
    println!("{} audit records", sink.len());
    Ok(())
}
