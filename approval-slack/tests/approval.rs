//! The Slack approver end to end, over the interactivity endpoint, against
//! the fake Slack of `fake/`: votes that do not settle a request yet,
//! double clicks, refused clicks told why, and messages a restart orphaned.

use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    Actor, ApprovalError, ApprovalRequest, Approver, ApproverError, AttendedHours, Ballots, Call,
    CanonicalJson, ChainWriter, Directory, Gate, KeyId, MemorySink, Policy, Unreachable,
    WriterSecret, with_actor,
};
use approval_slack::SlackChannel;
use approval_slack::api::{BotToken, SlackApi};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

mod fake;

use fake::*;

struct Harness {
    gate: Gate,
    sink: Arc<MemorySink>,
    url: String,
    client: reqwest::Client,
}

fn sink() -> Arc<MemorySink> {
    let secret = WriterSecret::generate().unwrap();
    Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))))
}

/// A gate whose one route is a Slack approver, its endpoint served on
/// 127.0.0.1; alice, bob and carol are people with Slack identities.
async fn harness(
    policy: Policy,
    sink: Arc<MemorySink>,
    base: String,
    store: Option<&std::path::Path>,
) -> Harness {
    let mut builder = SlackChannel::builder(
        SlackApi::new(BotToken::new(TOKEN)).base_url(base),
        "C0APPROVALS",
    );
    if let Some(dir) = store {
        builder = builder.message_store(dir);
    }
    let slack = Arc::new(builder.connect().await.unwrap());
    let gate = Gate::builder(sink.clone())
        .approver("slack", slack.clone())
        // A second channel, down, for policies that name it.
        .approver("pager", Arc::new(Down))
        .policy(policy)
        .directory(
            Directory::new()
                .person("alice", ["slack:U0ALICE"])
                .person("bob", ["slack:U0BOB"])
                .person("carol", ["slack:U0CAROL"])
                .person("dave", ["email:dave@example.com"])
                .person("erin", ["slack:U0ERIN"])
                .group("on-call", ["erin"]),
        )
        .build()
        .unwrap();
    let url = serve_interactivity(slack).await;
    Harness {
        gate,
        sink,
        url,
        client: reqwest::Client::new(),
    }
}

/// A channel that is down.
#[derive(Debug)]
struct Down;

#[async_trait::async_trait]
impl Approver for Down {
    async fn deliver(&self, _: Arc<ApprovalRequest>, _: Ballots) -> Result<(), ApproverError> {
        Err(ApproverError::Unreachable("connection refused".into()))
    }
}

fn export(table: &str) -> Call {
    Call::new(
        "crm::export_table",
        "data-export",
        CanonicalJson::from_serialize(&json!({"table": table})).unwrap(),
    )
}

impl Harness {
    /// A gated call waiting, made by an agent acting for dave.
    fn start(&self, table: &str) -> JoinHandle<Result<String, ApprovalError>> {
        self.start_for("dave", table)
    }

    fn start_for(&self, person: &str, table: &str) -> JoinHandle<Result<String, ApprovalError>> {
        let (gate, call) = (self.gate.clone(), export(table));
        let actor = Actor::new("agent-7").on_behalf_of(person);
        tokio::spawn(with_actor(actor, async move {
            gate.approve(call).await.map(|a| a.request().id.clone())
        }))
    }

