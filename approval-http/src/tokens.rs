//! Reviewer tokens for the decision API: configured as SHA-256 hashes,
//! never in clear; each maps to a reviewer `api:<name>`.

use std::fmt;

use ring::digest;
use subtle::ConstantTimeEq;

use approval_core::hex::decode32;

/// The reviewers the decision API accepts, each by the SHA-256 of their
/// bearer token. The tokens themselves are never stored: a leaked
/// configuration does not let anyone vote.
///
/// ```
/// use approval_http::ReviewerTokens;
///
/// // Once, when issuing alice's token: keep the token secret, configure the hash.
/// let hash = ReviewerTokens::hash("alice-token-from-a-password-manager");
/// let tokens = ReviewerTokens::new().reviewer("alice", &hash).unwrap();
/// assert_eq!(tokens.authenticate(Some("Bearer alice-token-from-a-password-manager")), Some("alice"));
/// assert_eq!(tokens.authenticate(Some("Bearer guess")), None);
/// assert!(!format!("{tokens:?}").contains(&hash));
/// ```
#[derive(Default, Clone)]
pub struct ReviewerTokens {
    entries: Vec<([u8; 32], String)>,
}

/// A reviewer token entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The hash is not 64 lowercase hex digits.
    #[error("the token hash for reviewer {name} is not 64 lowercase hex digits")]
    BadHash {
        /// The reviewer.
        name: String,
    },
    /// The name is empty or has characters other than letters, digits,
    /// `.`, `_`, `-` and `@`.
    #[error("reviewer name {name:?} is not usable (letters, digits, . _ - @)")]
    BadName {
        /// The name.
        name: String,
    },
}

impl ReviewerTokens {
    /// No reviewers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts the token whose SHA-256 is `token_sha256` (64 lowercase hex
    /// digits, as [`hash`](Self::hash) gives) as reviewer `api:<name>`.
    pub fn reviewer(mut self, name: &str, token_sha256: &str) -> Result<Self, TokenError> {
        let usable = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
        if !usable {
            return Err(TokenError::BadName { name: name.into() });
        }
        let hash =
            decode32(token_sha256).ok_or_else(|| TokenError::BadHash { name: name.into() })?;
        self.entries.push((hash, name.to_owned()));
        Ok(self)
    }

    /// The SHA-256, in hex, of `token`: what to configure.
    pub fn hash(token: &str) -> String {
        digest::digest(&digest::SHA256, token.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The reviewer an `Authorization` header's value names (`Bearer
    /// <token>`), if any. Every entry is compared, in constant time.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<&str> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        let presented = digest::digest(&digest::SHA256, token.as_bytes());
        let mut found = None;
        for (hash, name) in &self.entries {
            if bool::from(hash.ct_eq(presented.as_ref())) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

impl fmt::Debug for ReviewerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReviewerTokens")
            .field(
                "reviewers",
                &self.entries.iter().map(|e| &e.1).collect::<Vec<_>>(),
            )
            .finish()
    }
}
