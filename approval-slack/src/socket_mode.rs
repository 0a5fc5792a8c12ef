//! Socket Mode (SLACK.md §5), for apps that cannot expose a public URL:
//! Slack pushes the same interaction payloads over a WebSocket the app
//! opens with its app-level token.
//!
//! Each envelope is handled as the interactivity endpoint would handle it
//! (the vote checked and recorded first), then acknowledged. Envelope ids
//! already handled are acknowledged again without being handled twice; and
//! the gate itself counts a person's repeated vote once. On `warning` or
//! `refresh_requested` a new connection is opened, and the old one closed
//! only once the new one said `hello`; a dropped or silent socket is
//! replaced with bounded backoff; `link_disabled` stops it with an error.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, connect_async_tls_with_config};

use crate::SlackApprover;
use crate::api::{AppToken, SlackApi, SlackError};
use crate::interaction::{Reply, handle};

/// How many envelope ids are remembered for deduplication.
const SEEN_MAX: usize = 4096;
/// The longest wait between attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a new connection may take to say `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why Socket Mode stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketModeError {
    /// Slack said Socket Mode is switched off for this app
    /// (`link_disabled`): turn it on in the app's settings.
    #[error("Slack disabled Socket Mode for this app (link_disabled)")]
    LinkDisabled,
    /// The app-level token was refused (`invalid_auth`,
    /// `not_allowed_token_type`, `missing_scope`, …): retrying cannot help.
    #[error(transparent)]
    Credentials(SlackError),
}

/// A Socket Mode client that feeds clicks to a [`SlackApprover`].
///
/// ```no_run
/// # async fn run(approver: std::sync::Arc<approval_slack::SlackApprover>) -> Result<(), approval_slack::socket_mode::SocketModeError> {
/// use approval_slack::api::AppToken;
/// use approval_slack::socket_mode::SocketMode;
///
/// // Runs until Slack disables Socket Mode or refuses the token.
/// SocketMode::new(AppToken::new("xapp-…"), approver).run().await
/// # }
/// ```
#[derive(Debug)]
pub struct SocketMode {
    api: SlackApi,
    token: AppToken,
    approver: Arc<SlackApprover>,
    idle: Duration,
}

/// What a connection tells the supervisor.
enum Event {
    Hello(u64),
    /// Slack asked for a new connection (`warning`, `refresh_requested`).
    Refresh(u64),
    /// The connection is gone; `greeted` if it had said `hello`.
    Ended {
        id: u64,
        greeted: bool,
    },
    LinkDisabled,
    Credentials(SlackError),
}

impl SocketMode {
    /// Connects with `token` to the Slack the approver's client talks to.
    pub fn new(token: AppToken, approver: Arc<SlackApprover>) -> Self {
        Self {
            api: approver.channel().api().clone(),
            token,
            approver,
            idle: Duration::from_secs(30),
        }
    }

