//! Signed checkpoints (AUDIT-FORMAT.md, "Checkpoints"): an RFC 6962 Merkle
//! tree over the record lines, its root in a C2SP `tlog-checkpoint` text,
//! signed as a C2SP `signed-note` with Ed25519. Anyone holding the public
//! key can check that a log was neither cut off nor rewritten.

#[cfg(feature = "http-publisher")]
mod http;
mod merkle;
mod note;
mod proof;
mod writer;

#[cfg(test)]
mod tests;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[cfg(feature = "http-publisher")]
pub use http::HttpPublisher;
pub use merkle::{
    Hash, MerkleFrontier, consistency_proof, empty_root, inclusion_proof, leaf_hash, node_hash,
    root, verify_consistency, verify_inclusion,
};
pub use note::{NoteError, NoteSignature, SignedNote, SigningKey, VerifierKey};
pub use proof::{InclusionRecord, ProofDocument, ProofError};
pub(crate) use writer::{Cadence, Signer, resume};
pub use writer::{
    CheckpointPublisher, CheckpointStatus, Checkpointing, DirectoryPublisher, checkpoint_path,
};

/// What a checkpoint commits to: the first `size` records of the log named
/// `origin` have the Merkle root `root`.
///
/// ```
/// use approval_audit::checkpoint::{Checkpoint, SigningKey, empty_root};
///
/// let key = SigningKey::generate("example.com/approvals")?;
/// let checkpoint = Checkpoint::new("example.com/approvals", 0, empty_root());
/// let signed = checkpoint.sign(&key)?;
/// assert_eq!(Checkpoint::open(signed.as_bytes(), &[key.verifier()])?, checkpoint);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name.
    pub origin: String,
    /// How many records it covers.
    pub size: u64,
    /// The root of the tree over those records.
    pub root: Hash,
}

/// Why a checkpoint was not accepted. Each is its own result, never "ok".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The text is not a checkpoint of this format, or the note is not a
    /// signed note.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// It carries no signature.
    #[error("the checkpoint is not signed")]
    Unsigned,
    /// No signature is by a trusted key.
    #[error("the checkpoint is signed by no trusted key ({signers})")]
    UnknownKey {
        /// Who signed it.
        signers: String,
    },
    /// A signature by a trusted key does not verify.
    #[error("bad signature on the checkpoint by {key}")]
    BadSignature {
        /// The key.
        key: String,
    },
    /// Signed by a trusted key, but for another log.
    #[error("the checkpoint is for log {found}, signed by the key of {expected}")]
    WrongOrigin {
        /// The log the trusted key signs for.
        expected: String,
        /// The log the checkpoint names.
        found: String,
    },
}

impl Checkpoint {
    /// A checkpoint of `size` records with root `root` for log `origin`.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
        }
    }

    /// The checkpoint text: origin, size and base64 root, each on its line.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses a checkpoint text (exactly three lines).
    pub fn parse_text(text: &str) -> Result<Self, CheckpointError> {
        let malformed = CheckpointError::Malformed;
        let body = text
            .strip_suffix('\n')
            .ok_or(malformed("no final newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(malformed("not three lines"));
        };
        // Any non-empty origin reads; the logs written here name theirs
        // with a key name (no spaces, no `+`), which signing checks.
        if origin.is_empty() {
            return Err(malformed("empty origin"));
        }
        let canonical_size = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size = size
            .parse()
            .ok()
            .filter(|_| canonical_size)
            .ok_or(malformed("bad size"))?;
        let root = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| Hash::try_from(r.as_slice()).ok())
            .ok_or(malformed("bad root hash"))?;
        Ok(Self::new(origin, size, root))
    }

    /// The signed note: the text signed by `key` (whose name should be the
    /// origin).
    pub fn sign(&self, key: &SigningKey) -> Result<String, NoteError> {
        key.sign(&self.text())
    }

    /// Reads a signed checkpoint without checking its signature (for the
    /// log's own tools; an auditor uses [`open`](Self::open)).
    pub fn parse_signed(signed: &[u8]) -> Result<Self, CheckpointError> {
        let note = SignedNote::parse(signed).map_err(note_error)?;
        Self::parse_text(note.text())
    }

    /// Opens a signed checkpoint: the signature of a `trusted` key must
    /// verify, and that key must be the one named for the checkpoint's
    /// origin.
    pub fn open(signed: &[u8], trusted: &[VerifierKey]) -> Result<Self, CheckpointError> {
        let note = match SignedNote::parse(signed) {
            Ok(note) => note,
            // A bare text: unsigned if it is a checkpoint, else malformed.
            Err(NoteError::Unsigned) => {
                let text = std::str::from_utf8(signed).unwrap_or_default();
                // Without its empty line, if it had one.
                let text = text
                    .strip_suffix("\n\n")
                    .map_or(text, |t| &text[..=t.len()]);
                Self::parse_text(text)?;
                return Err(CheckpointError::Unsigned);
            }
            Err(e) => return Err(note_error(e)),
        };
        let checkpoint = Self::parse_text(note.text())?;
        // Only the log's own key (named as its origin) signs for it; other
        // trusted keys (a witness's, another log's) do not count here.
        let own: Vec<VerifierKey> = trusted
            .iter()
            .filter(|k| k.name() == checkpoint.origin)
            .cloned()
            .collect();
        if own.is_empty() {
            // Signed by a trusted key for another log, or by nobody known.
            let signed_by_trusted = note
                .signatures()
                .iter()
                .any(|s| trusted.iter().any(|k| k.name() == s.name));
            if signed_by_trusted {
                return Err(CheckpointError::WrongOrigin {
                    expected: trusted
                        .iter()
                        .map(VerifierKey::name)
                        .collect::<Vec<_>>()
                        .join(", "),
                    found: checkpoint.origin,
                });
            }
        }
        note.verify(&own).map_err(note_error)?;
        Ok(checkpoint)
    }
}