    /// Sends `payload` signed as Slack does; returns status and body.
    async fn send(&self, payload: &Value) -> (u16, String) {
        let (body, ts, signature) = slack_request(SECRET, payload, now());
        let response = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Slack-Request-Timestamp", ts)
            .header("X-Slack-Signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// The audit records, parsed.
    fn records(&self) -> Vec<Value> {
        String::from_utf8(self.sink.bytes())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn events(&self, event: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["event"] == event)
            .collect()
    }
}

fn policy() -> Policy {
    Policy::new("data-export", ["slack"], Duration::from_secs(60))
        .approvers(["alice", "bob", "carol"])
}

#[tokio::test]
async fn a_vote_that_does_not_settle_shows_on_the_message_and_a_double_click_counts_once() {
    let (base, fake) = fake_slack();
    let h = harness(policy().required(2), sink(), base, None).await;
    let waiting = h.start("users");
    let value = button_value(&fake, 0).await;

    assert_eq!(h.send(&click("U0ALICE", "approve", &value)).await.0, 200);
    // Alice's vote, one of two, goes on the message; the buttons stay.
    let progress = nth_call(&fake, "chat.update", 0).await;
    let blocks = progress["blocks"].to_string();
    assert!(blocks.contains("<@U0ALICE> approved (1 of 2)"), "{blocks}");
    assert!(blocks.contains("Still to vote: bob, carol"), "{blocks}");
    assert_eq!(
        progress["blocks"].as_array().unwrap().last().unwrap()["type"],
        "actions"
    );
    assert_eq!(progress["ts"], "1700000000.000100");
    // A double click: 200, not counted again, not recorded again.
    assert_eq!(h.send(&click("U0ALICE", "approve", &value)).await.0, 200);
    assert_eq!(h.events("reviewed").len(), 1);
    assert!(!waiting.is_finished());

    assert_eq!(h.send(&click("U0BOB", "approve", &value)).await.0, 200);
    let id = waiting.await.unwrap().unwrap();
    assert!(value.starts_with(&id));
    let reviewed = h.events("reviewed");
    let who: Vec<_> = reviewed.iter().map(|r| &r["reviewer"]["id"]).collect();
    assert_eq!(who, ["slack:U0ALICE", "slack:U0BOB"]);
    // The outcome replaces the message, buttons gone.
    let outcome = nth_call(&fake, "chat.update", 1).await;
    let blocks = outcome["blocks"].to_string();
    assert!(
        blocks.contains("*Approved* by <@U0ALICE>, <@U0BOB>"),
        "{blocks}"
    );
    assert!(!blocks.contains("\"actions\""), "{blocks}");
    // No more updates than those two: the double click changed nothing.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.lock().unwrap().bodies("chat.update").len(), 2);
    // The same call again: its message says how the last one ended.
    let again = h.start("users");
    let posted = nth_call(&fake, "chat.postMessage", 1).await;
    let blocks = posted["blocks"].to_string();
    assert!(
        blocks.contains(&format!(
            "*Earlier:* the same call was approved by <@U0ALICE>, <@U0BOB> (request `{id}`)"
        )),
        "{blocks}"
    );
    again.abort();
}

#[tokio::test]
async fn a_request_still_open_at_its_reminder_time_is_posted_again_naming_who_may_vote() {
    let (base, fake) = fake_slack();
    let policy = policy()
        .required(2)
        .remind_after(Duration::from_millis(300));
    let h = harness(policy, sink(), base, None).await;
    let waiting = h.start("users");
    let value = button_value(&fake, 0).await;
    assert_eq!(h.send(&click("U0ALICE", "approve", &value)).await.0, 200);

    // A new message in the request's channel (an edit notifies nobody).
    let reminder = nth_call(&fake, "chat.postMessage", 1).await;
    assert_eq!(reminder["channel"], "C0APPROVALS");
    assert_eq!(
        reminder["text"],
        "Reminder: crm::export_table still needs your vote"
    );
    let blocks = reminder["blocks"].to_string();
    assert!(blocks.contains("still needs 1 approval."), "{blocks}");
    assert!(blocks.contains("Still to vote: bob, carol"), "{blocks}");
    assert!(!blocks.contains("\"actions\""), "{blocks}");
    // Once: nothing more is posted, and the request is still open.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fake.lock().unwrap().bodies("chat.postMessage").len(), 2);
    assert!(!waiting.is_finished());
    waiting.abort();
}

#[tokio::test]
async fn an_escalated_request_shows_its_new_voters_and_takes_their_clicks() {
    let (base, fake) = fake_slack();
    let policy = Policy::new("data-export", ["slack"], Duration::from_secs(60))
        .approvers(["alice"])
        .escalate_after(
            Duration::from_millis(300),
            Vec::<String>::new(),
            ["on-call"],
        );
    let h = harness(policy, sink(), base, None).await;
    let waiting = h.start("users");
    let value = button_value(&fake, 0).await;
    // Erin is on call, not an approver: refused until the escalation.
    assert_eq!(h.send(&click("U0ERIN", "approve", &value)).await.0, 200);
    assert_eq!(h.events("rejected_vote")[0]["why"], "not_eligible");

    // Escalated: recorded, and the message now names her.
    let update = nth_call(&fake, "chat.update", 0).await;
    assert_eq!(h.events("escalated")[0]["groups"], json!(["on-call"]));
    let blocks = update["blocks"].to_string();
    assert!(blocks.contains("Still to vote: alice, erin"), "{blocks}");
    assert!(blocks.contains("Escalated: also on-call"), "{blocks}");
    assert_eq!(
        update["blocks"].as_array().unwrap().last().unwrap()["type"],
        "actions"
    );
    assert_eq!(h.send(&click("U0ERIN", "approve", &value)).await.0, 200);
    waiting.await.unwrap().unwrap();
    let reviewed = h.events("reviewed");
    assert_eq!(reviewed[0]["reviewer"]["id"], "slack:U0ERIN");
}

#[tokio::test]
async fn a_policy_in_shadow_mode_posts_nothing_and_the_call_runs_on_record() {
    let (base, fake) = fake_slack();
    let h = harness(policy().in_shadow(), sink(), base, None).await;
    let id = h.start("users").await.unwrap().unwrap();
    h.gate.drain_notices().await;
    assert!(fake.lock().unwrap().bodies("chat.postMessage").is_empty());
    let would = h.events("would_require");
    assert_eq!(would.len(), 1);
    assert_eq!(would[0]["request_id"], id.as_str());
    assert_eq!(would[0]["args"], json!({"table": "users"}));
    assert!(h.events("requested").is_empty());
}

#[tokio::test]
async fn with_the_pager_down_a_waiting_policy_is_decided_in_slack_and_a_queueing_one_answers_pending()
 {
    let both = || {
        Policy::new("data-export", ["slack", "pager"], Duration::from_secs(60)).approvers(["alice"])
    };
    // `wait`: the caller waits; Slack got it, and Alice's click decides.
    let (base, fake) = fake_slack();
    let h = harness(
        both().when_unreachable(Unreachable::Wait),
        sink(),
        base,
        None,
    )
    .await;
    let waiting = h.start("users");
    let value = button_value(&fake, 0).await;
    assert_eq!(h.send(&click("U0ALICE", "approve", &value)).await.0, 200);
    assert!(waiting.await.unwrap().is_ok());
    assert!(h.events("cancelled").is_empty());

    // `queue`: the caller is answered at once; the request waits in Slack.
    let (base, fake) = fake_slack();
    let h = harness(
        both().when_unreachable(Unreachable::Queue),
        sink(),
        base,
        None,
    )
    .await;
    let queued = h.start("users").await.unwrap();
    let Err(ApprovalError::Pending { request_id, .. }) = queued else {
        panic!("not queued: {queued:?}");
    };
    assert_eq!(h.events("queued")[0]["route"], "pager");
    let value = button_value(&fake, 0).await;
    assert!(value.starts_with(&request_id));
    assert_eq!(h.send(&click("U0ALICE", "approve", &value)).await.0, 200);
    assert_eq!(h.events("approved")[0]["request_id"], request_id.as_str());

    // The default, `deny`: refused, on record, never run.
    let (base, _fake) = fake_slack();
    let h = harness(both(), sink(), base, None).await;
    let refused = h.start("users").await.unwrap();
    assert!(
        matches!(&refused, Err(ApprovalError::ApproverUnavailable { route, .. }) if route == "pager"),
        "{refused:?}"
    );
    assert_eq!(
        h.events("cancelled")[0]["why"],
        "approver pager unavailable"
    );
}

/// Hours that are not now: one minute, six hours from now (UTC), every day.
fn hours_not_now() -> AttendedHours {
    use approval_core::Clock;
    let now = approval_core::SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let from = (now % 86_400 / 60 + 360) % 1440;
    let hhmm = |m: u64| format!("{:02}:{:02}", m / 60, m % 60);
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    AttendedHours::new(days, &hhmm(from), &hhmm(from + 1), "+00:00").unwrap()
}

#[tokio::test]
async fn outside_attended_hours_a_queueing_policy_answers_pending_and_is_decided_in_slack() {
    let policy = || {
        Policy::new("data-export", ["slack"], Duration::from_secs(60))
            .approvers(["alice"])
            .attended(hours_not_now())
    };
    let (base, fake) = fake_slack();
    let h = harness(
        policy().when_unreachable(Unreachable::Queue),
        sink(),
        base,
        None,
    )
    .await;
    let queued = h.start("users").await.unwrap();
    let Err(ApprovalError::Pending { request_id, .. }) = queued else {
        panic!("not queued: {queued:?}");
    };
    let record = &h.events("queued")[0];
    assert_eq!(record["attended"], hours_not_now().to_string());
    assert!(record.get("route").is_none());
    // Posted for the morning; Alice's click decides it.
    let value = button_value(&fake, 0).await;
    assert!(value.starts_with(&request_id));
    assert_eq!(h.send(&click("U0ALICE", "approve", &value)).await.0, 200);
    assert_eq!(h.events("approved")[0]["request_id"], request_id.as_str());

    // The default denies it without posting anything.
    let (base, fake) = fake_slack();
    let h = harness(policy(), sink(), base, None).await;
    let refused = h.start("users").await.unwrap();
    assert!(
        matches!(&refused, Err(ApprovalError::Unattended { policy }) if policy == "data-export"),
        "{refused:?}"
    );
    h.gate.drain_notices().await;
    assert!(fake.lock().unwrap().bodies("chat.postMessage").is_empty());
    assert!(
        h.events("cancelled")[0]["why"]
            .as_str()
            .unwrap()
            .starts_with("outside the policy's attended hours")
    );
}

#[tokio::test]
async fn an_ineligible_clicker_and_the_requester_are_refused_privately_with_the_reason() {
    let (base, fake) = fake_slack();
    let policy =
        Policy::new("data-export", ["slack"], Duration::from_secs(60)).approvers(["alice", "bob"]);
    let h = harness(policy, sink(), base, None).await;
    // The agent acts for alice: alice may not approve it.
    let waiting = h.start_for("alice", "users");
    let value = button_value(&fake, 0).await;

    // Carol is a person, but not one this policy names.
    assert_eq!(h.send(&click("U0CAROL", "approve", &value)).await.0, 200);
    let told = nth_call(&fake, "chat.postEphemeral", 0).await;
    assert_eq!(
        (told["channel"].as_str(), told["user"].as_str()),
        (Some("C0APPROVALS"), Some("U0CAROL"))
    );
    let text = told["text"].as_str().unwrap();
    assert!(text.contains("not among the reviewers"), "{text}");
    // Alice asked (through her agent): refused as self-approval.
    assert_eq!(h.send(&click("U0ALICE", "approve", &value)).await.0, 200);
    let told = nth_call(&fake, "chat.postEphemeral", 1).await;
    assert_eq!(told["user"], "U0ALICE");
    let text = told["text"].as_str().unwrap();
    assert!(text.contains("on your behalf"), "{text}");
    // Her deny through the modal is refused in the modal itself.
    let (status, body) = h
        .send(&deny_submission("U0ALICE", &value, Some("no")))
        .await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["response_action"], "errors");
    let error = body["errors"]["reason_block"].as_str().unwrap();
    assert!(error.contains("on your behalf"), "{error}");

    let rejected = h.events("rejected_vote");
    let seen: Vec<_> = rejected
        .iter()
        .map(|r| (r["reviewer"]["id"].as_str(), r["why"].as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("slack:U0CAROL"), Some("not_eligible")),
            (Some("slack:U0ALICE"), Some("self_approval")),
            (Some("slack:U0ALICE"), Some("self_approval")),
        ]
    );
    assert!(h.events("reviewed").is_empty());
    assert!(!waiting.is_finished());
    // Bob may: the call goes on.
    assert_eq!(h.send(&click("U0BOB", "approve", &value)).await.0, 200);
    waiting.await.unwrap().unwrap();
}

