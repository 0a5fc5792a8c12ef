//! A process with an approved call's body running on a credential minted
//! for it, for the crash test to kill between mint and revoke.
//!
//! Usage: `approval-test-minter DATABASE_URL LOG KEY_HEX`
//!
//! Prints `minted ROLE` once the body runs with its role, then waits to be
//! killed.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, reason = "the parent test reads stdout")]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    ApprovalError, ChainWriter, Credential, Gate, JsonlFileSink, KeyId, MockApprover, Policy,
    WriterSecret, requires_approval,
};
use approval_postgres::{Database, PostgresBroker, RoleTemplate, TablePrivilege};

#[requires_approval(policy = "export", credential = login)]
async fn export(table: String, login: Credential) -> Result<(), ApprovalError> {
    println!("minted {} for {table}", login.login().unwrap_or_default());
    std::io::stdout().flush().expect("stdout");
    std::future::pending::<()>().await;
    Ok(())
}

/// The broker and policy this process and its restart share.
fn broker(database: Database) -> PostgresBroker {
    PostgresBroker::new(database).template(
        "read-table",
        RoleTemplate::new().grant([TablePrivilege::Select], "table"),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, log, key] = &args[..] else {
        eprintln!("usage: approval-test-minter DATABASE_URL LOG KEY_HEX");
        std::process::exit(2);
    };
    let secret = WriterSecret::from_hex(key).expect("key");
    let writer = Arc::new(ChainWriter::new(KeyId::new("m").expect("id"), &secret));
    let sink = Arc::new(JsonlFileSink::open(log, writer).expect("open"));
    let gate = Gate::builder(sink)
        .approver("mock", Arc::new(MockApprover::approve_all("ci")))
        .broker(
            "warehouse",
            Arc::new(broker(Database::new(url).expect("url"))),
        )
        .policy(
            Policy::new("export", ["mock"], Duration::from_secs(60))
                .approvers(["mock:ci"])
                .credential("warehouse", "read-table", Duration::from_secs(600)),
        )
        .build()
        .expect("gate");
    if let Err(e) = gate.scope(export("users".into())).await {
        eprintln!("refused: {e}");
        std::process::exit(1);
    }
}
