//! The webhook approver against a receiver on 127.0.0.1 that checks the
//! signature scheme independently (ring's HMAC over `timestamp.body`), and
//! votes through the synchronous answer or the callback endpoint.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approval_core::{
    ApprovalError, Call, CanonicalJson, ChainWriter, Clock, Directory, Gate, KeyId, MemorySink,
    Policy, SystemClock, WriterSecret,
};
use approval_webhook::{HttpApprover, WebhookSecret, callback};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const OUTBOUND: &str = "outbound-secret-for-tests";
const INBOUND: &str = "inbound-secret-for-tests";

fn now() -> u64 {
    SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac_hex(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    let tag = ring::hmac::sign(&key, &message);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What the receiver does with the next request.
#[derive(Clone, Copy)]
enum Behaviour {
    Accept,
    Status(u16),
    /// Answer 200 with this many bytes.
    Huge(usize),
    /// Answer with a vote by `reviewer`, signed with `secret` (`None`:
    /// unsigned).
    Vote {
        reviewer: &'static str,
        vote: &'static str,
        secret: Option<&'static str>,
    },
}

#[derive(Default)]
struct Receiver {
    script: Mutex<VecDeque<Behaviour>>,
    /// Each request's document, and whether its signature held.
    seen: Mutex<Vec<(Value, bool)>>,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let timestamp: u64 = header("x-approval-timestamp").parse().unwrap_or(0);
    let signed = header("x-approval-signature")
        == format!("sha256={}", hmac_hex(OUTBOUND, timestamp, &body))
        && now().abs_diff(timestamp) <= 300;
    let document: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    receiver
        .seen
        .lock()
        .unwrap()
        .push((document.clone(), signed));
    let behaviour = receiver
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Behaviour::Accept);
    match behaviour {
        Behaviour::Accept => StatusCode::ACCEPTED.into_response(),
        Behaviour::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Behaviour::Huge(n) => (StatusCode::OK, " ".repeat(n)).into_response(),
        Behaviour::Vote {
            reviewer,
            vote,
            secret,
        } => {
            let body = json!({"request_id": document["request_id"], "binding": document["binding"],
                              "reviewer": reviewer, "vote": vote, "comment": "from the ticket"})
            .to_string();
            let timestamp = now();
            let mut response = (StatusCode::OK, body.clone()).into_response();
            if let Some(secret) = secret {
                let headers = response.headers_mut();
                headers.insert(
                    "x-approval-timestamp",
                    timestamp.to_string().parse().unwrap(),
                );
                headers.insert(
                    "x-approval-signature",
                    format!("sha256={}", hmac_hex(secret, timestamp, body.as_bytes()))
                        .parse()
                        .unwrap(),
                );
            }
            response
        }
    }
}

struct Setup {
    gate: Gate,
    sink: Arc<MemorySink>,
    receiver: Arc<Receiver>,
    votes: String,
    client: reqwest::Client,
}

async fn setup(receiver_url: Option<String>) -> Setup {
    let receiver = Arc::new(Receiver::default());
    let url = match receiver_url {
        Some(url) => url,
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/requests", listener.local_addr().unwrap());
            let app = axum::Router::new()
                .route("/requests", axum::routing::post(receive))
                .with_state(receiver.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            url
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let votes = format!("http://{}/approval/votes", listener.local_addr().unwrap());
    let approver = Arc::new(
        HttpApprover::builder(
            url,
            WebhookSecret::new(OUTBOUND),
            WebhookSecret::new(INBOUND),
        )
        .callback(votes.clone())
        .build(),
    );
    let app = axum::Router::new().nest("/approval", callback::router(approver.clone()));
    tokio::spawn(approval_listener::Server::new().serve(listener, app, std::future::pending()));
    let secret = WriterSecret::generate().unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))));
    let gate = Gate::builder(sink.clone())
        .approver("tickets", approver)
        .policy(
            Policy::new("data-export", ["tickets"], Duration::from_secs(60))
                .approvers(["alice", "bob"]),
        )
        .directory(
            Directory::new()
                .person("alice", ["webhook:alice"])
                .person("bob", ["webhook:bob"])
                .person("carol", ["webhook:carol"]),
        )
        .build()
        .unwrap();
    Setup {
        gate,
        sink,
        receiver,
        votes,
        client: reqwest::Client::new(),
    }
}

