//! Digests (bindings, MACs) as text: 64 lowercase hex digits, the one form
//! the log and every channel use. A channel that carries a binding out to
//! reviewers and back uses these, so every channel reads what every other
//! writes.

/// `bytes` as lowercase hex.
///
/// ```
/// assert_eq!(approval_audit::hex::encode(&[0x0f, 0xa0]), "0fa0");
/// ```
pub fn encode(bytes: &[u8]) -> String {
    crate::chain::hex(bytes)
}

/// Exactly 64 lowercase hex digits as 32 bytes; anything else is `None`.
///
/// ```
/// use approval_audit::hex::{decode32, encode};
///
/// let digest = [0xabu8; 32];
/// assert_eq!(decode32(&encode(&digest)), Some(digest));
/// assert_eq!(decode32(&encode(&digest).to_uppercase()), None);
/// assert_eq!(decode32("07"), None);
/// ```
pub fn decode32(text: &str) -> Option<[u8; 32]> {
    crate::chain::digits32(text.as_bytes())
}
