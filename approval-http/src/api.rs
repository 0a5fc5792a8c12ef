//! The decision API: reviewers read requests and vote over HTTP, each with
//! their own bearer token.

use std::net::SocketAddr;
use std::sync::Arc;

use approval_core::{
    ApprovalError, Ballot, BallotOutcome, Ballots, Clock, GrantTerms, RejectReason, SystemClock,
    Vote,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::board::{ApiApprover, Entry};
use crate::console;
use crate::document::{DecisionDocument, RequestDocument, unix};
use crate::vote::VoteWord;

/// The channel name votes through the API carry.
const CHANNEL: &str = "api";

/// A request as the API shows it: its document, its state, the votes
/// counted through the API, how it ended, and the time left.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestView {
    /// The request.
    #[serde(flatten)]
    pub request: RequestDocument,
    /// `pending` or `settled`.
    pub state: String,
    /// Votes counted through the API, in order.
    pub votes: Vec<VoteView>,
    /// How it ended; `null` while pending.
    pub decision: Option<DecisionDocument>,
    /// Seconds until it expires (0 once settled or past).
    pub seconds_left: u64,
    /// Who may still vote, as the gate says (empty once settled).
    pub may_vote: Vec<String>,
}

/// A vote counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoteView {
    /// `api:<name>`.
    pub reviewer: String,
    /// `approve` or `deny`.
    pub vote: VoteWord,
    /// The reviewer's comment.
    pub comment: Option<String>,
}

/// A list of requests, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestList {
    /// The requests.
    pub requests: Vec<RequestView>,
}

/// Which requests to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// `pending` (the default) or `settled`.
    pub state: Option<String>,
}

/// A vote as a reviewer sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    /// `approve` or `deny`.
    pub vote: VoteWord,
    /// Why; handed back to the agent on a denial.
    #[serde(default)]
    pub comment: Option<String>,
    /// With an approval: grant this call and up to `uses` more like it
    /// within `within_ms` (refused as `grant_refused` beyond the policy's
    /// caps, or where it allows none).
    #[serde(default)]
    pub grant: Option<GrantBody>,
}

/// The grant a reviewer makes with an approval.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// How many more calls like this one it covers.
    pub uses: u32,
    /// For how long after the approval, in milliseconds.
    pub within_ms: u64,
}

/// A grant as the API shows it: the approval that made it, and what is
/// left of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantDocument {
    /// The grant's id: the id of the request whose approval made it.
    pub id: String,
    /// That request.
    pub request: RequestDocument,
    /// How many more calls it covers in all.
    pub uses: u32,
    /// How many it has covered.
    pub used: u32,
    /// When it stops covering any call, in seconds since 1970.
    pub expires_at: u64,
    /// The arguments a covered call must have equal, as recorded.
    #[schema(value_type = Object)]
    pub pinned: serde_json::Value,
    /// Who made it.
    pub reviewers: Vec<String>,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl GrantDocument {
    fn of(grant: &approval_core::GrantView) -> Self {
        Self {
            id: grant.id.clone(),
            request: RequestDocument::of(&grant.request),
            uses: grant.uses,
            used: grant.used,
            expires_at: unix(grant.expires_at),
            pinned: serde_json::from_str(grant.pinned.as_str()).unwrap_or_default(),
            reviewers: grant.reviewers.iter().map(|r| r.id.clone()).collect(),
            revoked: grant.revoked,
        }
    }
}

/// The live grants a reviewer may revoke.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantList {
    /// The grants, oldest first.
    pub grants: Vec<GrantDocument>,
}

/// What became of a vote.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoteAnswer {
    /// `counted`, `absorbed` (the same vote again) or `refused`.
    pub outcome: String,
    /// Why it was refused: `not_eligible`, `self_approval`, `settled`,
    /// `already_voted`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// How the request ended, if this vote settled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionDocument>,
}

/// An error's body: a stable code for programs, words for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, as a code.
    pub code: ErrorCode,
    /// What went wrong, in words.
    pub error: String,
}