impl Setup {
    fn start(&self, table: &str) -> tokio::task::JoinHandle<Result<String, ApprovalError>> {
        let gate = self.gate.clone();
        let call = Call::new(
            "crm::export_table",
            "data-export",
            CanonicalJson::from_serialize(&json!({"table": table})).unwrap(),
        );
        tokio::spawn(async move { gate.approve(call).await.map(|a| a.request().id.clone()) })
    }

    /// The document of the `n`th request the receiver got.
    async fn document(&self, n: usize) -> Value {
        for _ in 0..1000 {
            if let Some((document, signed)) = self.receiver.seen.lock().unwrap().get(n) {
                assert!(signed, "the request's signature holds");
                return document.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no request {n}");
    }

    /// POSTs a vote to the callback, signed with `secret` at `timestamp`.
    async fn vote(&self, body: &Value, secret: Option<&str>, timestamp: u64) -> (u16, Value) {
        let body = body.to_string();
        let mut request = self.client.post(&self.votes).body(body.clone());
        if let Some(secret) = secret {
            request = request
                .header("X-Approval-Timestamp", timestamp.to_string())
                .header(
                    "X-Approval-Signature",
                    format!("sha256={}", hmac_hex(secret, timestamp, body.as_bytes())),
                );
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn records(&self, event: &str) -> Vec<Value> {
        String::from_utf8(self.sink.bytes())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["event"] == event)
            .collect()
    }
}

fn vote_for(document: &Value, reviewer: &str, vote: &str, comment: Option<&str>) -> Value {
    json!({"request_id": document["request_id"], "binding": document["binding"],
           "reviewer": reviewer, "vote": vote, "comment": comment})
}

#[tokio::test]
async fn the_request_is_signed_and_a_signed_answer_decides_at_once() {
    let s = setup(None).await;
    s.receiver
        .script
        .lock()
        .unwrap()
        .push_back(Behaviour::Vote {
            reviewer: "alice",
            vote: "approve",
            secret: Some(INBOUND),
        });
    let id = s.start("users").await.unwrap().unwrap();
    let document = s.document(0).await;
    assert_eq!(document["request_id"], id.as_str());
    assert_eq!(document["gate"]["action"], "crm::export_table");
    assert_eq!(document["agent"]["args"]["table"], "users");
    assert_eq!(document["callback"], s.votes.as_str());
    let reviewed = s.records("reviewed");
    assert_eq!(reviewed[0]["reviewer"]["id"], "webhook:alice");
    assert_eq!(reviewed[0]["channel"], "webhook");

    // An answer signed with the wrong secret (the outbound one: the two
    // directions are separate), or not at all: refused, counted (never
    // recorded: nothing in it is trusted), and the call fails closed.
    for secret in [Some(OUTBOUND), None] {
        s.receiver
            .script
            .lock()
            .unwrap()
            .push_back(Behaviour::Vote {
                reviewer: "alice",
                vote: "approve",
                secret,
            });
        let err = s.start("admins").await.unwrap().unwrap_err();
        assert!(
            matches!(&err, ApprovalError::ApproverUnavailable { route, .. } if route == "tickets"),
            "{err}"
        );
        assert!(format!("{err:?}").contains("did not verify"), "{err:?}");
    }
    assert!(s.records("rejected_vote").is_empty());
    assert_eq!(s.gate.refusal_counts().unauthenticated, 2);
    assert_eq!(s.records("reviewed").len(), 1);
}

#[tokio::test]
async fn votes_come_later_to_the_callback_and_every_bad_one_is_refused_and_only_signed_ones_recorded()
 {
    let s = setup(None).await;
    let waiting = s.start("users");
    let document = s.document(0).await;
    let approve = vote_for(&document, "alice", "approve", None);

    // Unsigned, wrongly signed, signed with the outbound secret, stale: 401.
    assert_eq!(s.vote(&approve, None, now()).await.0, 401);
    assert_eq!(s.vote(&approve, Some("guess"), now()).await.0, 401);
    assert_eq!(s.vote(&approve, Some(OUTBOUND), now()).await.0, 401);
    assert_eq!(s.vote(&approve, Some(INBOUND), now() - 301).await.0, 401);
    // None leaves a record (a stranger could fill the log), each counts.
    assert!(s.records("rejected_vote").is_empty());
    assert_eq!(s.gate.refusal_counts().unauthenticated, 4);
    // Unknown request: 404 and recorded; not a vote: 400.
    let mut unknown = approve.clone();
    unknown["request_id"] = "req_nobody".into();
    assert_eq!(s.vote(&unknown, Some(INBOUND), now()).await.0, 404);
    assert_eq!(
        s.records("rejected_vote").last().unwrap()["why"],
        "unknown_request"
    );
    assert_eq!(
        s.vote(&json!({"hello": 1}), Some(INBOUND), now()).await.0,
        400
    );
    // Someone the policy does not name: 403, recorded with who it was.
    let (status, body) = s
        .vote(
            &vote_for(&document, "carol", "approve", None),
            Some(INBOUND),
            now(),
        )
        .await;
    assert_eq!((status, body["why"].as_str()), (403, Some("not_eligible")));
    assert_eq!(
        s.records("rejected_vote").last().unwrap()["reviewer"]["id"],
        "webhook:carol"
    );
    assert!(!waiting.is_finished());

    // A good one, twice: counted once.
    let (status, body) = s.vote(&approve, Some(INBOUND), now()).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("counted")));
    assert_eq!(body["decision"]["outcome"], "approved");
    waiting.await.unwrap().unwrap();
    let (status, _) = s.vote(&approve, Some(INBOUND), now()).await;
    assert_eq!(status, 409, "settled");
    assert_eq!(s.records("reviewed").len(), 1);
    assert_eq!(s.records("rejected_vote").last().unwrap()["why"], "settled");

    // Deny with a comment: the agent gets it back.
    let waiting = s.start("admins");
    let document = s.document(1).await;
    let (status, body) = s
        .vote(
            &vote_for(&document, "bob", "deny", Some("not during the freeze")),
            Some(INBOUND),
            now(),
        )
        .await;
    assert_eq!(
        (status, body["decision"]["outcome"].as_str()),
        (200, Some("denied"))
    );
    let err = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ApprovalError::Denied { comment: Some(c), reviewer } if c == "not during the freeze" && reviewer.id == "webhook:bob"),
        "{err}"
    );
}