/// How a log stands against a checkpoint of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Coverage {
    /// The log's first `covered` records have the checkpoint's root;
    /// `beyond` records follow that the checkpoint does not cover yet.
    Consistent {
        /// Records the checkpoint covers.
        covered: u64,
        /// Records after them, checked by the chain alone.
        beyond: u64,
    },
    /// The log has fewer records than the checkpoint signs: cut off.
    Truncated {
        /// Records in the log.
        records: u64,
        /// Records the checkpoint signs.
        signed: u64,
    },
    /// The root over the first `signed` records differs: rewritten.
    Rewritten {
        /// Records the checkpoint signs.
        signed: u64,
    },
}

/// A sentence for people: `the signed checkpoint covers all 7 records`.
///
/// ```
/// use approval_audit::checkpoint::Coverage;
///
/// let seen = Coverage::Truncated { records: 5, signed: 7 };
/// assert_eq!(seen.to_string(), "the log is cut off: it has 5 records, the checkpoint signs 7");
/// ```
impl std::fmt::Display for Coverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Consistent { covered, beyond: 0 } => {
                write!(f, "the signed checkpoint covers all {covered} records")
            }
            Self::Consistent { covered, beyond } => write!(
                f,
                "the signed checkpoint covers the first {covered} records; the {beyond} after them are checked by the chain alone"
            ),
            Self::Truncated { records, signed } => write!(
                f,
                "the log is cut off: it has {records} records, the checkpoint signs {signed}"
            ),
            Self::Rewritten { signed } => write!(
                f,
                "the log was rewritten: its first {signed} records are not the ones the checkpoint signs"
            ),
        }
    }
}

/// Reads a log (JSON Lines) and checks it against `checkpoint`: the root of
/// the tree over its first `checkpoint.size` lines. A last line without its
/// newline is not a record (the log is cut off inside it).
///
/// ```
/// use approval_audit::checkpoint::{Checkpoint, Coverage, check_log, leaf_hash, node_hash};
///
/// let root = node_hash(&leaf_hash(b"{\"a\":1}"), &leaf_hash(b"{\"b\":2}"));
/// let checkpoint = Checkpoint::new("example.com/log", 2, root);
/// let log = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
/// assert_eq!(
///     check_log(&log[..], &checkpoint)?,
///     Coverage::Consistent { covered: 2, beyond: 1 }
/// );
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn check_log(log: impl std::io::Read, checkpoint: &Checkpoint) -> std::io::Result<Coverage> {
    let (tree, root_at) = tree_of(log, checkpoint.size)?;
    Ok(coverage(tree.size(), root_at, checkpoint))
}

/// Calls `record` with each whole line of a log, without its `\n`; a last
/// line without its newline is not a whole record, and ends the reading.
fn for_each_record(log: impl std::io::Read, mut record: impl FnMut(&[u8])) -> std::io::Result<()> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, log);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        match line.strip_suffix(b"\n") {
            Some(whole) => record(whole),
            None => return Ok(()),
        }
    }
}

/// The tree over a log's records, and its root once it held `at` of them
/// (`None` if it never did).
pub(crate) fn tree_of(
    log: impl std::io::Read,
    at: u64,
) -> std::io::Result<(MerkleFrontier, Option<Hash>)> {
    let mut tree = MerkleFrontier::new();
    let mut root_at = (at == 0).then(empty_root);
    for_each_record(log, |record| {
        tree.push(leaf_hash(record));
        if tree.size() == at {
            root_at = Some(tree.root());
        }
    })?;
    Ok((tree, root_at))
}

/// How `records` records whose tree had `root_at` after the first
/// `checkpoint.size` of them stand against `checkpoint`.
pub(crate) fn coverage(records: u64, root_at: Option<Hash>, checkpoint: &Checkpoint) -> Coverage {
    if records < checkpoint.size {
        Coverage::Truncated {
            records,
            signed: checkpoint.size,
        }
    } else if root_at != Some(checkpoint.root) {
        Coverage::Rewritten {
            signed: checkpoint.size,
        }
    } else {
        Coverage::Consistent {
            covered: checkpoint.size,
            beyond: records - checkpoint.size,
        }
    }
}

/// The leaf hash of every line of a log (JSON Lines), in order: what
/// proofs are computed from (32 bytes per record).
pub fn leaf_hashes(log: impl std::io::Read) -> std::io::Result<Vec<Hash>> {
    let mut leaves = Vec::new();
    for_each_record(log, |record| leaves.push(leaf_hash(record)))?;
    Ok(leaves)
}

fn note_error(error: NoteError) -> CheckpointError {
    match error {
        NoteError::Unsigned => CheckpointError::Unsigned,
        NoteError::UnknownKey { signers } => CheckpointError::UnknownKey { signers },
        NoteError::BadSignature { key } => CheckpointError::BadSignature { key },
        _ => CheckpointError::Malformed("not a signed note"),
    }
}
