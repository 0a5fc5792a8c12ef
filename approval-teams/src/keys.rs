//! The Bot Framework's signing keys (TEAMS.md §5, step 4): fetched through
//! the OpenID metadata, cached, refreshed at least daily, and refetched on
//! an unknown `kid` at most once an hour.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use std::sync::Mutex;

use crate::auth::{ActivityFacts, AuthError, Claims, InboundAuth, KeySet};

/// The Bot Framework's OpenID metadata (public cloud).
pub const BOT_FRAMEWORK_METADATA: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";

#[derive(Deserialize)]
struct Metadata {
    jwks_uri: String,
}

struct State {
    keys: Option<Arc<KeySet>>,
    fetched: Option<Instant>,
    refetched_for_unknown: Option<Instant>,
}

/// The signing keys, cached.
///
/// ```
/// use approval_teams::keys::KeyCache;
///
/// // Tests point it at a fake metadata server on 127.0.0.1.
/// let keys = KeyCache::new("http://127.0.0.1:8080/v1/.well-known/openidconfiguration");
/// ```
pub struct KeyCache {
    metadata_url: String,
    client: reqwest::Client,
    refresh_every: Duration,
    unknown_kid_every: Duration,
    /// Read on every request; held only briefly, never across a fetch.
    state: Mutex<State>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("metadata_url", &self.metadata_url)
            .finish_non_exhaustive()
    }
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new(BOT_FRAMEWORK_METADATA)
    }
}

impl KeyCache {
    /// Keys found through the metadata at `metadata_url`.
    pub fn new(metadata_url: impl Into<String>) -> Self {
        Self {
            metadata_url: metadata_url.into(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            refresh_every: Duration::from_secs(24 * 3600),
            unknown_kid_every: Duration::from_secs(3600),
            state: Mutex::new(State {
                keys: None,
                fetched: None,
                refetched_for_unknown: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// How often keys are refetched however they fare (default 24 h), and
    /// how often at most an unknown `kid` may cause a refetch (default
    /// 1 h). For tests.
    #[must_use]
    pub fn intervals(mut self, refresh_every: Duration, unknown_kid_every: Duration) -> Self {
        self.refresh_every = refresh_every;
        self.unknown_kid_every = unknown_kid_every;
        self
    }

    async fn fetch(&self) -> Result<KeySet, AuthError> {
        let unavailable = |e: reqwest::Error| AuthError::KeysUnavailable {
            cause: e.without_url().to_string(),
        };
        let metadata: Metadata = serde_json::from_slice(
            &self
                .client
                .get(&self.metadata_url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(unavailable)?
                .bytes()
                .await
                .map_err(unavailable)?,
        )
        .map_err(|e| AuthError::KeysUnavailable {
            cause: format!("metadata: {e}"),
        })?;
        let keys = self
            .client
            .get(&metadata.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .bytes()
            .await
            .map_err(unavailable)?;
        serde_json::from_slice(&keys).map_err(|e| AuthError::KeysUnavailable {
            cause: format!("keys: {e}"),
        })
    }

    /// The keys held, if they are not due for a refresh.
    fn fresh(&self) -> Option<Arc<KeySet>> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = state
            .fetched
            .is_none_or(|at| at.elapsed() >= self.refresh_every);
        state.keys.clone().filter(|_| !due)
    }

    /// The keys, fetched if there are none or they are due.
    pub async fn keys(&self) -> Result<Arc<KeySet>, AuthError> {
        if let Some(keys) = self.fresh() {
            return Ok(keys);
        }
        let _fetching = self.fetching.lock().await;
        // Another request may have fetched them meanwhile.
        if let Some(keys) = self.fresh() {
            return Ok(keys);
        }
        let fetched = self.fetch().await;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                state.keys = Some(keys.clone());
                state.fetched = Some(Instant::now());
                Ok(keys)
            }
            // Keys already held stay usable while a refresh fails.
            Err(e) => state.keys.clone().ok_or(e),
        }
    }

    /// Refetches after an unknown `kid`, unless that happened within the
    /// last interval: `None` then.
    async fn refetch_for_unknown(&self) -> Result<Option<Arc<KeySet>>, AuthError> {
        let _fetching = self.fetching.lock().await;
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state
                .refetched_for_unknown
                .is_some_and(|at| at.elapsed() < self.unknown_kid_every)
            {
                return Ok(None);
            }
            state.refetched_for_unknown = Some(Instant::now());
        }
        let keys = Arc::new(self.fetch().await?);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.keys = Some(keys.clone());
        state.fetched = Some(Instant::now());
        Ok(Some(keys))
    }

    /// [`InboundAuth::check`] with these keys, refetching them once (at
    /// most hourly) when the token names a key not held.
    pub async fn check(
        &self,
        auth: &InboundAuth,
        authorization: Option<&str>,
        activity: &ActivityFacts<'_>,
        now: SystemTime,
    ) -> Result<Claims, AuthError> {
        let keys = self.keys().await?;
        match auth.check(authorization, activity, &keys, now) {
            Err(AuthError::UnknownKey { kid }) => match self.refetch_for_unknown().await? {
                Some(fresh) => auth.check(authorization, activity, &fresh, now),
                None => Err(AuthError::UnknownKey { kid }),
            },
            checked => checked,
        }
    }
}
