//! Votes over loopback, with the memory sink: how many per second are
//! checked and recorded, and how long from a vote's arrival until the
//! waiting call resumes. Two ways in: HMAC-signed votes to the webhook's
//! callback, and the decision API with a bearer token.
//!
//! ```text
//! cargo bench -p approval-webhook --bench votes
//! ```
//!
//! The load generator (and, for the webhook, the receiver answering 202)
//! run in the same process on the same cores: the figures are lower bounds.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
#![allow(missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approval_core::{
    Call, CanonicalJson, ChainWriter, Clock, Directory, Gate, KeyId, MemorySink, Policy,
    SystemClock, WriterSecret,
};
use approval_http::{ApiApprover, ReviewerTokens, api};
use approval_webhook::{HttpApprover, WebhookSecret, callback};
use axum::extract::State;
use serde_json::{Value, json};

#[path = "../../support/loopback.rs"]
mod loopback;

use loopback::{Connection, percentile, send_raw};

const INBOUND: &str = "inbound-bench-secret";
const TOKEN: &str = "alice-bench-token";

/// (request id, binding) of each request the receiver got.
type Received = Arc<Mutex<Vec<(String, String)>>>;

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Webhook,
    Api,
}

struct Bench {
    /// The gate's log, to show why a vote was refused.
    log: Arc<MemorySink>,
    way: Way,
    gate: Gate,
    received: Received,
    host: String,
    calls: std::sync::atomic::AtomicU64,
    inbound: WebhookSecret,
}

async fn receive(State(received): State<Received>, body: String) -> axum::http::StatusCode {
    let document: Value = serde_json::from_str(&body).unwrap_or_default();
    if let (Some(id), Some(binding)) = (
        document["request_id"].as_str(),
        document["binding"].as_str(),
    ) {
        // Deliveries are at least once (a retry after a lost answer comes
        // again): a receiver keeps each request once, as a real one must.
        let mut received = received.lock().unwrap();
        if !received.iter().any(|(seen, _)| seen == id) {
            received.push((id.to_owned(), binding.to_owned()));
        }
    }
    axum::http::StatusCode::ACCEPTED
}

async fn listen(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    tokio::spawn(approval_listener::Server::new().serve(listener, app, std::future::pending()));
    host
}

