//! The review console in a real browser: headless Chromium driven over
//! WebDriver (Debian packages `chromium` and `chromium-driver`, which
//! `./scripts/test` installs). Sign in, approve one request (confirming
//! its action and arguments), deny another with a comment, and check that
//! agent text full of HTML and script shows as text and runs nothing; and
//! that a request arriving just before a click never takes the place of
//! the one the reviewer aimed at. Screenshots are kept in the test's
//! target directory (`CARGO_TARGET_TMPDIR/console-*.png`).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_core::{
    Actor, ApprovalError, Call, CanonicalJson, ChainWriter, Directory, Gate, KeyId, Keyring,
    MemorySink, Policy, WriterSecret, with_actor,
};
use approval_http::{ApiApprover, ReviewerTokens, api};
use serde_json::{Value, json};

const TOKEN: &str = "alice-browser-token";
/// The W3C WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Agent text an attacker would write.
const REASON: &str = r#"<img src=x onerror="window.__pwned='reason'">quarterly report"#;
const RESOURCE: &str = r#"<iframe src="javascript:window.__pwned='resource'"></iframe>warehouse"#;
const TABLE: &str = r#"<script>window.__pwned='args'</script>users"#;

struct Driver {
    process: Child,
    base: String,
    session: String,
    client: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Err(e) = self.process.kill() {
            eprintln!("chromedriver: {e}");
        }
    }
}

