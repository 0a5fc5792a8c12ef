//! The Web API client and the interactivity endpoint against the fake
//! Slack of `fake/` (SLACK.md's payloads, byte for byte).

use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_slack::api::{BotToken, PostedMessage, SlackApi, SlackError};
use serde_json::json;

mod fake;

use fake::*;

fn api(base: &str, token: &str) -> SlackApi {
    SlackApi::new(BotToken::new(token)).base_url(base)
}

#[tokio::test]
async fn a_message_is_posted_as_json_with_the_bearer_token_and_updated_where_slack_put_it() {
    let (base, fake) = fake_slack();
    let api = api(&base, TOKEN);
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]);
    let posted = api
        .post_message("C0APPROVALS", "Approval requested: export_table", &blocks)
        .await
        .unwrap();
    assert_eq!(
        posted,
        PostedMessage {
            channel: "C0APPROVALS".into(),
            ts: "1700000000.000100".into()
        }
    );
    fake.lock().unwrap().script.push_back(ok(UPDATED));
    api.update_message(&posted, "Approved", &blocks)
        .await
        .unwrap();
    let seen = fake.lock().unwrap().seen.clone();
    assert_eq!(seen[0].0, "/api/chat.postMessage");
    assert_eq!(seen[0].1, format!("Bearer {TOKEN}"));
    assert_eq!(seen[0].2, "application/json; charset=utf-8");
    let sent: serde_json::Value = serde_json::from_str(&seen[0].3).unwrap();
    assert_eq!(sent["channel"], "C0APPROVALS");
    assert_eq!(sent["blocks"], blocks);
    assert_eq!(sent["unfurl_links"], false);
    assert_eq!(seen[1].0, "/api/chat.update");
    let update: serde_json::Value = serde_json::from_str(&seen[1].3).unwrap();
    assert_eq!(
        (update["channel"].as_str(), update["ts"].as_str()),
        (Some("C0APPROVALS"), Some("1700000000.000100"))
    );
}

#[tokio::test]
async fn slack_s_errors_are_typed_with_their_code_and_fail_closed() {
    let (base, fake) = fake_slack();
    let blocks = json!([]);
    // A wrong token: invalid_auth, HTTP 200.
    let err = api(&base, "xoxb-wrong")
        .post_message("C0", "t", &blocks)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SlackError::Api { code, .. } if code == "invalid_auth"),
        "{err}"
    );
    assert!(!err.to_string().contains("xoxb"), "{err}");
    let api = api(&base, TOKEN);
    for code in [
        "channel_not_found",
        "not_in_channel",
        "token_revoked",
        "fatal_error",
    ] {
        fake.lock()
            .unwrap()
            .script
            .push_back(ok(&format!(r#"{{"ok":false,"error":"{code}"}}"#)));
        let err = api.post_message("C0", "t", &blocks).await.unwrap_err();
        assert!(
            matches!(&err, SlackError::Api { code: c, .. } if c == code),
            "{err}"
        );
    }
    fake.lock().unwrap().script.push_back(ok(MISSING_SCOPE));
    let err = api.post_message("C0", "t", &blocks).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Slack chat.postMessage: missing_scope (needs scope chat:write)"
    );
    // fatal_error is not re-posted: one request per call above.
    let posts = fake.lock().unwrap().seen.len();
    assert_eq!(posts, 6);
    // The broken twin of a good answer is refused.
    fake.lock().unwrap().script.push_back(ok(POSTED_NUMERIC_TS));
    let err = api.post_message("C0", "t", &blocks).await.unwrap_err();
    assert!(matches!(err, SlackError::Malformed { .. }), "{err}");
    // The token's check at start-up fails loudly.
    let err = api_with_wrong_token(&base).auth_test().await.unwrap_err();
    assert!(
        matches!(&err, SlackError::Api { code, .. } if code == "invalid_auth"),
        "{err}"
    );
}

fn api_with_wrong_token(base: &str) -> SlackApi {
    api(base, "xoxb-not-this-one")
}

#[tokio::test]
async fn rate_limits_wait_for_retry_after_and_outages_are_retried_then_fail_closed() {
    let (base, fake) = fake_slack();
    let api = api(&base, TOKEN);
    let blocks = json!([]);
    fake.lock().unwrap().script.push_back((
        429,
        vec![("Retry-After", "1".into())],
        RATELIMITED.into(),
    ));
    let started = Instant::now();
    api.post_message("C0", "t", &blocks).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );

    // 503 with an HTML body, then success.
    let html = (
        503,
        vec![("Content-Type", "text/html".to_owned())],
        "<html>Server Error | Slack</html>".to_owned(),
    );
    fake.lock().unwrap().script.push_back(html.clone());
    api.post_message("C0", "t", &blocks).await.unwrap();
    // Down for good: bounded retries, then a clear error.
    for _ in 0..4 {
        fake.lock().unwrap().script.push_back(html.clone());
    }
    let before = fake.lock().unwrap().seen.len();
    let err = api.post_message("C0", "t", &blocks).await.unwrap_err();
    assert!(
        matches!(&err, SlackError::Unavailable { cause, .. } if cause.contains("503")),
        "{err}"
    );
    assert_eq!(fake.lock().unwrap().seen.len() - before, 4);
    // A Retry-After beyond what a waiting caller can bear fails closed at once.
    fake.lock().unwrap().script.push_back((
        429,
        vec![("Retry-After", "3600".into())],
        RATELIMITED.into(),
    ));
    let err = api.post_message("C0", "t", &blocks).await.unwrap_err();
    assert!(matches!(err, SlackError::RateLimited { .. }), "{err}");
    // Nobody listening: connection errors, retried, then Unavailable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = SlackApi::new(BotToken::new(TOKEN))
        .base_url(format!("http://{closed}/api/"))
        .post_message("C0", "t", &blocks)
        .await
        .unwrap_err();
    assert!(matches!(err, SlackError::Unavailable { .. }), "{err}");
}

