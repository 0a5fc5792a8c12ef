//! The endpoint a receiver POSTs later votes to.

use std::sync::Arc;

use approval_core::{BallotOutcome, RejectReason};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::HttpApprover;
use crate::signature::{SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER};
use crate::vote::{CHANNEL, VoteMessage};
use approval_http::DecisionDocument;

/// An axum `Router` serving `POST /votes`, where the receiver sends votes
/// (a [`VoteMessage`] as JSON), signed with the inbound secret. Mount it
/// where the `callback` URL points (`Router::nest`).
///
/// | answer | when | recorded |
/// | --- | --- | --- |
/// | 200 `{"outcome":"counted"}` (with `decision` if it settled) | counted | `reviewed` |
/// | 200 `{"outcome":"absorbed"}` | the same vote again | nothing more |
/// | 400 | not a vote | nothing |
/// | 401 | unsigned, badly signed, older than 5 minutes | nothing: counted in [`Gate::refusal_counts`](approval_core::Gate::refusal_counts) and traced |
/// | 403 `{"why":…}` | reviewer not eligible, or the requester | `rejected_vote` |
/// | 404 | unknown request | `rejected_vote` (`unknown_request`) |
/// | 409 `{"why":…}` | settled, another binding, or a second different vote | `rejected_vote` |
/// | 503 | the audit log cannot record it | nothing: retry |
///
/// ```no_run
/// # async fn serve(approver: std::sync::Arc<approval_webhook::HttpApprover>) -> std::io::Result<()> {
/// let app = axum::Router::new().nest("/approval", approval_webhook::callback::router(approver));
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// // Served with a header read timeout and a connection limit.
/// approval_listener::Server::new()
///     .serve(listener, app, std::future::pending())
///     .await;
/// # Ok(())
/// # }
/// ```
pub fn router(approver: Arc<HttpApprover>) -> Router {
    Router::new()
        .route("/votes", post(vote))
        .with_state(approver)
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn vote(
    State(approver): State<Arc<HttpApprover>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(ballots) = approver.ballots() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(why) = approver.inbound.verify(
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        approver.now(),
    ) {
        // Counted and traced, never recorded: nothing in it is trusted.
        let named = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["request_id"].as_str().map(str::to_owned));
        let reason = match why {
            SignatureError::Stale => RejectReason::Replayed,
            _ => RejectReason::BadSignature,
        };
        ballots.refuse(named.as_deref().unwrap_or(""), CHANNEL, reason);
        return answer(StatusCode::UNAUTHORIZED, json!({"why": why.to_string()}));
    }
    let Some((vote, binding)) = VoteMessage::parse(&body) else {
        return answer(StatusCode::BAD_REQUEST, json!({"why": "not a vote"}));
    };
    match ballots.cast(vote.ballot(binding)).await {
        Ok(BallotOutcome::Counted { decision }) => {
            let mut body = json!({"outcome": "counted"});
            if let Some(decision) = decision {
                body["decision"] =
                    serde_json::to_value(DecisionDocument::of(&decision)).unwrap_or_default();
            }
            answer(StatusCode::OK, body)
        }
        Ok(BallotOutcome::Absorbed) => answer(StatusCode::OK, json!({"outcome": "absorbed"})),
        Ok(BallotOutcome::Rejected(why)) => {
            let status = match why {
                RejectReason::UnknownRequest => StatusCode::NOT_FOUND,
                RejectReason::NotEligible | RejectReason::SelfApproval => StatusCode::FORBIDDEN,
                _ => StatusCode::CONFLICT,
            };
            answer(status, json!({"outcome": "refused", "why": why.as_str()}))
        }
        Ok(_) => answer(StatusCode::OK, json!({"outcome": "counted"})),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