impl Driver {
    /// Starts chromedriver and a headless Chromium session. Fails (never
    /// skips) when they are not installed.
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: install the Debian packages chromium and chromium-driver (./scripts/test does)");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = client.get(format!("{base}/status")).send().await;
            if ready.is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1400"]
            }
        }}});
        let mut driver = Self {
            process,
            base,
            session: String::new(),
            client,
        };
        let created = driver
            .call(reqwest::Method::POST, "/session", Some(capabilities))
            .await;
        driver.session = created["sessionId"].as_str().expect("a session").to_owned();
        driver
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let text = request.send().await.unwrap().text().await.unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert!(
            answer["value"]["error"].is_null(),
            "WebDriver {path}: {answer}"
        );
        answer
            .get("sessionId")
            .map_or(answer["value"].clone(), |_| answer.clone())
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` in the page (WebDriver's own channel, not the page's).
    async fn run(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits until `script` returns something truthy; returns it.
    async fn until(&self, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.run(script).await;
            if !(value.is_null() || value == false || value == 0 || value == "") {
                return value;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "timed out waiting for: {script}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("element {css}: {found}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// A mouse click at a point of the viewport, on whatever is there.
    async fn click_at(&self, (x, y): (i64, i64)) {
        let pointer = json!([{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
        "actions": [
            {"type": "pointerMove", "duration": 0, "origin": "viewport", "x": x, "y": y},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0}
        ]}]);
        self.call(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": pointer})),
        )
        .await;
    }

    /// Confirms the approval the dialog asks about, once its button is live;
    /// returns what the dialog named.
    async fn confirm_approval(&self) -> Value {
        let named = self
            .until(
                "const d = document.getElementById('confirm');
                 return d.open ? {action: document.getElementById('confirm-action').textContent,
                                  args: document.getElementById('confirm-args').textContent,
                                  id: document.getElementById('confirm-id').textContent} : null;",
            )
            .await;
        self.until("return !document.getElementById('confirm-approve').disabled")
            .await;
        self.click("#confirm-approve").await;
        named
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let path =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("console-{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        // Test output, shown with --nocapture: where the artefact went.
        eprintln!("screenshot: {}", path.display());
    }
}

fn export(table: &str) -> Call {
    Call::new(
        "crm::export_table",
        "data-export",
        CanonicalJson::from_serialize(&json!({"table": table, "rows": 5000})).unwrap(),
    )
}

/// A gate whose only route is the console, served on 127.0.0.1, and a
/// browser signed in to it as alice.
struct Console {
    gate: Gate,
    sink: Arc<MemorySink>,
    browser: Driver,
}

impl Console {
    async fn start() -> Self {
        let secret = WriterSecret::generate().unwrap();
        let key_id = KeyId::new("k").unwrap();
        let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
            key_id.clone(),
            &secret,
        ))));
        let tokens = ReviewerTokens::new()
            .reviewer("alice", &ReviewerTokens::hash(TOKEN))
            .unwrap();
        let approver = Arc::new(
            ApiApprover::new(tokens)
                .audit(
                    sink.clone(),
                    Keyring::new().with(key_id, secret.record_key()),
                )
                .plain_http_cookies(),
        );
        let gate = Gate::builder(sink.clone())
            .approver("api", approver.clone())
            .policy(
                Policy::new("data-export", ["api"], Duration::from_secs(120)).approvers(["alice"]),
            )
            .directory(
                Directory::new()
                    .person("alice", ["api:alice"])
                    .person("bob", ["bob@example.com"]),
            )
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let console = format!("http://{}/approval/console", listener.local_addr().unwrap());
        let app = axum::Router::new().nest("/approval", api::router(approver));
        tokio::spawn(approval_listener::Server::new().serve(listener, app, std::future::pending()));

        let browser = Driver::start().await;
        browser.open(&console).await;
        browser
            .until("return !document.getElementById('sign-in').hidden")
            .await;
        browser.type_into("#token", TOKEN).await;
        browser.click("#sign-in-form button").await;
        browser
            .until("return !document.getElementById('app').hidden")
            .await;
        Self {
            gate,
            sink,
            browser,
        }
    }

    /// An agent's export of `table`, for `reason`, waiting for approval.
    fn export(
        &self,
        table: &'static str,
        reason: &'static str,
    ) -> tokio::task::JoinHandle<Result<String, ApprovalError>> {
        let gate = self.gate.clone();
        let actor = Actor::new("report-agent")
            .model("example-model")
            .on_behalf_of("bob@example.com");
        tokio::spawn(with_actor(actor, async move {
            let call = export(table).resource(RESOURCE).reason(reason);
            gate.approve(call).await.map(|a| a.request().id.clone())
        }))
    }

    async fn until_shown(&self, count: usize) {
        self.browser
            .until(&format!(
                "return document.querySelectorAll('#requests .request:not(.settled)').length === {count}"
            ))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_signs_in_approves_one_denies_one_and_agent_text_stays_text() {
    let console = Console::start().await;
    let hostile = console.export(TABLE, REASON);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let plain = console.export("invoices", REASON);
    let browser = &console.browser;
    console.until_shown(2).await;
    browser
        .until("return document.getElementById('audit').textContent.includes('verified')")
        .await;
    browser.screenshot("pending").await;

    // The agent's words are on the page as text, exactly, and ran nothing.
    // Oldest first: the hostile request is on top.
    let shown = browser
        .run(
            "const first = document.querySelector('#requests .request:first-child');
             return {reason: first.querySelector('.reason').textContent,
                     resource: first.querySelector('.resource').textContent,
                     args: first.querySelector('.args').textContent,
                     elements: first.querySelectorAll('.agent-text img, .agent-text iframe, .agent-text script, .agent-text b').length,
                     pwned: window.__pwned === undefined ? null : window.__pwned};",
        )
        .await;
    assert_eq!(shown["reason"], REASON);
    assert_eq!(shown["resource"], RESOURCE);
    assert!(
        shown["args"]
            .as_str()
            .unwrap()
            .contains(&serde_json::to_string(TABLE).unwrap())
    );
    assert_eq!(shown["elements"], 0, "no markup from agent text");
    assert!(
        shown["pwned"].is_null(),
        "agent text ran: {}",
        shown["pwned"]
    );
    // Gate facts stand apart from the agent's words.
    let agent = browser
        .run("return document.querySelector('#requests .request:first-child .agent').textContent")
        .await;
    assert_eq!(agent, "report-agent, model example-model");

    // Approve the hostile one, confirming what it names; deny the plain
    // one with a comment.
    browser
        .click("#requests .request:first-child .approve")
        .await;
    let named = browser.confirm_approval().await;
    assert_eq!(named["action"], "crm::export_table");
    assert!(
        named["args"]
            .as_str()
            .unwrap()
            .contains(&serde_json::to_string(TABLE).unwrap()),
        "{named}"
    );
    let approved = tokio::time::timeout(Duration::from_secs(20), hostile)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(named["id"].as_str().unwrap()),
        approved.as_deref().ok()
    );
    console.until_shown(1).await;
    browser
        .type_into(
            "#requests .request:not(.settled) .comment",
            "not during the freeze",
        )
        .await;
    browser
        .click("#requests .request:not(.settled) .deny")
        .await;
    let denied = tokio::time::timeout(Duration::from_secs(20), plain)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&denied, Err(ApprovalError::Denied { comment: Some(c), reviewer }) if c == "not during the freeze" && reviewer.id == "api:alice"),
        "{denied:?}"
    );

    // The history shows both, with who decided.
    browser.click("#show-history").await;
    let outcomes = browser
        .until(
            "const o = [...document.querySelectorAll('#requests .outcome')].map(e => e.textContent);
             return o.length === 2 ? o : null;",
        )
        .await;
    assert_eq!(
        outcomes,
        json!([
            "Denied by api:alice: not during the freeze",
            "Approved by api:alice"
        ])
    );
    browser.screenshot("history").await;
    let log = String::from_utf8(console.sink.bytes()).unwrap();
    assert_eq!(log.matches(r#""channel":"api""#).count(), 2, "{log}");
    assert!(browser.run("return window.__pwned === undefined").await == true);
    browser.call(reqwest::Method::DELETE, "", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_meant_for_one_request_never_approves_one_that_arrived_just_before() {
    let console = Console::start().await;
    let browser = &console.browser;
    let aimed_at = console.export("invoices", "month end");
    console.until_shown(1).await;
    // Where the reviewer's pointer rests: on the Approve button of the one
    // request shown.
    let target = browser
        .run(
            "const item = document.querySelector('#requests .request');
             item.__first_drawn = true;
             const r = item.querySelector('.approve').getBoundingClientRect();
             return {id: item.dataset.id, x: Math.round(r.x + r.width / 2), y: Math.round(r.y + r.height / 2)};",
        )
        .await;
    // A same-looking request arrives, and the list refreshes, before the
    // click lands.
    let slipped_in = console.export("users", "month end\u{2028}Approved by api:alice");
    console.until_shown(2).await;
    // Its words cannot start a line of their own.
    let reason = browser
        .run("return document.querySelector('#requests .request:last-child .reason').textContent")
        .await;
    assert_eq!(reason, "month end ↵ Approved by api:alice");
    browser
        .click_at((target["x"].as_i64().unwrap(), target["y"].as_i64().unwrap()))
        .await;
    let named = browser.confirm_approval().await;
    assert_eq!(
        named["id"], target["id"],
        "the dialog names the request aimed at"
    );
    let args = named["args"].as_str().unwrap();
    assert!(
        args.contains("\"invoices\"") && !args.contains("users"),
        "{args}"
    );
    let redrawn = browser
        .run("return document.querySelector('#requests .request').__first_drawn !== true")
        .await;
    assert_eq!(redrawn, false, "the list was rebuilt, not updated");

    let approved = tokio::time::timeout(Duration::from_secs(20), aimed_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(approved.as_deref().ok(), target["id"].as_str());
    // The request that slipped in is still waiting, unapproved.
    console.until_shown(1).await;
    assert!(!slipped_in.is_finished());
    let log = String::from_utf8(console.sink.bytes()).unwrap();
    assert_eq!(log.matches(r#""event":"approved""#).count(), 1, "{log}");
    browser.screenshot("slipped-in").await;
    browser.call(reqwest::Method::DELETE, "", None).await;
}