/// Why a call to the API failed before any vote was cast (a refused vote
/// answers a [`VoteAnswer`] with its reason instead).
///
/// ```
/// use approval_http::api::ErrorCode;
///
/// assert_eq!(serde_json::to_string(&ErrorCode::NotFound).unwrap(), r#""not_found""#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the body or query is not what the route takes.
    Malformed,
    /// 401: no token, or one no reviewer has.
    Unauthorized,
    /// 403: a console session without its CSRF token.
    Forbidden,
    /// 404: no such request for this reviewer.
    NotFound,
    /// 503: the gate is gone or the audit log could not record: try again.
    Unavailable,
    /// 500: a failure the API does not know (a bug); traced.
    Internal,
}

/// The HTTP status of a refused vote: the requester's own and one that is
/// not theirs to cast are 403, an unknown request 404, a request that has
/// moved on (settled, voted already, shown with another binding) 409.
fn refusal_status(why: RejectReason) -> StatusCode {
    match why {
        RejectReason::UnknownRequest => StatusCode::NOT_FOUND,
        RejectReason::NotEligible
        | RejectReason::SelfApproval
        | RejectReason::WrongRoute
        | RejectReason::BadSignature
        | RejectReason::Replayed => StatusCode::FORBIDDEN,
        RejectReason::Settled | RejectReason::AlreadyVoted | RejectReason::WrongBinding => {
            StatusCode::CONFLICT
        }
        RejectReason::GrantRefused => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::CONFLICT,
    }
}

/// The answer to a vote the gate could not take: 503 when something it
/// needs is down (the log, the shared store, the gate itself), 500 else.
fn cast_failed(error: &ApprovalError) -> Response {
    match error {
        ApprovalError::Audit(_) | ApprovalError::Coordination(_) | ApprovalError::GateClosed => {
            tracing::warn!(%error, "a vote could not be taken; answered 503");
            self::error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the vote could not be recorded now; try again",
            )
        }
        _ => {
            tracing::error!(%error, "a vote failed unexpectedly; answered 500");
            self::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "the vote failed",
            )
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "approval decision API", description = "Read approval requests and vote on them. Every route but this document needs `Authorization: Bearer <reviewer token>`."),
    paths(list_requests, get_request, cast_vote, list_grants, revoke_grant),
    components(schemas(RequestView, RequestList, VoteBody, GrantBody, VoteAnswer, GrantDocument, GrantList, ErrorBody, ErrorCode)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of the API, generated from its handlers and types.
///
/// ```
/// let document: serde_json::Value = serde_json::from_str(&approval_http::api::openapi_json()).unwrap();
/// assert!(document["paths"]["/requests/{id}/votes"]["post"].is_object());
/// ```
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// An axum `Router` serving the decision API for `approver`'s requests:
///
/// - `GET /requests?state=pending|settled`: newest first;
/// - `GET /requests/{id}`;
/// - `POST /requests/{id}/votes` with `{"vote": "approve" | "deny",
///   "comment": …, "grant": {"uses": N, "within_ms": T}}` (`grant` only
///   with an approval, where the policy allows grants);
/// - `GET /grants`: the live grants of requests the reviewer may vote on;
/// - `POST /grants/{id}/revoke`: revokes one (recorded `grant_revoked`);
/// - `GET /openapi.json`: this API's OpenAPI document;
/// - `GET /console`: the review console, a page for reviewers in a
///   browser (with `console.js`, `console.css` and `console/session`,
///   `console/status` beside it).
///
/// Every request or vote route needs `Authorization: Bearer <token>` of a
/// configured reviewer, or the console's session cookie (and, to vote,
/// its CSRF token in `X-CSRF-Token`); 401 otherwise. A reviewer is shown
/// only the requests they may vote on (their policy names them or a group
/// of theirs, they are not the requester, and the policy routes the
/// request to this approver); any other is 404, as if it did not exist,
/// unless [`ApiApprover::show_every_request`] says otherwise. Votes are
/// recorded as `api:<name>`. A vote on a request hidden from the reviewer
/// is 404, as for an unknown id; the requester's own is 403; each refusal
/// gets a `rejected_vote` record with its real reason. A repeated vote
/// counts once.
///
/// ```no_run
/// # async fn serve(approver: std::sync::Arc<approval_http::ApiApprover>) -> std::io::Result<()> {
/// let app = axum::Router::new().nest("/approval", approval_http::api::router(approver));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// // Served with a header read timeout and a connection limit.
/// approval_listener::Server::new()
///     .serve(listener, app, std::future::pending())
///     .await;
/// # Ok(())
/// # }
/// ```
pub fn router(approver: Arc<ApiApprover>) -> Router {
    Router::new()
        .route("/requests", get(list_requests))
        .route("/requests/{id}", get(get_request))
        .route("/requests/{id}/votes", post(cast_vote))
        .route("/grants", get(list_grants))
        .route("/grants/{id}/revoke", post(revoke_grant))
        .route("/openapi.json", get(openapi))
        .route("/console", get(console::page))
        .route("/console.js", get(console::script))
        .route("/console.css", get(console::style))
        .route(
            "/console/session",
            get(console::session)
                .post(console::sign_in)
                .delete(console::sign_out),
        )
        .route("/console/status", get(console::status))
        .layer(axum::middleware::map_response(console::security_headers))
        .with_state(approver)
}

/// Serves [`router`] on `address` until the task is dropped, with the
/// default limits of [`approval_listener::Server`] (header read timeout,
/// request timeout, connection limit): the one-line way to run the API on
/// its own. Fails only if `address` cannot be bound.
///
/// ```no_run
/// # async fn run(approver: std::sync::Arc<approval_http::ApiApprover>) -> std::io::Result<()> {
/// approval_http::api::serve("127.0.0.1:8080".parse().unwrap(), approver).await
/// # }
/// ```
pub async fn serve(address: SocketAddr, approver: Arc<ApiApprover>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    approval_listener::Server::new()
        .serve(listener, router(approver), std::future::pending())
        .await;
    Ok(())
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(body).unwrap_or_default(),
    )
        .into_response()
}

