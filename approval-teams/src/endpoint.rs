//! The bot's messaging endpoint (TEAMS.md §4, §5): every request's token is
//! checked before anything in it is acted on; a click on a card becomes a
//! ballot the gate checks and records before Teams hears back, and the
//! answer carries the card as it now stands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approval_core::{ApprovalError, Ballot, BallotOutcome, Clock, RejectReason, SystemClock, Vote};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::{Value, json};

use crate::TeamsApprover;
use crate::approver::card_of;
use crate::auth::{ActivityFacts, AuthError, InboundAuth};
use crate::card::{
    self, APPROVE, APPROVE_GRANT, COMMENT, COMMENT_MAX, DENY, REVOKE_GRANT, refusal_text,
};
use crate::keys::KeyCache;

/// The path Azure Bot's messaging endpoint points at.
pub const PATH: &str = "/api/messages";
/// The invoke a click on an `Action.Execute` sends.
const CARD_ACTION: &str = "adaptiveCard/action";
/// How long an answered invoke is remembered: Teams resends one it did not
/// hear back from within about 15 seconds.
const REMEMBERED_FOR: Duration = Duration::from_secs(600);
/// The most answers remembered at once.
const REMEMBERED_MAX: usize = 8192;

struct Endpoint {
    auth: InboundAuth,
    keys: Arc<KeyCache>,
    approver: Arc<TeamsApprover>,
    answered: Mutex<HashMap<String, (Instant, Answer)>>,
}

/// What to answer an activity with; the body serialized once, so a
/// remembered answer is cheap to give again.
#[derive(Clone, Debug)]
struct Answer {
    status: StatusCode,
    body: Option<Bytes>,
}

/// An invoke response (TEAMS.md §4.1).
#[derive(Serialize)]
struct InvokeResponse<'a, T: Serialize> {
    #[serde(rename = "statusCode")]
    status_code: u16,
    #[serde(rename = "type")]
    kind: &'a str,
    value: T,
}

impl Answer {
    /// An invoke response: HTTP status and `statusCode` agree.
    fn invoke(status: StatusCode, kind: &str, value: impl Serialize) -> Self {
        let response = InvokeResponse {
            status_code: status.as_u16(),
            kind,
            value,
        };
        Self {
            status,
            body: serde_json::to_vec(&response).ok().map(Bytes::from),
        }
    }

    fn card(card: &Value) -> Self {
        Self::invoke(StatusCode::OK, card::CONTENT_TYPE, card)
    }

    fn message(text: impl Into<String>) -> Self {
        Self::invoke(
            StatusCode::OK,
            "application/vnd.microsoft.activity.message",
            text.into(),
        )
    }

    fn error(status: StatusCode, code: &str, message: &str) -> Self {
        Self::invoke(
            status,
            "application/vnd.microsoft.error",
            json!({"code": code, "message": message}),
        )
    }

