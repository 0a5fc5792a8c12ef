//! Messages signed with a shared secret, as channels' callbacks arrive (a
//! Slack click, a webhook's vote): the secret itself, the sender's
//! timestamp held to a replay window, and the tag compared in constant
//! time. What is signed, and how the headers are spelt, is each scheme's
//! own.

use std::fmt;
use std::time::{Duration, SystemTime};

use ring::hmac;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// How far a signed message's timestamp may be from now, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Why a signed message was not accepted. Each is answered 401 and
/// nothing else happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The timestamp or the signature is missing.
    #[error("the message is not signed")]
    Missing,
    /// A header is not in the scheme's form (a Unix time in seconds; the
    /// scheme's prefix and 64 lowercase hex digits).
    #[error("the signature headers are malformed")]
    Malformed,
    /// The timestamp is more than five minutes from now: a replay, or a
    /// clock far off.
    #[error("the message's timestamp is more than five minutes from now")]
    Stale,
    /// The signature does not match the body.
    #[error("the signature does not match")]
    Mismatch,
}

/// A shared HMAC-SHA256 secret. Whoever holds it can forge any message it
/// signs, so it never appears in `Debug` output or errors, and its bytes
/// are wiped on drop.
///
/// ```
/// use approval_core::signed::SharedSecret;
///
/// let secret = SharedSecret::new("whsec_example_do_not_use");
/// let tag = secret.tag(&[b"1700000000", b".", b"{}"]);
/// assert!(secret.matches(&[b"1700000000.", b"{}"], &tag).is_ok());
/// assert_eq!(format!("{secret:?}"), "SharedSecret([REDACTED])");
/// ```
pub struct SharedSecret {
    key: hmac::Key,
    // Kept only so the bytes are wiped on drop; ring's key holds its own
    // derived state.
    _bytes: Zeroizing<Vec<u8>>,
}

impl SharedSecret {
    /// The secret; its UTF-8 bytes are the key (not hex-decoded).
    pub fn new(secret: impl Into<String>) -> Self {
        let bytes = Zeroizing::new(secret.into().into_bytes());
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            _bytes: bytes,
        }
    }

    /// HMAC-SHA256 of `parts`, one after the other.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        for part in parts {
            context.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }

    /// Whether `claimed` is the tag of `parts`, compared in constant time.
    pub fn matches(&self, parts: &[&[u8]], claimed: &[u8; 32]) -> Result<(), SignatureError> {
        if bool::from(self.tag(parts).ct_eq(claimed)) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret([REDACTED])")
    }
}

/// Reads a signed message's two headers as received: the timestamp (Unix
/// seconds, digits only) within [`MAX_SKEW`] of `now`, and the signature
/// (`prefix` and 64 lowercase hex digits). Gives the timestamp as sent
/// (it is part of what is signed) and the claimed tag; nothing here trusts
/// either yet.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use approval_core::signed::{SignatureError, read_headers};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
/// let signature = format!("v0={}", "ab".repeat(32));
/// let (timestamp, claimed) = read_headers(Some("1700000000"), Some(&signature), "v0=", now)?;
/// assert_eq!((timestamp, claimed), ("1700000000", [0xab; 32]));
/// assert_eq!(read_headers(Some("1699999000"), Some(&signature), "v0=", now), Err(SignatureError::Stale));
/// assert_eq!(read_headers(Some("+1700000000"), Some(&signature), "v0=", now), Err(SignatureError::Malformed));
/// # Ok::<(), SignatureError>(())
/// ```
pub fn read_headers<'a>(
    timestamp: Option<&'a str>,
    signature: Option<&str>,
    prefix: &str,
    now: SystemTime,
) -> Result<(&'a str, [u8; 32]), SignatureError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    let seconds: u64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
    // Checked: the number is the sender's, and unauthenticated yet.
    let sent = crate::clock::from_unix_seconds(seconds).ok_or(SignatureError::Stale)?;
    let skew = match now.duration_since(sent) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    if skew > MAX_SKEW {
        return Err(SignatureError::Stale);
    }
    let claimed = signature
        .strip_prefix(prefix)
        .and_then(crate::hex::decode32)
        .ok_or(SignatureError::Malformed)?;
    Ok((timestamp, claimed))
}