fn error(status: StatusCode, code: ErrorCode, error: &str) -> Response {
    json(
        status,
        &ErrorBody {
            code,
            error: error.into(),
        },
    )
}

/// The reviewer a request comes from: by bearer token, or by the
/// console's session cookie (with its CSRF token for a `change`).
fn reviewer(approver: &ApiApprover, headers: &HeaderMap, change: bool) -> Option<String> {
    approver
        .bearer(headers)
        .map(str::to_owned)
        .or_else(|| approver.sessions.reviewer(headers, change))
}

/// The answer to a request without a reviewer's token.
fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        "a reviewer's bearer token is required",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
    response
}

pub(crate) fn view(entry: Entry, ballots: Option<&Ballots>) -> RequestView {
    let may_vote = ballots
        .and_then(|b| b.status(&entry.request.id))
        .map(|status| status.may_vote)
        .unwrap_or_default();
    let now = unix(SystemClock.now());
    let seconds_left = match entry.decision {
        Some(_) => 0,
        None => unix(entry.request.expires_at).saturating_sub(now),
    };
    RequestView {
        request: RequestDocument::of(&entry.request),
        state: if entry.decision.is_some() {
            "settled"
        } else {
            "pending"
        }
        .into(),
        votes: entry
            .votes
            .into_iter()
            .map(|(reviewer, vote, comment)| VoteView {
                reviewer,
                vote: match vote {
                    Vote::Approve => VoteWord::Approve,
                    _ => VoteWord::Deny,
                },
                comment,
            })
            .collect(),
        decision: entry.decision.as_ref().map(DecisionDocument::of),
        seconds_left,
        may_vote,
    }
}