    fn bad_request(message: &str) -> Self {
        Self::error(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    fn empty(status: StatusCode) -> Self {
        Self { status, body: None }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self.body {
            Some(body) => (
                self.status,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            None => self.status.into_response(),
        }
    }
}

/// An axum `Router` serving [`PATH`] (`POST /api/messages`), the bot's
/// messaging endpoint.
///
/// - The token is checked first, in TEAMS.md §5's order ([`InboundAuth`]):
///   anything wrong gets 401 and nothing else happens. If the signing keys
///   cannot be had at all: 503.
/// - A body that is not an activity, or a card action without the request
///   id, binding or clicker's object id: 400.
/// - A click (`invoke` `adaptiveCard/action`, verb `approve` or `deny`)
///   becomes a ballot from `teams:<aadObjectId>` (lower case), bound to the
///   request id and binding digest the card carries; a deny takes the
///   typed reason (at most 500 characters). The gate records it durably;
///   then the answer (200) carries the card as it now stands (the vote's
///   line, or the outcome), or, for a refused vote, a message saying why.
///   If the vote cannot be recorded: 503. Verb `approve_grant` (on cards
///   whose policy allows grants) approves granting as much as the policy
///   allows; `revoke_grant`, on an approval's outcome card while its
///   grant lives, revokes the grant for the clicker if they may approve
///   under its policy (else a message says why).
/// - Teams resends an invoke it did not hear back from in time: the same
///   activity from the same clicker gets the same answer, and its vote
///   counts once.
/// - A click on the `Action.Submit` fallback (clients without
///   `Action.Execute`) comes as a `message` whose `value` is the card's
///   data with its verb: the same vote, the same checks, answered with an
///   empty 200 (or 400 / 503 as above); the card is updated by a PUT.
/// - Other activities (messages, installs) get 200 and are ignored.
///
/// ```no_run
/// # async fn serve(teams: std::sync::Arc<approval_teams::TeamsApprover>) -> std::io::Result<()> {
/// use std::sync::Arc;
/// use approval_teams::auth::InboundAuth;
/// use approval_teams::endpoint;
/// use approval_teams::keys::KeyCache;
///
/// let auth = InboundAuth::new("571c643a-…").allow_tenant("3f3d1cea-…");
/// let app = endpoint::router(auth, Arc::new(KeyCache::default()), teams);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3978").await?;
/// // Served with a header read timeout and a connection limit.
/// approval_listener::Server::new()
///     .serve(listener, app, std::future::pending())
///     .await;
/// # Ok(())
/// # }
/// ```
pub fn router(auth: InboundAuth, keys: Arc<KeyCache>, approver: Arc<TeamsApprover>) -> Router {
    Router::new()
        .route(PATH, post(receive))
        .with_state(Arc::new(Endpoint {
            auth,
            keys,
            approver,
            answered: Mutex::default(),
        }))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

async fn receive(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap, body: Bytes) -> Answer {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let unauthorized = || Answer {
        status: StatusCode::UNAUTHORIZED,
        body: Some(Bytes::from_static(br#"{"error":"Unauthorized"}"#)),
    };
    // Without a bearer token, the body is not even read.
    if !authorization.is_some_and(|a| a.starts_with("Bearer ")) {
        return unauthorized();
    }
    // The body is unsigned; only its service URL is bound to the token, so
    // it is read as far as the check needs, then checked.
    let Ok(activity) = serde_json::from_slice::<Value>(&body) else {
        return Answer::bad_request("not JSON");
    };
    let (Some(kind), Some(channel_id)) =
        (activity["type"].as_str(), activity["channelId"].as_str())
    else {
        return Answer::bad_request("not an activity");
    };
    let facts = ActivityFacts {
        service_url: activity["serviceUrl"].as_str(),
        channel_id,
        tenant_id: activity["channelData"]["tenant"]["id"]
            .as_str()
            .or(activity["conversation"]["tenantId"].as_str()),
    };
    match endpoint
        .keys
        .check(&endpoint.auth, authorization, &facts, SystemClock.now())
        .await
    {
        Ok(_) => {}
        Err(AuthError::KeysUnavailable { .. }) => {
            return Answer::empty(StatusCode::SERVICE_UNAVAILABLE);
        }
        Err(_) => return unauthorized(),
    }
    match (kind, activity["name"].as_str()) {
        ("invoke", Some(CARD_ACTION)) => card_action(&endpoint, &activity).await,
        // An `Action.Submit` fallback's click (TEAMS.md §4.2): the card's
        // data, with its verb, as the message's `value`. Answered with an
        // empty 200; the card is updated for everyone by a PUT.
        ("message", _) if activity["value"]["verb"].is_string() => {
            let value = &activity["value"];
            let verb = value["verb"].as_str().unwrap_or_default();
            let answer = vote(&endpoint, &activity, verb, value).await;
            Answer::empty(answer.status)
        }
        // botbuilder's answer to an invoke it does not handle.
        ("invoke", _) => Answer::empty(StatusCode::NOT_IMPLEMENTED),
        _ => Answer::empty(StatusCode::OK),
    }
}

/// An Entra object id as the clicker's identity: a GUID's characters only.
fn object_id(activity: &Value) -> Option<String> {
    activity["from"]["aadObjectId"]
        .as_str()
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        })
        .map(str::to_ascii_lowercase)
}

async fn card_action(endpoint: &Endpoint, activity: &Value) -> Answer {
    let action = &activity["value"]["action"];
    let Some(verb) = action["verb"].as_str() else {
        return Answer::bad_request("a card action without a verb or request id");
    };
    vote(endpoint, activity, verb, &action["data"]).await
}

/// The click `verb` with the card's `data` (and its inputs), by the
/// activity's sender: a vote the gate checks and records, or a refresh.
async fn vote(endpoint: &Endpoint, activity: &Value, verb: &str, data: &Value) -> Answer {
    let Some(request_id) = data["request_id"].as_str() else {
        return Answer::bad_request("a card action without a verb or request id");
    };
    let vote = match verb {
        APPROVE | APPROVE_GRANT => Vote::Approve,
        DENY => Vote::Deny,
        REVOKE_GRANT => return revoke(endpoint, activity, request_id).await,
        "refresh" => {
            // Shown only to a clicker who may vote on it; an unknown request
            // and another's are answered alike.
            let card = object_id(activity).and_then(|clicker| {
                endpoint
                    .approver
                    .render_for(request_id, &format!("teams:{clicker}"), card_of)?
            });
            return match card {
                Some(card) => Answer::card(&card),
                None => Answer::message("There is no request here that you may decide."),
            };
        }
        _ => return Answer::bad_request("unknown verb"),
    };
    let (Some(binding), Some(clicker)) = (
        data["binding"]
            .as_str()
            .and_then(approval_core::hex::decode32),
        object_id(activity),
    ) else {
        return Answer::bad_request("a card action without a binding or clicker");
    };
    let identity = format!("teams:{clicker}");
    // A resent invoke: the same clicker's same activity, answered already.
    let key = format!(
        "{}\u{0}{identity}\u{0}{request_id}\u{0}{verb}",
        activity["id"].as_str().unwrap_or_default()
    );
    if let Some((_, answer)) = lock(&endpoint.answered).get(&key) {
        return answer.clone();
    }
    let Some(ballots) = endpoint.approver.ballots() else {
        return Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "not ready",
        );
    };
    let mut ballot = Ballot::from_parts(request_id, binding, identity.clone(), "teams", vote);
    ballot.display = activity["from"]["name"]
        .as_str()
        .map(|n| n.chars().take(100).collect());
    if verb == APPROVE_GRANT {
        // The action offers the policy's caps; the gate reads them.
        ballot = ballot.granting_widest();
    }
    if vote == Vote::Deny {
        ballot.comment = data[COMMENT]
            .as_str()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| c.chars().take(COMMENT_MAX).collect());
    }
    let answer = match ballots.cast(ballot).await {
        Err(_) => {
            // Not recorded: nothing is remembered, so Teams' resend (or the
            // reviewer's next click) tries again.
            return Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the vote could not be recorded; try again",
            );
        }
        Ok(BallotOutcome::Rejected(RejectReason::Settled)) => {
            match endpoint
                .approver
                .render_for(request_id, &identity, card_of)
                .flatten()
            {
                Some(card) => Answer::card(&card),
                None => Answer::message(refusal_text(RejectReason::Settled)),
            }
        }
        Ok(BallotOutcome::Rejected(why)) => Answer::message(refusal_text(why)),
        // Counted: the clicker sees the card as it now stands (their line,
        // or the outcome if this vote settled it) at once; the gate's
        // notice has it put for everyone after this answer.
        Ok(_) => match endpoint.approver.render(request_id, card_of).flatten() {
            Some(card) => Answer::card(&card),
            None => Answer::message("Your vote was recorded."),
        },
    };
    remember(&endpoint.answered, key, answer.clone());
    answer
}

/// A "Revoke grant" click on the card of `request_id`'s approval, by the
/// activity's sender: answered with the card as it now stands, or why not.
async fn revoke(endpoint: &Endpoint, activity: &Value, request_id: &str) -> Answer {
    let Some(clicker) = object_id(activity) else {
        return Answer::bad_request("a card action without a clicker");
    };
    let Some(ballots) = endpoint.approver.ballots() else {
        return Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "not ready",
        );
    };
    match ballots
        .revoke_grant(request_id, &format!("teams:{clicker}"), "teams")
        .await
    {
        Ok(_) => match endpoint.approver.render(request_id, card_of).flatten() {
            Some(card) => Answer::card(&card),
            None => Answer::message("The grant was revoked."),
        },
        Err(ApprovalError::RevokeRefused { why, .. }) => Answer::message(format!(
            "The grant was not revoked: only a reviewer its policy names may revoke it ({}).",
            why.as_str()
        )),
        Err(ApprovalError::UnknownGrant { .. }) => {
            Answer::message("This grant has already ended: spent, expired or revoked.")
        }
        Err(_) => Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the revocation could not be recorded; try again",
        ),
    }
}

/// Keeps `answer` for a resend of the same invoke; forgets old ones.
fn remember(answered: &Mutex<HashMap<String, (Instant, Answer)>>, key: String, answer: Answer) {
    let mut answered = lock(answered);
    if answered.len() >= REMEMBERED_MAX {
        answered.retain(|_, (at, _)| at.elapsed() < REMEMBERED_FOR);
        if answered.len() >= REMEMBERED_MAX {
            // A flood of distinct clicks: the oldest half goes.
            let mut ages: Vec<Instant> = answered.values().map(|(at, _)| *at).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            answered.retain(|_, (at, _)| *at > cutoff);
        }
    }
    answered.insert(key, (Instant::now(), answer));
}
