//! The decision API over loopback: bearer tokens on every route, reads of
//! the full context, votes checked and recorded by the gate, the OpenAPI
//! document.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use approval_core::{
    Actor, ApprovalError, AuditError, AuditSink, Call, CanonicalJson, ChainWriter, Directory, Gate,
    KeyId, MemorySink, PendingRecord, Policy, Receipt, WriterSecret, with_actor,
};
use approval_http::{ApiApprover, ReviewerTokens, api};
use serde_json::{Value, json};

const ALICE: &str = "alice-token-7f1c2d";
const BOB: &str = "bob-token-93ab41";
const CAROL: &str = "carol-token-0d9e77";

/// The memory sink, which refuses appends while `down` is set (a disk or
/// database gone away).
#[derive(Debug)]
struct Flaky {
    log: MemorySink,
    down: AtomicBool,
}

#[async_trait::async_trait]
impl AuditSink for Flaky {
    async fn append(&self, records: Vec<PendingRecord>) -> Result<Vec<Receipt>, AuditError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AuditError::Store {
                what: "append",
                cause: "the test took the store away".into(),
            });
        }
        self.log.append(records).await
    }

    fn read_back(&self) -> Result<Box<dyn Read + Send>, AuditError> {
        self.log.read_back()
    }

    fn chain_writer(&self) -> &Arc<ChainWriter> {
        self.log.chain_writer()
    }
}

struct Setup {
    gate: Gate,
    sink: Arc<Flaky>,
    base: String,
    client: reqwest::Client,
}

async fn setup(required: u32) -> Setup {
    setup_with(required, |approver| approver).await
}

fn export_policy(required: u32) -> Policy {
    Policy::new("data-export", ["api"], Duration::from_secs(60))
        .approvers(["alice", "bob"])
        .required(required)
}

async fn setup_with(required: u32, configure: impl FnOnce(ApiApprover) -> ApiApprover) -> Setup {
    setup_policy(export_policy(required), configure).await
}

async fn setup_policy(policy: Policy, configure: impl FnOnce(ApiApprover) -> ApiApprover) -> Setup {
    let tokens = ReviewerTokens::new()
        .reviewer("alice", &ReviewerTokens::hash(ALICE))
        .unwrap()
        .reviewer("bob", &ReviewerTokens::hash(BOB))
        .unwrap()
        .reviewer("carol", &ReviewerTokens::hash(CAROL))
        .unwrap();
    let approver = Arc::new(configure(ApiApprover::new(tokens)));
    let secret = WriterSecret::generate().unwrap();
    let sink = Arc::new(Flaky {
        log: MemorySink::new(Arc::new(ChainWriter::new(
            KeyId::new("k").unwrap(),
            &secret,
        ))),
        down: AtomicBool::new(false),
    });
    let gate = Gate::builder(sink.clone())
        .approver("api", approver.clone())
        .policy(policy)
        .directory(
            Directory::new()
                .person("alice", ["api:alice"])
                .person("bob", ["api:bob"])
                .person("carol", ["api:carol"])
                .person("dave", ["email:dave@example.com"]),
        )
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(approval_listener::Server::new().serve(
        listener,
        api::router(approver),
        std::future::pending(),
    ));
    Setup {
        gate,
        sink,
        base,
        client: reqwest::Client::new(),
    }
}

