//! Slack's Web API, as the approver uses it (SLACK.md §1): JSON `POST`s
//! with the bot token as a bearer, `ok:false` errors as typed errors naming
//! Slack's code, 429 answered by waiting `Retry-After`, and 5xx or a lost
//! connection retried with bounded backoff.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};
use zeroize::Zeroizing;

/// A bot token (`xoxb-…`). It never appears in `Debug` output or errors.
#[derive(Clone)]
pub struct BotToken(Zeroizing<String>);

impl BotToken {
    /// The token as Slack issued it.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BotToken([REDACTED])")
    }
}

/// An app-level token (`xapp-…`, scope `connections:write`), which opens
/// Socket Mode connections. It never appears in `Debug` output or errors.
#[derive(Clone)]
pub struct AppToken(Zeroizing<String>);

impl AppToken {
    /// The token as Slack issued it.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }
}

impl fmt::Debug for AppToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppToken([REDACTED])")
    }
}

/// Why a Web API call (or setting up the approver) failed. The call that
/// needed it fails closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlackError {
    /// Slack answered `ok:false` with `code` (`channel_not_found`,
    /// `not_in_channel`, `invalid_auth`, …).
    #[error("Slack {method}: {code}{}", needed.as_ref().map(|n| format!(" (needs scope {n})")).unwrap_or_default())]
    Api {
        /// The method called.
        method: &'static str,
        /// Slack's error code.
        code: String,
        /// For `missing_scope`: the scopes the method needs.
        needed: Option<String>,
    },
    /// Still rate limited (HTTP 429) after the retries allowed.
    #[error("Slack {method}: rate limited; retry after {retry_after:?}")]
    RateLimited {
        /// The method called.
        method: &'static str,
        /// What Slack last asked to wait.
        retry_after: Duration,
    },
    /// No usable answer after the retries allowed: connection errors, 5xx,
    /// or another status.
    #[error("Slack {method}: {cause}")]
    Unavailable {
        /// The method called.
        method: &'static str,
        /// The last failure.
        cause: String,
    },
    /// The approver's message store could not be opened.
    #[error("Slack message store: {cause}")]
    MessageStore {
        /// Why.
        cause: String,
    },
    /// An answer that is not what Slack sends (not JSON, no `ok`, no `ts`).
    #[error("Slack {method}: unexpected answer: {cause}")]
    Malformed {
        /// The method called.
        method: &'static str,
        /// What is wrong.
        cause: String,
    },
}

/// Where a posted message lives: what `chat.update` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    /// The channel Slack posted in (a `D…` id when posted to a user).
    pub channel: String,
    /// The message's `ts`, an id string (never a number).
    pub ts: String,
}

impl approval_channel::StoredMessage for PostedMessage {
    fn fields(&self) -> Vec<&str> {
        vec![&self.channel, &self.ts]
    }

    fn from_fields(fields: &[&str]) -> Option<Self> {
        match fields {
            [channel, ts] => Some(Self {
                channel: (*channel).to_owned(),
                ts: (*ts).to_owned(),
            }),
            _ => None,
        }
    }
}

/// Who the token belongs to, from `auth.test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The bot's user id.
    pub user_id: String,
    /// The workspace id.
    pub team_id: String,
}

/// How many attempts a call gets (the first and the retries).
const ATTEMPTS: u32 = 4;
/// The first retry after a 5xx or a lost connection waits this long,
/// doubling.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest `Retry-After` waited for; beyond it the call fails closed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A client of Slack's Web API.
///
/// ```
/// use approval_slack::api::{BotToken, SlackApi};
///
/// let api = SlackApi::new(BotToken::new("xoxb-…"));
/// // Tests point it at a fake Slack on 127.0.0.1.
/// let fake = SlackApi::new(BotToken::new("xoxb-test")).base_url("http://127.0.0.1:8080/api/");
/// ```
#[derive(Debug, Clone)]
pub struct SlackApi {
    base_url: String,
    token: BotToken,
    client: reqwest::Client,
}

