//! The Teams approver end to end against the fake Teams of `fake/`: a gated
//! call posts its card, signed invokes decide it, the card is updated for
//! everyone; refusals, a deny's reason, two approvals across two routes,
//! resent invokes, throttling and tokens that do not hold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_core::{
    Actor, ApprovalError, Ballot, Call, CanonicalJson, ChainWriter, ConfigError, Directory, Gate,
    KeyId, MemorySink, MockApprover, Policy, Vote, WriterSecret, with_actor,
};
use approval_teams::auth::InboundAuth;
use approval_teams::connector::{BotCredentials, Connector};
use approval_teams::keys::KeyCache;
use approval_teams::{Target, TeamsApprover, TeamsChannel, endpoint};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

mod common;
mod fake;

use fake::*;

const ALICE: &str = "6f1c0b0e-1111-4a1a-9a1a-00000000a11c";
const BOB: &str = "6f1c0b0e-2222-4b2b-9b2b-000000000b0b";
const CAROL: &str = "6f1c0b0e-3333-4c3c-9c3c-0000000ca201";

struct Harness {
    fake: Fake,
    gate: Gate,
    teams: Arc<TeamsApprover>,
    second: Arc<MockApprover>,
    sink: Arc<MemorySink>,
    url: String,
    client: reqwest::Client,
}

/// A gate routing `policy` to Teams (posting new threads in the channel,
/// or `target`) and to a silent second approver; the endpoint on
/// 127.0.0.1. alice, bob and carol have Teams identities; bob also an API
/// one.
async fn harness_with(policy: Policy, target: Option<fn(&str) -> Target>) -> Harness {
    harness_on(fake_teams().await, memory_sink(), None, policy, target).await
}

fn memory_sink() -> Arc<MemorySink> {
    let secret = WriterSecret::generate().unwrap();
    Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))))
}

