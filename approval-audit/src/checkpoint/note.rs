//! C2SP `signed-note`: Ed25519 signing keys, verifier keys in the
//! `<name>+<id>+<key>` notation, and notes with their signature lines.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use zeroize::Zeroizing;

/// The signature type byte of Ed25519 in C2SP signed notes.
const ED25519_TYPE: u8 = 0x01;
/// How many signature lines a note may carry before it is refused.
const MAX_SIGNATURES: usize = 100;
/// The prefix of a signature line: U+2014 and a space.
const DASH: &str = "\u{2014} ";

/// Why a key, a key file or a note was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// A key name is empty, or holds a space or `+`.
    #[error("a key name must be non-empty, without spaces or '+'")]
    InvalidName,
    /// A verifier or signing key is not in its notation, or its id does
    /// not match its key.
    #[error("not a key in the notation <name>+<8 hex id>+<base64 key>")]
    InvalidKey,
    /// A key file does not hold one signing key.
    #[error("signing key file {path} must hold one line PRIVATE+KEY+<name>+<id>+<base64>")]
    KeyFileFormat {
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
    /// The note is not a signed note: no signature block, a control
    /// character, a malformed signature line, too many signatures.
    #[error("malformed note")]
    Malformed,
    /// No signature line at all.
    #[error("the note is not signed")]
    Unsigned,
    /// Signed, but by no trusted key.
    #[error("the note is signed by no trusted key (signers: {signers})")]
    UnknownKey {
        /// The names and ids of the keys that signed it.
        signers: String,
    },
    /// A signature by a trusted key does not verify.
    #[error("invalid signature for key {key}")]
    BadSignature {
        /// The key, as `<name>+<id>`.
        key: String,
    },
}

/// Whether `name` may name a key: non-empty, no Unicode space, no `+`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The key id: the first four bytes of SHA-256(name || `\n` || 0x01 ||
/// public key).
fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(name.as_bytes());
    context.update(b"\n");
    context.update(&[ED25519_TYPE]);
    context.update(public);
    let digest = context.finish();
    let mut id = [0u8; 4];
    id.copy_from_slice(&digest.as_ref()[..4]);
    id
}

fn hex_id(id: &[u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex_id(text: &str) -> Option<[u8; 4]> {
    if text.len() != 8 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u32::from_str_radix(text, 16).ok().map(u32::to_be_bytes)
}

/// A key as written: its name, the id it claims, and its 32 key bytes.
type KeyParts<'a> = (&'a str, [u8; 4], Zeroizing<[u8; 32]>);

/// Splits `<name>+<id>+<base64 of type || key>` and checks the type.
fn parse_key(text: &str) -> Option<KeyParts<'_>> {
    let (name, rest) = text.split_once('+')?;
    let (id, data) = rest.split_once('+')?;
    if !valid_name(name) {
        return None;
    }
    let id = parse_hex_id(id)?;
    let data = Zeroizing::new(STANDARD.decode(data).ok()?);
    let (&kind, key) = data.split_first()?;
    if kind != ED25519_TYPE || key.len() != 32 {
        return None;
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    bytes.copy_from_slice(key);
    Some((name, id, bytes))
}

/// A public key that checks signatures, written
/// `<name>+<8 hex id>+<base64 of 0x01 || Ed25519 public key>`.
///
/// ```
/// use approval_audit::checkpoint::VerifierKey;
///
/// let key: VerifierKey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW".parse()?;
/// assert_eq!(key.name(), "PeterNeumann");
/// assert_eq!(key.to_string(), "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW");
/// # Ok::<(), approval_audit::checkpoint::NoteError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    public: [u8; 32],
}

impl VerifierKey {
    /// The key's name (for a log's checkpoints, the log's origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn verifies(&self, text: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(text, signature)
            .is_ok()
    }

    fn label(&self) -> String {
        format!("{}+{}", self.name, hex_id(&self.id))
    }
}

impl FromStr for VerifierKey {
    type Err = NoteError;

    fn from_str(text: &str) -> Result<Self, NoteError> {
        let (name, id, public) =
            parse_key(text.trim_end_matches('\n')).ok_or(NoteError::InvalidKey)?;
        if key_id(name, &public) != id {
            return Err(NoteError::InvalidKey);
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            public: *public,
        })
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut data = vec![ED25519_TYPE];
        data.extend_from_slice(&self.public);
        write!(f, "{}+{}", self.label(), STANDARD.encode(data))
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

/// An Ed25519 key that signs notes. Its file holds one line in the
/// notation Go's `sumdb/note` and its tools use,
/// `PRIVATE+KEY+<name>+<id>+<base64 of 0x01 || seed>`, mode 0600.
pub struct SigningKey {
    name: String,
    id: [u8; 4],
    seed: Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("id", &hex_id(&self.id))
            .field("seed", &"[REDACTED]")
            .finish()
    }
}

