//! Console sessions: a reviewer signed in with their token gets a random
//! session id (the cookie) and a CSRF token that every change must carry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "approval_session";
/// The header a signed-in page sends its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// At most this many live sessions; beyond, the oldest go.
const MAX_SESSIONS: usize = 10_000;

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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Sessions {
    pub(crate) fn open(&self, reviewer: &str) -> Option<(String, String)> {
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
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<(String, String, String)> {
        let id = cookie(headers)?;
        let sessions = lock(&self.by_id);
        let session = sessions.get(&id).filter(|s| s.expires > Instant::now())?;
        Some((id, session.reviewer.clone(), session.csrf.clone()))
    }

    pub(crate) fn close(&self, id: &str) {
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
