//! Teams card clicks on loopback, with the memory sink and the signing keys
//! cached: how many signed `adaptiveCard/action` invokes per second are
//! validated (the whole of TEAMS.md §5) and routed to the gate, and how
//! long from an invoke's arrival until the waiting call resumes.
//!
//! ```text
//! cargo bench -p approval-teams --bench invokes
//! ```
//!
//! The client signs its tokens before a round starts (RS256 with the test
//! key; 64, used in turn, as Teams reuses a token for its hour); the
//! endpoint verifies every invoke's token in full, keys cached. The floor
//! is RS256 verification of the same tokens, as many times, alone, in the
//! same round. A fake Bot Connector,
//! Entra token endpoint and key server run in the same process as the
//! client: on a 2-core machine all share the cores, so the figures are a
//! lower bound.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
#![allow(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use approval_core::{
    Call, CanonicalJson, ChainWriter, Clock, Directory, Gate, KeyId, MemorySink, Policy,
    SystemClock, WriterSecret,
};
use approval_teams::auth::InboundAuth;
use approval_teams::connector::{BotCredentials, Connector};
use approval_teams::keys::KeyCache;
use approval_teams::{Target, TeamsChannel, endpoint};
use axum::extract::State;
use axum::routing::{get, post, put};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};

#[path = "../../support/loopback.rs"]
mod loopback;

use loopback::{Connection, percentile, send_raw};

const APP_ID: &str = "571c643a-c513-441e-9ca2-e01b48b9a0de";
const TENANT: &str = "3f3d1cea-7a18-41af-872b-cfbbd5140984";
const KID: &str = "T2SGCCyRTJ82ofF2Mcp-lbkJv2M";
const ALICE: &str = "6f1c0b0e-1111-4a1a-9a1a-00000000a11c";

/// The fake Teams: each posted card's `(request_id, binding)`, in order.
#[derive(Default)]
struct Fake {
    base: Mutex<String>,
    jwks: Mutex<Value>,
    cards: Mutex<Vec<(String, String)>>,
    posts: AtomicU64,
}

async fn token() -> &'static str {
    r#"{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":"eyJhbGciOiJIUzI1Ni..."}"#
}

async fn send(State(fake): State<Arc<Fake>>, body: String) -> String {
    let activity: Value = serde_json::from_str(&body).unwrap_or_default();
    let data = &activity["attachments"][0]["content"]["actions"][0]["data"];
    if let (Some(id), Some(binding)) = (data["request_id"].as_str(), data["binding"].as_str()) {
        fake.cards
            .lock()
            .unwrap()
            .push((id.to_owned(), binding.to_owned()));
    }
    let n = fake.posts.fetch_add(1, Ordering::Relaxed);
    json!({"id": format!("1776390{n:06}")}).to_string()
}

async fn update() -> &'static str {
    r#"{"id":"1"}"#
}

async fn metadata(State(fake): State<Arc<Fake>>) -> String {
    let base = fake.base.lock().unwrap().clone();
    json!({"issuer": "https://api.botframework.com",
           "jwks_uri": format!("{base}/v1/.well-known/keys"),
           "id_token_signing_alg_values_supported": ["RS256"]})
    .to_string()
}

