//! The bot's side of Teams (TEAMS.md §1, §2): a client-credentials token
//! from Entra ID (cached, refreshed before it expires), and the Bot
//! Connector REST calls the approver makes, with Teams' retry rules.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

/// The scope a bot token is asked for.
const SCOPE: &str = "https://api.botframework.com/.default";
/// The longest a token is kept, whatever `expires_in` says (Entra's are an
/// hour): the number is the answer's, and `Instant + Duration` panics on
/// overflow.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A token is refreshed this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How many attempts a connector call gets (the first and the retries).
const ATTEMPTS: u32 = 4;
/// The first retry waits this long, doubling.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest `Retry-After` waited for; beyond it the call fails closed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The bot's app registration: its id, its client secret (never in
/// `Debug` output or errors), and the tenant that issues its tokens.
#[derive(Clone)]
pub struct BotCredentials {
    app_id: String,
    secret: Zeroizing<String>,
    tenant: String,
}

impl BotCredentials {
    /// A single-tenant bot's credentials.
    pub fn new(
        app_id: impl Into<String>,
        secret: impl Into<String>,
        tenant: impl Into<String>,
    ) -> Self {
        Self {
            app_id: app_id.into(),
            secret: Zeroizing::new(secret.into()),
            tenant: tenant.into(),
        }
    }

    /// The bot's Microsoft app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }
}

impl fmt::Debug for BotCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotCredentials")
            .field("app_id", &self.app_id)
            .field("secret", &"[REDACTED]")
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// Why a call to Entra ID or the Bot Connector failed. The call that
/// needed it fails closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TeamsError {
    /// Entra ID refused the credentials (`invalid_client`, …).
    #[error("Entra ID refused the bot's credentials: {code}")]
    Token {
        /// Entra's error code.
        code: String,
    },
    /// The connector refused the call (400, 401, 403, 404, 413, 500), with
    /// its error code (`BotNotInConversationRoster`, `ConversationNotFound`, …).
    #[error("Bot Connector answered HTTP {status}: {code}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The connector's error code.
        code: String,
    },
    /// No usable answer after the retries allowed (429, 412, 502–504,
    /// connection errors).
    #[error("Bot Connector unavailable: {cause}")]
    Unavailable {
        /// The last failure.
        cause: String,
    },
    /// An answer that is not what the service sends.
    #[error("unexpected answer: {cause}")]
    Malformed {
        /// What is wrong.
        cause: String,
    },
    /// The card store (`TeamsApproverBuilder::message_store`) cannot be
    /// opened.
    #[error("the card store cannot be opened: {cause}")]
    MessageStore {
        /// Why.
        cause: String,
    },
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

struct CachedToken {
    value: Zeroizing<String>,
    refresh_at: Instant,
}

/// The Bot Connector client: a token from Entra ID, cached, and the REST
/// calls the approver makes.
///
/// ```
/// use approval_teams::connector::{BotCredentials, Connector};
///
/// let credentials = BotCredentials::new("571c643a-…", "secret", "3f3d1cea-…");
/// // Tests point the token endpoint at 127.0.0.1.
/// let connector = Connector::new(credentials).login_url("http://127.0.0.1:8080");
/// ```
pub struct Connector {
    credentials: BotCredentials,
    login_url: String,
    client: reqwest::Client,
    token: Mutex<Option<CachedToken>>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("credentials", &self.credentials)
            .field("login_url", &self.login_url)
            .finish_non_exhaustive()
    }
}

/// Entra's or the connector's error code in an error body.
fn error_code(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    value["error"]["code"]
        .as_str()
        .or(value["error"].as_str())
        .or(value["errorCode"].as_i64().map(|_| "MessageWritesBlocked"))
        .unwrap_or("unknown")
        .to_owned()
}

impl Connector {
    /// A client for the bot with `credentials`, asking
    /// `https://login.microsoftonline.com` for tokens.
    pub fn new(credentials: BotCredentials) -> Self {
        Self {
            credentials,
            login_url: "https://login.microsoftonline.com".into(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            token: Mutex::new(None),
        }
    }

    /// Uses another Entra ID base URL (a fake's).
    #[must_use]
    pub fn login_url(mut self, url: impl Into<String>) -> Self {
        self.login_url = url.into();
        self
    }

    /// The bot's Microsoft app id.
    pub fn app_id(&self) -> &str {
        self.credentials.app_id()
    }

    /// A bot token: the cached one until five minutes before it expires,
    /// then a new one (TEAMS.md §1).
    pub(crate) async fn token(&self) -> Result<Zeroizing<String>, TeamsError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.value.clone());
        }
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.login_url.trim_end_matches('/'),
            self.credentials.tenant
        );
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.credentials.app_id.as_str()),
            ("client_secret", self.credentials.secret.as_str()),
            ("scope", SCOPE),
        ];
        let response = self
            .client
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(
                serde_urlencoded::to_string(form).map_err(|e| TeamsError::Malformed {
                    cause: e.to_string(),
                })?,
            )
            .send()
            .await
            .map_err(|e| TeamsError::Unavailable {
                cause: e.without_url().to_string(),
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| TeamsError::Unavailable {
                cause: e.without_url().to_string(),
            })?;
        if !status.is_success() {
            return Err(TeamsError::Token {
                code: error_code(&body),
            });
        }
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| TeamsError::Malformed {
                cause: format!("token answer: {e}"),
            })?;
        let lifetime = Duration::from_secs(answer.expires_in).min(MAX_TOKEN_LIFETIME);
        let token = CachedToken {
            value: Zeroizing::new(answer.access_token),
            refresh_at: Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN),
        };
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// `method` `service_url` + `path` with `body` and the bot token,
    /// retried as TEAMS.md §2.3 says; returns the answer's JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        service_url: &str,
        path: &str,
        body: &Value,
    ) -> Result<Value, TeamsError> {
        let url = format!("{}{path}", service_url.trim_end_matches('/'));
        let bytes = serde_json::to_vec(body).map_err(|e| TeamsError::Malformed {
            cause: e.to_string(),
        })?;
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let token = self.token().await?;
            let sent = self
                .client
                .request(method.clone(), &url)
                .bearer_auth(token.as_str())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.clone())
                .send()
                .await;
            let wait = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(approval_core::clock::retry_after);
                    let body = response.bytes().await.unwrap_or_default();
                    match status {
                        200..=299 => {
                            return if body.is_empty() {
                                Ok(Value::Null)
                            } else {
                                serde_json::from_slice(&body).map_err(|e| TeamsError::Malformed {
                                    cause: e.to_string(),
                                })
                            };
                        }
                        429 | 412 | 502..=504 => {
                            last = format!("HTTP {status} {}", error_code(&body));
                            match retry_after {
                                Some(wait) if wait > MAX_RETRY_AFTER => {
                                    return Err(TeamsError::Unavailable { cause: last });
                                }
                                Some(wait) => wait,
                                None => backoff,
                            }
                        }
                        _ => {
                            return Err(TeamsError::Refused {
                                status,
                                code: error_code(&body),
                            });
                        }
                    }
                }
                // reqwest's errors name the URL, never the headers.
                Err(e) => {
                    last = e.without_url().to_string();
                    backoff
                }
            };
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                backoff *= 2;
            }
        }
        Err(TeamsError::Unavailable { cause: last })
    }
}
