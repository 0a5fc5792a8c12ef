//! Socket Mode against the fake Slack of `fake/` and a fake Socket Mode
//! server on 127.0.0.1 that speaks SLACK.md §5's frames: `hello`,
//! envelopes, acknowledgements, `disconnect`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use approval_core::{
    ApprovalError, Call, CanonicalJson, ChainWriter, Directory, Gate, KeyId, MemorySink, Policy,
    WriterSecret,
};
use approval_slack::api::{AppToken, BotToken, SlackApi, SlackError};
use approval_slack::socket_mode::{SocketMode, SocketModeError};
use approval_slack::{SlackApprover, SlackChannel};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

mod fake;

use fake::*;

/// SLACK.md §5.3, the first frame.
const HELLO: &str = r#"{"type":"hello","num_connections":1,"debug_info":{"host":"applink-111-222","build_number":10,"approximate_connection_time":18060},"connection_info":{"app_id":"A0APP"}}"#;
/// SLACK.md §5.7.
const REFRESH: &str = r#"{"type":"disconnect","reason":"refresh_requested","debug_info":{"host":"wss-111.slack.com"}}"#;
const LINK_DISABLED: &str =
    r#"{"type":"disconnect","reason":"link_disabled","debug_info":{"host":"wss-111.slack.com"}}"#;
/// SLACK.md §5.4's envelope id.
const ENVELOPE_ID: &str = "dbdd0ef3-1543-4f94-bfb4-133d0e6c1545";

type Socket = WebSocketStream<TcpStream>;

/// The fake Socket Mode server: each connection the client opens comes to
/// the test, with the path and query it asked for.
// The handshake callback's type is tungstenite's.
#[allow(clippy::result_large_err)]
async fn socket_server() -> (String, mpsc::UnboundedReceiver<(String, Socket)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("ws://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let path = Arc::new(Mutex::new(String::new()));
            let seen = path.clone();
            let callback =
                move |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                      response| {
                    *seen.lock().unwrap() = request.uri().to_string();
                    Ok(response)
                };
            if let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await {
                let path = path.lock().unwrap().clone();
                if tx.send((path, socket)).is_err() {
                    eprintln!("fake Slack: the test stopped taking connections");
                }
            }
        }
    });
    (base, rx)
}

/// The next connection, within a few seconds.
async fn next(connections: &mut mpsc::UnboundedReceiver<(String, Socket)>) -> (String, Socket) {
    tokio::time::timeout(Duration::from_secs(5), connections.recv())
        .await
        .expect("the client connected")
        .unwrap()
}

/// The next text frame the client sent, parsed.
async fn read(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame")
            .expect("open")
            .unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn send(socket: &mut Socket, text: &str) {
    socket.send(Message::text(text.to_owned())).await.unwrap();
}

/// SLACK.md §5.4: the payload the HTTP endpoint would have had.
fn envelope(id: &str, payload: &Value) -> String {
    json!({"envelope_id": id, "type": "interactive", "accepts_response_payload": true, "payload": payload})
        .to_string()
}

struct Setup {
    gate: Gate,
    sink: Arc<MemorySink>,
    fake: Arc<Mutex<Fake>>,
    slack: Arc<SlackApprover>,
    connections: mpsc::UnboundedReceiver<(String, Socket)>,
}

async fn setup() -> Setup {
    let (base, fake) = fake_slack();
    let (socket_base, connections) = socket_server().await;
    fake.lock().unwrap().socket = Some(socket_base);
    let slack = Arc::new(
        SlackChannel::connect(
            SlackApi::new(BotToken::new(TOKEN)).base_url(base),
            "C0APPROVALS",
        )
        .await
        .unwrap(),
    );
    let secret = WriterSecret::generate().unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))));
    let gate = Gate::builder(sink.clone())
        .approver("slack", slack.clone())
        .policy(
            Policy::new("data-export", ["slack"], Duration::from_secs(60))
                .approvers(["alice", "bob"]),
        )
        .directory(
            Directory::new()
                .person("alice", ["slack:U0ALICE"])
                .person("bob", ["slack:U0BOB"]),
        )
        .build()
        .unwrap();
    Setup {
        gate,
        sink,
        fake,
        slack,
        connections,
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

    fn count(&self, event: &str) -> usize {
        String::from_utf8(self.sink.bytes())
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
            .count()
    }
}