/// Lists requests.
#[utoipa::path(get, path = "/requests", params(ListQuery), responses(
    (status = 200, description = "The requests, newest first", body = RequestList),
    (status = 400, description = "Unknown state", body = ErrorBody),
    (status = 401, description = "No or unknown token", body = ErrorBody),
))]
async fn list_requests(
    State(approver): State<Arc<ApiApprover>>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(name) = reviewer(&approver, &headers, false) else {
        return unauthorized();
    };
    let entries = match query.state.as_deref() {
        None | Some("pending") => approver.pending(),
        Some("settled") => approver.settled(),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::Malformed,
                "state is pending or settled",
            );
        }
    };
    let identity = format!("{CHANNEL}:{name}");
    let shown = approver.shown_to(&identity);
    let ballots = approver.ballots();
    let requests = entries
        .into_iter()
        .filter(|entry| shown(entry))
        .map(|entry| view(entry, ballots.as_ref()))
        .collect();
    json(StatusCode::OK, &RequestList { requests })
}

/// One request.
#[utoipa::path(get, path = "/requests/{id}", params(("id" = String, Path, description = "The request id")), responses(
    (status = 200, description = "The request", body = RequestView),
    (status = 401, description = "No or unknown token", body = ErrorBody),
    (status = 404, description = "No such request here", body = ErrorBody),
))]
async fn get_request(
    State(approver): State<Arc<ApiApprover>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(name) = reviewer(&approver, &headers, false) else {
        return unauthorized();
    };
    // A request the reviewer may not see is answered as if it did not exist.
    match approver.entry(&id) {
        Some(entry) if approver.shown_to(&format!("{CHANNEL}:{name}"))(&entry) => {
            json(StatusCode::OK, &view(entry, approver.ballots().as_ref()))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such request",
        ),
    }
}

/// Votes on a request.
#[utoipa::path(post, path = "/requests/{id}/votes", params(("id" = String, Path, description = "The request id")), request_body = VoteBody, responses(
    (status = 200, description = "Counted, or the same vote again", body = VoteAnswer),
    (status = 400, description = "Not a vote", body = ErrorBody),
    (status = 401, description = "No or unknown token", body = ErrorBody),
    (status = 403, description = "Not allowed to decide this request (recorded), or a console session without its CSRF token", body = VoteAnswer),
    (status = 404, description = "No such request (recorded)", body = VoteAnswer),
    (status = 409, description = "Settled, or a different vote earlier (recorded)", body = VoteAnswer),
    (status = 422, description = "A grant its policy does not allow (recorded)", body = VoteAnswer),
    (status = 500, description = "An unexpected failure (traced)", body = ErrorBody),
    (status = 503, description = "The gate is gone, or the audit log or shared store could not record it: try again", body = ErrorBody),
))]
async fn cast_vote(
    State(approver): State<Arc<ApiApprover>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(name) = reviewer(&approver, &headers, true) else {
        return no_reviewer(&approver, &headers, true);
    };
    let Ok(body) = serde_json::from_slice::<VoteBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::Malformed,
            "the body is not a vote",
        );
    };
    let Some(ballots) = approver.ballots() else {
        return no_gate();
    };
    let identity = format!("{CHANNEL}:{name}");
    // The binding is the one this request was shown with; an id the board
    // does not hold is still cast, so the gate records the refusal.
    let entry = approver.entry(&id);
    let binding = entry.as_ref().map_or([0; 32], |e| e.request.binding);
    // A request hidden from this reviewer is refused as if unknown, so a
    // vote cannot probe which ids exist (the requester, who knows it, is
    // told it is their own).
    let hidden = entry.is_some_and(|e| !approver.shown_to(&identity)(&e));
    let vote = match body.vote {
        VoteWord::Approve => Vote::Approve,
        VoteWord::Deny => Vote::Deny,
    };
    let mut ballot = Ballot::from_parts(&id, binding, identity, CHANNEL, vote);
    ballot.comment.clone_from(&body.comment);
    if let Some(grant) = &body.grant {
        ballot = ballot.granting(GrantTerms::new(
            grant.uses,
            std::time::Duration::from_millis(grant.within_ms),
        ));
    }
    let answer = |outcome: &str, why: Option<RejectReason>, decision| VoteAnswer {
        outcome: outcome.into(),
        why: why.map(|w| w.as_str().to_owned()),
        decision,
    };
    match ballots.cast(ballot).await {
        Ok(BallotOutcome::Counted { decision }) => {
            let decision = decision.as_ref().map(DecisionDocument::of);
            json(StatusCode::OK, &answer("counted", None, decision))
        }
        // The requester knows the request: told why, as ever.
        Ok(BallotOutcome::Rejected(why)) if hidden && why != RejectReason::SelfApproval => json(
            StatusCode::NOT_FOUND,
            &answer("refused", Some(RejectReason::UnknownRequest), None),
        ),
        Ok(BallotOutcome::Rejected(why)) => {
            json(refusal_status(why), &answer("refused", Some(why), None))
        }
        Ok(_) => json(StatusCode::OK, &answer("absorbed", None, None)),
        Err(e) => cast_failed(&e),
    }
}

