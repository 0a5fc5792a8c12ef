//! The webhook signature scheme, the same in both directions:
//! `X-Approval-Timestamp: <Unix seconds>` and
//! `X-Approval-Signature: sha256=<lowercase hex of HMAC-SHA256(secret,
//! timestamp + "." + body)>`, where `body` is the exact bytes sent.

use std::fmt;
use std::time::SystemTime;

pub use approval_core::signed::{MAX_SKEW, SignatureError};
use approval_core::signed::{SharedSecret, read_headers};

/// The header holding the signing time, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-approval-timestamp";
/// The header holding `sha256=` and the signature in hex.
pub const SIGNATURE_HEADER: &str = "x-approval-signature";
/// A shared secret for one direction of the webhook. Whoever holds the
/// inbound one can vote as any reviewer the receiver names, so it never
/// appears in `Debug` output or errors.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use approval_webhook::WebhookSecret;
///
/// // The README's worked example (checked with `openssl dgst -sha256 -hmac`).
/// let secret = WebhookSecret::new("whsec_example_do_not_use");
/// let body = br#"{"request_id":"req_01","binding":"9f2c1e0b7a6d5c4b3a29180706f5e4d3c2b1a09f8e7d6c5b4a3928170605f4e3","reviewer":"alice","vote":"approve"}"#;
/// let signature = secret.sign(1_700_000_000, body);
/// assert_eq!(signature, "sha256=4fd7b6afbe6dba9808373662f683bac073d8e1ff073dbcf74c2c810c7f979183");
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
/// assert_eq!(secret.verify(Some("1700000000"), Some(&signature), body, now), Ok(()));
/// assert_eq!(format!("{secret:?}"), "WebhookSecret([REDACTED])");
/// ```
pub struct WebhookSecret(SharedSecret);

impl WebhookSecret {
    /// The secret; its UTF-8 bytes are the HMAC key.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(SharedSecret::new(secret))
    }

    /// The signature header's value for `body` signed at `timestamp`.
    pub fn sign(&self, timestamp: u64, body: &[u8]) -> String {
        let tag = self.0.tag(&[timestamp.to_string().as_bytes(), b".", body]);
        format!("sha256={}", approval_core::hex::encode(&tag))
    }

    /// Checks the two headers' values as received against the raw body, at
    /// time `now`; the signature is compared in constant time.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let (timestamp, claimed) = read_headers(timestamp, signature, "sha256=", now)?;
        self.0
            .matches(&[timestamp.as_bytes(), b".", body], &claimed)
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn refuses_each_way_a_signature_can_be_wrong() {
        let secret = WebhookSecret::new("whsec_example_do_not_use");
        let body = br#"{"request_id":"req_01","vote":"approve"}"#;
        let good = secret.sign(1_700_000_000, body);
        let check = |ts, sig: Option<&str>, body: &[u8], now| secret.verify(ts, sig, body, now);
        assert_eq!(
            check(Some("1700000000"), Some(&good), body, at(1_700_000_300)),
            Ok(())
        );
        assert_eq!(
            check(None, Some(&good), body, at(1_700_000_000)),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            check(Some("1700000000"), None, body, at(1_700_000_000)),
            Err(SignatureError::Missing)
        );
        for ts in ["", "-1", "1e9", " 1700000000", "99999999999999999999999"] {
            assert_eq!(
                check(Some(ts), Some(&good), body, at(1_700_000_000)),
                Err(SignatureError::Malformed),
                "{ts}"
            );
        }
        let upper = good.to_uppercase().replace("SHA256=", "sha256=");
        for sig in ["af57", "v0=af57", &upper, &good[7..]] {
            assert_eq!(
                check(Some("1700000000"), Some(sig), body, at(1_700_000_000)),
                Err(SignatureError::Malformed),
                "{sig}"
            );
        }
        // Five minutes and a second, either way.
        assert_eq!(
            check(Some("1700000000"), Some(&good), body, at(1_700_000_301)),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(Some("1700000000"), Some(&good), body, at(1_699_999_699)),
            Err(SignatureError::Stale)
        );
        // Another time, another body, another secret.
        assert_eq!(
            check(Some("1700000001"), Some(&good), body, at(1_700_000_000)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some("1700000000"), Some(&good), b"{}", at(1_700_000_000)),
            Err(SignatureError::Mismatch)
        );
        let other = WebhookSecret::new("another").sign(1_700_000_000, body);
        assert_eq!(
            check(Some("1700000000"), Some(&other), body, at(1_700_000_000)),
            Err(SignatureError::Mismatch)
        );
    }

    /// A timestamp past what `SystemTime` holds panicked the check before
    /// the signature was looked at (one request, and a `panic = "abort"`
    /// build ends).
    #[test]
    fn a_timestamp_beyond_the_clock_is_stale_not_a_panic() {
        let secret = WebhookSecret::new("whsec_example_do_not_use");
        let sig = format!("sha256={}", "0".repeat(64));
        for ts in [u64::MAX, u64::MAX / 2, 1 << 63, 18_446_744_073_709_551] {
            assert_eq!(
                secret.verify(Some(&ts.to_string()), Some(&sig), b"{}", at(1_700_000_000)),
                Err(SignatureError::Stale),
                "{ts}"
            );
        }
    }

    proptest::proptest! {
        /// Any number in a timestamp header is an answer, never a panic.
        #[test]
        fn any_timestamp_is_answered(ts: u64, now in 0u64..4_000_000_000, sig: [u8; 32]) {
            let secret = WebhookSecret::new("whsec_example_do_not_use");
            let sig = format!("sha256={}", approval_core::hex::encode(&sig));
            let verdict = secret.verify(Some(&ts.to_string()), Some(&sig), b"{}", at(now));
            proptest::prop_assert!(verdict.is_err());
            if ts.abs_diff(now) > 300 {
                proptest::prop_assert_eq!(verdict, Err(SignatureError::Stale));
            }
        }
    }
}