    /// Replaces a connection that has been silent this long, with no frame
    /// and no ping from Slack (default 30 s): a half-open socket.
    #[must_use]
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Keeps a connection open and handles what arrives on it, until Slack
    /// disables Socket Mode or refuses the token.
    pub async fn run(self) -> Result<(), SocketModeError> {
        let this = Arc::new(self);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (events, mut heard) = mpsc::unbounded_channel();
        let mut next_id = 0u64;
        let mut start = |events: &mpsc::UnboundedSender<Event>| {
            next_id += 1;
            let (close, closed) = oneshot::channel();
            tokio::spawn(connection(
                this.clone(),
                next_id,
                seen.clone(),
                events.clone(),
                closed,
            ));
            (next_id, close)
        };
        let mut current: Option<(u64, oneshot::Sender<()>)> = None;
        let mut pending = Some(start(&events));
        let mut backoff = Duration::from_millis(500);
        while let Some(event) = heard.recv().await {
            match event {
                Event::Hello(id) if pending.as_ref().is_some_and(|p| p.0 == id) => {
                    // The new one is live: the old one may go.
                    if let Some((_, close)) = current.replace(pending.take().expect("checked"))
                        && close.send(()).is_err()
                    {
                        // It has ended already; its `Ended` is on the way.
                        tracing::debug!("the old Socket Mode connection was gone before its close");
                    }
                    backoff = Duration::from_millis(500);
                }
                Event::Hello(_) => {}
                Event::Refresh(id) if current.as_ref().is_some_and(|c| c.0 == id) => {
                    if pending.is_none() {
                        pending = Some(start(&events));
                    }
                }
                Event::Refresh(_) => {}
                Event::Ended { id, greeted } => {
                    if current.as_ref().is_some_and(|c| c.0 == id) {
                        current = None;
                    } else if pending.as_ref().is_some_and(|p| p.0 == id) {
                        pending = None;
                    }
                    if current.is_none() && pending.is_none() {
                        if !greeted {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                        pending = Some(start(&events));
                    }
                }
                Event::LinkDisabled => return Err(SocketModeError::LinkDisabled),
                Event::Credentials(e) => return Err(SocketModeError::Credentials(e)),
            }
        }
        // Unreachable while `events` lives here; ends cleanly regardless.
        Ok(())
    }
}

/// Envelope ids handled recently.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// True if `id` is new (and now remembered).
    fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > SEEN_MAX
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }

    fn forget(&mut self, id: &str) {
        self.ids.remove(id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `apps.connections.open` failed for a reason retrying cannot fix.
fn is_credentials(error: &SlackError) -> bool {
    matches!(error, SlackError::Api { code, .. } if matches!(code.as_str(),
        "not_authed" | "invalid_auth" | "account_inactive" | "token_revoked"
        | "token_expired" | "missing_scope" | "not_allowed_token_type"
        | "forbidden_team" | "missing_args"))
}

/// TLS for `wss://`: rustls on ring with the webpki roots, as reqwest has.
fn tls() -> Option<Connector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(Connector::Rustls(Arc::new(config)))
}

/// One connection: open, read until it ends or is told to close, handle
/// each envelope on its own task and acknowledge it.
async fn connection(
    mode: Arc<SocketMode>,
    id: u64,
    seen: Arc<Mutex<Seen>>,
    events: mpsc::UnboundedSender<Event>,
    mut close: oneshot::Receiver<()>,
) {
    let ended = |greeted| Event::Ended { id, greeted };
    let url = match mode.api.open_connection(&mode.token).await {
        Ok(url) => url,
        Err(e) if is_credentials(&e) => {
            tell(&events, Event::Credentials(e));
            return;
        }
        Err(_) => {
            tell(&events, ended(false));
            return;
        }
    };
    let connected = tokio::time::timeout(
        HELLO_TIMEOUT,
        connect_async_tls_with_config(url.as_str(), None, false, tls()),
    )
    .await;
    let Ok(Ok((socket, _))) = connected else {
        tell(&events, ended(false));
        return;
    };
    let (mut sink, mut stream) = socket.split();
    let (acks, mut to_send) = mpsc::unbounded_channel::<Value>();
    let mut greeted = false;
    loop {
        tokio::select! {
            _ = &mut close => {
                // Acks still queued go out before the close.
                while let Ok(ack) = to_send.try_recv() {
                    if let Err(error) = sink.send(Message::text(ack.to_string())).await {
                        // Slack redelivers it; the next connection acks it again.
                        tracing::warn!(%error, "a Socket Mode acknowledgement was not sent before the close");
                    }
                }
                if let Err(error) = sink.send(Message::Close(None)).await {
                    tracing::warn!(%error, "the Socket Mode close frame was not sent");
                }
                break;
            }
            Some(ack) = to_send.recv() => {
                if sink.send(Message::text(ack.to_string())).await.is_err() {
                    break;
                }
            }
            frame = tokio::time::timeout(
                if greeted { mode.idle } else { HELLO_TIMEOUT },
                stream.next(),
            ) => {
                let text = match frame {
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    // Pings are answered by the library; other frames carry
                    // nothing for us.
                    Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
                    Ok(Some(Ok(_))) => continue,
                };
                let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                match frame["type"].as_str() {
                    Some("hello") => {
                        greeted = true;
                        tell(&events, Event::Hello(id));
                    }
                    Some("disconnect") => match frame["reason"].as_str() {
                        Some("link_disabled") => {
                            tell(&events, Event::LinkDisabled);
                            break;
                        }
                        // Slack will cut this one: close first, then reopen.
                        Some("too_many_websockets") => break,
                        // Reopen first, keep reading until the new one is up.
                        _ => tell(&events, Event::Refresh(id)),
                    },
                    _ => envelope(&mode, &seen, frame, &acks),
                }
            }
        }
    }
    tell(&events, ended(greeted));
}

/// Tells the supervisor what happened; once it has returned (Socket Mode
/// stopped) nobody needs to know.
fn tell(events: &mpsc::UnboundedSender<Event>, event: Event) {
    if events.send(event).is_err() {
        tracing::debug!("a Socket Mode connection event was dropped: the supervisor is gone");
    }
}

/// Queues an acknowledgement for the connection to send; once that has
/// ended, Slack redelivers the envelope and the next connection acks it
/// without handling it again.
fn queue_ack(acks: &mpsc::UnboundedSender<Value>, ack: Value) {
    if acks.send(ack).is_err() {
        tracing::debug!("a Socket Mode acknowledgement was dropped: its connection has ended");
    }
}

/// Handles one envelope on a task of its own (a vote waits on the audit
/// log; reading goes on meanwhile), then queues its acknowledgement.
fn envelope(
    mode: &Arc<SocketMode>,
    seen: &Arc<Mutex<Seen>>,
    frame: Value,
    acks: &mpsc::UnboundedSender<Value>,
) {
    let Some(envelope_id) = frame["envelope_id"].as_str().map(str::to_owned) else {
        return;
    };
    if !lock(seen).insert(&envelope_id) {
        // Handled (or being handled) already: acknowledged, not redone.
        queue_ack(acks, json!({"envelope_id": envelope_id}));
        return;
    }
    let (mode, seen, acks) = (mode.clone(), seen.clone(), acks.clone());
    tokio::spawn(async move {
        let reply = if frame["type"].as_str() == Some("interactive") {
            handle(&mode.approver, &frame["payload"]).await
        } else {
            // Events and slash commands are not this approver's.
            Reply::Ack(None)
        };
        let ack = match reply {
            Reply::Ack(Some(payload)) => json!({"envelope_id": envelope_id, "payload": payload}),
            // Junk is acknowledged too: a redelivery would be as bad.
            Reply::Ack(None) | Reply::Malformed => json!({"envelope_id": envelope_id}),
            // Not recorded: no ack, so a redelivery is handled afresh.
            Reply::Unavailable => {
                lock(&seen).forget(&envelope_id);
                return;
            }
        };
        queue_ack(&acks, ack);
    });
}
