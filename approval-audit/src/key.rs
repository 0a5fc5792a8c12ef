//! Keys of the audit chain (AUDIT-FORMAT.md, "Keys").
//!
//! A writer holds a [`WriterSecret`] per key id and derives two keys from it:
//! the [`RecordKey`] that MACs records (auditors get it to verify) and the
//! [`DigestKey`] for binding digests and redacted arguments (it never leaves
//! the writer). None of them shows its bytes in `Debug` or in errors, and
//! they compare in constant time.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const RECORD_KEY_LABEL: &[u8] = b"approval-audit/v1/record";
const DIGEST_KEY_LABEL: &[u8] = b"approval-audit/v1/digest";

/// The name of a key in a keyring: 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
///
/// ```
/// use approval_audit::KeyId;
///
/// let id: KeyId = "audit-2026".parse()?;
/// assert_eq!(id.as_str(), "audit-2026");
/// assert!("has space".parse::<KeyId>().is_err());
/// # Ok::<(), approval_audit::KeyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
// Shared: the chain head names its key on every record it seals.
pub struct KeyId(std::sync::Arc<str>);

impl KeyId {
    /// Validates a key id.
    pub fn new(id: &str) -> Result<Self, KeyError> {
        let valid = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(id.into()))
        } else {
            Err(KeyError::InvalidKeyId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for KeyId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::new(s)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors about keys and key files. The text names the file and the rule,
/// never the key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key id breaks the naming rule.
    #[error("a key id must be 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidKeyId,
    /// A key file does not hold exactly one key in the required form.
    #[error(
        "key file {path} must hold exactly 64 lowercase hex digits, optionally followed by one newline"
    )]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// A new key file would overwrite an existing file.
    #[error("key file {path} already exists; refusing to overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Writes `bytes` to a new file at `path`, mode 0600, synced: how every
/// key file is made. An existing file is never replaced
/// (`ErrorKind::AlreadyExists`).
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// 32 secret bytes, wiped on drop.
struct KeyBytes(Zeroizing<[u8; 32]>);

impl KeyBytes {
    fn from_hex(text: &[u8]) -> Option<Self> {
        let digits = text.strip_suffix(b"\n").unwrap_or(text);
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = hex_nibble(pair[0])? << 4 | hex_nibble(pair[1])?;
        }
        Some(Self(bytes))
    }

    fn to_hex_line(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(65));
        crate::canonical::write_hex(&mut out, &self.0[..]);
        out.push(b'\n');
        out
    }

    fn read_file(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut text = Zeroizing::new(Vec::with_capacity(66));
        // Read one byte past the longest valid file so a longer one is caught
        // without reading it all.
        std::fs::File::open(path)
            .map_err(io_err)?
            .take(66)
            .read_to_end(&mut text)
            .map_err(io_err)?;
        Self::from_hex(&text).ok_or_else(|| KeyError::Format {
            path: path.to_owned(),
        })
    }

    /// Writes the key as a new file with mode 0600; never overwrites.
    fn write_new_file(&self, path: &Path) -> Result<(), KeyError> {
        write_private_file(path, &self.to_hex_line()).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => KeyError::Io {
                path: path.to_owned(),
                source,
            },
        })
    }

    fn ct_eq(&self, other: &Self) -> bool {
        self.0[..].ct_eq(&other.0[..]).into()
    }

    fn derive(&self, label: &[u8]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0[..]);
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(hmac::sign(&key, label).as_ref());
        Self(bytes)
    }
}

fn hex_nibble(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    }
}

/// The writer's secret for one key id: 32 random bytes that only the writing
/// process holds.
///
/// ```
/// use approval_audit::WriterSecret;
///
/// let secret = WriterSecret::generate()?;
/// assert_eq!(format!("{secret:?}"), "WriterSecret([REDACTED])");
/// # Ok::<(), approval_audit::KeyError>(())
/// ```
pub struct WriterSecret(KeyBytes);

impl WriterSecret {
    /// Draws a new secret from the operating system's random generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(&mut bytes[..])
            .map_err(|_| KeyError::Random)?;
        Ok(Self(KeyBytes(bytes)))
    }

    /// Parses a secret from key-file text: 64 lowercase hex digits and an
    /// optional final newline.
    pub fn from_hex(text: &str) -> Option<Self> {
        KeyBytes::from_hex(text.as_bytes()).map(Self)
    }

    /// Reads a key file.
    pub fn read_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        KeyBytes::read_file(path.as_ref()).map(Self)
    }

    /// Writes the secret to a new file with mode 0600; refuses to overwrite.
    pub fn write_new_file(&self, path: impl AsRef<Path>) -> Result<(), KeyError> {
        self.0.write_new_file(path.as_ref())
    }

    /// The record key: HMAC-SHA256(secret, `approval-audit/v1/record`).
    pub fn record_key(&self) -> RecordKey {
        RecordKey::from_bytes(self.0.derive(RECORD_KEY_LABEL))
    }

    /// The digest key: HMAC-SHA256(secret, `approval-audit/v1/digest`).
    pub fn digest_key(&self) -> DigestKey {
        DigestKey::from_bytes(self.0.derive(DIGEST_KEY_LABEL))
    }
}

impl fmt::Debug for WriterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriterSecret([REDACTED])")
    }
}

impl PartialEq for WriterSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0)
    }
}

impl Eq for WriterSecret {}

/// The key that computes and checks record MACs; what an auditor's keyring
/// holds. Whoever holds it can verify the chain, and could also rewrite it:
/// signed checkpoints are what make that visible.
pub struct RecordKey {
    bytes: KeyBytes,
    key: hmac::Key,
}

impl RecordKey {
    fn from_bytes(bytes: KeyBytes) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes.0[..]);
        Self { bytes, key }
    }

    /// Parses key-file text: 64 lowercase hex digits and an optional final
    /// newline.
    pub fn from_hex(text: &str) -> Option<Self> {
        KeyBytes::from_hex(text.as_bytes()).map(Self::from_bytes)
    }

    /// Reads a verification key file.
    ///
    /// ```
    /// use approval_audit::{KeyError, RecordKey};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("audit.key.verify");
    /// std::fs::write(&path, "ABCDEF")?;
    /// let err = RecordKey::read_file(&path).unwrap_err();
    /// assert!(matches!(err, KeyError::Format { .. }));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        KeyBytes::read_file(path.as_ref()).map(Self::from_bytes)
    }

    /// Writes the key to a new file with mode 0600; refuses to overwrite.
    pub fn write_new_file(&self, path: impl AsRef<Path>) -> Result<(), KeyError> {
        self.bytes.write_new_file(path.as_ref())
    }

    pub(crate) fn hmac(&self) -> &hmac::Key {
        &self.key
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordKey([REDACTED])")
    }
}

impl PartialEq for RecordKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.ct_eq(&other.bytes)
    }
}

impl Eq for RecordKey {}

/// The key for binding digests and redacted arguments. It never leaves the
/// writer: with it, anyone could test guesses of a redacted value.
pub struct DigestKey {
    bytes: KeyBytes,
    key: hmac::Key,
}

impl DigestKey {
    fn from_bytes(bytes: KeyBytes) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes.0[..]);
        Self { bytes, key }
    }

    /// HMAC-SHA256 of `data` under this key.
    pub fn digest(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.key, data).as_ref());
        out
    }
}

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey([REDACTED])")
    }
}

impl PartialEq for DigestKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.ct_eq(&other.bytes)
    }
}

impl Eq for DigestKey {}

#[cfg(test)]
mod tests;
