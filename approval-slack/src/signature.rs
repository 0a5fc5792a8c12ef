//! Verifying that a request came from Slack: `X-Slack-Signature` over
//! `v0:<timestamp>:<raw body>` with the app's signing secret (SLACK.md §4).

use std::fmt;
use std::time::SystemTime;

pub use approval_core::signed::{MAX_SKEW, SignatureError};
use approval_core::signed::{SharedSecret, read_headers};

/// The app's signing secret (Basic Information → App Credentials). It can
/// forge any click, so it never appears in `Debug` output or errors.
///
/// ```
/// use approval_slack::SigningSecret;
///
/// let secret = SigningSecret::new("8f742231b10e8888abcd99yyyzzz85a5");
/// assert_eq!(format!("{secret:?}"), "SigningSecret([REDACTED])");
/// ```
pub struct SigningSecret(SharedSecret);

impl SigningSecret {
    /// The secret as Slack shows it (its UTF-8 bytes are the key; it is
    /// not hex-decoded).
    pub fn new(secret: impl Into<String>) -> Self {
        Self(SharedSecret::new(secret))
    }

    /// Checks a request: the two headers' values as received and the raw
    /// body bytes, at time `now`.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use approval_slack::{SignatureError, SigningSecret};
    ///
    /// // Slack's published example.
    /// let secret = SigningSecret::new("8f742231b10e8888abcd99yyyzzz85a5");
    /// let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    /// let now = UNIX_EPOCH + Duration::from_secs(1_531_420_618);
    /// let signature = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    /// assert_eq!(secret.verify(Some("1531420618"), Some(signature), body, now), Ok(()));
    /// assert_eq!(
    ///     secret.verify(Some("1531420619"), Some(signature), body, now),
    ///     Err(SignatureError::Mismatch)
    /// );
    /// ```
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let (timestamp, claimed) = read_headers(timestamp, signature, "v0=", now)?;
        self.0
            .matches(&[b"v0:", timestamp.as_bytes(), b":", body], &claimed)
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

