//! A fake Slack on 127.0.0.1 for the tests: the Web API answering with the
//! payloads of SLACK.md §1, byte for byte, checking what Slack checks
//! (SLACK.md §8: the bearer token and its kind, JSON bodies for chat.* and
//! views.open, messages kept by (channel, ts)); and a driver for signed
//! interactivity requests (SLACK.md §3, §4).

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const TOKEN: &str = "xoxb-1-2-abc";
/// SLACK.md §1.3's app-level token.
pub const APP_TOKEN: &str = "xapp-1-A0APP-123-abc";
/// SLACK.md §4.2's signing secret.
pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// SLACK.md §1.3, chat.postMessage's answer (the fake gives each message a
/// `ts` of its own, the first one this one).
pub const POSTED: &str = r#"{"ok":true,"channel":"C0APPROVALS","ts":"1700000000.000100",
 "message":{"type":"message","subtype":"bot_message","text":"Approval requested: export_table","ts":"1700000000.000100","bot_id":"B0BOT","blocks":[]}}"#;
/// Its broken twin: `ts` as a number, which Slack never sends.
pub const POSTED_NUMERIC_TS: &str = r#"{"ok":true,"channel":"C0APPROVALS","ts":1700000000.000100}"#;
/// SLACK.md §1.3, chat.update's answer.
pub const UPDATED: &str = r#"{"ok":true,"channel":"C0APPROVALS","ts":"1700000000.000100","text":"Approved by <@U0APPROVER>",
 "message":{"text":"Approved by <@U0APPROVER>","user":"U0BOTUSER"}}"#;
/// SLACK.md §1.3, chat.postEphemeral's answer.
pub const EPHEMERAL: &str = r#"{"ok":true,"message_ts":"1502210682.580145"}"#;
/// SLACK.md §1.3, views.open's answer.
pub const VIEW_OPENED: &str = r#"{"ok":true,"view":{"id":"VMHU10V25","team_id":"T8N4K1JN","type":"modal","callback_id":"reject_reason","private_metadata":"req_01",
 "hash":"156772938.1827394","root_view_id":"VMHU10V25","app_id":"AA4928AQ","state":{"values":{}},"blocks":[]}}"#;
/// SLACK.md §1.3, apps.connections.open's answer, escaped slashes and
/// all; the fake puts its own WebSocket address in place of Slack's.
pub const CONNECTION_OPENED: &str =
    r#"{"ok":true,"url":"wss:\/\/wss-primary.slack.com\/link\/?ticket=1234-5678&app_id=A0APP"}"#;
/// SLACK.md §1.2.
pub const MISSING_SCOPE: &str = r#"{"ok":false,"error":"missing_scope","needed":"chat:write","provided":"users:read,channels:read"}"#;
pub const RATELIMITED: &str = r#"{"ok":false,"error":"ratelimited"}"#;
/// auth.test's answer. SLACK.md gives none; these are the members Slack's
/// method reference documents, and the only ones the client reads are
/// `user_id` and `team_id`.
pub const AUTH_TEST: &str = r#"{"ok":true,"url":"https://example.slack.com/","team":"Example","user":"approvals","team_id":"T0TEAM","user_id":"U0BOTUSER","bot_id":"B0BOT"}"#;

/// One canned answer: status, extra headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

#[derive(Default)]
pub struct Fake {
    /// Answers to give, in order, before the usual ones.
    pub script: VecDeque<Answer>,
    /// (path, authorization, content type, body) of each request.
    pub seen: Vec<(String, String, String, String)>,
    /// The WebSocket base (`ws://127.0.0.1:PORT`) apps.connections.open
    /// hands out; none: it answers `internal_error`.
    pub socket: Option<String>,
    /// Messages posted, by (channel, ts).
    messages: HashSet<(String, String)>,
    posts: u64,
}

impl Fake {
    /// The JSON bodies sent to `method`, in order.
    pub fn bodies(&self, method: &str) -> Vec<Value> {
        let path = format!("/api/{method}");
        self.seen
            .iter()
            .filter(|s| s.0 == path)
            .map(|s| serde_json::from_str(&s.3).unwrap_or(Value::Null))
            .collect()
    }
}

pub fn ok(body: &str) -> Answer {
    (200, Vec::new(), body.to_owned())
}

/// Waits until `method` was called more than `n` times; returns the body
/// of call `n`.
pub async fn nth_call(fake: &Arc<Mutex<Fake>>, method: &str, n: usize) -> Value {
    for _ in 0..1000 {
        if let Some(body) = fake.lock().unwrap().bodies(method).get(n) {
            return body.clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{method} not called {} times", n + 1);
}

/// The value the buttons of posted message `n` carry.
pub async fn button_value(fake: &Arc<Mutex<Fake>>, n: usize) -> String {
    let post = nth_call(fake, "chat.postMessage", n).await;
    let actions = post["blocks"].as_array().unwrap().last().unwrap();
    actions["elements"][0]["value"].as_str().unwrap().to_owned()
}

/// Starts the fake; returns the base URL and its state.
pub fn fake_slack() -> (String, Arc<Mutex<Fake>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/api/", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(Fake::default()));
    let shared = state.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let shared = shared.clone();
            std::thread::spawn(move || serve(stream, &shared));
        }
    });
    (base, state)
}