#[tokio::test]
async fn delivery_retries_outages_with_backoff_and_then_fails_closed() {
    let s = setup(None).await;
    // Two outages, then accepted.
    s.receiver
        .script
        .lock()
        .unwrap()
        .extend([Behaviour::Status(503), Behaviour::Status(500)]);
    let waiting = s.start("users");
    let document = s.document(2).await;
    assert_eq!(s.receiver.seen.lock().unwrap().len(), 3);
    s.vote(
        &vote_for(&document, "alice", "approve", None),
        Some(INBOUND),
        now(),
    )
    .await;
    waiting.await.unwrap().unwrap();

    // Down for good: four attempts, then a clear error.
    s.receiver
        .script
        .lock()
        .unwrap()
        .extend([Behaviour::Status(503); 4]);
    let before = s.receiver.seen.lock().unwrap().len();
    let started = Instant::now();
    let err = s.start("admins").await.unwrap().unwrap_err();
    assert!(format!("{err:?}").contains("after 4 attempts"), "{err:?}");
    assert_eq!(s.receiver.seen.lock().unwrap().len() - before, 4);
    assert!(started.elapsed() >= Duration::from_millis(250 + 500 + 1000));
    // A refusal (4xx) is not retried.
    s.receiver
        .script
        .lock()
        .unwrap()
        .push_back(Behaviour::Status(422));
    let before = s.receiver.seen.lock().unwrap().len();
    let err = s.start("billing").await.unwrap().unwrap_err();
    assert!(format!("{err:?}").contains("HTTP 422"), "{err:?}");
    assert_eq!(s.receiver.seen.lock().unwrap().len() - before, 1);
    // The cancellations are in the log.
    assert_eq!(s.records("cancelled").len(), 2);
    // An answer past the cap was read whole: refused once it passes it.
    s.receiver
        .script
        .lock()
        .unwrap()
        .push_back(Behaviour::Huge(approval_webhook::MAX_ANSWER_BYTES + 1));
    let err = s.start("payroll").await.unwrap().unwrap_err();
    assert!(
        format!("{err:?}").contains("answer is over 65536 bytes"),
        "{err:?}"
    );
    assert_eq!(s.records("cancelled").len(), 3);

    // Nobody listening at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = setup(Some(format!("http://{closed}/requests"))).await;
    let err = s.start("users").await.unwrap().unwrap_err();
    assert!(
        matches!(err, ApprovalError::ApproverUnavailable { .. }),
        "{err}"
    );
}
