//! The endpoint for Slack's interactivity Request URL (SLACK.md §3): every
//! request's signature is checked on the raw bytes first; a click becomes a
//! ballot the gate checks and records before Slack hears back.

use std::sync::Arc;

use approval_core::{Ballot, Clock, SystemClock, Vote};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

use crate::SlackApprover;
use crate::message::{APPROVE, DENY};
use crate::signature::SigningSecret;

/// The modal's `callback_id`, and its input's block and action ids.
const DENY_MODAL: &str = "deny_reason";
const REASON_BLOCK: &str = "reason_block";
const REASON_INPUT: &str = "reason_input";

struct Endpoint {
    secret: SigningSecret,
    approver: Arc<SlackApprover>,
}

/// An axum `Router` serving `POST /slack/interactivity` (point the app's
/// interactivity Request URL at it).
///
/// - A request whose signature does not hold (missing, malformed, more
///   than five minutes old, wrong) gets 401 and nothing else happens.
/// - A body that is not a Slack payload gets 400.
/// - Approve: the vote, as `slack:<user id>`, bound to the request id and
///   binding the button carries, is cast; the gate records it durably
///   before the 200.
/// - Deny: opens a modal asking for an optional reason; its submission
///   casts the deny with that reason.
///
/// ```no_run
/// # async fn serve(approver: std::sync::Arc<approval_slack::SlackApprover>) -> std::io::Result<()> {
/// use approval_slack::{SigningSecret, interactivity};
///
/// let app = interactivity::router(SigningSecret::new("…"), approver);
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
pub fn router(secret: SigningSecret, approver: Arc<SlackApprover>) -> Router {
    Router::new()
        .route("/slack/interactivity", post(interact))
        .with_state(Arc::new(Endpoint { secret, approver }))
}

async fn interact(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if endpoint
        .secret
        .verify(
            header("x-slack-request-timestamp"),
            header("x-slack-signature"),
            &body,
            SystemClock.now(),
        )
        .is_err()
    {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    // Only now, on verified bytes, is the body decoded.
    let Some(payload) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|fields| fields.into_iter().find(|(k, _)| k == "payload"))
        .and_then(|(_, json)| serde_json::from_str::<Value>(&json).ok())
    else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    match payload["type"].as_str() {
        Some("block_actions") => block_actions(&endpoint, &payload).await,
        Some("view_submission") => view_submission(&endpoint, &payload).await,
        Some(_) => (StatusCode::OK, String::new()),
        None => (StatusCode::BAD_REQUEST, String::new()),
    }
}

/// `request_id:binding hex` as a button or modal carries it.
fn parse_value(value: &str) -> Option<(String, [u8; 32])> {
    let (id, hex) = value.split_once(':')?;
    if hex.len() != 64 {
        return None;
    }
    let mut binding = [0u8; 32];
    for (i, byte) in binding.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((id.to_owned(), binding))
}

async fn cast(
    endpoint: &Endpoint,
    user: &str,
    value: &str,
    vote: Vote,
    comment: Option<String>,
) -> (StatusCode, String) {
    let (Some((request_id, binding)), Some(ballots)) =
        (parse_value(value), endpoint.approver.ballots())
    else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    let mut ballot =
        Ballot::from_parts(request_id, binding, format!("slack:{user}"), "slack", vote);
    ballot.comment = comment;
    match ballots.cast(ballot).await {
        // Counted, absorbed or refused (and recorded): Slack hears 200.
        Ok(_) => (StatusCode::OK, String::new()),
        // The audit sink could not record it: Slack's user sees an error.
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
    }
}

async fn block_actions(endpoint: &Endpoint, payload: &Value) -> (StatusCode, String) {
    let (Some(user), Some(action)) = (payload["user"]["id"].as_str(), payload["actions"].get(0))
    else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    let value = action["value"].as_str().unwrap_or_default();
    match action["action_id"].as_str() {
        Some(APPROVE) => cast(endpoint, user, value, Vote::Approve, None).await,
        Some(DENY) => {
            let Some(trigger) = payload["trigger_id"].as_str() else {
                return (StatusCode::BAD_REQUEST, String::new());
            };
            let view = deny_modal(value);
            // The trigger lasts three seconds: opened before the ack.
            let _ = endpoint
                .approver
                .api()
                .call("views.open", &json!({"trigger_id": trigger, "view": view}))
                .await;
            (StatusCode::OK, String::new())
        }
        _ => (StatusCode::OK, String::new()),
    }
}

/// The modal that asks a denier for an optional reason.
fn deny_modal(value: &str) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_MODAL,
        "private_metadata": value,
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": REASON_BLOCK, "optional": true,
            "label": {"type": "plain_text", "text": "Reason (the agent gets it back)"},
            "element": {"type": "plain_text_input", "action_id": REASON_INPUT, "multiline": true}
        }]
    })
}

async fn view_submission(endpoint: &Endpoint, payload: &Value) -> (StatusCode, String) {
    let view = &payload["view"];
    if view["callback_id"].as_str() != Some(DENY_MODAL) {
        return (StatusCode::OK, String::new());
    }
    let (Some(user), Some(value)) = (
        payload["user"]["id"].as_str(),
        view["private_metadata"].as_str(),
    ) else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    let reason = view["state"]["values"][REASON_BLOCK][REASON_INPUT]["value"]
        .as_str()
        .filter(|r| !r.trim().is_empty())
        .map(str::to_owned);
    cast(endpoint, user, value, Vote::Deny, reason).await
}