impl Bench {
    async fn new(way: Way) -> Self {
        let received: Received = Arc::default();
        let secret = WriterSecret::from_hex(&"42".repeat(32)).expect("hex");
        let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
            KeyId::new("bench").expect("id"),
            &secret,
        ))));
        let log = sink.clone();
        let builder = Gate::builder(sink).policy(
            Policy::new("bench", ["channel"], Duration::from_secs(600))
                .approvers(["alice"])
                .max_pending_per_actor(u32::MAX),
        );
        let (gate, host) = match way {
            Way::Webhook => {
                let receiver = listen(
                    axum::Router::new()
                        .route("/requests", axum::routing::post(receive))
                        .with_state(received.clone()),
                )
                .await;
                let approver = Arc::new(
                    HttpApprover::builder(
                        format!("http://{receiver}/requests"),
                        WebhookSecret::new("outbound-bench-secret"),
                        WebhookSecret::new(INBOUND),
                    )
                    .build(),
                );
                let gate = builder
                    .approver("channel", approver.clone())
                    .directory(Directory::new().person("alice", ["webhook:alice"]))
                    .build()
                    .expect("gate");
                (gate, listen(callback::router(approver)).await)
            }
            Way::Api => {
                let tokens = ReviewerTokens::new()
                    .reviewer("alice", &ReviewerTokens::hash(TOKEN))
                    .expect("tokens");
                let approver = Arc::new(ApiApprover::new(tokens));
                let gate = builder
                    .approver("channel", approver.clone())
                    .directory(Directory::new().person("alice", ["api:alice"]))
                    .build()
                    .expect("gate");
                (gate, listen(api::router(approver)).await)
            }
        };
        Self {
            way,
            log,
            gate,
            received,
            host,
            calls: std::sync::atomic::AtomicU64::new(0),
            inbound: WebhookSecret::new(INBOUND),
        }
    }

    /// Starts `n` gated calls; returns each (yielding when it resumed) with
    /// the request bytes of a vote approving one of them.
    async fn pending(&self, n: usize) -> Vec<(tokio::task::JoinHandle<Instant>, Vec<u8>)> {
        let before = self.received.lock().unwrap().len();
        let mut calls = Vec::with_capacity(n);
        for _ in 0..n {
            let i = self
                .calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let call = Call::new(
                "bench::export",
                "bench",
                CanonicalJson::from_serialize(&json!({"n": i})).expect("args"),
            );
            let gate = self.gate.clone();
            calls.push(tokio::spawn(async move {
                drop(gate.approve(call).await.expect("approved"));
                Instant::now()
            }));
        }
        let ids: Vec<(String, String)> = match self.way {
            Way::Webhook => loop {
                let got = {
                    let received = self.received.lock().unwrap();
                    (received.len() >= before + n).then(|| received[before..before + n].to_vec())
                };
                if let Some(got) = got {
                    break got;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            },
            Way::Api => loop {
                let list = reqwest::Client::new()
                    .get(format!("http://{}/requests", self.host))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .expect("list")
                    .text()
                    .await
                    .expect("body");
                let list: Value = serde_json::from_str(&list).expect("json");
                let ids: Vec<(String, String)> = list["requests"]
                    .as_array()
                    .expect("requests")
                    .iter()
                    .map(|r| {
                        (
                            r["request_id"].as_str().expect("id").to_owned(),
                            String::new(),
                        )
                    })
                    .collect();
                if ids.len() >= n {
                    break ids;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            },
        };
        let now = SystemClock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let requests = ids.iter().map(|(id, binding)| match self.way {
            Way::Webhook => {
                let body = json!({"request_id": id, "binding": binding, "reviewer": "alice", "vote": "approve"}).to_string();
                let headers = [
                    "Content-Type: application/json".to_owned(),
                    format!("X-Approval-Timestamp: {now}"),
                    format!("X-Approval-Signature: {}", self.inbound.sign(now, body.as_bytes())),
                ];
                loopback::post(&self.host, "/votes", &headers, &body)
            }
            Way::Api => {
                let headers = [
                    "Content-Type: application/json".to_owned(),
                    format!("Authorization: Bearer {TOKEN}"),
                ];
                loopback::post(&self.host, &format!("/requests/{id}/votes"), &headers, r#"{"vote":"approve"}"#)
            }
        });
        // Any pairing of calls and votes does for throughput; latency runs
        // one call at a time.
        calls.into_iter().zip(requests).collect()
    }
}

async fn rounds(bench: &Bench, n: usize, samples: usize) {
    println!("| round | votes/s (64 in flight) | p50 arrival→resume | p99 | max |");
    println!("| --- | --- | --- | --- | --- |");
    for round in 0..4 {
        let (calls, requests): (Vec<_>, Vec<_>) = bench.pending(n).await.into_iter().unzip();
        let started = Instant::now();
        let statuses = send_raw(&bench.host, requests, 64).await;
        let elapsed = started.elapsed();
        let refused = statuses.iter().filter(|s| **s != 200).count();
        if refused > 0 {
            let log = String::from_utf8_lossy(&bench.log.bytes()).into_owned();
            let why: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("rejected_vote"))
                .take(4)
                .collect();
            panic!("{refused} votes not counted: {why:#?}");
        }
        for call in calls {
            call.await.expect("resumed");
        }
        let mut latencies = Vec::with_capacity(samples);
        let mut connection = Connection::open(&bench.host).await;
        for _ in 0..samples {
            let (call, request) = bench.pending(1).await.pop().expect("one");
            let arrived = Instant::now();
            assert_eq!(connection.send(&request).await, 200);
            latencies.push(call.await.expect("resumed") - arrived);
        }
        latencies.sort_unstable();
        if round > 0 {
            println!(
                "| {round} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs |",
                n as f64 / elapsed.as_secs_f64(),
                percentile(&latencies, 500).as_secs_f64() * 1e6,
                percentile(&latencies, 990).as_secs_f64() * 1e6,
                latencies.last().expect("samples").as_secs_f64() * 1e6,
            );
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        // The floor: HMAC-SHA256 of a vote's signed bytes.
        let secret = WebhookSecret::new(INBOUND);
        let body = json!({"request_id": "01JD0000000000000000000000", "binding": "ab".repeat(32), "reviewer": "alice", "vote": "approve"}).to_string();
        let started = Instant::now();
        for i in 0..100_000u64 {
            std::hint::black_box(secret.sign(1_700_000_000 + i, body.as_bytes()));
        }
        println!("Floor: signing a vote, {:.0}/s\n", 100_000.0 / started.elapsed().as_secs_f64());
        println!("Signed votes to the webhook callback:\n");
        rounds(&Bench::new(Way::Webhook).await, 5_000, 1_000).await;
        println!("\nThe decision API, bearer token:\n");
        rounds(&Bench::new(Way::Api).await, 5_000, 1_000).await;
    });
}
