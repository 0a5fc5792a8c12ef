//! The review console over HTTP: its headers, sign-in into a session
//! cookie, CSRF on votes, sign-out, and the audit status (one verification
//! at a time). (The page in a
//! real browser is the Chromium test's.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use approval_core::{
    ApprovalError, AuditError, AuditSink, Call, CanonicalJson, ChainWriter, Directory, Event, Gate,
    KeyId, Keyring, MemorySink, PendingRecord, Policy, Receipt, WriterSecret,
};
use approval_http::{ApiApprover, ReviewerTokens, api};
use serde_json::{Value, json};

const ALICE: &str = "alice-console-token";

struct Setup {
    gate: Gate,
    sink: Arc<MemorySink>,
    base: String,
    client: reqwest::Client,
}

async fn setup() -> Setup {
    let secret = WriterSecret::generate().unwrap();
    let key_id = KeyId::new("k").unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        key_id.clone(),
        &secret,
    ))));
    let keyring = Keyring::new().with(key_id, secret.record_key());
    let tokens = ReviewerTokens::new()
        .reviewer("alice", &ReviewerTokens::hash(ALICE))
        .unwrap();
    let approver = Arc::new(ApiApprover::new(tokens).audit(sink.clone(), keyring));
    let gate = Gate::builder(sink.clone())
        .approver("api", approver.clone())
        .policy(Policy::new("data-export", ["api"], Duration::from_secs(60)).approvers(["alice"]))
        .directory(Directory::new().person("alice", ["api:alice"]))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/approval", listener.local_addr().unwrap());
    let app = axum::Router::new().nest("/approval", api::router(approver));
    tokio::spawn(approval_listener::Server::new().serve(listener, app, std::future::pending()));
    Setup {
        gate,
        sink,
        base,
        client: reqwest::Client::new(),
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

impl Setup {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}/{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    fn start(&self) -> tokio::task::JoinHandle<Result<String, ApprovalError>> {
        let gate = self.gate.clone();
        let call = Call::new(
            "crm::export_table",
            "data-export",
            CanonicalJson::from_serialize(&json!({"table": "users"})).unwrap(),
        );
        tokio::spawn(async move { gate.approve(call).await.map(|a| a.request().id.clone()) })
    }
}

#[tokio::test]
async fn the_page_loads_only_its_own_script_and_style() {
    let s = setup().await;
    let page = s.send(reqwest::Method::GET, "console", &[], None).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    let csp = page.header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    // No inline script, no inline handlers, no secrets in the page.
    let scripts: Vec<&str> = page
        .body
        .match_indices("<script")
        .map(|(i, _)| &page.body[i..])
        .collect();
    assert_eq!(scripts.len(), 1);
    assert!(scripts[0].starts_with(r#"<script src="console.js" defer></script>"#));
    // No inline event handler attribute (` on<name>=`).
    let handlers = page.body.match_indices(" on").filter(|(i, _)| {
        let rest = &page.body[i + 3..];
        let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        name > 0 && rest[name..].starts_with('=')
    });
    assert_eq!(handlers.count(), 0, "no inline event handlers");
    let script = s.send(reqwest::Method::GET, "console.js", &[], None).await;
    assert!(script.header("content-type").starts_with("text/javascript"));
    // Agent text only ever goes in as text.
    assert!(!script.body.contains("innerHTML") && !script.body.contains("insertAdjacentHTML"));
    assert!(script.body.contains("textContent"));
    let style = s.send(reqwest::Method::GET, "console.css", &[], None).await;
    assert!(style.header("content-type").starts_with("text/css"));
}

#[tokio::test]
async fn a_session_needs_a_reviewer_token_and_every_vote_its_csrf_token() {
    let s = setup().await;
    let post = reqwest::Method::POST;
    // Not a reviewer's token; not JSON (a form from another site): refused.
    let wrong = s
        .send(
            post.clone(),
            "console/session",
            &[],
            Some(json!({"token": "guess"})),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_empty());
    let form = s
        .client
        .post(format!("{}/console/session", s.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={ALICE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 415);

    let signed_in = s
        .send(
            post.clone(),
            "console/session",
            &[],
            Some(json!({"token": ALICE})),
        )
        .await;
    assert_eq!(signed_in.status, 200);
    let cookie = signed_in.header("set-cookie").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(ALICE), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let csrf = signed_in.json()["csrf"].as_str().unwrap().to_owned();
    assert_eq!(signed_in.json()["reviewer"], "alice");
    // The session reads; it also tells the page its CSRF token again.
    let again = s
        .send(
            reqwest::Method::GET,
            "console/session",
            &[("Cookie", &session)],
            None,
        )
        .await;
    assert_eq!(again.json()["csrf"], csrf.as_str());

    let waiting = s.start();
    let id = loop {
        let list = s
            .send(
                reqwest::Method::GET,
                "requests",
                &[("Cookie", &session)],
                None,
            )
            .await;
        assert_eq!(list.status, 200);
        if let Some(id) = list.json()["requests"][0]["request_id"].as_str() {
            break id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let votes = format!("requests/{id}/votes");
    let approve = json!({"vote": "approve"});
    // The cookie alone cannot vote (a cross-site request could carry it).
    let bare = s
        .send(
            post.clone(),
            &votes,
            &[("Cookie", &session)],
            Some(approve.clone()),
        )
        .await;
    assert_eq!(bare.status, 403);
    let forged = s
        .send(
            post.clone(),
            &votes,
            &[("Cookie", &session), ("X-CSRF-Token", "0000")],
            Some(approve.clone()),
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(
        !String::from_utf8(s.sink.bytes())
            .unwrap()
            .contains("\"reviewed\"")
    );
    assert!(!waiting.is_finished());

    // The audit chain's status, for the signed-in page.
    let status = s
        .send(
            reqwest::Method::GET,
            "console/status",
            &[("Cookie", &session)],
            None,
        )
        .await;
    assert_eq!(status.json()["verified"], true);
    assert_eq!(status.json()["records"], 1);
    assert_eq!(
        s.send(reqwest::Method::GET, "console/status", &[], None)
            .await
            .status,
        401
    );

    let counted = s
        .send(
            post.clone(),
            &votes,
            &[("Cookie", &session), ("X-CSRF-Token", &csrf)],
            Some(approve),
        )
        .await;
    assert_eq!(
        (counted.status, counted.json()["outcome"].as_str()),
        (200, Some("counted"))
    );
    assert_eq!(waiting.await.unwrap().unwrap(), id);

    // Sign out: CSRF needed; then the cookie is dead.
    let out = s
        .send(
            reqwest::Method::DELETE,
            "console/session",
            &[("Cookie", &session)],
            None,
        )
        .await;
    assert_eq!(out.status, 403);
    let out = s
        .send(
            reqwest::Method::DELETE,
            "console/session",
            &[("Cookie", &session), ("X-CSRF-Token", &csrf)],
            None,
        )
        .await;
    assert_eq!(out.status, 200);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let after = s
        .send(
            reqwest::Method::GET,
            "requests",
            &[("Cookie", &session)],
            None,
        )
        .await;
    assert_eq!(after.status, 401);
}

/// A log that takes a while to read back, and counts its readers.
#[derive(Debug)]
struct SlowLog {
    inner: MemorySink,
    reading: AtomicUsize,
    most_at_once: AtomicUsize,
    reads: AtomicUsize,
}

#[async_trait::async_trait]
impl AuditSink for SlowLog {
    async fn append(&self, records: Vec<PendingRecord>) -> Result<Vec<Receipt>, AuditError> {
        self.inner.append(records).await
    }

    fn read_back(&self) -> Result<Box<dyn std::io::Read + Send>, AuditError> {
        let now = self.reading.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        self.reads.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        self.reading.fetch_sub(1, Ordering::SeqCst);
        self.inner.read_back()
    }

    fn chain_writer(&self) -> &Arc<ChainWriter> {
        self.inner.chain_writer()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_status_runs_one_verification_however_many_ask() {
    let secret = WriterSecret::generate().unwrap();
    let key_id = KeyId::new("k").unwrap();
    let log = Arc::new(SlowLog {
        inner: MemorySink::new(Arc::new(ChainWriter::new(key_id.clone(), &secret))),
        reading: AtomicUsize::new(0),
        most_at_once: AtomicUsize::new(0),
        reads: AtomicUsize::new(0),
    });
    log.append_event(Event::Cancelled {
        request_id: "r1".into(),
        why: "test".into(),
    })
    .await
    .unwrap();
    let tokens = ReviewerTokens::new()
        .reviewer("alice", &ReviewerTokens::hash(ALICE))
        .unwrap();
    let keyring = Keyring::new().with(key_id, secret.record_key());
    let approver = Arc::new(ApiApprover::new(tokens).audit(log.clone(), keyring));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/console/status", listener.local_addr().unwrap());
    tokio::spawn(approval_listener::Server::new().serve(
        listener,
        api::router(approver),
        std::future::pending(),
    ));
    let ask = |timeout: Duration| {
        let url = url.clone();
        async move {
            let client = reqwest::Client::builder().timeout(timeout).build().unwrap();
            client.get(url).bearer_auth(ALICE).send().await
        }
    };

    // Callers that give up while the log is read start no second reading.
    let impatient: Vec<_> = (0..4)
        .map(|_| tokio::spawn(ask(Duration::from_millis(50))))
        .collect();
    for caller in impatient {
        assert!(caller.await.unwrap().is_err(), "gave up before the answer");
    }
    let patient: Vec<_> = (0..16)
        .map(|_| tokio::spawn(ask(Duration::from_secs(10))))
        .collect();
    for caller in patient {
        let body = caller.await.unwrap().unwrap().text().await.unwrap();
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (&answer["verified"], &answer["records"]),
            (&json!(true), &json!(1))
        );
    }
    assert_eq!(
        log.most_at_once.load(Ordering::SeqCst),
        1,
        "one reading at a time"
    );
    assert_eq!(
        log.reads.load(Ordering::SeqCst),
        1,
        "twenty askers, one reading"
    );
}