impl Setup {
    /// A gated call, made by an agent acting for `person`.
    fn start(
        &self,
        person: &str,
        table: &str,
    ) -> tokio::task::JoinHandle<Result<String, ApprovalError>> {
        let gate = self.gate.clone();
        let call = Call::new(
            "crm::export_table",
            "data-export",
            CanonicalJson::from_serialize(&json!({"table": table})).unwrap(),
        );
        let actor = Actor::new("agent-7").on_behalf_of(person);
        tokio::spawn(with_actor(actor, async move {
            gate.approve(call).await.map(|a| a.request().id.clone())
        }))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    async fn vote(&self, id: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.post(&format!("/requests/{id}/votes"), token, body)
            .await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    /// The id of the one pending request, once it is on the board (as bob,
    /// who may vote on every request these tests make).
    async fn pending_id(&self) -> String {
        for _ in 0..1000 {
            let (_, list) = self.get("/requests", Some(BOB)).await;
            if let Some(id) = list["requests"][0]["request_id"].as_str() {
                return id.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("nothing pending");
    }

    fn records(&self, event: &str) -> Vec<Value> {
        String::from_utf8(self.sink.log.bytes())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["event"] == event)
            .collect()
    }
}

#[tokio::test]
async fn every_route_wants_a_reviewer_token_and_reads_show_the_full_context() {
    let s = setup(1).await;
    let waiting = s.start("dave", "users");
    let id = s.pending_id().await;
    for token in [None, Some("wrong"), Some("")] {
        assert_eq!(s.get("/requests", token).await.0, 401, "{token:?}");
        assert_eq!(s.get(&format!("/requests/{id}"), token).await.0, 401);
        let (status, _) = s.vote(&id, token, json!({"vote": "approve"})).await;
        assert_eq!(status, 401);
    }
    assert!(s.records("reviewed").is_empty());
    assert!(s.records("rejected_vote").is_empty());

    let (status, request) = s.get(&format!("/requests/{id}"), Some(BOB)).await;
    assert_eq!(status, 200);
    assert_eq!(request["state"], "pending");
    assert_eq!(request["gate"]["action"], "crm::export_table");
    assert_eq!(
        request["gate"]["policy"]["approvers"],
        json!(["alice", "bob"])
    );
    assert_eq!(request["gate"]["actor"]["on_behalf_of"], "dave");
    assert_eq!(request["agent"]["args"]["table"], "users");
    assert!(request["seconds_left"].as_u64().unwrap() > 50);
    // Who may still vote, as the gate says: not dave, whose call it is.
    assert_eq!(request["may_vote"], json!(["alice", "bob"]));
    assert_eq!(s.get("/requests/req_nobody", Some(BOB)).await.0, 404);
    assert_eq!(s.get("/requests?state=whatever", Some(BOB)).await.0, 400);

    // The OpenAPI document, generated from the handlers: no token needed.
    let (status, openapi) = s.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(openapi["paths"]["/requests"]["get"].is_object());
    assert!(openapi["paths"]["/requests/{id}/votes"]["post"]["requestBody"].is_object());
    assert_eq!(
        openapi["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let (status, answer) = s.vote(&id, Some(BOB), json!({"vote": "approve"})).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("counted")));
    assert_eq!(answer["decision"]["reviewers"], json!(["api:bob"]));
    waiting.await.unwrap().unwrap();
    let (_, settled) = s.get("/requests?state=settled", Some(ALICE)).await;
    let settled = &settled["requests"][0];
    assert_eq!(settled["request_id"], id.as_str());
    assert_eq!(settled["state"], "settled");
    assert_eq!(
        settled["votes"],
        json!([{"reviewer": "api:bob", "vote": "approve", "comment": null}])
    );
    assert_eq!(settled["decision"]["outcome"], "approved");
    assert_eq!(settled["may_vote"], json!([]));
    let (_, pending) = s.get("/requests", Some(ALICE)).await;
    assert_eq!(pending["requests"], json!([]));
}

#[tokio::test]
async fn votes_are_checked_by_the_gate_recorded_and_counted_once() {
    let s = setup(2).await;
    // The agent acts for alice: she may not decide.
    let waiting = s.start("alice", "users");
    let id = s.pending_id().await;
    let (status, answer) = s.vote(&id, Some(ALICE), json!({"vote": "approve"})).await;
    assert_eq!(
        (status, answer["why"].as_str()),
        (403, Some("self_approval"))
    );
    // Carol may not see it: told it is unknown, recorded as not eligible.
    let (status, answer) = s.vote(&id, Some(CAROL), json!({"vote": "approve"})).await;
    assert_eq!(
        (status, answer["why"].as_str()),
        (404, Some("unknown_request"))
    );
    let who: Vec<_> = s
        .records("rejected_vote")
        .iter()
        .map(|r| (r["reviewer"]["id"].clone(), r["why"].clone()))
        .collect();
    assert_eq!(
        who,
        [
            (json!("api:alice"), json!("self_approval")),
            (json!("api:carol"), json!("not_eligible"))
        ]
    );
    // Not a vote: 400, nothing recorded.
    assert_eq!(
        s.vote(&id, Some(BOB), json!({"vote": "maybe"})).await.0,
        400
    );
    assert_eq!(
        s.vote(&id, Some(BOB), json!({"vote": "approve", "extra": 1}))
            .await
            .0,
        400
    );
    // Bob's approval, twice: counted once; one of two.
    let (status, answer) = s.vote(&id, Some(BOB), json!({"vote": "approve"})).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("counted")));
    assert!(answer.get("decision").is_none());
    let (status, answer) = s.vote(&id, Some(BOB), json!({"vote": "approve"})).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("absorbed"))
    );
    assert_eq!(s.records("reviewed").len(), 1);
    // Bob changing his mind: refused, his first vote stands.
    let (status, answer) = s.vote(&id, Some(BOB), json!({"vote": "deny"})).await;
    assert_eq!(
        (status, answer["why"].as_str()),
        (409, Some("already_voted"))
    );
    assert!(!waiting.is_finished());
    waiting.abort();

    // A denial with a comment reaches the agent.
    let s = setup(1).await;
    let waiting = s.start("dave", "admins");
    let id = s.pending_id().await;
    let (status, _) = s
        .vote(
            &id,
            Some(ALICE),
            json!({"vote": "deny", "comment": "not during the freeze"}),
        )
        .await;
    assert_eq!(status, 200);
    let err = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ApprovalError::Denied { comment: Some(c), reviewer } if c == "not during the freeze" && reviewer.id == "api:alice"),
        "{err}"
    );
    // Unknown and settled requests: 404 and 409, recorded.
    assert_eq!(
        s.vote("req_nobody", Some(BOB), json!({"vote": "approve"}))
            .await
            .0,
        404
    );
    assert_eq!(
        s.vote(&id, Some(BOB), json!({"vote": "approve"})).await.0,
        409
    );
    let whys: Vec<_> = s
        .records("rejected_vote")
        .iter()
        .map(|r| r["why"].clone())
        .collect();
    assert_eq!(whys, ["unknown_request", "settled"]);
}

