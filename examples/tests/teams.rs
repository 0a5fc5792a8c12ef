//! Runs `examples/teams.rs` as a user would, against the fake Teams the
//! Teams crate's tests use (TEAMS.md's payloads): a wrong secret stops it
//! at once; then the card is posted as a new channel thread, a signed
//! click approves it, the function runs, the card is updated and the
//! decision is in the log.

use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "../../approval-teams/tests/common/mod.rs"]
mod common;
#[path = "../../approval-teams/tests/fake/mod.rs"]
mod fake;

use fake::*;

mod support;

use support::example;

const REVIEWER: &str = "6f1c0b0e-1111-4a1a-9a1a-00000000a11c";

#[tokio::test]
async fn the_teams_example_waits_for_a_click_and_runs_when_approved() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_teams().await;
    let (base, service_url) = {
        let teams = fake.lock().unwrap();
        (teams.base.clone(), teams.service_url())
    };
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let run = |secret: &str| {
        Command::new(example("teams"))
            .current_dir(dir.path())
            .env("TEAMS_APP_ID", APP_ID)
            .env("TEAMS_APP_SECRET", secret)
            .env("TEAMS_TENANT_ID", TENANT)
            .env("TEAMS_CHANNEL_ID", CHANNEL)
            .env("TEAMS_REVIEWER", REVIEWER)
            .env("TEAMS_SERVICE_URL", &service_url)
            .env("TEAMS_LISTEN", listen.to_string())
            .env("TEAMS_LOGIN_URL", &base)
            .env(
                "TEAMS_OPENID_METADATA",
                format!("{base}/v1/.well-known/openid-configuration"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A wrong secret: it stops before asking anything, naming Entra's
    // error, never the secret.
    let child = run("wrong-secret");
    let refused = tokio::task::spawn_blocking(move || child.wait_with_output());
    let refused = refused.await.unwrap().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(!stderr.contains("wrong-secret"), "{stderr}");
    assert!(fake.lock().unwrap().cards.is_empty());

    let child = run(SECRET);
    let posted = nth_card(&fake, 0).await;
    let click = click(&fake, &posted, "approve", REVIEWER, None);
    // The endpoint may still be binding: retry the click until it answers.
    let client = reqwest::Client::new();
    let mut status = 0;
    for _ in 0..100 {
        let sent = client
            .post(format!("http://{listen}/api/messages"))
            .header("Authorization", bearer_for(&click))
            .header("Content-Type", "application/json")
            .body(click.to_string())
            .send()
            .await;
        if let Ok(response) = sent {
            status = response.status().as_u16();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
    let output = tokio::task::spawn_blocking(|| child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("export_table ran: 5000 rows exported."),
        "{stdout}"
    );
    // The card was replaced with the outcome before the example ended.
    let versions = fake.lock().unwrap().cards[0].versions.clone();
    assert_eq!(versions.len(), 2);
    let outcome = content(&versions[1]).to_string();
    assert!(outcome.contains("**Approved**"), "{outcome}");
    let log =
        std::fs::read_to_string(dir.path().join("approval-teams-example/audit.jsonl")).unwrap();
    assert!(log.contains(&format!("\"teams:{REVIEWER}\"")), "{log}");
}
