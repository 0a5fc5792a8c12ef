//! The endpoint for Slack's interactivity Request URL (SLACK.md §3): every
//! request's signature is checked on the raw bytes first; a click becomes a
//! ballot the gate checks and records before Slack hears back.

use std::sync::Arc;

use approval_core::{Clock, SystemClock};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use crate::SlackApprover;
use crate::interaction::{Reply, handle};
use crate::signature::SigningSecret;

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
///   before the 200. A refused vote is recorded too, and its clicker is
///   told why in a message only they see.
/// - Deny: opens a modal asking for an optional reason; its submission
///   casts the deny with that reason (a refusal shows in the modal).
/// - If the audit log cannot record the vote: 503, and Slack's user sees
///   an error.
///
/// ```no_run
/// # async fn serve(approver: std::sync::Arc<approval_slack::SlackApprover>) -> std::io::Result<()> {
/// use approval_slack::{SigningSecret, interactivity};
///
/// let app = interactivity::router(SigningSecret::new("…"), approver);
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
/// // Served with a header read timeout and a connection limit.
/// approval_listener::Server::new()
///     .serve(listener, app, std::future::pending())
///     .await;
/// # Ok(())
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
) -> Response {
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
        return StatusCode::UNAUTHORIZED.into_response();
    }
    // Only now, on verified bytes, is the body decoded.
    let Some(payload) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|fields| fields.into_iter().find(|(k, _)| k == "payload"))
        .and_then(|(_, json)| serde_json::from_str::<Value>(&json).ok())
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match handle(&endpoint.approver, &payload).await {
        Reply::Ack(None) => StatusCode::OK.into_response(),
        Reply::Ack(Some(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
        Reply::Malformed => StatusCode::BAD_REQUEST.into_response(),
        Reply::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