#[tokio::test]
async fn a_reviewer_sees_only_the_requests_they_may_vote_on() {
    let s = setup(1).await;
    // For alice: bob may vote, alice (the requester) and carol (named by
    // no policy) may not.
    let waiting = s.start("alice", "users");
    let id = s.pending_id().await;
    let (_, shown) = s.get("/requests", Some(BOB)).await;
    assert_eq!(shown["requests"][0]["request_id"], id.as_str());
    for token in [ALICE, CAROL] {
        let (status, list) = s.get("/requests", Some(token)).await;
        assert_eq!((status, &list["requests"]), (200, &json!([])), "{token}");
        let (status, answer) = s.get(&format!("/requests/{id}"), Some(token)).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (404, Some("no such request")),
            "{token}"
        );
    }
    // A vote cannot probe it either: carol's is answered as for an unknown
    // id and recorded with the real reason; alice, who asked, is told so.
    let (status, answer) = s.vote(&id, Some(CAROL), json!({"vote": "approve"})).await;
    assert_eq!(
        (status, answer["why"].as_str()),
        (404, Some("unknown_request"))
    );
    let (status, answer) = s.vote(&id, Some(ALICE), json!({"vote": "approve"})).await;
    assert_eq!(
        (status, answer["why"].as_str()),
        (403, Some("self_approval"))
    );
    let whys: Vec<_> = s
        .records("rejected_vote")
        .iter()
        .map(|r| r["why"].clone())
        .collect();
    assert_eq!(whys, [json!("not_eligible"), json!("self_approval")]);
    // Settled, the history follows the same rule.
    let (status, _) = s.vote(&id, Some(BOB), json!({"vote": "approve"})).await;
    assert_eq!(status, 200);
    waiting.await.unwrap().unwrap();
    let (_, settled) = s.get("/requests?state=settled", Some(BOB)).await;
    assert_eq!(settled["requests"][0]["request_id"], id.as_str());
    let (_, settled) = s.get("/requests?state=settled", Some(CAROL)).await;
    assert_eq!(settled["requests"], json!([]));

    // An operator may show every request to every reviewer.
    let s = setup_with(1, ApiApprover::show_every_request).await;
    let waiting = s.start("alice", "users");
    let id = s.pending_id().await;
    for token in [ALICE, CAROL] {
        let (status, request) = s.get(&format!("/requests/{id}"), Some(token)).await;
        assert_eq!(
            (status, request["request_id"].as_str()),
            (200, Some(id.as_str()))
        );
    }
    // Seeing is not voting.
    let (status, answer) = s.vote(&id, Some(CAROL), json!({"vote": "approve"})).await;
    assert_eq!(
        (status, answer["why"].as_str()),
        (403, Some("not_eligible"))
    );
    waiting.abort();
}