#[tokio::test]
async fn after_a_restart_the_messages_of_requests_it_cancelled_lose_their_buttons() {
    let (base, fake) = fake_slack();
    let store = tempfile::tempdir().unwrap();
    let log = sink();
    {
        let h = harness(policy(), log.clone(), base.clone(), Some(store.path())).await;
        // Settled, but Slack failed the update: its entry stays.
        let settled = h.start("users");
        let value = button_value(&fake, 0).await;
        fake.lock()
            .unwrap()
            .script
            .push_back(ok(r#"{"ok":false,"error":"fatal_error"}"#));
        assert_eq!(h.send(&click("U0BOB", "approve", &value)).await.0, 200);
        settled.await.unwrap().unwrap();
        nth_call(&fake, "chat.update", 0).await;
        // Open when the process dies: its future is never dropped, as if
        // the process had ended mid-wait.
        let mut dying = Box::pin(h.gate.approve(export("admins")));
        tokio::select! {
            _ = &mut dying => panic!("nobody voted"),
            _ = button_value(&fake, 1) => {}
        }
        std::mem::forget(dying);
    }
    assert!(log.bytes().ends_with(b"\n"));
    let open_id = {
        let value = button_value(&fake, 1).await;
        value.split(':').next().unwrap().to_owned()
    };

    // The restart: a new approver on the same store, a new gate on the log.
    let h = harness(policy(), log, base, Some(store.path())).await;
    let recovery = h.gate.recover().await.unwrap();
    assert_eq!(recovery.cancelled, std::slice::from_ref(&open_id));
    let mut updates = vec![
        nth_call(&fake, "chat.update", 1).await,
        nth_call(&fake, "chat.update", 2).await,
    ];
    updates.sort_by_key(|u| u["ts"].as_str().unwrap().to_owned());
    assert_eq!(updates[0]["ts"], "1700000000.000100");
    let ended = updates[0]["blocks"].to_string();
    assert!(
        ended.contains("*Ended* before the process restarted"),
        "{ended}"
    );
    assert_eq!(updates[1]["ts"], "1700000000.000101");
    let cancelled = updates[1]["blocks"].to_string();
    assert!(cancelled.contains("*Cancelled*"), "{cancelled}");
    assert!(cancelled.contains(&open_id), "{cancelled}");
    for update in &updates {
        assert!(!update["blocks"].to_string().contains("\"actions\""));
    }
    // Done with: the store empties once Slack has confirmed the updates.
    let mut left = usize::MAX;
    for _ in 0..500 {
        left = std::fs::read_dir(store.path()).unwrap().count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(left, 0);
    // A late click on the old buttons is refused as settled, and recorded.
    let value = button_value(&fake, 1).await;
    assert_eq!(h.send(&click("U0BOB", "approve", &value)).await.0, 200);
    let rejected = h.events("rejected_vote");
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        (
            rejected[0]["request_id"].as_str(),
            rejected[0]["why"].as_str()
        ),
        (Some(open_id.as_str()), Some("settled"))
    );
    let told = nth_call(&fake, "chat.postEphemeral", 0).await;
    let text = told["text"].as_str().unwrap();
    assert!(text.contains("already settled"), "{text}");
}

#[tokio::test]
async fn a_policy_can_have_its_own_channel_and_a_dead_trigger_fails_the_click_visibly() {
    let (base, fake) = fake_slack();
    let slack = Arc::new(
        SlackChannel::builder(
            SlackApi::new(BotToken::new(TOKEN)).base_url(base),
            "C0APPROVALS",
        )
        .policy_channel("prod-deploy", "C0RELEASES")
        .connect()
        .await
        .unwrap(),
    );
    assert_eq!(slack.channel().channel_for("prod-deploy"), "C0RELEASES");
    assert_eq!(slack.channel().channel_for("data-export"), "C0APPROVALS");
    let gate = Gate::builder(sink())
        .approver("slack", slack.clone())
        .policy(policy())
        .policy(Policy::new("prod-deploy", ["slack"], Duration::from_secs(60)).approvers(["bob"]))
        .directory(
            Directory::new()
                .person("alice", ["slack:U0ALICE"])
                .person("bob", ["slack:U0BOB"])
                .person("carol", ["slack:U0CAROL"]),
        )
        .build()
        .unwrap();
    let call = Call::new(
        "deploy::release",
        "prod-deploy",
        CanonicalJson::from_serialize(&json!({"version": "1.2.3"})).unwrap(),
    );
    let waiting = tokio::spawn({
        let gate = gate.clone();
        async move { gate.approve(call).await.map(|a| a.request().id.clone()) }
    });
    let posted = nth_call(&fake, "chat.postMessage", 0).await;
    assert_eq!(posted["channel"], "C0RELEASES");
    let id = loop {
        let value = button_value(&fake, 0).await;
        let id = value.split(':').next().unwrap().to_owned();
        if slack.message_of(&id).is_some() {
            break id;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(slack.message_of(&id).unwrap().channel, "C0RELEASES");

    // views.open's broken twin: the trigger expired (SLACK.md §1.3). No
    // modal, so no 200: Slack shows the clicker an error (who can click
    // again), and the request waits on.
    let url = serve_interactivity(slack).await;
    fake.lock()
        .unwrap()
        .script
        .push_back(ok(r#"{"ok":false,"error":"expired_trigger_id"}"#));
    let value = button_value(&fake, 0).await;
    let (body, ts, signature) = slack_request(SECRET, &click("U0BOB", "deny", &value), now());
    let status = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Slack-Request-Timestamp", ts)
        .header("X-Slack-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 503);
    assert!(!waiting.is_finished());
    waiting.abort();
}

#[tokio::test]
async fn a_rule_s_count_is_the_one_slack_shows_and_counts_toward() {
    let (base, fake) = fake_slack();
    let rule = policy().rule(r#"context.args.table == "payments""#, 2);
    let h = harness(rule, sink(), base, None).await;
    let waiting = h.start("payments");
    let value = button_value(&fake, 0).await;
    let posted = nth_call(&fake, "chat.postMessage", 0).await;
    let blocks = posted["blocks"].to_string();
    assert!(blocks.contains("needs 2 approvals from:"), "{blocks}");

    assert_eq!(h.send(&click("U0ALICE", "approve", &value)).await.0, 200);
    let progress = nth_call(&fake, "chat.update", 0).await["blocks"].to_string();
    assert!(
        progress.contains("<@U0ALICE> approved (1 of 2)"),
        "{progress}"
    );
    assert!(!waiting.is_finished());
    assert_eq!(h.send(&click("U0BOB", "approve", &value)).await.0, 200);
    waiting.await.unwrap().unwrap();
    assert_eq!(h.events("requested")[0]["rule"], 0);

    // A call no rule holds for needs the policy's own one approval.
    let other = h.start("users");
    let value = button_value(&fake, 1).await;
    let posted = nth_call(&fake, "chat.postMessage", 1).await["blocks"].to_string();
    assert!(posted.contains("needs 1 approval from:"), "{posted}");
    assert_eq!(h.send(&click("U0CAROL", "approve", &value)).await.0, 200);
    other.await.unwrap().unwrap();
    assert!(h.events("requested")[1].get("rule").is_none());
}

#[tokio::test]
async fn approve_and_grant_covers_the_next_calls_and_a_reviewer_revokes_it_from_the_message() {
    let (base, fake) = fake_slack();
    let granting = policy().grants(2, Duration::from_secs(600), ["table"]);
    let h = harness(granting, sink(), base, None).await;
    let waiting = h.start("users");
    let value = button_value(&fake, 0).await;
    let posted = nth_call(&fake, "chat.postMessage", 0).await;
    let buttons = posted["blocks"].as_array().unwrap().last().unwrap()["elements"].clone();
    let ids: Vec<_> = buttons
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["approve", "approve_grant", "deny"]);
    assert_eq!(buttons[1]["text"]["text"], "Approve + 2 more");
    assert_eq!(buttons[1]["value"], value);

    assert_eq!(
        h.send(&click("U0ALICE", "approve_grant", &value)).await.0,
        200
    );
    let grant = waiting.await.unwrap().unwrap();
    assert_eq!(
        h.events("reviewed")[0]["grant"],
        json!({"uses": 2, "within_ms": 600_000})
    );
    assert_eq!(h.events("granted")[0]["match"], json!({"table": "users"}));
    // The outcome shows the grant, and a button that revokes it.
    let shown = nth_call(&fake, "chat.update", 0).await["blocks"].clone();
    let text = shown.to_string();
    assert!(
        text.contains("2 of 2 more runs left with the same `table`"),
        "{text}"
    );
    let revoke = shown.as_array().unwrap().last().unwrap()["elements"][0].clone();
    assert_eq!(
        (revoke["action_id"].as_str(), revoke["value"].as_str()),
        (Some("revoke_grant"), Some(grant.as_str()))
    );

    // The next export of `users` runs at once: no message, one use shown.
    h.start("users").await.unwrap().unwrap();
    assert_eq!(h.events("grant_used")[0]["grant"], grant.as_str());
    let used = nth_call(&fake, "chat.update", 1).await["blocks"].to_string();
    assert!(used.contains("1 of 2 more runs left"), "{used}");
    assert_eq!(fake.lock().unwrap().bodies("chat.postMessage").len(), 1);

    // Erin may not approve under this policy, so may not revoke: told why.
    assert_eq!(
        h.send(&click("U0ERIN", "revoke_grant", &grant)).await.0,
        200
    );
    let told = nth_call(&fake, "chat.postEphemeral", 0).await;
    assert_eq!(told["user"], "U0ERIN");
    let text = told["text"].as_str().unwrap();
    assert!(
        text.contains("not revoked") && text.contains("not_eligible"),
        "{text}"
    );
    assert!(h.events("grant_revoked").is_empty());
    // Bob may: recorded, and the button goes.
    assert_eq!(h.send(&click("U0BOB", "revoke_grant", &grant)).await.0, 200);
    let revoked = &h.events("grant_revoked")[0];
    assert_eq!(
        (
            revoked["request_id"].as_str(),
            revoked["reviewer"]["person"].as_str(),
            revoked["channel"].as_str()
        ),
        (Some(grant.as_str()), Some("bob"), Some("slack"))
    );
    let down = nth_call(&fake, "chat.update", 2).await["blocks"].to_string();
    assert!(!down.contains("revoke_grant"), "{down}");
    // The next call is asked for again.
    let held = h.start("users");
    nth_call(&fake, "chat.postMessage", 1).await;
    held.abort();
}
