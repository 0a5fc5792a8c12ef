//! The review console: a page, its script and style (no build step, no
//! inline script), sign-in with a reviewer token into an `HttpOnly`,
//! `SameSite=Strict` session cookie, a CSRF token for every change, and
//! the audit chain's verification status.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::board::ApiApprover;
use crate::session::{COOKIE, SESSION_LIFETIME};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// Only the page's own script, style and API: nothing inline, nothing
/// from elsewhere, never in a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers every console and API answer carries.
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name, value| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::CACHE_CONTROL, "no-store");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    response
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST console/session` with `{"token": …}` (JSON only, so a form on
/// another site cannot sign a browser in).
pub(crate) async fn sign_in(
    State(approver): State<Arc<ApiApprover>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return json(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": "send {\"token\": …} as application/json"}),
        );
    }
    let Ok(SignIn { token }) = serde_json::from_slice(&body) else {
        return json(StatusCode::BAD_REQUEST, json!({"error": "not a sign-in"}));
    };
    let Some(reviewer) = approver
        .tokens
        .authenticate(Some(&format!("Bearer {token}")))
        .map(str::to_owned)
    else {
        return json(
            StatusCode::UNAUTHORIZED,
            json!({"error": "not a reviewer's token"}),
        );
    };
    let Some((id, csrf)) = approver.sessions.open(&reviewer) else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "no randomness"}),
        );
    };
    let secure = if approver.plain_http_cookies {
        ""
    } else {
        "; Secure"
    };
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION_LIFETIME.as_secs()
    );
    let mut response = json(StatusCode::OK, json!({"reviewer": reviewer, "csrf": csrf}));
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `GET console/session`: who is signed in, and the CSRF token (readable
/// only by the console's own origin).
pub(crate) async fn session(
    State(approver): State<Arc<ApiApprover>>,
    headers: HeaderMap,
) -> Response {
    match approver.sessions.of(&headers) {
        Some((_, reviewer, csrf)) => {
            json(StatusCode::OK, json!({"reviewer": reviewer, "csrf": csrf}))
        }
        None => json(StatusCode::UNAUTHORIZED, json!({"error": "not signed in"})),
    }
}

/// `DELETE console/session` (with the CSRF token): signs out.
pub(crate) async fn sign_out(
    State(approver): State<Arc<ApiApprover>>,
    headers: HeaderMap,
) -> Response {
    if approver.sessions.reviewer(&headers, true).is_none() {
        return json(
            StatusCode::FORBIDDEN,
            json!({"error": "not signed in, or no CSRF token"}),
        );
    }
    if let Some((id, _, _)) = approver.sessions.of(&headers) {
        approver.sessions.close(&id);
    }
    let mut response = json(StatusCode::OK, json!({"signed_out": true}));
    let clear = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `GET console/status`: whether the audit chain verifies, and its head.
pub(crate) async fn status(
    State(approver): State<Arc<ApiApprover>>,
    headers: HeaderMap,
) -> Response {
    let signed_in = approver.sessions.reviewer(&headers, false).is_some()
        || approver.bearer(&headers).is_some();
    if !signed_in {
        return json(StatusCode::UNAUTHORIZED, json!({"error": "not signed in"}));
    }
    if approver.audit.is_none() {
        return json(
            StatusCode::OK,
            json!({"verified": null, "error": "no audit log configured"}),
        );
    }
    // The status is found by a task of its own: a caller that goes away
    // neither cancels a verification nor lets a second start beside it.
    let finder = approver.clone();
    let found = tokio::spawn(async move {
        match &finder.audit {
            Some(audit) => audit.status().await,
            None => serde_json::Value::Null,
        }
    })
    .await;
    let status = found.unwrap_or_else(
        |e| json!({"verified": false, "error": format!("the verification failed: {e}")}),
    );
    json(StatusCode::OK, status)
}
