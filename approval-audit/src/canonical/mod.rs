//! RFC 8785 JSON Canonicalization Scheme (JCS).
//!
//! Audit records are MAC'd over their canonical bytes, so every byte here
//! matters. Numbers are printed by [`ryu_js`], a maintained implementation of
//! ECMAScript's `Number::toString` (the rule RFC 8785 adopts); the rest
//! (member order by UTF-16 code units, the exact escapes) is small enough to
//! own, and lets records be written without a generic value tree and checked
//! in one pass. Both directions are tested on RFC 8785's own vectors and
//! 25,000 ECMAScript number cases, and property-tested against a generic
//! implementation.

mod check;
mod scan;
mod serialize;
mod write;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::Serialize;
use serde_json::Value;

pub(crate) use check::{Fault, check_object, check_value, decode_str};
pub use serialize::write_serialize;
pub(crate) use write::{
    MAX_SAFE_INTEGER, Member, Members, hex_into, prefix, write_array, write_u64,
};
pub use write::{cmp_utf16, write_hex, write_str};

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    /// A float is NaN or infinite; JSON has no such numbers.
    #[error("a number is not finite (NaN or infinity); JSON cannot carry it")]
    NonFinite,
    /// A record's own integer exceeds 2^53 − 1.
    #[error("an integer exceeds 2^53 - 1 and cannot be represented exactly")]
    IntegerOutOfRange,
    /// An object was given the same member twice.
    #[error("an object has the same member twice")]
    DuplicateMember,
    /// The value could not be serialised to JSON at all.
    #[error("the value cannot be serialised as JSON: {0}")]
    Serialize(String),
    /// The text is not canonical JSON.
    #[error("the text is not canonical JSON")]
    NotCanonical,
}

/// JSON text in RFC 8785 canonical form; it can only be made by
/// canonicalising or by checking.
///
/// Integers outside ±(2^53 − 1) are written as strings of their digits, as
/// AUDIT-FORMAT.md requires, since JCS would otherwise round them.
///
/// ```
/// use approval_audit::CanonicalJson;
///
/// let json = CanonicalJson::from_serialize(&serde_json::json!({
///     "rows": 1e21, "table": "users", "id": 9007199254740993u64, "a": -0.0,
/// }))?;
/// assert_eq!(json.as_str(), r#"{"a":0,"id":"9007199254740993","rows":1e+21,"table":"users"}"#);
/// # Ok::<(), approval_audit::CanonicalError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CanonicalJson(Box<str>);

impl CanonicalJson {
    /// Canonicalises a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, CanonicalError> {
        let mut out = Vec::with_capacity(64);
        write::write_value(&mut out, value)?;
        Ok(Self::from_canonical_bytes(out))
    }

    /// Serialises `value` with serde, then canonicalises it.
    ///
    /// NaN and infinities are refused (JSON has none; `serde_json` alone
    /// would write them as `null`).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, CanonicalError> {
        let mut out = Vec::with_capacity(64);
        serialize::write_serialize(&mut out, value)?;
        Ok(Self::from_canonical_bytes(out))
    }

    /// Accepts `text` only if it is already canonical JSON.
    ///
    /// ```
    /// use approval_audit::CanonicalJson;
    ///
    /// assert!(CanonicalJson::parse(r#"{"a":1,"b":[true,null]}"#).is_ok());
    /// assert!(CanonicalJson::parse(r#"{"b":1,"a":2}"#).is_err());
    /// assert!(CanonicalJson::parse("1.0").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, CanonicalError> {
        check_value(text.as_bytes()).map_err(|_| CanonicalError::NotCanonical)?;
        Ok(Self(text.into()))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a JSON object.
    pub fn is_object(&self) -> bool {
        self.0.starts_with('{')
    }

    /// For `approval-core`, which assembles arguments from canonical pieces
    /// ([`write_str`], [`write_hex`], [`write_serialize`]) in the hot path:
    /// the caller guarantees `bytes` are canonical JSON. Debug builds (every
    /// test) check it; anyone else should use [`parse`](Self::parse).
    #[doc(hidden)]
    pub fn from_trusted_bytes(bytes: Vec<u8>) -> Self {
        debug_assert!(
            check_value(&bytes).is_ok(),
            "trusted canonical bytes are not canonical"
        );
        Self::from_canonical_bytes(bytes)
    }

    pub(crate) fn from_canonical_bytes(bytes: Vec<u8>) -> Self {
        // The writer only appends UTF-8 (escapes are ASCII, everything else
        // is copied from `str`s); a failure here is a bug, kept loud.
        match String::from_utf8(bytes) {
            Ok(text) => Self(text.into_boxed_str()),
            Err(e) => unreachable!("canonical writer produced invalid UTF-8: {e}"),
        }
    }
}

impl fmt::Debug for CanonicalJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CanonicalJson")
            .field(&self.as_str())
            .finish()
    }
}

impl fmt::Display for CanonicalJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