/// The harness on an existing fake Teams and log, with the approver's card
/// store in `store`: what a restart of the process finds.
async fn harness_on(
    fake: Fake,
    sink: Arc<MemorySink>,
    store: Option<&std::path::Path>,
    policy: Policy,
    target: Option<fn(&str) -> Target>,
) -> Harness {
    let (base, service_url) = {
        let teams = fake.lock().unwrap();
        (teams.base.clone(), teams.service_url())
    };
    let connector =
        Connector::new(BotCredentials::new(APP_ID, SECRET, TENANT)).login_url(base.clone());
    let target = match target {
        Some(make) => make(&service_url),
        None => Target::channel(&service_url, CHANNEL, TENANT),
    };
    let mut builder = TeamsChannel::builder(connector, target);
    if let Some(dir) = store {
        builder = builder.message_store(dir);
    }
    let teams = Arc::new(builder.connect().await.unwrap());
    let second = Arc::new(MockApprover::silent("second"));
    let gate = Gate::builder(sink.clone())
        .approver("teams", teams.clone())
        .approver("second", second.clone())
        // A refused card update is tried three times, quickly.
        .notice_retry(3, Duration::from_millis(5), Duration::from_millis(20))
        .policy(policy)
        .directory(
            Directory::new()
                .person("alice", [format!("teams:{ALICE}")])
                .person("bob", [format!("teams:{BOB}"), "api:bob".into()])
                .person("carol", [format!("teams:{CAROL}")])
                .person("dave", ["email:dave@example.com".to_string()])
                .group("on-call", ["carol"]),
        )
        .build()
        .unwrap();
    let auth = InboundAuth::new(APP_ID)
        .allow_tenant(TENANT)
        .service_hosts(["127.0.0.1"]);
    let keys = Arc::new(KeyCache::new(format!(
        "{base}/v1/.well-known/openidconfiguration"
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        endpoint::PATH
    );
    let app = endpoint::router(auth, keys, teams.clone());
    tokio::spawn(approval_listener::Server::new().serve(listener, app, std::future::pending()));
    Harness {
        fake,
        gate,
        teams,
        second,
        sink,
        url,
        client: reqwest::Client::new(),
    }
}

async fn harness(policy: Policy) -> Harness {
    harness_with(policy, None).await
}

fn policy() -> Policy {
    Policy::new("data-export", ["teams"], Duration::from_secs(60))
        .approvers(["alice", "bob", "carol"])
}

impl Harness {
    /// A gated call waiting, made by an agent acting for `person`.
    fn start_for(&self, person: &str) -> JoinHandle<Result<String, ApprovalError>> {
        let gate = self.gate.clone();
        let call = Call::new(
            "crm::export_table",
            "data-export",
            CanonicalJson::from_serialize(&json!({"table": "orders"})).unwrap(),
        )
        .resource("warehouse/orders")
        .reason("monthly report");
        let actor = Actor::new("agent-7").on_behalf_of(person);
        tokio::spawn(with_actor(actor, async move {
            gate.approve(call).await.map(|a| a.request().id.clone())
        }))
    }

    fn start(&self) -> JoinHandle<Result<String, ApprovalError>> {
        self.start_for("dave")
    }

    /// Posts `activity` with `authorization`; returns status and body.
    async fn post(&self, activity: &Value, authorization: &str) -> (u16, Value) {
        let response = self
            .client
            .post(&self.url)
            .header("Authorization", authorization)
            .header("Content-Type", "application/json")
            .body(activity.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Sends `activity` as Teams would: with a valid token for it.
    async fn send(&self, activity: &Value) -> (u16, Value) {
        self.post(activity, &bearer_for(activity)).await
    }

    fn events(&self, event: &str) -> Vec<Value> {
        String::from_utf8(self.sink.bytes())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["event"] == event)
            .collect()
    }

    /// Waits until the card has `n` versions; returns the last one's card.
    async fn version(&self, card: usize, n: usize) -> Value {
        let activity = wait_for(&self.fake, |t| {
            t.cards
                .get(card)
                .and_then(|c| c.versions.get(n - 1).cloned())
        })
        .await;
        content(&activity).clone()
    }
}

/// The text of a card's last body element.
fn last_text(card: &Value) -> String {
    card["body"].as_array().unwrap().last().unwrap()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_request_still_open_at_its_reminder_time_gets_a_reply_naming_who_may_vote() {
    let h = harness(
        policy()
            .required(2)
            .remind_after(Duration::from_millis(300)),
    )
    .await;
    let waiting = h.start();
    let posted = nth_card(&h.fake, 0).await;
    let (conversation, replied_to, reply) = wait_for(&h.fake, |t| t.replies.first().cloned()).await;
    // In the card's own thread, under the card.
    assert_eq!(
        (conversation, replied_to),
        (posted.conversation.clone(), posted.activity_id.clone())
    );
    let card = content(&reply).to_string();
    assert!(card.contains("**Reminder**"), "{card}");
    assert!(card.contains("still needs 2 approvals"), "{card}");
    assert!(card.contains("Still to vote: alice, bob, carol"), "{card}");
    assert!(content(&reply).get("actions").is_none(), "{card}");
    // Once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.fake.lock().unwrap().replies.len(), 1);
    assert!(!waiting.is_finished());
    waiting.abort();
}

#[tokio::test]
async fn an_escalated_request_s_card_says_so_and_names_its_new_voters() {
    let policy = Policy::new("data-export", ["teams"], Duration::from_secs(60))
        .approvers(["alice"])
        .escalate_after(
            Duration::from_millis(300),
            Vec::<String>::new(),
            ["on-call"],
        );
    let h = harness(policy).await;
    let waiting = h.start();
    let posted = nth_card(&h.fake, 0).await;
    let updated = wait_for(&h.fake, |t| t.cards[0].versions.get(1).cloned()).await;
    let card = content(&updated).to_string();
    assert!(card.contains(r"Escalated: also on\\-call"), "{card}");
    assert!(card.contains("Still to vote: alice, carol"), "{card}");
    assert!(
        content(&updated)["actions"].is_array(),
        "still open: {card}"
    );
    assert_eq!(
        h.events("escalated")[0]["request_id"],
        content(&posted.versions[0])["actions"][0]["data"]["request_id"]
    );
    waiting.abort();
}

#[tokio::test]
async fn a_gated_call_posts_its_card_a_signed_click_approves_it_and_the_card_shows_the_outcome() {
    let h = harness(policy()).await;
    let waiting = h.start();
    let posted = nth_card(&h.fake, 0).await;
    // A new thread in the channel, rooted at the card.
    assert!(
        posted
            .conversation
            .starts_with(&format!("{CHANNEL};messageid="))
    );
    let card = content(&posted.versions[0]);
    assert_eq!(card["version"], "1.5");
    assert!(card.to_string().contains(r"warehouse/orders"));
    assert_eq!(
        posted.versions[0]["summary"],
        "Approval requested: crm::export_table"
    );

    let (status, answer) = h
        .send(&click(&h.fake, &posted, "approve", ALICE, None))
        .await;
    assert_eq!(status, 200);
    // The clicker gets the outcome card at once.
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(answer["type"], "application/vnd.microsoft.card.adaptive");
    let shown = last_text(&answer["value"]);
    assert!(shown.starts_with("✅ **Approved** by User "), "{answer}");
    assert!(shown.contains("(alice)"), "{shown}");
    assert!(answer["value"].get("actions").is_none());

    let id = waiting.await.unwrap().unwrap();
    assert_eq!(card["actions"][0]["data"]["request_id"], id.as_str());
    let reviewed = h.events("reviewed");
    assert_eq!(reviewed.len(), 1);
    assert_eq!(reviewed[0]["reviewer"]["id"], format!("teams:{ALICE}"));
    assert_eq!(reviewed[0]["channel"], "teams");
    // Everyone's card is replaced: PUT on the same activity.
    let outcome = h.version(0, 2).await;
    assert!(last_text(&outcome).starts_with("✅ **Approved**"));
    assert!(outcome.get("actions").is_none());
}

#[tokio::test]
async fn an_ineligible_clicker_and_the_requester_are_refused_with_the_reason() {
    let policy =
        Policy::new("data-export", ["teams"], Duration::from_secs(60)).approvers(["alice", "bob"]);
    let h = harness(policy).await;
    // The agent acts for alice: alice may not approve it.
    let waiting = h.start_for("alice");
    let posted = nth_card(&h.fake, 0).await;

    let (status, answer) = h
        .send(&click(&h.fake, &posted, "approve", CAROL, None))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["type"], "application/vnd.microsoft.activity.message");
    let told = answer["value"].as_str().unwrap();
    assert!(told.contains("not among the reviewers"), "{told}");

    let (_, answer) = h
        .send(&click(&h.fake, &posted, "approve", ALICE, None))
        .await;
    let told = answer["value"].as_str().unwrap();
    assert!(told.contains("on your behalf"), "{told}");

    let rejected = h.events("rejected_vote");
    let why: Vec<_> = rejected.iter().map(|r| r["why"].clone()).collect();
    assert_eq!(why, [json!("not_eligible"), json!("self_approval")]);
    assert!(h.events("reviewed").is_empty());
    assert!(!waiting.is_finished());
    // Bob may.
    let (_, answer) = h.send(&click(&h.fake, &posted, "approve", BOB, None)).await;
    assert!(last_text(&answer["value"]).contains("**Approved**"));
    waiting.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_deny_carries_the_typed_reason_back_to_the_agent_and_onto_the_card() {
    let h = harness(policy()).await;
    let waiting = h.start();
    let posted = nth_card(&h.fake, 0).await;
    let reason = "  not *before* the audit  ";
    let (status, answer) = h
        .send(&click(&h.fake, &posted, "deny", BOB, Some(reason)))
        .await;
    assert_eq!(status, 200);
    let shown = last_text(&answer["value"]);
    assert!(shown.starts_with("⛔ **Denied** by User "), "{shown}");
    assert!(shown.ends_with(r": not \*before\* the audit"), "{shown}");
    match waiting.await.unwrap() {
        Err(ApprovalError::Denied {
            comment: Some(c), ..
        }) => assert_eq!(c, "not *before* the audit"),
        other => panic!("expected a denial with its reason, got {other:?}"),
    }
    let reviewed = h.events("reviewed");
    assert_eq!(reviewed[0]["vote"], "deny");
    let outcome = h.version(0, 2).await;
    assert!(last_text(&outcome).contains("Denied"));
}

#[tokio::test]
async fn two_approvals_one_in_teams_one_through_a_second_route() {
    let policy = Policy::new("data-export", ["teams", "second"], Duration::from_secs(60))
        .approvers(["alice", "bob"])
        .required(2);
    let h = harness(policy).await;
    let waiting = h.start();
    let posted = nth_card(&h.fake, 0).await;

    let (_, answer) = h
        .send(&click(&h.fake, &posted, "approve", ALICE, None))
        .await;
    // Not settled: the clicker sees their line, the actions stay.
    let card = &answer["value"];
    assert!(card.to_string().contains("approved (1 of 2)"), "{card}");
    assert!(card.to_string().contains("Still to vote: bob"), "{card}");
    assert_eq!(card["actions"].as_array().unwrap().len(), 2);
    let progress = h.version(0, 2).await;
    assert!(progress.to_string().contains("approved (1 of 2)"));
    assert!(!waiting.is_finished());

    // Bob approves through the other route.
    let request = h.second.requests()[0].clone();
    let ballot = Ballot::new(&request, "api:bob", "api", Vote::Approve);
    h.gate.cast(ballot).await.unwrap();
    waiting.await.unwrap().unwrap();
    let outcome = h.version(0, 3).await;
    let shown = last_text(&outcome);
    assert!(shown.contains("(alice), bob, "), "{shown}");
    assert!(outcome.get("actions").is_none());
    let channels: Vec<_> = h
        .events("reviewed")
        .iter()
        .map(|r| r["channel"].clone())
        .collect();
    assert_eq!(channels, [json!("teams"), json!("api")]);
    // The approver serves this gate: a second gate may not take it.
    let second = Gate::builder(memory_sink())
        .approver("teams", h.teams.clone())
        .build();
    match second {
        Err(ConfigError::Approver { route, cause }) => {
            assert_eq!(route, "teams");
            assert!(cause.contains("another gate"), "{cause}");
        }
        other => panic!("expected the approver refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_resent_invoke_gets_the_same_answer_and_counts_once() {
    let h = harness(policy().required(2)).await;
    let waiting = h.start();
    let posted = nth_card(&h.fake, 0).await;
    let alice = click(&h.fake, &posted, "approve", ALICE, None);
    let first = h.send(&alice).await;
    let again = h.send(&alice).await;
    assert_eq!(first, again);
    assert_eq!(h.events("reviewed").len(), 1);

    let bob = click(&h.fake, &posted, "approve", BOB, None);
    let settled = h.send(&bob).await;
    waiting.await.unwrap().unwrap();
    // Teams resends the deciding click after the request settled: the same
    // outcome card, and nothing recorded.
    assert_eq!(h.send(&bob).await, settled);
    assert_eq!(h.events("reviewed").len(), 2);
    assert!(h.events("rejected_vote").is_empty());
}

#[tokio::test]
async fn tokens_that_do_not_hold_get_401_and_nothing_happens() {
    let h = harness(policy()).await;
    let waiting = h.start();
    let posted = nth_card(&h.fake, 0).await;
    let activity = click(&h.fake, &posted, "approve", ALICE, None);
    let now = approval_core::Clock::now(&approval_core::SystemClock)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = json!({"serviceurl": activity["serviceUrl"], "nbf": now - 10, "exp": now + 3590,
                      "iss": "https://api.botframework.com", "aud": APP_ID});
    let with = |field: &str, value: Value| {
        let mut claims = good.clone();
        claims[field] = value;
        claims
    };
    let signing = common::key("test-rsa-2048.der");
    let forger = common::key("other-rsa-2048.der");
    let mut other_kid = common::header();
    other_kid["kid"] = json!("rotated-away");
    let cases = [
        ("no token", String::new()),
        (
            "forged signature",
            common::token(&forger, common::header(), good.clone()),
        ),
        (
            "wrong issuer",
            common::token(
                &signing,
                common::header(),
                with("iss", json!("https://evil.example")),
            ),
        ),
        (
            "wrong audience",
            common::token(
                &signing,
                common::header(),
                with("aud", json!("someone-else")),
            ),
        ),
        (
            "expired",
            common::token(&signing, common::header(), with("exp", json!(now - 400))),
        ),
        (
            "not yet valid",
            common::token(&signing, common::header(), with("nbf", json!(now + 400))),
        ),
        (
            "unknown kid",
            common::token(&signing, other_kid, good.clone()),
        ),
        (
            "serviceurl mismatch",
            common::token(
                &signing,
                common::header(),
                with("serviceurl", json!("https://smba.trafficmanager.net/amer/")),
            ),
        ),
    ];
    for (what, authorization) in cases {
        let (status, body) = h.post(&activity, &authorization).await;
        assert_eq!((what, status), (what, 401));
        assert_eq!(body, json!({"error": "Unauthorized"}), "{what}");
    }
    // A tenant not allowed, with an otherwise perfect token.
    let mut foreign = activity.clone();
    foreign["channelData"]["tenant"]["id"] = json!("00000000-0000-0000-0000-00000000bad1");
    assert_eq!(h.send(&foreign).await.0, 401);
    // Nothing was recorded, nothing decided, the card untouched.
    assert!(h.events("reviewed").is_empty());
    assert!(h.events("rejected_vote").is_empty());
    assert!(!waiting.is_finished());
    assert_eq!(h.fake.lock().unwrap().cards[0].versions.len(), 1);
    // The real click still works.
    assert_eq!(h.send(&activity).await.0, 200);
    waiting.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_malformed_activity_gets_400() {
    let h = harness(policy()).await;
    let waiting = h.start();
    let posted = nth_card(&h.fake, 0).await;
    let good = click(&h.fake, &posted, "approve", ALICE, None);
    let token = bearer_for(&good);
    let response = h
        .client
        .post(&h.url)
        .header("Authorization", &token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let mut no_binding = good.clone();
    no_binding["value"]["action"]["data"]["binding"] = json!("zz");
    let (status, body) = h.post(&no_binding, &token).await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "application/vnd.microsoft.error");
    let mut no_clicker = good.clone();
    no_clicker["from"]
        .as_object_mut()
        .unwrap()
        .remove("aadObjectId");
    assert_eq!(h.post(&no_clicker, &token).await.0, 400);
    let mut no_action = good.clone();
    no_action["value"] = json!({});
    assert_eq!(h.post(&no_action, &token).await.0, 400);
    assert!(h.events("reviewed").is_empty());
    assert!(!waiting.is_finished());
    // Other activities are acknowledged and ignored.
    let mut message = good.clone();
    message["type"] = json!("message");
    assert_eq!(h.post(&message, &token).await.0, 200);
}

#[tokio::test]
async fn throttled_posts_wait_for_retry_after_and_refusals_fail_the_call_closed() {
    let h = harness_with(
        policy(),
        Some(|service_url: &str| Target::chat(service_url, "29:1aK9reviewer", TENANT)),
    )
    .await;
    // The 1:1 chat is created (throttled once on the way), then the card posted.
    h.fake.lock().unwrap().fail_next(
        429,
        Some("1"),
        r#"{"error":{"code":"Throttled","message":"slow down"}}"#,
    );
    let started = Instant::now();
    let waiting = h.start();
    let posted = nth_card(&h.fake, 0).await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(posted.conversation, "a:1p0iicaJ0");
    let (_, answer) = h
        .send(&click(&h.fake, &posted, "approve", ALICE, None))
        .await;
    assert!(last_text(&answer["value"]).contains("**Approved**"));
    waiting.await.unwrap().unwrap();

    // A second request reuses the chat. The bot was removed from it: 403,
    // the call fails closed, naming Teams' code.
    h.fake.lock().unwrap().fail_next(
        403,
        None,
        r#"{"error":{"code":"BotNotInConversationRoster","message":"gone"}}"#,
    );
    match h.start().await.unwrap() {
        Err(ApprovalError::ApproverUnavailable { route, source }) => {
            assert_eq!(route, "teams");
            let cause = source.to_string();
            assert!(
                cause.contains("403") && cause.contains("BotNotInConversationRoster"),
                "{cause}"
            );
        }
        other => panic!("expected the call to fail closed, got {other:?}"),
    }
    assert_eq!(h.fake.lock().unwrap().conversations_created(), 1);
    assert!(h.teams.message_of("nothing").is_none());
}

#[tokio::test]
async fn refresh_shows_the_current_card_only_to_reviewers_who_may_vote_on_it() {
    let policy =
        Policy::new("data-export", ["teams"], Duration::from_secs(60)).approvers(["alice", "bob"]);
    let h = harness(policy).await;
    // For alice: bob may vote; alice (the requester) and carol may not.
    let waiting = h.start_for("alice");
    let posted = nth_card(&h.fake, 0).await;
    let refresh = |clicker: &str, request_id: &Value| {
        let mut invoke = click(&h.fake, &posted, "approve", clicker, None);
        invoke["id"] = Value::String(format!("f:{clicker}-refresh"));
        invoke["value"]["trigger"] = json!("automatic");
        invoke["value"]["action"] = json!({"type": "Action.Execute", "title": "Refresh",
                                           "verb": "refresh", "data": {"request_id": request_id}});
        invoke
    };
    let request_id = content(&posted.versions[0])["actions"][0]["data"]["request_id"].clone();

    let (status, answer) = h.send(&refresh(BOB, &request_id)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["type"], "application/vnd.microsoft.card.adaptive");
    assert!(answer["value"].to_string().contains("warehouse/orders"));

    let unknown = json!("req_nobody");
    for (clicker, id) in [(CAROL, &request_id), (ALICE, &request_id), (BOB, &unknown)] {
        let (status, answer) = h.send(&refresh(clicker, id)).await;
        assert_eq!(status, 200);
        assert_eq!(
            (answer["type"].as_str(), answer["value"].as_str()),
            (
                Some("application/vnd.microsoft.activity.message"),
                Some("There is no request here that you may decide.")
            ),
            "{clicker} {id}"
        );
    }
    // Looking is not voting: nothing recorded.
    assert!(h.events("rejected_vote").is_empty());
    // Once settled, a late click shows the outcome card only to a reviewer
    // who may vote on it.
    let (_, answer) = h.send(&click(&h.fake, &posted, "approve", BOB, None)).await;
    assert!(last_text(&answer["value"]).contains("**Approved**"));
    waiting.await.unwrap().unwrap();
    let (_, answer) = h
        .send(&click(&h.fake, &posted, "approve", CAROL, None))
        .await;
    assert_eq!(answer["type"], "application/vnd.microsoft.activity.message");
    assert!(!answer.to_string().contains("warehouse/orders"), "{answer}");
}

#[tokio::test]
async fn after_a_restart_the_cards_of_requests_it_ended_lose_their_actions() {
    let fake = fake_teams().await;
    let log = memory_sink();
    let store = tempfile::tempdir().unwrap();
    let open_id = {
        let h = harness_on(
            fake.clone(),
            log.clone(),
            Some(store.path()),
            policy(),
            None,
        )
        .await;
        // Settled, but Teams refused the update every time the gate's
        // outbox tried: its entry stays.
        let settled = h.start();
        let posted = nth_card(&fake, 0).await;
        for _ in 0..3 {
            fake.lock().unwrap().fail_next(
                400,
                None,
                r#"{"error":{"code":"BadArgument","message":"refused by the test"}}"#,
            );
        }
        let (status, _) = h.send(&click(&fake, &posted, "approve", ALICE, None)).await;
        assert_eq!(status, 200);
        settled.await.unwrap().unwrap();
        h.gate.drain_notices().await;
        // Open when the process dies: its future is never dropped, as if
        // the process had ended mid-wait.
        let call = Call::new(
            "crm::export_table",
            "data-export",
            CanonicalJson::from_serialize(&json!({"table": "admins"})).unwrap(),
        );
        let mut dying = Box::pin(with_actor(
            Actor::new("agent-7").on_behalf_of("dave"),
            h.gate.approve(call),
        ));
        tokio::select! {
            _ = &mut dying => panic!("nobody voted"),
            _ = nth_card(&fake, 1) => {}
        }
        std::mem::forget(dying);
        let open = nth_card(&fake, 1).await;
        content(&open.versions[0])["actions"][0]["data"]["request_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 2);

    // The restart: a new approver on the same store, a new gate on the log.
    let h = harness_on(fake.clone(), log, Some(store.path()), policy(), None).await;
    let recovery = h.gate.recover().await.unwrap();
    assert_eq!(recovery.cancelled, std::slice::from_ref(&open_id));
    let ended = h.version(0, 2).await;
    assert!(
        ended
            .to_string()
            .contains("**Ended** before the process restarted"),
        "{ended}"
    );
    let cancelled = h.version(1, 2).await;
    assert!(
        cancelled.to_string().contains("**Cancelled**"),
        "{cancelled}"
    );
    assert!(cancelled.to_string().contains(&open_id), "{cancelled}");
    for card in [&ended, &cancelled] {
        assert!(card.get("actions").is_none(), "{card}");
    }
    // Done with: the store empties once Teams has taken the updates.
    h.gate.drain_notices().await;
    assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 0);
    // A late click on the old card is refused as settled, and recorded.
    let old = nth_card(&fake, 1).await;
    assert_eq!(
        h.send(&click(&fake, &old, "approve", ALICE, None)).await.0,
        200
    );
    let rejected = h.events("rejected_vote");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["why"], "settled");
}

/// A click on the card's `Action.Submit` fallback, as an old client sends
/// it (TEAMS.md §4.2): a `message` activity whose `value` is the fallback's
/// data with the inputs merged in; otherwise the invoke's capture.
fn submit(fake: &Fake, posted: &Posted, verb: &str, object_id: &str, comment: &str) -> Value {
    let mut activity = click(fake, posted, verb, object_id, None);
    let action = action(posted, verb);
    assert_eq!(action["fallback"]["type"], "Action.Submit");
    let mut value = action["fallback"]["data"].clone();
    value["comment"] = json!(comment);
    activity["type"] = json!("message");
    activity.as_object_mut().unwrap().remove("name");
    activity["value"] = value;
    activity["channelData"]["postBack"] = json!(true);
    activity
}

#[tokio::test]
async fn a_click_on_the_action_submit_fallback_is_the_same_vote_with_the_same_checks() {
    let h = harness(policy()).await;
    let waiting = h.start_for("alice");
    let posted = nth_card(&h.fake, 0).await;
    // The person the agent acts for is refused; nothing is counted.
    let (status, answer) = h
        .send(&submit(&h.fake, &posted, "approve", ALICE, ""))
        .await;
    assert_eq!((status, answer), (200, Value::Null));
    assert!(h.events("reviewed").is_empty());
    let rejected = h.events("rejected_vote");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["why"], "self_approval");
    // Without a token: 401, as for an invoke.
    let activity = submit(&h.fake, &posted, "deny", BOB, "not now");
    assert_eq!(h.post(&activity, "Bearer forged").await.0, 401);
    assert!(!waiting.is_finished());
    // Bob's deny, with its reason: an empty 200, the call denied, and the
    // card replaced for everyone.
    let (status, answer) = h.send(&activity).await;
    assert_eq!((status, answer), (200, Value::Null));
    match waiting.await.unwrap() {
        Err(ApprovalError::Denied { reviewer, comment }) => {
            assert_eq!(reviewer.id, format!("teams:{BOB}"));
            assert_eq!(comment.as_deref(), Some("not now"));
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    let outcome = h.version(0, 2).await;
    assert!(
        last_text(&outcome).starts_with("⛔ **Denied**"),
        "{outcome}"
    );
    assert!(outcome.get("actions").is_none());
    assert_eq!(h.events("reviewed")[0]["channel"], "teams");
    // The same call again: its card says how the last one ended.
    let again = h.start_for("alice");
    let card = content(&nth_card(&h.fake, 1).await.versions[0]).to_string();
    assert!(card.contains("the same call was denied by User "), "{card}");
    assert!(card.contains(": not now (request "), "{card}");
    again.abort();
}

#[tokio::test]
async fn approve_and_grant_on_the_card_covers_the_next_call_and_revoke_ends_it() {
    let h = harness(policy().grants(2, Duration::from_secs(600), ["table"])).await;
    let waiting = h.start();
    let posted = nth_card(&h.fake, 0).await;
    let verbs: Vec<_> = content(&posted.versions[0])["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["verb"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(verbs, ["approve", "approve_grant", "deny"]);
    assert_eq!(
        action(&posted, "approve_grant")["title"],
        "Approve + 2 more"
    );

    let (status, answer) = h
        .send(&click(&h.fake, &posted, "approve_grant", ALICE, None))
        .await;
    assert_eq!(status, 200);
    let id = waiting.await.unwrap().unwrap();
    assert_eq!(
        h.events("reviewed")[0]["grant"],
        json!({"uses": 2, "within_ms": 600_000})
    );
    // The clicker's answer shows the grant, and the action that revokes it.
    let shown = answer["value"].to_string();
    assert!(
        shown.contains("2 of 2 more runs left with the same"),
        "{shown}"
    );
    let revoke = answer["value"]["actions"][0].clone();
    assert_eq!(revoke["verb"], "revoke_grant");
    assert_eq!(revoke["data"]["request_id"], id.as_str());

    // The next call with the same table runs at once.
    h.start().await.unwrap().unwrap();
    assert_eq!(h.events("grant_used")[0]["grant"], id.as_str());

    // A revoke click as Teams sends it (TEAMS.md §4.1), by a clicker the
    // policy does not name, then by Bob.
    let revoke_click = |object_id: &str| {
        let mut invoke = click(&h.fake, &posted, "approve", object_id, None);
        invoke["id"] = json!(format!("f:{object_id}-revoke"));
        invoke["value"]["action"] = json!({"type": "Action.Execute", "title": revoke["title"],
                                           "verb": "revoke_grant", "data": revoke["data"]});
        invoke
    };
    let stranger = "6f1c0b0e-4444-4d4d-9d4d-00000000dddd";
    let (status, answer) = h.send(&revoke_click(stranger)).await;
    assert_eq!(status, 200);
    let said = answer["value"].as_str().unwrap_or_default();
    assert!(said.contains("not revoked"), "{answer}");
    assert!(h.events("grant_revoked").is_empty());
    let (status, answer) = h.send(&revoke_click(BOB)).await;
    assert_eq!(status, 200);
    assert!(answer["value"].get("actions").is_none(), "{answer}");
    let revoked = &h.events("grant_revoked")[0];
    assert_eq!(
        (
            revoked["reviewer"]["person"].as_str(),
            revoked["channel"].as_str()
        ),
        (Some("bob"), Some("teams"))
    );
    assert!(h.gate.grants().is_empty());
}