#[tokio::test]
async fn each_failure_has_its_status_and_a_typed_code() {
    let s = setup(1).await;
    let waiting = s.start("dave", "users");
    let id = s.pending_id().await;
    let code = |answer: &Value| answer["code"].as_str().map(str::to_owned);
    // 401: no token, or one nobody has.
    let (status, answer) = s.vote(&id, None, json!({"vote": "approve"})).await;
    assert_eq!((status, code(&answer)), (401, Some("unauthorized".into())));
    let (status, answer) = s.get("/requests", Some("nobody's-token")).await;
    assert_eq!((status, code(&answer)), (401, Some("unauthorized".into())));
    // 400: not a vote, or a query the route does not take.
    let (status, answer) = s.vote(&id, Some(BOB), json!({"vote": 1})).await;
    assert_eq!((status, code(&answer)), (400, Some("malformed".into())));
    let (status, answer) = s.get("/requests?state=later", Some(BOB)).await;
    assert_eq!((status, code(&answer)), (400, Some("malformed".into())));
    // 404: no such request.
    let (status, answer) = s.get("/requests/req_nobody", Some(BOB)).await;
    assert_eq!((status, code(&answer)), (404, Some("not_found".into())));

    // 503 while the log cannot record: nothing counted, the call waits,
    // and the same vote counts once the log is back.
    s.sink.down.store(true, Ordering::SeqCst);
    let (status, answer) = s.vote(&id, Some(BOB), json!({"vote": "approve"})).await;
    assert_eq!((status, code(&answer)), (503, Some("unavailable".into())));
    assert!(!waiting.is_finished());
    assert!(s.records("reviewed").is_empty());
    s.sink.down.store(false, Ordering::SeqCst);
    let (status, answer) = s.vote(&id, Some(BOB), json!({"vote": "approve"})).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("counted")));
    waiting.await.unwrap().unwrap();

    // 503 once the gate is gone: nothing can take a vote.
    let waiting = s.start("dave", "orders");
    let id = s.pending_id().await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    let Setup {
        gate,
        base,
        client,
        sink,
    } = s;
    drop(gate);
    // (A new gate of its own only fills the struct; the API's is gone.)
    let s = Setup {
        gate: Gate::builder(sink.clone()).build().unwrap(),
        sink,
        base,
        client,
    };
    let (status, answer) = s.vote(&id, Some(BOB), json!({"vote": "approve"})).await;
    assert_eq!((status, code(&answer)), (503, Some("unavailable".into())));
}

#[tokio::test]
async fn a_grant_is_made_with_a_vote_listed_to_its_reviewers_and_revoked() {
    let policy = export_policy(1).grants(3, Duration::from_secs(600), ["table"]);
    let s = setup_policy(policy, |approver| approver).await;
    let waiting = s.start("dave", "users");
    let id = s.pending_id().await;
    // Beyond the policy's caps: refused, and not counted.
    let too_many = json!({"vote": "approve", "grant": {"uses": 4, "within_ms": 60_000}});
    let (status, answer) = s.vote(&id, Some(ALICE), too_many).await;
    assert_eq!(
        (status, answer["why"].as_str()),
        (422, Some("grant_refused"))
    );
    let within = json!({"vote": "approve", "grant": {"uses": 2, "within_ms": 60_000}});
    let (status, answer) = s.vote(&id, Some(ALICE), within).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("counted")));
    waiting.await.unwrap().unwrap();
    assert_eq!(
        s.records("reviewed")[0]["grant"],
        json!({"uses": 2, "within_ms": 60_000})
    );

    // Bob may vote on it, so he sees the grant; Carol does not.
    let (status, list) = s.get("/grants", Some(BOB)).await;
    assert_eq!(status, 200);
    let grant = &list["grants"][0];
    assert_eq!(
        (
            grant["id"].as_str(),
            grant["uses"].as_u64(),
            grant["used"].as_u64()
        ),
        (Some(id.as_str()), Some(2), Some(0))
    );
    assert_eq!(grant["pinned"], json!({"table": "users"}));
    assert_eq!(grant["reviewers"], json!(["api:alice"]));
    let (_, hidden) = s.get("/grants", Some(CAROL)).await;
    assert_eq!(hidden["grants"], json!([]));
    assert_eq!(s.get("/grants", None).await.0, 401);

    // The same export runs at once, as the grant's first use.
    s.start("dave", "users").await.unwrap().unwrap();
    assert_eq!(s.records("grant_used")[0]["grant"], id.as_str());
    let (_, list) = s.get("/grants", Some(BOB)).await;
    assert_eq!(list["grants"][0]["used"], 1);

    // Carol may not revoke it: answered as unknown, nothing recorded.
    let revoke = format!("/grants/{id}/revoke");
    let (status, answer) = s.post(&revoke, Some(CAROL), json!({})).await;
    assert_eq!((status, answer["code"].as_str()), (404, Some("not_found")));
    assert!(s.records("grant_revoked").is_empty());
    let (status, revoked) = s.post(&revoke, Some(BOB), json!({})).await;
    assert_eq!((status, revoked["revoked"].as_bool()), (200, Some(true)));
    let record = &s.records("grant_revoked")[0];
    assert_eq!(
        (
            record["reviewer"]["id"].as_str(),
            record["channel"].as_str()
        ),
        (Some("api:bob"), Some("api"))
    );
    // Asked for again: the next export waits for a vote.
    let held = s.start("dave", "users");
    let (_, list) = s.get("/grants", Some(BOB)).await;
    assert_eq!(list["grants"], json!([]));
    for _ in 0..1000 {
        let (_, pending) = s.get("/requests", Some(BOB)).await;
        if pending["requests"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!held.is_finished());
    held.abort();
}