fn serve(stream: std::net::TcpStream, shared: &Mutex<Fake>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
    let (mut length, mut auth, mut kind) = (0, String::new(), String::new());
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(": ").unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().unwrap(),
            "authorization" => auth = value.to_owned(),
            "content-type" => kind = value.to_owned(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body = String::from_utf8(body).unwrap();
    let answer = {
        let mut fake = shared.lock().unwrap();
        fake.seen
            .push((path.clone(), auth.clone(), kind.clone(), body.clone()));
        answer(&mut fake, &path, &auth, &kind, &body)
    };
    let (status, headers, body) = answer;
    let reason = match status {
        200 => "OK",
        429 => "Too Many Requests",
        _ => "Service Unavailable",
    };
    let mut stream = reader.into_inner();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // The client may have gone (a test that stopped waiting): say so.
    if let Err(e) = write!(stream, "{head}\r\n{body}") {
        eprintln!("fake Slack: answering: {e}");
    }
}

/// What Slack checks first (SLACK.md §8), then the script, then the usual
/// answer of each method.
fn answer(fake: &mut Fake, path: &str, auth: &str, kind: &str, body: &str) -> Answer {
    let media = kind.split(';').next().unwrap_or_default().trim();
    let app_method = path == "/api/apps.connections.open";
    let token = if app_method { APP_TOKEN } else { TOKEN };
    if auth.is_empty() {
        return ok(r#"{"ok":false,"error":"not_authed"}"#);
    }
    if app_method && auth == format!("Bearer {TOKEN}") {
        return ok(r#"{"ok":false,"error":"not_allowed_token_type"}"#);
    }
    if auth != format!("Bearer {token}") {
        return ok(r#"{"ok":false,"error":"invalid_auth"}"#);
    }
    let wanted = if app_method {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    if !media.eq_ignore_ascii_case(wanted) {
        return ok(r#"{"ok":false,"error":"invalid_arguments"}"#);
    }
    if let Some(scripted) = fake.script.pop_front() {
        return scripted;
    }
    let json = || serde_json::from_str::<Value>(body).unwrap_or(Value::Null);
    match path {
        "/api/auth.test" => ok(AUTH_TEST),
        "/api/chat.postMessage" => {
            let channel = json()["channel"].as_str().unwrap_or_default().to_owned();
            let ts = format!("1700000000.{:06}", 100 + fake.posts);
            fake.posts += 1;
            fake.messages.insert((channel.clone(), ts.clone()));
            ok(&POSTED
                .replace("1700000000.000100", &ts)
                .replace("C0APPROVALS", &channel))
        }
        "/api/chat.update" => {
            let body = json();
            let key = (
                body["channel"].as_str().unwrap_or_default().to_owned(),
                body["ts"].as_str().unwrap_or_default().to_owned(),
            );
            if fake.messages.contains(&key) {
                ok(UPDATED)
            } else {
                ok(r#"{"ok":false,"error":"message_not_found"}"#)
            }
        }
        "/api/chat.postEphemeral" => ok(EPHEMERAL),
        "/api/views.open" => ok(VIEW_OPENED),
        "/api/apps.connections.open" => match &fake.socket {
            Some(socket) => ok(&CONNECTION_OPENED.replace(
                r"wss:\/\/wss-primary.slack.com",
                &socket.replace('/', r"\/"),
            )),
            None => ok(r#"{"ok":false,"error":"internal_error"}"#),
        },
        _ => ok(r#"{"ok":false,"error":"unknown_method"}"#),
    }
}

/// Serves the interactivity endpoint under test on 127.0.0.1, on the
/// listener production uses; returns its URL.
pub async fn serve_interactivity(slack: Arc<approval_slack::SlackApprover>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/slack/interactivity",
        listener.local_addr().unwrap()
    );
    let router =
        approval_slack::interactivity::router(approval_slack::SigningSecret::new(SECRET), slack);
    tokio::spawn(approval_listener::Server::new().serve(listener, router, std::future::pending()));
    url
}

/// A signed interactivity request, as Slack sends it (SLACK.md §3.1, §4):
/// the payload's JSON with `/` written `\/`, form-encoded, signed at
/// `timestamp`. Returns (body, timestamp header, signature header).
pub fn slack_request(secret: &str, payload: &Value, timestamp: u64) -> (String, String, String) {
    let json = payload.to_string().replace('/', "\\/");
    let body = serde_urlencoded::to_string([("payload", json)]).unwrap();
    let signature = sign(secret, timestamp, &body);
    (body, timestamp.to_string(), signature)
}

/// `v0=` + HMAC-SHA256 of `v0:timestamp:body` (SLACK.md §4.1).
pub fn sign(secret: &str, timestamp: u64, body: &str) -> String {
    use ring::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("v0:{timestamp}:{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

pub fn now() -> u64 {
    use approval_core::Clock;
    approval_core::SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A `block_actions` payload (SLACK.md §3.2) for a click by `user` on
/// `action` of a button carrying `value`.
pub fn click(user: &str, action: &str, value: &str) -> Value {
    serde_json::json!({
        "type": "block_actions", "user": {"id": user, "username": "u", "name": "u", "team_id": "T0TEAM"},
        "api_app_id": "A0APP", "token": "vtok",
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0APPROVALS", "is_ephemeral": false},
        "trigger_id": "123.456.abc", "team": {"id": "T0TEAM", "domain": "example"},
        "channel": {"id": "C0APPROVALS", "name": "approvals"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/x",
        "actions": [{"action_id": action, "block_id": "b", "value": value, "type": "button", "action_ts": "1700000005.123456"}]
    })
}

/// A `view_submission` of the deny modal (SLACK.md §3.3).
pub fn deny_submission(user: &str, value: &str, reason: Option<&str>) -> Value {
    serde_json::json!({
        "type": "view_submission", "team": {"id": "T0TEAM", "domain": "example"},
        "user": {"id": user, "username": "u"}, "api_app_id": "A0APP",
        "view": {"id": "VNHU13V36", "type": "modal", "callback_id": "deny_reason", "private_metadata": value,
                 "state": {"values": {"reason_block": {"reason_input": {"type": "plain_text_input", "value": reason}}}},
                 "hash": "156663117.cd33ad1f", "blocks": []}
    })
}