#[tokio::test]
async fn votes_arrive_over_the_socket_are_acknowledged_once_and_survive_a_refresh() {
    let mut s = setup().await;
    let running = tokio::spawn(SocketMode::new(AppToken::new(APP_TOKEN), s.slack.clone()).run());

    // Opened with the app-level token, as a form POST, at the URL Slack gave.
    let (path, mut first) = next(&mut s.connections).await;
    assert_eq!(path, "/link/?ticket=1234-5678&app_id=A0APP");
    let opened = s.fake.lock().unwrap().seen.clone();
    let open = opened
        .iter()
        .find(|r| r.0 == "/api/apps.connections.open")
        .unwrap();
    assert_eq!(open.1, format!("Bearer {APP_TOKEN}"));
    assert_eq!(open.2, "application/x-www-form-urlencoded");
    send(&mut first, HELLO).await;

    // A click, as an envelope: handled, recorded, then acknowledged.
    let waiting = s.start("users");
    let value = button_value(&s.fake, 0).await;
    send(
        &mut first,
        &envelope(ENVELOPE_ID, &click("U0ALICE", "approve", &value)),
    )
    .await;
    assert_eq!(read(&mut first).await, json!({"envelope_id": ENVELOPE_ID}));
    let id = waiting.await.unwrap().unwrap();
    assert!(value.starts_with(&id));
    assert_eq!(s.count("reviewed"), 1);
    // Delivered again (Slack retries; one envelope may come twice):
    // acknowledged again, handled once.
    send(
        &mut first,
        &envelope(ENVELOPE_ID, &click("U0ALICE", "approve", &value)),
    )
    .await;
    assert_eq!(read(&mut first).await, json!({"envelope_id": ENVELOPE_ID}));
    assert_eq!(s.count("reviewed"), 1);
    assert_eq!(s.count("rejected_vote"), 0);

    // Slack asks for a refresh: a new connection first, and the old one
    // closed only once the new one said hello.
    send(&mut first, REFRESH).await;
    let (_, mut second) = next(&mut s.connections).await;
    send(&mut second, HELLO).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match first.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the old connection was closed");

    // On the new connection: Deny opens the modal, its submission denies.
    let waiting = s.start("admins");
    let value = button_value(&s.fake, 1).await;
    send(
        &mut second,
        &envelope("e-2", &click("U0BOB", "deny", &value)),
    )
    .await;
    assert_eq!(read(&mut second).await, json!({"envelope_id": "e-2"}));
    let modal = nth_call(&s.fake, "views.open", 0).await;
    assert_eq!(modal["view"]["private_metadata"], value.as_str());
    send(
        &mut second,
        &envelope(
            "e-3",
            &deny_submission("U0BOB", &value, Some("Not during freeze")),
        ),
    )
    .await;
    assert_eq!(read(&mut second).await, json!({"envelope_id": "e-3"}));
    let err = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ApprovalError::Denied { comment: Some(c), .. } if c == "Not during freeze"),
        "{err}"
    );
    // A refused modal submission is answered in the ack's payload.
    let waiting = s.start("billing");
    let value = button_value(&s.fake, 2).await;
    send(
        &mut second,
        &envelope("e-4", &deny_submission("U0MALLORY", &value, None)),
    )
    .await;
    let ack = read(&mut second).await;
    assert_eq!(ack["envelope_id"], "e-4");
    assert_eq!(ack["payload"]["response_action"], "errors");
    assert!(!waiting.is_finished());

    // Socket Mode switched off in the app's settings: it stops, and says so.
    send(&mut second, LINK_DISABLED).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(stopped, Err(SocketModeError::LinkDisabled)),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn a_dropped_or_silent_socket_is_replaced_and_a_refused_token_stops_it() {
    let mut s = setup().await;
    // A bot token where the app-level token belongs: refused, and it stops.
    let wrong = SocketMode::new(AppToken::new(TOKEN), s.slack.clone());
    let err = tokio::time::timeout(Duration::from_secs(5), wrong.run())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, SocketModeError::Credentials(SlackError::Api { code, .. }) if code == "not_allowed_token_type"),
        "{err}"
    );
    assert!(!format!("{err:?}").contains("xoxb"), "{err:?}");

    // apps.connections.open's broken twin (no `url`): not connected, tried again.
    s.fake
        .lock()
        .unwrap()
        .script
        .push_back(ok(r#"{"ok":true}"#));
    let mode = SocketMode::new(AppToken::new(APP_TOKEN), s.slack.clone())
        .idle_timeout(Duration::from_millis(1500));
    let running = tokio::spawn(mode.run());
    let (_, mut first) = next(&mut s.connections).await;
    // The refused token's call, the twin's, and this one.
    assert_eq!(
        s.fake.lock().unwrap().bodies("apps.connections.open").len(),
        3
    );
    send(&mut first, HELLO).await;
    // Dropped by the server: a new connection.
    drop(first);
    let (_, mut second) = next(&mut s.connections).await;
    send(&mut second, HELLO).await;
    // Silent past the idle timeout (a half-open socket): replaced too.
    let (_, mut third) = next(&mut s.connections).await;
    send(&mut third, HELLO).await;
    // And the replacement works.
    let waiting = s.start("users");
    let value = button_value(&s.fake, 0).await;
    send(
        &mut third,
        &envelope("e-1", &click("U0ALICE", "approve", &value)),
    )
    .await;
    assert_eq!(read(&mut third).await, json!({"envelope_id": "e-1"}));
    waiting.await.unwrap().unwrap();
    running.abort();
    drop(second);
}
