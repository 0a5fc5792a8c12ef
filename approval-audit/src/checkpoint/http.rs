//! Publishing checkpoints over HTTP(S), with reqwest (feature
//! `http-publisher`): the one part of the audit chain that needs an HTTP
//! client, kept apart so nothing else carries one.

use std::fmt;
use std::time::Duration;

use super::{Checkpoint, CheckpointPublisher};

/// POSTs each signed checkpoint to a witness or collector URL, as the
/// note's bytes (`Content-Type: text/plain; charset=utf-8`). Any 2xx answer
/// is success; anything else, or no answer within the timeout, is a
/// failure the publishing thread retries with backoff and reports.
///
/// ```
/// use approval_audit::checkpoint::HttpPublisher;
///
/// let witness = HttpPublisher::new("https://witness.example/approvals/checkpoints");
/// ```
pub struct HttpPublisher {
    url: String,
    timeout: Duration,
    /// Made on the publishing thread, on first use: reqwest's blocking
    /// client must not be made or dropped inside an async runtime.
    client: std::sync::OnceLock<reqwest::blocking::Client>,
}

impl fmt::Debug for HttpPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPublisher")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpPublisher {
    /// Publishes to `url`, waiting at most 10 seconds per attempt.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_secs(10),
            client: std::sync::OnceLock::new(),
        }
    }

    /// Waits at most `timeout` per attempt.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl CheckpointPublisher for HttpPublisher {
    fn publish(&self, _: &Checkpoint, signed: &[u8]) -> Result<(), String> {
        let client = match self.client.get() {
            Some(client) => client,
            None => {
                let client = reqwest::blocking::Client::builder()
                    .timeout(self.timeout)
                    .build()
                    .map_err(|e| format!("HTTP client: {e}"))?;
                self.client.get_or_init(|| client)
            }
        };
        let response = client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(signed.to_vec())
            .send()
            // reqwest's errors name the URL, never the body.
            .map_err(|e| format!("POST {}: {e}", self.url))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("POST {}: HTTP {}", self.url, response.status()))
        }
    }
}