async fn keys(State(fake): State<Arc<Fake>>) -> String {
    fake.jwks.lock().unwrap().to_string()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Bench {
    gate: Gate,
    fake: Arc<Fake>,
    key: RsaKeyPair,
    service_url: String,
    host: String,
    calls: AtomicU64,
}

impl Bench {
    async fn new() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/test-rsa-2048.der");
        let key = RsaKeyPair::from_der(&std::fs::read(path).expect("test key")).expect("key");
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = key.public().into();
        let fake = Arc::new(Fake::default());
        *fake.jwks.lock().unwrap() = json!({"keys": [{"kty": "RSA", "use": "sig", "kid": KID,
            "n": b64(&public.n), "e": b64(&public.e), "endorsements": ["msteams"]}]});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        *fake.base.lock().unwrap() = base.clone();
        let app = axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/amer/v3/conversations/{id}/activities", post(send))
            .route(
                "/amer/v3/conversations/{id}/activities/{activity}",
                put(update),
            )
            .route("/v1/.well-known/openidconfiguration", get(metadata))
            .route("/v1/.well-known/keys", get(keys))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let service_url = format!("{base}/amer/");
        let connector =
            Connector::new(BotCredentials::new(APP_ID, "secret", TENANT)).login_url(base.clone());
        let teams = Arc::new(
            TeamsChannel::builder(connector, Target::conversation(&service_url, "a:bench"))
                .connect()
                .await
                .expect("connect"),
        );
        let gate = Gate::builder(Arc::new(MemorySink::new(writer())))
            .approver("teams", teams.clone())
            .policy(
                Policy::new("bench", ["teams"], Duration::from_secs(600))
                    .approvers(["alice"])
                    .max_pending_per_actor(u32::MAX),
            )
            .directory(Directory::new().person("alice", [format!("teams:{ALICE}")]))
            .build()
            .expect("gate");
        let keys = Arc::new(KeyCache::new(format!(
            "{base}/v1/.well-known/openidconfiguration"
        )));
        let auth = InboundAuth::new(APP_ID)
            .allow_tenant(TENANT)
            .service_hosts(["127.0.0.1"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let router = endpoint::router(auth, keys, teams);
        tokio::spawn(approval_listener::Server::new().serve(
            listener,
            router,
            std::future::pending(),
        ));
        Self {
            gate,
            fake,
            key,
            service_url,
            host,
            calls: AtomicU64::new(0),
        }
    }

    /// Starts `n` gated calls and waits until each card is posted; returns
    /// the calls (each yielding when it resumed) and their cards' data.
    async fn pending(&self, n: usize) -> Vec<(tokio::task::JoinHandle<Instant>, (String, String))> {
        let before = self.fake.cards.lock().unwrap().len();
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
            // Any pairing of calls and cards does for throughput; latency
            // runs one call at a time.
            let posted = {
                let cards = self.fake.cards.lock().unwrap();
                (cards.len() >= before + n).then(|| cards[before..before + n].to_vec())
            };
            if let Some(cards) = posted {
                return calls.into_iter().zip(cards).collect();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A Bot Connector token (TEAMS.md §5), signed now.
    fn token(&self) -> String {
        let now = SystemClock
            .now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let header = json!({"alg": "RS256", "kid": KID, "typ": "JWT", "x5t": KID});
        let claims = json!({"serviceurl": self.service_url, "nbf": now - 10, "exp": now + 3590,
                            "iss": "https://api.botframework.com", "aud": APP_ID});
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .expect("sign");
        format!("{signed}.{}", b64(&signature))
    }

    /// An Approve click on the card with `data`, as Teams sends it
    /// (TEAMS.md §4.1), and its token; as request bytes.
    fn invoke(&self, n: u64, (request_id, binding): &(String, String), token: &str) -> Vec<u8> {
        let activity = json!({
            "type": "invoke", "name": "adaptiveCard/action", "channelId": "msteams",
            "id": format!("f:bench-{n}"), "serviceUrl": self.service_url,
            "channelData": {"tenant": {"id": TENANT}, "source": {"name": "message"}},
            "from": {"id": "29:1uMVvhoAy", "name": "Alice", "aadObjectId": ALICE},
            "recipient": {"id": format!("28:{APP_ID}"), "name": "approvals"},
            "conversation": {"id": "a:bench", "conversationType": "personal", "tenantId": TENANT},
            "value": {"action": {"type": "Action.Execute", "title": "Approve", "verb": "approve",
                                 "data": {"request_id": request_id, "binding": binding, "comment": ""}},
                      "trigger": "manual"},
            "replyToId": "1767765488332", "locale": "en-US"
        });
        let headers = [
            "Content-Type: application/json".to_owned(),
            format!("Authorization: Bearer {token}"),
        ];
        loopback::post(&self.host, endpoint::PATH, &headers, &activity.to_string())
    }
}

fn writer() -> Arc<ChainWriter> {
    let secret = WriterSecret::from_hex(&"42".repeat(32)).expect("hex");
    Arc::new(ChainWriter::new(KeyId::new("bench").expect("id"), &secret))
}

/// RS256 verification of `tokens` alone: the floor.
fn verify_all(tokens: &[&String], key: &RsaKeyPair) -> Duration {
    let public: ring::rsa::PublicKeyComponents<Vec<u8>> = key.public().into();
    let started = Instant::now();
    for token in tokens {
        let (signed, signature) = token.rsplit_once('.').expect("token");
        let signature = URL_SAFE_NO_PAD.decode(signature).expect("b64");
        let key = ring::signature::RsaPublicKeyComponents {
            n: &public.n,
            e: &public.e,
        };
        key.verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
            .expect("valid");
    }
    started.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let bench = Bench::new().await;
        rounds(&bench, 5_000, 1_000).await;
    });
}

async fn rounds(bench: &Bench, n: usize, samples: usize) {
    println!(
        "| round | invokes/s (64 in flight) | floor: RS256 verify of the same tokens | ratio | p50 arrival→resume | p99 | max |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut sequence = 0;
    // Round 0 warms up (and fetches the keys) and is not reported.
    for round in 0..4 {
        let pending = bench.pending(n).await;
        let (calls, cards): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
        let signed: Vec<String> = (0..64).map(|_| bench.token()).collect();
        let tokens: Vec<&String> = signed.iter().cycle().take(n).collect();
        let floor = verify_all(&tokens, &bench.key);
        let requests: Vec<_> = cards
            .iter()
            .zip(tokens)
            .map(|(card, token)| {
                sequence += 1;
                bench.invoke(sequence, card, token)
            })
            .collect();
        let started = Instant::now();
        let statuses = send_raw(&bench.host, requests, 64).await;
        let elapsed = started.elapsed();
        assert!(statuses.iter().all(|s| *s == 200), "all accepted");
        for call in calls {
            call.await.expect("resumed");
        }
        let rate = n as f64 / elapsed.as_secs_f64();
        let floor_rate = n as f64 / floor.as_secs_f64();

        // Latency: one call at a time.
        let mut latencies = Vec::with_capacity(samples);
        let mut connection = Connection::open(&bench.host).await;
        for token in signed.iter().cycle().take(samples) {
            let (call, card) = bench.pending(1).await.pop().expect("one");
            sequence += 1;
            let request = bench.invoke(sequence, &card, token);
            let arrived = Instant::now();
            assert_eq!(connection.send(&request).await, 200);
            latencies.push(call.await.expect("resumed") - arrived);
        }
        latencies.sort_unstable();
        if round > 0 {
            println!(
                "| {round} | {:.0} | {:.0} | {:.2} | {:.0} µs | {:.0} µs | {:.0} µs |",
                rate,
                floor_rate,
                rate / floor_rate,
                percentile(&latencies, 500).as_secs_f64() * 1e6,
                percentile(&latencies, 990).as_secs_f64() * 1e6,
                latencies.last().expect("samples").as_secs_f64() * 1e6,
            );
        }
    }
}