impl SlackApi {
    /// A client of `https://slack.com/api/` with `token`.
    pub fn new(token: BotToken) -> Self {
        Self {
            base_url: "https://slack.com/api/".into(),
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Uses another base URL (ending in `/`), such as a fake Slack's.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Checks the token (`auth.test`): call it at start-up, so wrong
    /// credentials fail loudly before any request needs them.
    pub async fn auth_test(&self) -> Result<Identity, SlackError> {
        let answer = self.call("auth.test", &json!({})).await?;
        Ok(Identity {
            user_id: string(&answer, "user_id", "auth.test")?,
            team_id: string(&answer, "team_id", "auth.test")?,
        })
    }

    /// Posts a message (`chat.postMessage`) with `text` (for notifications)
    /// and `blocks`; links are not unfurled.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<PostedMessage, SlackError> {
        let body = json!({"channel": channel, "text": text, "blocks": blocks,
                          "unfurl_links": false, "unfurl_media": false});
        let answer = self.call("chat.postMessage", &body).await?;
        Ok(PostedMessage {
            channel: string(&answer, "channel", "chat.postMessage")?,
            ts: string(&answer, "ts", "chat.postMessage")?,
        })
    }

    /// Replaces a posted message (`chat.update`).
    pub async fn update_message(
        &self,
        message: &PostedMessage,
        text: &str,
        blocks: &Value,
    ) -> Result<(), SlackError> {
        let body =
            json!({"channel": message.channel, "ts": message.ts, "text": text, "blocks": blocks});
        self.call("chat.update", &body).await.map(drop)
    }

    /// Tells one user something only they see (`chat.postEphemeral`).
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        let body = json!({"channel": channel, "user": user, "text": text});
        self.call("chat.postEphemeral", &body).await.map(drop)
    }

    /// Opens a Socket Mode connection (`apps.connections.open`, a form
    /// `POST` with the app-level token as bearer): the WebSocket URL to
    /// connect to, good for one connection.
    pub async fn open_connection(&self, token: &AppToken) -> Result<String, SlackError> {
        const METHOD: &str = "apps.connections.open";
        let answer = self
            .send(
                METHOD,
                &token.0,
                "application/x-www-form-urlencoded",
                Vec::new(),
            )
            .await?;
        string(&answer, "url", METHOD)
    }

    /// Calls `method` with a JSON body; returns the answer when `ok`.
    pub async fn call(&self, method: &'static str, body: &Value) -> Result<Value, SlackError> {
        let bytes = serde_json::to_vec(body).map_err(|e| SlackError::Malformed {
            method,
            cause: e.to_string(),
        })?;
        self.send(
            method,
            &self.token.0,
            "application/json; charset=utf-8",
            bytes,
        )
        .await
    }

    /// `POST`s `bytes` to `method`, retrying as the module says.
    async fn send(
        &self,
        method: &'static str,
        token: &str,
        content_type: &'static str,
        bytes: Vec<u8>,
    ) -> Result<Value, SlackError> {
        let url = format!("{}{method}", self.base_url);
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .post(&url)
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes.clone())
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    // reqwest's errors name the URL, never the headers.
                    last = e.without_url().to_string();
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    continue;
                }
            };
            let status = response.status();
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(approval_core::clock::retry_after)
                    .unwrap_or(Duration::from_secs(1));
                if attempt == ATTEMPTS || retry_after > MAX_RETRY_AFTER {
                    return Err(SlackError::RateLimited {
                        method,
                        retry_after,
                    });
                }
                tokio::time::sleep(retry_after).await;
                continue;
            }
            if status.is_server_error() {
                last = format!("HTTP {status}");
                if attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                continue;
            }
            if status != reqwest::StatusCode::OK {
                return Err(SlackError::Unavailable {
                    method,
                    cause: format!("HTTP {status}"),
                });
            }
            let text = response
                .bytes()
                .await
                .map_err(|e| SlackError::Unavailable {
                    method,
                    cause: e.without_url().to_string(),
                })?;
            let answer: Value =
                serde_json::from_slice(&text).map_err(|e| SlackError::Malformed {
                    method,
                    cause: format!("not JSON: {e}"),
                })?;
            match answer.get("ok").and_then(Value::as_bool) {
                Some(true) => return Ok(answer),
                Some(false) => {
                    let code = answer
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown_error")
                        .to_owned();
                    // Transient by Slack's own account: retried.
                    if matches!(code.as_str(), "service_unavailable" | "request_timeout")
                        && attempt < ATTEMPTS
                    {
                        last = code;
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        continue;
                    }
                    return Err(SlackError::Api {
                        method,
                        needed: answer
                            .get("needed")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        code,
                    });
                }
                None => {
                    return Err(SlackError::Malformed {
                        method,
                        cause: "no `ok` member".into(),
                    });
                }
            }
        }
        Err(SlackError::Unavailable {
            method,
            cause: last,
        })
    }
}

fn string(answer: &Value, member: &str, method: &'static str) -> Result<String, SlackError> {
    answer
        .get(member)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| SlackError::Malformed {
            method,
            cause: format!("no `{member}` string"),
        })
}
