//! Runs `examples/slack.rs` as a user would, against the fake Slack the
//! Slack crate's tests use (SLACK.md's payloads): the request is posted,
//! a signed click on the Request URL approves it, the function runs, the
//! message is updated and the decision is in the log.

use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "../../approval-slack/tests/fake/mod.rs"]
mod fake;

use fake::*;

mod support;

use support::example;

#[tokio::test]
async fn the_slack_example_waits_for_a_click_and_runs_when_approved() {
    let dir = tempfile::tempdir().unwrap();
    let (base, slack) = fake_slack();
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let run = |token: &str| {
        Command::new(example("slack"))
            .current_dir(dir.path())
            .env("SLACK_API_URL", &base)
            .env("SLACK_BOT_TOKEN", token)
            .env("SLACK_CHANNEL", "C0APPROVALS")
            .env("SLACK_REVIEWER", "U0ALICE")
            .env("SLACK_SIGNING_SECRET", SECRET)
            .env("SLACK_LISTEN", listen.to_string())
            .env_remove("SLACK_APP_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A wrong token: it stops before asking anything, naming Slack's error.
    let refused = run("xoxb-wrong").wait_with_output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("invalid_auth"), "{stderr}");
    assert!(!stderr.contains("xoxb-wrong"), "{stderr}");
    assert!(slack.lock().unwrap().bodies("chat.postMessage").is_empty());

    let child = run(TOKEN);
    let value = button_value(&slack, 0).await;
    // The endpoint may still be binding: retry the click until it answers.
    let client = reqwest::Client::new();
    let mut status = 0;
    for _ in 0..100 {
        let (body, ts, signature) =
            slack_request(SECRET, &click("U0ALICE", "approve", &value), now());
        let sent = client
            .post(format!("http://{listen}/slack/interactivity"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Slack-Request-Timestamp", ts)
            .header("X-Slack-Signature", signature)
            .body(body)
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
    let update = nth_call(&slack, "chat.update", 0).await;
    assert!(
        update["blocks"]
            .to_string()
            .contains("*Approved* by <@U0ALICE>"),
        "{update}"
    );
    let log =
        std::fs::read_to_string(dir.path().join("approval-slack-example/audit.jsonl")).unwrap();
    assert!(log.contains(r#""event":"approved""#), "{log}");
    assert!(log.contains(r#""id":"slack:U0ALICE""#), "{log}");
}