    /// SLACK.md §4.3: a `block_actions` payload as Slack form-encodes it
    /// (with `/` written `\/`), 919 bytes.
    const INTERACTIVITY: &str = "payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U0APPROVER%22%2C%22username%22%3A%22alice%22%2C%22name%22%3A%22alice%22%2C%22team_id%22%3A%22T0TEAM%22%7D%2C%22api_app_id%22%3A%22A0APP%22%2C%22token%22%3A%22vtok%22%2C%22container%22%3A%7B%22type%22%3A%22message%22%2C%22message_ts%22%3A%221700000000.000100%22%2C%22channel_id%22%3A%22C0APPROVALS%22%2C%22is_ephemeral%22%3Afalse%7D%2C%22trigger_id%22%3A%22123.456.abc%22%2C%22team%22%3A%7B%22id%22%3A%22T0TEAM%22%2C%22domain%22%3A%22example%22%7D%2C%22channel%22%3A%7B%22id%22%3A%22C0APPROVALS%22%2C%22name%22%3A%22approvals%22%7D%2C%22response_url%22%3A%22https%3A%5C%2F%5C%2Fhooks.slack.com%5C%2Factions%5C%2FT0TEAM%5C%2F1%5C%2Fx%22%2C%22actions%22%3A%5B%7B%22action_id%22%3A%22approve%22%2C%22block_id%22%3A%22req%3A7f3c%22%2C%22value%22%3A%22req_01%3Aab12%22%2C%22type%22%3A%22button%22%2C%22action_ts%22%3A%221700000005.123456%22%7D%5D%7D";
    const INTERACTIVITY_SIGNATURE: &str =
        "v0=6f997f9daeb99c10253eef53475a787a96b4e99e1907b1cae02562960d220798";

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn the_interactivity_vector_verifies_and_its_broken_twins_do_not() {
        let secret = SigningSecret::new(SECRET);
        assert_eq!(INTERACTIVITY.len(), 919);
        let body = INTERACTIVITY.as_bytes();
        let now = at(1_700_000_000);
        assert_eq!(
            secret.verify(Some("1700000000"), Some(INTERACTIVITY_SIGNATURE), body, now),
            Ok(())
        );
        // The same JSON re-encoded without `\/`: a rebuilt body never verifies.
        let rebuilt = INTERACTIVITY.replace("%5C%2F", "%2F");
        assert_eq!(
            secret.verify(
                Some("1700000000"),
                Some(INTERACTIVITY_SIGNATURE),
                rebuilt.as_bytes(),
                now
            ),
            Err(SignatureError::Mismatch)
        );
        // Its signature is the one SLACK.md gives for the re-encoding.
        assert_eq!(
            secret.verify(
                Some("1700000000"),
                Some("v0=dd242f035c7ffe10fea5aa5ea1f32118aa701defebef4b0e6159ea6a29822ae9"),
                rebuilt.as_bytes(),
                now
            ),
            Ok(())
        );
        // Another second, another signature.
        assert_eq!(
            secret.verify(
                Some("1700000001"),
                Some("v0=d663653ac7cb966c8cb597946770feb364fa61795fd663bd9ee465a13cace9b5"),
                body,
                now
            ),
            Ok(())
        );
        assert_eq!(
            secret.verify(Some("1700000001"), Some(INTERACTIVITY_SIGNATURE), body, now),
            Err(SignatureError::Mismatch)
        );
        // Another secret.
        assert_eq!(
            SigningSecret::new("0".repeat(32)).verify(
                Some("1700000000"),
                Some(INTERACTIVITY_SIGNATURE),
                body,
                now
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn old_future_missing_and_malformed_signatures_are_refused_for_what_they_are() {
        let secret = SigningSecret::new(SECRET);
        let body = INTERACTIVITY.as_bytes();
        let sig = Some(INTERACTIVITY_SIGNATURE);
        // Five minutes either way is accepted; a second more is not.
        assert_eq!(
            secret.verify(Some("1700000000"), sig, body, at(1_700_000_300)),
            Ok(())
        );
        assert_eq!(
            secret.verify(Some("1700000000"), sig, body, at(1_699_999_700)),
            Ok(())
        );
        assert_eq!(
            secret.verify(Some("1700000000"), sig, body, at(1_700_000_301)),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            secret.verify(Some("1700000000"), sig, body, at(1_699_999_699)),
            Err(SignatureError::Stale)
        );
        let now = at(1_700_000_000);
        assert_eq!(
            secret.verify(None, sig, body, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            secret.verify(Some("1700000000"), None, body, now),
            Err(SignatureError::Missing)
        );
        for bad_ts in ["", "-1700000000", "1700000000.5", "+1700000000", "17e8"] {
            assert_eq!(
                secret.verify(Some(bad_ts), sig, body, now),
                Err(SignatureError::Malformed),
                "{bad_ts:?}"
            );
        }
        let hex = &INTERACTIVITY_SIGNATURE[3..];
        for bad_sig in [
            format!("v1={hex}"),
            hex.to_owned(),
            format!("v0={}", hex.to_uppercase()),
            format!("v0={}", &hex[..63]),
            format!("v0={hex}00"),
        ] {
            assert_eq!(
                secret.verify(Some("1700000000"), Some(&bad_sig), body, now),
                Err(SignatureError::Malformed),
                "{bad_sig}"
            );
        }
        // One bit off anywhere in the signature: a mismatch.
        for i in 0..64 {
            let mut flipped = hex.as_bytes().to_vec();
            flipped[i] = if flipped[i] == b'0' { b'1' } else { b'0' };
            let flipped = format!("v0={}", String::from_utf8(flipped).unwrap());
            assert_eq!(
                secret.verify(Some("1700000000"), Some(&flipped), body, now),
                Err(SignatureError::Mismatch)
            );
        }
    }

    #[test]
    fn the_secret_never_shows() {
        let secret = SigningSecret::new(SECRET);
        assert!(!format!("{secret:?}").contains("8f74"));
        for error in [
            SignatureError::Missing,
            SignatureError::Malformed,
            SignatureError::Stale,
            SignatureError::Mismatch,
        ] {
            assert!(!error.to_string().contains("8f74"));
        }
    }

    /// A timestamp past what `SystemTime` holds panicked the check before
    /// the signature was looked at (one request, and a `panic = "abort"`
    /// build ends).
    #[test]
    fn a_timestamp_beyond_the_clock_is_stale_not_a_panic() {
        let secret = SigningSecret::new(SECRET);
        let sig = format!("v0={}", "0".repeat(64));
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
            let secret = SigningSecret::new(SECRET);
            let sig = format!("v0={}", approval_core::hex::encode(&sig));
            let verdict = secret.verify(Some(&ts.to_string()), Some(&sig), b"{}", at(now));
            proptest::prop_assert!(verdict.is_err());
            if ts.abs_diff(now) > 300 {
                proptest::prop_assert_eq!(verdict, Err(SignatureError::Stale));
            }
        }
    }
}