impl SigningKey {
    /// A new random key named `name`.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(&mut seed[..])
            .map_err(|_| NoteError::Random)?;
        Self::from_seed(name, seed)
    }

    fn from_seed(name: &str, seed: Zeroizing<[u8; 32]>) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::InvalidName);
        }
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed[..]).map_err(|_| NoteError::InvalidKey)?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, &public),
            seed,
            pair,
        })
    }

    /// Reads a key from its private-key line.
    pub fn from_private_line(line: &str) -> Result<Self, NoteError> {
        let rest = line
            .trim_end_matches('\n')
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::InvalidKey)?;
        let (name, id, seed) = parse_key(rest).ok_or(NoteError::InvalidKey)?;
        let key = Self::from_seed(name, seed)?;
        if key.id != id {
            return Err(NoteError::InvalidKey);
        }
        Ok(key)
    }

    /// The private-key line (secret: for the key file only).
    fn private_line(&self) -> Zeroizing<String> {
        let mut data = Zeroizing::new(vec![ED25519_TYPE]);
        data.extend_from_slice(&self.seed[..]);
        let encoded = Zeroizing::new(STANDARD.encode(&data[..]));
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{}+{}\n",
            self.name,
            hex_id(&self.id),
            encoded.as_str()
        ))
    }

    /// Writes the key to a new file, mode 0600; never overwrites.
    pub fn write_new_file(&self, path: impl AsRef<Path>) -> Result<(), NoteError> {
        let path = path.as_ref();
        let io_error = |source: io::Error| match source.kind() {
            io::ErrorKind::AlreadyExists => NoteError::Exists {
                path: path.to_owned(),
            },
            _ => NoteError::Io {
                path: path.to_owned(),
                source,
            },
        };
        crate::key::write_private_file(path, self.private_line().as_bytes()).map_err(io_error)
    }

    /// Reads a key file written by [`write_new_file`](Self::write_new_file)
    /// (or by Go's `note.GenerateKey`).
    pub fn read_file(path: impl AsRef<Path>) -> Result<Self, NoteError> {
        let path = path.as_ref();
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| NoteError::Io {
                    path: path.to_owned(),
                    source,
                })?,
            );
        Self::from_private_line(&text).map_err(|_| NoteError::KeyFileFormat {
            path: path.to_owned(),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key that checks this key's signatures.
    pub fn verifier(&self) -> VerifierKey {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            public,
        }
    }

    /// Signs `text` (which must end in `\n`): the signed note, text, empty
    /// line and signature line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.pair.sign(text.as_bytes());
        let mut data = self.id.to_vec();
        data.extend_from_slice(signature.as_ref());
        Ok(format!(
            "{text}\n{DASH}{} {}\n",
            self.name,
            STANDARD.encode(data)
        ))
    }
}

/// A note's text: valid UTF-8 (a `&str`), ending in a newline, with no
/// control characters but newlines.
fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') || text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed);
    }
    Ok(())
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key id.
    pub id: [u8; 4],
    /// The signature bytes (after the id).
    pub signature: Vec<u8>,
}

/// A signed note, parsed: its text and its signature lines.
///
/// ```
/// use approval_audit::checkpoint::{SignedNote, SigningKey};
///
/// let key = SigningKey::generate("example.com/log")?;
/// let signed = key.sign("hello\n")?;
/// let note = SignedNote::parse(signed.as_bytes())?;
/// assert_eq!(note.text(), "hello\n");
/// assert_eq!(note.verify(&[key.verifier()])?.name(), "example.com/log");
/// # Ok::<(), approval_audit::checkpoint::NoteError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SignedNote {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Parses a signed note; the text ends at the last empty line.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        let all = std::str::from_utf8(bytes).map_err(|_| NoteError::Malformed)?;
        if all.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::Malformed);
        }
        let Some(split) = all.rfind("\n\n") else {
            // A text with no signature block at all.
            return Err(if all.ends_with('\n') {
                NoteError::Unsigned
            } else {
                NoteError::Malformed
            });
        };
        let (text, block) = (&all[..=split], &all[split + 2..]);
        if block.is_empty() {
            return Err(NoteError::Unsigned);
        }
        let Some(lines) = block.strip_suffix('\n') else {
            return Err(NoteError::Malformed);
        };
        // Lines are counted before duplicates go, as Go's note.Open does.
        if lines.split('\n').count() > MAX_SIGNATURES {
            return Err(NoteError::Malformed);
        }
        let mut signatures: Vec<NoteSignature> = Vec::new();
        for line in lines.split('\n') {
            let signature = parse_signature_line(line).ok_or(NoteError::Malformed)?;
            if !signatures.contains(&signature) {
                signatures.push(signature);
            }
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order, duplicates dropped.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Checks the note against `trusted` keys: every signature by a trusted
    /// key (same name and id) must verify, and at least one must exist.
    /// Signatures by other keys are ignored, as the format requires.
    /// Returns the first trusted key that signed it.
    pub fn verify<'k>(&self, trusted: &'k [VerifierKey]) -> Result<&'k VerifierKey, NoteError> {
        let mut verified = None;
        for signature in &self.signatures {
            let Some(key) = trusted
                .iter()
                .find(|k| k.name == signature.name && k.id == signature.id)
            else {
                continue;
            };
            if !key.verifies(self.text.as_bytes(), &signature.signature) {
                return Err(NoteError::BadSignature { key: key.label() });
            }
            verified.get_or_insert(key);
        }
        verified.ok_or_else(|| NoteError::UnknownKey {
            signers: self
                .signatures
                .iter()
                .map(|s| format!("{}+{}", s.name, hex_id(&s.id)))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// `— <name> <base64 of id || signature>`.
fn parse_signature_line(line: &str) -> Option<NoteSignature> {
    let rest = line.strip_prefix(DASH)?;
    let (name, data) = rest.split_once(' ')?;
    if !valid_name(name) {
        return None;
    }
    let data = STANDARD.decode(data).ok()?;
    if data.len() < 5 {
        return None;
    }
    let (id, signature) = data.split_at(4);
    Some(NoteSignature {
        name: name.to_owned(),
        id: id.try_into().ok()?,
        signature: signature.to_vec(),
    })
}
