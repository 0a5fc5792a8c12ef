//! A process with a gated call in flight, for the restart tests to kill.
//!
//! Usage: `approval-test-gated LOG KEY_HEX wait|run`
//! - `wait`: a call waits for a vote that never comes;
//! - `run`: a call is approved and its body never finishes.
//!
//! Prints `ready REQUEST_ID` once the request is delivered (and, for
//! `run`, once the body started), then waits to be killed.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, reason = "the parent test reads stdout")]

use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    ApprovalError, ChainWriter, Gate, JsonlFileSink, KeyId, MockApprover, Policy, WriterSecret,
    requires_approval,
};

#[requires_approval(policy = "p")]
async fn grant(user: String) -> Result<(), ApprovalError> {
    println!("body started");
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, log, key, mode] = &args[..] else {
        eprintln!("usage: approval-test-gated LOG KEY_HEX wait|run");
        std::process::exit(2);
    };
    let secret = WriterSecret::from_hex(key).expect("key");
    let writer = Arc::new(ChainWriter::new(KeyId::new("gw").expect("id"), &secret));
    let sink = Arc::new(JsonlFileSink::open(log, writer).expect("open"));
    let mock = Arc::new(if mode == "run" {
        MockApprover::approve_all("ci")
    } else {
        MockApprover::silent("ci")
    });
    let gate = Gate::builder(sink)
        .approver("mock", mock.clone())
        .policy(Policy::new("p", ["mock"], Duration::from_secs(3600)).approvers(["mock:ci"]))
        .build()
        .expect("gate");
    let call = tokio::spawn({
        let gate = gate.clone();
        async move { gate.scope(grant("frank".into())).await }
    });
    while mock.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if mode == "run" {
        // Let the approval land and the body start.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ready {}", mock.requests()[0].id);
    match call.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("refused: {e}"),
        Err(e) => eprintln!("call: {e}"),
    }
}