/// The answer to a change while the approver is in no gate.
fn no_gate() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        "the approver is in no gate",
    )
}

/// The answer to a call [`reviewer`] found no reviewer for: a console
/// session without its CSRF token (for a `change`) is 403, else 401.
fn no_reviewer(approver: &ApiApprover, headers: &HeaderMap, change: bool) -> Response {
    if change && approver.sessions.reviewer(headers, false).is_some() {
        return error(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "the console's CSRF token is missing or wrong",
        );
    }
    unauthorized()
}

/// Lists the live grants of requests the reviewer may vote on.
#[utoipa::path(get, path = "/grants", responses(
    (status = 200, description = "The live grants, oldest first", body = GrantList),
    (status = 401, description = "No or unknown token", body = ErrorBody),
))]
async fn list_grants(State(approver): State<Arc<ApiApprover>>, headers: HeaderMap) -> Response {
    let Some(name) = reviewer(&approver, &headers, false) else {
        return no_reviewer(&approver, &headers, false);
    };
    let identity = format!("{CHANNEL}:{name}");
    let grants = approver
        .ballots()
        .map(|ballots| {
            ballots
                .grants()
                .iter()
                .filter(|g| ballots.may_vote(&g.request, &identity))
                .map(GrantDocument::of)
                .collect()
        })
        .unwrap_or_default();
    json(StatusCode::OK, &GrantList { grants })
}

/// Revokes a grant.
#[utoipa::path(post, path = "/grants/{id}/revoke", params(("id" = String, Path, description = "The grant's id (its approved request's)")), responses(
    (status = 200, description = "Revoked (or it was already)", body = GrantDocument),
    (status = 401, description = "No or unknown token", body = ErrorBody),
    (status = 403, description = "A console session without its CSRF token", body = ErrorBody),
    (status = 404, description = "No live grant this reviewer may revoke", body = ErrorBody),
    (status = 503, description = "The gate is gone, or the audit log could not record it: try again", body = ErrorBody),
))]
async fn revoke_grant(
    State(approver): State<Arc<ApiApprover>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(name) = reviewer(&approver, &headers, true) else {
        return no_reviewer(&approver, &headers, true);
    };
    let Some(ballots) = approver.ballots() else {
        return no_gate();
    };
    let identity = format!("{CHANNEL}:{name}");
    match ballots.revoke_grant(&id, &identity, CHANNEL).await {
        Ok(grant) => json(StatusCode::OK, &GrantDocument::of(&grant)),
        // One that is not theirs is answered as if it did not exist.
        Err(ApprovalError::UnknownGrant { .. } | ApprovalError::RevokeRefused { .. }) => {
            error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such grant")
        }
        Err(e) => cast_failed(&e),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
