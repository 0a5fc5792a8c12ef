//! Slack: an agent asks to export a table; a person approves or denies it
//! in Slack; the decision is in the audit log.
//!
//! ```sh
//! export SLACK_BOT_TOKEN=xoxb-…        # the app's bot token
//! export SLACK_CHANNEL=C0123456789     # where requests are posted (the bot must be in it)
//! export SLACK_REVIEWER=U0123456789    # the Slack user id who may approve
//! # Either Socket Mode (no public URL needed):
//! export SLACK_APP_TOKEN=xapp-…        # app-level token, scope connections:write
//! # or the interactivity Request URL, served on SLACK_LISTEN (default 127.0.0.1:3000):
//! export SLACK_SIGNING_SECRET=…
//! cargo run --example slack
//! ```
//!
//! `approval-slack/manifest.yml` creates the Slack app; the README's Slack
//! section walks through it. The log, its development key and the message
//! store live in `./approval-slack-example/`, kept between runs: a run
//! closes what the previous one left open, and takes down its buttons.

#![allow(clippy::print_stdout, reason = "an example talks to its user")]
#![allow(
    clippy::disallowed_methods,
    reason = "Slack credentials come from the environment; none of it changes how approvals work"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    Actor, ActorKind, ApprovalError, ChainWriter, Directory, Gate, JsonlFileSink, KeyId, Policy,
    WriterSecret, requires_approval, with_actor,
};
use approval_slack::api::{AppToken, BotToken, SlackApi};
use approval_slack::socket_mode::SocketMode;
use approval_slack::{SigningSecret, SlackChannel, interactivity};

/// Exports a table from the warehouse: a person approves every call.
#[requires_approval(
    policy = "data-export",
    resource = format!("warehouse/{table}"),
    reason = "monthly revenue report"
)]
async fn export_table(table: &str, rows: u64) -> Result<u64, ApprovalError> {
    Ok(rows)
}

/// How clicks come back from Slack.
enum Clicks {
    SocketMode(AppToken),
    RequestUrl(SigningSecret),
}

fn required(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name} (see the top of examples/slack.rs)"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let token = BotToken::new(required("SLACK_BOT_TOKEN")?);
    let channel = required("SLACK_CHANNEL")?;
    let reviewer = required("SLACK_REVIEWER")?;
    let clicks = match (
        std::env::var("SLACK_APP_TOKEN"),
        std::env::var("SLACK_SIGNING_SECRET"),
    ) {
        (Ok(token), _) => Clicks::SocketMode(AppToken::new(token)),
        (_, Ok(secret)) => Clicks::RequestUrl(SigningSecret::new(secret)),
        _ => {
            return Err(
                "set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (Request URL)".into(),
            );
        }
    };
    let mut api = SlackApi::new(token);
    // A test points the example at a fake Slack on 127.0.0.1.
    if let Ok(url) = std::env::var("SLACK_API_URL") {
        api = api.base_url(url);
    }

    let dir = Path::new("approval-slack-example");
    std::fs::create_dir_all(dir)?;
    let key_file = dir.join("dev.key");
    if !key_file.exists() {
        WriterSecret::generate()?.write_new_file(&key_file)?;
        println!("Made a DEVELOPMENT key: {}", key_file.display());
    }
    let secret = WriterSecret::read_file(&key_file)?;
    let sink = JsonlFileSink::open(
        dir.join("audit.jsonl"),
        Arc::new(ChainWriter::new(KeyId::new("dev")?, &secret)),
    )?;

    // Fails here, loudly, if the token is wrong.
    let slack = SlackChannel::builder(api, channel)
        .message_store(dir.join("slack-messages"))
        .connect()
        .await?;
    let slack = Arc::new(slack);
    println!(
        "Connected to Slack as bot user {}.",
        slack.channel().identity().user_id
    );
    let gate = Gate::builder(Arc::new(sink))
        .approver("slack", slack.clone())
        .policy(
            Policy::new("data-export", ["slack"], Duration::from_secs(600)).approvers(["reviewer"]),
        )
        .directory(
            Directory::new()
                .person("reviewer", [format!("slack:{reviewer}")])
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

    // Clicks come back by Socket Mode or by the Request URL.
    match clicks {
        Clicks::SocketMode(app_token) => {
            let socket = SocketMode::new(app_token, slack.clone());
            tokio::spawn(async move {
                if let Err(e) = socket.run().await {
                    eprintln!("Socket Mode stopped: {e}");
                }
            });
            println!("Listening for clicks over Socket Mode.");
        }
        Clicks::RequestUrl(signing_secret) => {
            let listen = std::env::var("SLACK_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            let router = interactivity::router(signing_secret, slack.clone());
            tokio::spawn(approval_listener::Server::new().serve(
                listener,
                router,
                std::future::pending(),
            ));
            println!("Listening for clicks on http://{listen}/slack/interactivity.");
        }
    }

    let agent = Actor::new("report-agent")
        .kind(ActorKind::Agent)
        .model("example-model")
        .on_behalf_of("alice@example.com");
    println!("The agent asks to export `customers`; decide in Slack.");
    let outcome = with_actor(agent, gate.scope(export_table("customers", 5000))).await;
    match outcome {
        Ok(rows) => println!("export_table ran: {rows} rows exported."),
        Err(e) => println!("export_table did not run: {e}"),
    }
    // The outcome's update runs on the gate's notice outbox: let it
    // reach Slack before the program ends.
    gate.shutdown().await?;
    println!("The decision is in {}.", dir.join("audit.jsonl").display());
    Ok(())
}
