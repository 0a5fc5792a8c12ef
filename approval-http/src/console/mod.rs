//! The review console: a page, its script and style (no build step, no
//! inline script), sign-in with a reviewer token into an `HttpOnly`,
//! `SameSite=Strict` session cookie, a CSRF token for every change, and
//! the audit chain's verification status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approval_core::{AuditSink, Keyring, verify};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::ApiApprover;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// The session cookie's name.
pub(crate) const COOKIE: &str = "approval_session";
/// The header a signed-in page sends its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// At most this many live sessions; beyond, the oldest go.
const MAX_SESSIONS: usize = 10_000;

/// Only the page's own script, style and API: nothing inline, nothing
/// from elsewhere, never in a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Debug)]
struct Session {
    reviewer: String,
    csrf: String,
    expires: Instant,
}

/// Signed-in reviewers, by session id.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// How long a verification of the audit chain is shown before the log is
/// read again: every open console asks, and a large log takes a while.
const STATUS_FRESH: Duration = Duration::from_secs(10);

/// Where the console reads the audit chain's status from, and the last
/// status found.
pub(crate) struct Audit {
    sink: Arc<dyn AuditSink>,
    keyring: Arc<Keyring>,
    /// Held while a verification runs, so there is one at a time.
    checked: tokio::sync::Mutex<Option<(Instant, serde_json::Value)>>,
}

impl Audit {
    pub(crate) fn new(sink: Arc<dyn AuditSink>, keyring: Keyring) -> Self {
        Self {
            sink,
            keyring: Arc::new(keyring),
            checked: tokio::sync::Mutex::new(None),
        }
    }

    /// The last status if still fresh, or a new verification's; callers
    /// that ask while one runs wait for it rather than start another.
    async fn status(&self) -> serde_json::Value {
        let mut checked = self.checked.lock().await;
        if let Some((at, status)) = &*checked
            && at.elapsed() < STATUS_FRESH
        {
            return status.clone();
        }
        // Reading the whole log is blocking work.
        let (sink, keyring) = (self.sink.clone(), self.keyring.clone());
        let verified = tokio::task::spawn_blocking(move || {
            let log = sink.read_back().map_err(|e| e.to_string())?;
            verify(log, &keyring).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the verification failed: {e}")));
        let status = match verified {
            Ok(report) => {
                json!({"verified": true, "records": report.records, "head": report.head_hex()})
            }
            Err(error) => {
                tracing::warn!(%error, "the audit chain does not verify");
                json!({"verified": false, "error": error})
            }
        };
        *checked = Some((Instant::now(), status.clone()));
        status
    }
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit { .. }")
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Sessions {
    fn open(&self, reviewer: &str) -> Option<(String, String)> {
        let (id, csrf) = (random_hex()?, random_hex()?);
        let mut sessions = lock(&self.by_id);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                reviewer: reviewer.to_owned(),
                csrf: csrf.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
        Some((id, csrf))
    }

    /// The session the request's cookie names: (session id, reviewer, csrf).
    fn of(&self, headers: &HeaderMap) -> Option<(String, String, String)> {
        let id = cookie(headers)?;
        let sessions = lock(&self.by_id);
        let session = sessions.get(&id).filter(|s| s.expires > Instant::now())?;
        Some((id, session.reviewer.clone(), session.csrf.clone()))
    }

    fn close(&self, id: &str) {
        lock(&self.by_id).remove(id);
    }

    /// The reviewer a cookie's session names; for a change, only with the
    /// session's CSRF token in its header (compared in constant time).
    pub(crate) fn reviewer(&self, headers: &HeaderMap, change: bool) -> Option<String> {
        let (_, reviewer, csrf) = self.of(headers)?;
        if change {
            let sent = headers.get(CSRF_HEADER)?.as_bytes();
            if !bool::from(sent.ct_eq(csrf.as_bytes())) {
                return None;
            }
        }
        Some(reviewer)
    }
}

/// The session id in the request's cookies.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

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
        || crate::api::bearer(&approver, &headers).is_some();
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