#[tokio::test]
async fn the_approver_posts_each_request_and_replaces_it_with_who_decided() {
    use approval_core::{
        Ballot, Call, CanonicalJson, ChainWriter, Decision, Directory, Gate, KeyId, MemorySink,
        Policy, Vote, WriterSecret,
    };
    use approval_slack::SlackChannel;

    let (base, fake) = fake_slack();
    // Wrong credentials fail at start-up, loudly.
    let err = SlackChannel::connect(api(&base, "xoxb-wrong"), "C0APPROVALS")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SlackError::Api { code, .. } if code == "invalid_auth"),
        "{err}"
    );

    let slack = Arc::new(
        SlackChannel::connect(api(&base, TOKEN), "C0APPROVALS")
            .await
            .unwrap(),
    );
    assert_eq!(slack.channel().identity().user_id, "U0BOTUSER");
    let writer = Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &WriterSecret::generate().unwrap(),
    ));
    let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
        .approver("slack", slack.clone())
        .policy(Policy::new("data-export", ["slack"], Duration::from_secs(60)).approvers(["alice"]))
        .directory(Directory::new().person("alice", ["slack:U0ALICE"]))
        .build()
        .unwrap();
    let call = Call::new(
        "crm::export_table",
        "data-export",
        CanonicalJson::from_serialize(&json!({"table": "users"})).unwrap(),
    );
    let waiting = tokio::spawn({
        let gate = gate.clone();
        async move { gate.approve(call).await.map(|a| a.request().id.clone()) }
    });
    // The message is posted before anyone can vote.
    let (request_id, binding, posted) = loop {
        let seen = fake.lock().unwrap().seen.clone();
        if let Some(post) = seen.iter().find(|s| s.0 == "/api/chat.postMessage") {
            let body: serde_json::Value = serde_json::from_str(&post.3).unwrap();
            let value = body["blocks"].as_array().unwrap().last().unwrap()["elements"][0]["value"]
                .as_str()
                .unwrap()
                .to_owned();
            let (id, binding) = value.split_once(':').unwrap();
            if let Some(message) = slack.message_of(id) {
                break (id.to_owned(), binding_of(binding), message);
            }
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(posted.ts, "1700000000.000100");
    // Alice clicks Approve (what the interactivity endpoint will do).
    let outcome = slack
        .ballots()
        .unwrap()
        .cast(Ballot::from_parts(
            &request_id,
            binding,
            "slack:U0ALICE",
            "slack",
            Vote::Approve,
        ))
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            approval_core::BallotOutcome::Counted {
                decision: Some(Decision::Approved { .. })
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(waiting.await.unwrap().unwrap(), request_id);
    // The message is replaced: buttons gone, who decided in their place.
    let update = loop {
        let seen = fake.lock().unwrap().seen.clone();
        if let Some(update) = seen.iter().find(|s| s.0 == "/api/chat.update") {
            break update.3.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let update: serde_json::Value = serde_json::from_str(&update).unwrap();
    assert_eq!(update["ts"], "1700000000.000100");
    assert_eq!(update["channel"], "C0APPROVALS");
    let text = update["blocks"].to_string();
    assert!(text.contains("*Approved* by <@U0ALICE>"), "{text}");
    assert!(!text.contains("\"actions\""), "{text}");
}

/// The binding a button carries, from its hex.
fn binding_of(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[tokio::test]
async fn clicks_reach_the_gate_only_when_slack_signed_them_and_deny_asks_for_a_reason() {
    use approval_core::{
        ApprovalError, Call, CanonicalJson, ChainWriter, Directory, Gate, KeyId, MemorySink,
        Policy, WriterSecret,
    };
    use approval_slack::SlackChannel;

    let (base, fake) = fake_slack();
    let slack = Arc::new(
        SlackChannel::connect(api(&base, TOKEN), "C0APPROVALS")
            .await
            .unwrap(),
    );
    let writer = Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &WriterSecret::generate().unwrap(),
    ));
    let sink = Arc::new(MemorySink::new(writer));
    let gate = Gate::builder(sink.clone())
        .approver("slack", slack.clone())
        .policy(
            Policy::new("data-export", ["slack"], Duration::from_secs(60))
                .approvers(["alice", "bob"]),
        )
        .directory(
            Directory::new()
                .person("alice", ["slack:U0ALICE"])
                .person("bob", ["slack:U0BOB"]),
        )
        .build()
        .unwrap();
    let url = serve_interactivity(slack).await;
    let client = reqwest::Client::new();
    let send = |body: String, ts: Option<String>, sig: Option<String>| {
        let mut request = client
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(ts) = ts {
            request = request.header("X-Slack-Request-Timestamp", ts);
        }
        if let Some(sig) = sig {
            request = request.header("X-Slack-Signature", sig);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // A request waiting, and the value its buttons carry.
    let start = |table: &str| {
        let call = Call::new(
            "crm::export_table",
            "data-export",
            CanonicalJson::from_serialize(&json!({"table": table})).unwrap(),
        );
        let gate = gate.clone();
        tokio::spawn(async move { gate.approve(call).await.map(|a| a.request().id.clone()) })
    };
    let value_of = |n: usize| {
        let fake = fake.clone();
        async move {
            loop {
                let posts: Vec<String> = fake
                    .lock()
                    .unwrap()
                    .seen
                    .iter()
                    .filter(|s| s.0 == "/api/chat.postMessage")
                    .map(|s| s.3.clone())
                    .collect();
                if let Some(post) = posts.get(n) {
                    let body: serde_json::Value = serde_json::from_str(post).unwrap();
                    return body["blocks"].as_array().unwrap().last().unwrap()["elements"][0]["value"].as_str().unwrap().to_owned();
                }
                tokio::task::yield_now().await;
            }
        }
    };

    let first = start("users");
    let value = value_of(0).await;
    let approve = click("U0ALICE", "approve", &value);
    // Unsigned, stale, tampered: 401, and nothing is counted.
    let (body, ts, sig) = slack_request(SECRET, &approve, now());
    assert_eq!(send(body.clone(), None, None).await, 401);
    let (old_body, old_ts, old_sig) = slack_request(SECRET, &approve, now() - 301);
    assert_eq!(send(old_body, Some(old_ts), Some(old_sig)).await, 401);
    let tampered = body.replace("U0ALICE", "U0BOB00");
    assert_eq!(
        send(tampered, Some(ts.clone()), Some(sig.clone())).await,
        401
    );
    let (other, ots, osig) = slack_request("another-secret-entirely-000000000", &approve, now());
    assert_eq!(send(other, Some(ots), Some(osig)).await, 401);
    // Signed, but not a Slack payload: 400.
    let (junk, jts) = ("hello=world".to_owned(), now());
    let jsig = sign(SECRET, jts, &junk);
    let jts = jts.to_string();
    assert_eq!(send(junk, Some(jts), Some(jsig)).await, 400);
    assert!(!first.is_finished());
    // The genuine click: recorded, then 200, and the call goes on.
    assert_eq!(send(body, Some(ts), Some(sig)).await, 200);
    let id = first.await.unwrap().unwrap();
    let log = String::from_utf8(sink.bytes()).unwrap();
    assert!(log.contains("\"id\":\"slack:U0ALICE\""), "{log}");
    assert!(value.starts_with(&id));

    // Deny: the click opens a modal (with the trigger, within the ack), and
    // its submission denies with the reason.
    let second = start("admins");
    let value = value_of(1).await;
    let (body, ts, sig) = slack_request(SECRET, &click("U0BOB", "deny", &value), now());
    assert_eq!(send(body, Some(ts), Some(sig)).await, 200);
    let opened: serde_json::Value = {
        let seen = fake.lock().unwrap().seen.clone();
        let open = seen
            .iter()
            .find(|s| s.0 == "/api/views.open")
            .expect("views.open called");
        serde_json::from_str(&open.3).unwrap()
    };
    assert_eq!(opened["trigger_id"], "123.456.abc");
    assert_eq!(opened["view"]["private_metadata"], value.as_str());
    let submission = json!({
        "type": "view_submission", "team": {"id": "T0TEAM", "domain": "example"},
        "user": {"id": "U0BOB", "username": "bob"}, "api_app_id": "A0APP",
        "view": {"id": "VNHU13V36", "type": "modal", "callback_id": "deny_reason", "private_metadata": value,
                 "state": {"values": {"reason_block": {"reason_input": {"type": "plain_text_input", "value": "Not during freeze"}}}},
                 "hash": "156663117.cd33ad1f", "blocks": []}
    });
    let (body, ts, sig) = slack_request(SECRET, &submission, now());
    assert_eq!(send(body, Some(ts), Some(sig)).await, 200);
    let err = second.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ApprovalError::Denied { comment: Some(c), reviewer } if c == "Not during freeze" && reviewer.id == "slack:U0BOB"),
        "{err}"
    );
}
