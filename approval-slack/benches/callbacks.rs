//! Slack interactivity callbacks on loopback, with the memory sink: how
//! many signed callbacks per second are verified and routed to the gate,
//! and how long from a callback's arrival until the waiting call resumes.
//!
//! ```text
//! cargo bench -p approval-slack --bench callbacks
//! ```
//!
//! A fake Slack Web API (auth.test, chat.postMessage, chat.update) runs in
//! the same process, as does the client sending the callbacks: on a 2-core
//! machine all three share the cores, so the figures are a lower bound.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
#![allow(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approval_core::{
    AuditSink, Call, CanonicalJson, ChainWriter, Clock, Directory, Gate, JsonlFileSink, KeyId,
    MemorySink, Policy, SystemClock, WriterSecret,
};
use approval_slack::api::{BotToken, SlackApi};
use approval_slack::{SigningSecret, SlackChannel, interactivity};
use axum::extract::{Path, State};
use axum::routing::post;
use serde_json::{Value, json};

#[path = "../../support/loopback.rs"]
mod loopback;

use loopback::{Connection, percentile, send_raw};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// The fake Web API: posted messages' button values, in order.
#[derive(Default)]
struct Fake {
    values: Mutex<Vec<String>>,
    posts: AtomicU64,
}

async fn web_api(
    State(fake): State<Arc<Fake>>,
    Path(method): Path<String>,
    body: String,
) -> String {
    match method.as_str() {
        "auth.test" => r#"{"ok":true,"team_id":"T0TEAM","user_id":"U0BOTUSER"}"#.into(),
        "chat.postMessage" => {
            let body: Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(value) = body["blocks"]
                .as_array()
                .and_then(|b| b.last())
                .and_then(|a| a["elements"][0]["value"].as_str())
            {
                fake.values.lock().unwrap().push(value.to_owned());
            }
            let n = fake.posts.fetch_add(1, Ordering::Relaxed);
            format!(r#"{{"ok":true,"channel":"C0APPROVALS","ts":"1700000000.{n:06}"}}"#)
        }
        _ => r#"{"ok":true}"#.into(),
    }
}

fn sign(body: &str, timestamp: u64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, format!("v0:{timestamp}:{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// A signed `block_actions` callback approving `value` (SLACK.md §3.2).
fn callback(value: &str) -> (String, String, String) {
    let payload = json!({
        "type": "block_actions", "user": {"id": "U0ALICE", "username": "alice", "name": "alice", "team_id": "T0TEAM"},
        "api_app_id": "A0APP", "token": "vtok",
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0APPROVALS", "is_ephemeral": false},
        "trigger_id": "123.456.abc", "team": {"id": "T0TEAM", "domain": "example"},
        "channel": {"id": "C0APPROVALS", "name": "approvals"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/x",
        "actions": [{"action_id": "approve", "block_id": "b", "value": value, "type": "button", "action_ts": "1700000005.123456"}]
    });
    let json = payload.to_string().replace('/', "\\/");
    let body = serde_urlencoded::to_string([("payload", json)]).expect("form");
    let now = SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let signature = sign(&body, now);
    (body, now.to_string(), signature)
}

struct Bench {
    gate: Gate,
    fake: Arc<Fake>,
    url: String,
    calls: AtomicU64,
}

impl Bench {
    async fn new(sink: Arc<dyn AuditSink>) -> Self {
        let fake = Arc::new(Fake::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}/api/", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .route("/api/{method}", post(web_api))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let slack = Arc::new(
            SlackChannel::connect(
                SlackApi::new(BotToken::new("xoxb-bench")).base_url(base),
                "C0APPROVALS",
            )
            .await
            .expect("connect"),
        );
        let gate = Gate::builder(sink)
            .approver("slack", slack.clone())
            .policy(
                Policy::new("bench", ["slack"], Duration::from_secs(600))
                    .approvers(["alice"])
                    .max_pending_per_actor(u32::MAX),
            )
            .directory(Directory::new().person("alice", ["slack:U0ALICE"]))
            .build()
            .expect("gate");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/slack/interactivity",
            listener.local_addr().expect("addr")
        );
        let router = interactivity::router(SigningSecret::new(SECRET), slack);
        tokio::spawn(approval_listener::Server::new().serve(
            listener,
            router,
            std::future::pending(),
        ));
        Self {
            gate,
            fake,
            url,
            calls: AtomicU64::new(0),
        }
    }

    /// Starts `n` gated calls and waits until each message is posted;
    /// returns the calls (each yielding when it resumed) and their values.
    async fn pending(&self, n: usize) -> Vec<(tokio::task::JoinHandle<Instant>, String)> {
        let before = self.fake.values.lock().unwrap().len();
        let mut calls = Vec::with_capacity(n);
        for _ in 0..n {
            let i = self.calls.fetch_add(1, Ordering::Relaxed);
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
        loop {
            // Values arrive in posting order, not call order; the request
            // id in each names its call, but any pairing does for
            // throughput, and latency runs one call at a time.
            let posted = {
                let values = self.fake.values.lock().unwrap();
                (values.len() >= before + n).then(|| values[before..before + n].to_vec())
            };
            if let Some(values) = posted {
                return calls.into_iter().zip(values).collect();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The request bytes of a callback, as Slack sends them (HTTP/1.1, keep-alive).
fn raw_request(host: &str, (body, ts, signature): &(String, String, String)) -> Vec<u8> {
    let headers = [
        "Content-Type: application/x-www-form-urlencoded".to_owned(),
        format!("X-Slack-Request-Timestamp: {ts}"),
        format!("X-Slack-Signature: {signature}"),
    ];
    loopback::post(host, "/slack/interactivity", &headers, body)
}

fn writer() -> Arc<ChainWriter> {
    let secret = WriterSecret::from_hex(&"42".repeat(32)).expect("hex");
    Arc::new(ChainWriter::new(KeyId::new("bench").expect("id"), &secret))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        println!("MemorySink:\n");
        let bench = Bench::new(Arc::new(MemorySink::new(writer()))).await;
        rounds(&bench, 5_000, 1_000).await;
        // The durable path: each vote fsynced before Slack's 200 (group
        // commit shares an fsync among votes arriving together).
        println!("\nJsonlFileSink (fsync before the acknowledgement):\n");
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = JsonlFileSink::open(dir.path().join("audit.jsonl"), writer()).expect("sink");
        let bench = Bench::new(Arc::new(sink)).await;
        rounds(&bench, 2_000, 300).await;
    });
}

async fn rounds(bench: &Bench, n: usize, samples: usize) {
    println!(
        "| round | callbacks/s (64 in flight) | floor: HMAC of the same bodies | p50 arrival→resume | p99 | max |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    // Round 0 warms up and is not reported.
    for round in 0..4 {
        // Throughput: n requests waiting, n signed approvals.
        let pending = bench.pending(n).await;
        let (calls, values): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
        let bodies: Vec<_> = values.iter().map(|v| callback(v)).collect();
        let floor_started = Instant::now();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        for (body, ts, _) in &bodies {
            std::hint::black_box(ring::hmac::sign(&key, format!("v0:{ts}:{body}").as_bytes()));
        }
        let floor = floor_started.elapsed();
        let host = bench.url["http://".len()..]
            .split('/')
            .next()
            .expect("host")
            .to_owned();
        let requests: Vec<_> = bodies.iter().map(|b| raw_request(&host, b)).collect();
        let started = Instant::now();
        let statuses = send_raw(&host, requests, 64).await;
        let elapsed = started.elapsed();
        assert!(statuses.iter().all(|s| *s == 200), "all accepted");
        for call in calls {
            call.await.expect("resumed");
        }
        let rate = n as f64 / elapsed.as_secs_f64();
        let floor_rate = n as f64 / floor.as_secs_f64();

        // Latency: one call at a time.
        let mut latencies = Vec::with_capacity(samples);
        let mut connection = Connection::open(&host).await;
        for _ in 0..samples {
            let (call, value) = bench.pending(1).await.pop().expect("one");
            let request = raw_request(&host, &callback(&value));
            let arrived = Instant::now();
            assert_eq!(connection.send(&request).await, 200);
            latencies.push(call.await.expect("resumed") - arrived);
        }
        latencies.sort_unstable();
        if round > 0 {
            println!(
                "| {round} | {:.0} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs |",
                rate,
                floor_rate,
                percentile(&latencies, 500).as_secs_f64() * 1e6,
                percentile(&latencies, 990).as_secs_f64() * 1e6,
                latencies.last().expect("samples").as_secs_f64() * 1e6,
            );
        }
    }
}
