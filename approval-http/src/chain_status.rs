//! The audit chain's verification status, as the console shows it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_core::{AuditSink, Keyring, verify};
use serde_json::json;

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
    pub(crate) async fn status(&self) -> serde_json::Value {
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
