//! Microsoft Teams: an agent asks to export a table; a person approves or
//! denies it on a card in a Teams channel; the decision is in the audit log.
//!
//! ```sh
//! export TEAMS_APP_ID=…          # the Azure Bot's Microsoft App ID
//! export TEAMS_APP_SECRET=…      # its client secret
//! export TEAMS_TENANT_ID=…       # your Entra tenant id
//! export TEAMS_CHANNEL_ID='19:…@thread.tacv2'   # where requests go (the app must be in its team)
//! export TEAMS_REVIEWER=…        # the Entra object id of the person who may approve
//! # Optional: TEAMS_SERVICE_URL (default https://smba.trafficmanager.net/teams/),
//! # TEAMS_LISTEN (default 127.0.0.1:3978; the bot's messaging endpoint is
//! # https://<your host>/api/messages in front of it).
//! cargo run --example teams
//! ```
//!
//! `approval-teams/manifest/` packages the Teams app; the README's Teams
//! section walks through the Azure bot registration. The log and its
//! development key live in `./approval-teams-example/`, kept between runs:
//! a run closes what the previous one left open.

#![allow(clippy::print_stdout, reason = "an example talks to its user")]
#![allow(
    clippy::disallowed_methods,
    reason = "Teams credentials come from the environment; none of it changes how approvals work"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    Actor, ActorKind, ApprovalError, ChainWriter, Directory, Gate, JsonlFileSink, KeyId, Policy,
    WriterSecret, requires_approval, with_actor,
};
use approval_teams::auth::InboundAuth;
use approval_teams::connector::{BotCredentials, Connector};
use approval_teams::keys::{BOT_FRAMEWORK_METADATA, KeyCache};
use approval_teams::{Target, TeamsChannel, endpoint};

/// Exports a table from the warehouse: a person approves every call.
#[requires_approval(
    policy = "data-export",
    resource = format!("warehouse/{table}"),
    reason = "monthly revenue report"
)]
async fn export_table(table: &str, rows: u64) -> Result<u64, ApprovalError> {
    Ok(rows)
}

fn required(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name} (see the top of examples/teams.rs)"))
}

fn optional(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The host of `url`, without port.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.split('/').next().unwrap_or_default();
    host_port.split(':').next().unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app_id = required("TEAMS_APP_ID")?;
    let secret = required("TEAMS_APP_SECRET")?;
    let tenant = required("TEAMS_TENANT_ID")?;
    let channel = required("TEAMS_CHANNEL_ID")?;
    let reviewer = required("TEAMS_REVIEWER")?.to_ascii_lowercase();
    let service_url = optional(
        "TEAMS_SERVICE_URL",
        "https://smba.trafficmanager.net/teams/",
    );
    let listen = optional("TEAMS_LISTEN", "127.0.0.1:3978");
    // A test points these at a fake Entra and key server on 127.0.0.1.
    let login_url = optional("TEAMS_LOGIN_URL", "https://login.microsoftonline.com");
    let metadata_url = optional("TEAMS_OPENID_METADATA", BOT_FRAMEWORK_METADATA);

    let dir = Path::new("approval-teams-example");
    std::fs::create_dir_all(dir)?;
    let key_file = dir.join("dev.key");
    if !key_file.exists() {
        WriterSecret::generate()?.write_new_file(&key_file)?;
        println!("Made a DEVELOPMENT key: {}", key_file.display());
    }
    let writer_secret = WriterSecret::read_file(&key_file)?;
    let sink = JsonlFileSink::open(
        dir.join("audit.jsonl"),
        Arc::new(ChainWriter::new(KeyId::new("dev")?, &writer_secret)),
    )?;

    // Fails here, loudly, if the app id, secret or tenant is wrong.
    let connector =
        Connector::new(BotCredentials::new(&app_id, secret, &tenant)).login_url(login_url);
    let target = Target::channel(&service_url, &channel, &tenant);
    let teams = Arc::new(TeamsChannel::builder(connector, target).connect().await?);
    println!("Got a bot token for app {app_id}.");
    let gate = Gate::builder(Arc::new(sink))
        .approver("teams", teams.clone())
        .policy(
            Policy::new("data-export", ["teams"], Duration::from_secs(600)).approvers(["reviewer"]),
        )
        .directory(
            Directory::new()
                .person("reviewer", [format!("teams:{reviewer}")])
                // The principal the agent acts for: she may not approve.
                .person("alice", ["alice@example.com".to_owned()]),
        )
        .build()?;
    gate.check_registry()?;
    let recovery = gate.recover().await?;
    if !recovery.cancelled.is_empty() {
        println!(
            "Closed {} request(s) the last run left open.",
            recovery.cancelled.len()
        );
    }

    // Clicks come back to the bot's messaging endpoint. Replies only ever
    // go to Microsoft's connector hosts and the service URL configured here.
    let auth = InboundAuth::new(&app_id)
        .allow_tenant(&tenant)
        .allow_service_host(host(&service_url));
    let keys = Arc::new(KeyCache::new(metadata_url));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let router = endpoint::router(auth, keys, teams.clone());
    tokio::spawn(approval_listener::Server::new().serve(listener, router, std::future::pending()));
    println!("Listening for clicks on http://{listen}{}.", endpoint::PATH);

    let agent = Actor::new("report-agent")
        .kind(ActorKind::Agent)
        .model("example-model")
        .on_behalf_of("alice@example.com");
    println!("The agent asks to export `customers`; decide in Teams.");
    let outcome = with_actor(agent, gate.scope(export_table("customers", 5000))).await;
    match outcome {
        Ok(rows) => println!("export_table ran: {rows} rows exported."),
        Err(e) => println!("export_table did not run: {e}"),
    }
    // The card's update runs on the gate's notice outbox: let it reach
    // Teams before the program ends.
    gate.shutdown().await?;
    println!("The decision is in {}.", dir.join("audit.jsonl").display());
    Ok(())
}
