//! Least privilege per approved call: an agent's export runs with a
//! PostgreSQL role minted for that one call, which reads the approved table
//! and nothing else, and is dropped when the export ends.
//!
//! ```sh
//! cargo run --example scoped_export -- postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! The connection string names a role that may create roles and owns (or
//! may grant on) the tables: the broker's, never the agent's. The example
//! creates two small tables if they are missing (`customers`, `payroll`),
//! asks you on this terminal to approve the export of `customers`, and
//! writes its log to `./approval-scoped-export/audit.jsonl`.

#![allow(clippy::print_stdout, reason = "an example talks to its user")]

use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    Actor, ActorKind, ApprovalError, ChainWriter, Credential, Gate, JsonlFileSink, KeyId, Policy,
    TerminalApprover, WriterSecret, requires_approval, with_actor,
};
use approval_postgres::{Database, PostgresBroker, RoleTemplate, TablePrivilege};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the export did with its role.
struct Export {
    rows: i64,
    role: String,
    /// What PostgreSQL said when the same role tried another table.
    outside: String,
}

/// Exports a table, as the role minted for this approved call. The agent
/// passes the table; the gate passes `login`.
#[requires_approval(
    policy = "data-export",
    resource = format!("warehouse/{table}"),
    reason = "quarterly churn report",
    skip(database),
    credential = login
)]
async fn export_table(
    database: &Database,
    table: String,
    login: Credential,
) -> Result<Export, Error> {
    let scoped = database.as_login(&login).connect().await?;
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let rows: i64 = scoped
        .query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
        .await?
        .get(0);
    // An agent that strays beyond what was approved meets PostgreSQL.
    let outside = match scoped.query_one("SELECT count(*) FROM payroll", &[]).await {
        Ok(_) => "read it (the role is not scoped!)".to_owned(),
        Err(e) => e
            .as_db_error()
            .map_or_else(|| e.to_string(), |db| db.message().to_owned()),
    };
    Ok(Export {
        rows,
        role: login.login().unwrap_or_default().to_owned(),
        outside,
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: scoped_export postgres://USER@HOST:PORT/DATABASE");
        std::process::exit(2);
    };
    let database = Database::new(&url)?;
    let admin = database.connect().await?;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS customers (id int, email text);
             CREATE TABLE IF NOT EXISTS payroll (id int, salary int);
             INSERT INTO customers SELECT 1, 'a@example.com' WHERE NOT EXISTS (SELECT 1 FROM customers);
             INSERT INTO payroll SELECT 1, 100000 WHERE NOT EXISTS (SELECT 1 FROM payroll);",
        )
        .await?;

    let dir = std::path::Path::new("approval-scoped-export");
    std::fs::create_dir_all(dir)?;
    let writer = ChainWriter::new(KeyId::new("dev")?, &WriterSecret::generate()?);
    let sink = Arc::new(JsonlFileSink::open(
        dir.join("audit.jsonl"),
        Arc::new(writer),
    )?);
    let terminal = TerminalApprover::for_current_user();
    let you = terminal.identity();
    // The broker: one template, "read the one table the call names".
    let broker = PostgresBroker::new(database.clone()).template(
        "read-table",
        RoleTemplate::new().grant([TablePrivilege::Select], "table"),
    );
    let gate = Gate::builder(sink)
        .approver("terminal", Arc::new(terminal))
        .broker("warehouse", Arc::new(broker))
        .policy(
            Policy::new("data-export", ["terminal"], Duration::from_secs(300))
                .approvers([you.clone()])
                .credential("warehouse", "read-table", Duration::from_secs(600)),
        )
        .build()?;
    gate.check_registry()?;
    // A role an earlier run's crash left behind is dropped here.
    gate.recover().await?;

    let agent = Actor::new("report-agent")
        .kind(ActorKind::Agent)
        .on_behalf_of("alice@example.com");
    println!("An agent will export `customers`; you decide, as {you}, on this terminal.");
    let export = with_actor(
        agent,
        gate.scope(export_table(&database, "customers".into())),
    );
    match export.await {
        Ok(done) => {
            println!(
                "export_table ran as {}, reading {} row(s).",
                done.role, done.rows
            );
            println!("The same role on payroll: {}.", done.outside);
            let left = admin
                .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&done.role])
                .await?;
            println!(
                "Role {} after the export: {}.",
                done.role,
                if left.is_some() {
                    "still there"
                } else {
                    "dropped"
                }
            );
        }
        Err(e) => match e.downcast_ref::<ApprovalError>() {
            Some(refusal) => println!("export_table did not run: {refusal}"),
            None => return Err(e),
        },
    }
    println!("Log: {}", dir.join("audit.jsonl").display());
    Ok(())
}
