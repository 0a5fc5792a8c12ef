//! Verifying a log as AUDIT-FORMAT.md ("Verifying") says, streaming, in
//! constant memory.
//!
//! The input is read in blocks of whole lines. Within a block, each line's
//! own checks (canonical form, member types, MAC) are independent of the
//! others and run on all cores; the links between lines (`seq`, `prev`, the
//! current key) are then checked in order, which is a few compares a line.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::num::NonZeroUsize;

use crate::canonical::Fault;
use crate::chain::{hex, parse_line};
use crate::key::{KeyId, RecordKey};

/// Verification keys by id: what an auditor holds.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: Vec<RecordKey>,
    by_id: HashMap<String, usize>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the key for `id`.
    pub fn insert(&mut self, id: KeyId, key: RecordKey) {
        if let Some(&i) = self.by_id.get(id.as_str()) {
            self.keys[i] = key;
        } else {
            self.by_id.insert(id.as_str().to_owned(), self.keys.len());
            self.keys.push(key);
        }
    }

    /// Adds a key and returns the keyring, for chaining.
    #[must_use]
    pub fn with(mut self, id: KeyId, key: RecordKey) -> Self {
        self.insert(id, key);
        self
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }
}

/// Why a record fails verification: the reason words of AUDIT-FORMAT.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The line is not JSON, lacks a chain member, or has one of the wrong
    /// type (including `v` other than 1 and a line without its `\n`).
    Malformed,
    /// The line is JSON but not byte for byte its canonical form.
    NotCanonical,
    /// `seq` is not the previous `seq` + 1 (or 0 first).
    SeqGap,
    /// `prev` is not the previous record's `mac` (or zeros first).
    BrokenLink,
    /// `key_id` is not in the keyring.
    UnknownKey,
    /// `key_id` is not the key current at this `seq`.
    WrongKey,
    /// `mac` does not match.
    BadMac,
}

impl Reason {
    /// The reason word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotCanonical => "not_canonical",
            Self::SeqGap => "seq_gap",
            Self::BrokenLink => "broken_link",
            Self::UnknownKey => "unknown_key",
            Self::WrongKey => "wrong_key",
            Self::BadMac => "bad_mac",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first record that fails, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The line, counting from 1.
    pub line: u64,
    /// The record's `seq`, where the line has a readable one.
    pub seq: Option<u64>,
    /// Why it fails.
    pub reason: Reason,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "record seq {seq} (line {}): {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// What a valid log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// How many records.
    pub records: u64,
    /// The last record's `mac`; `None` for an empty log. Without a signed
    /// checkpoint, compare it with a head kept elsewhere to detect a log
    /// cut off at the end.
    pub head: Option<[u8; 32]>,
    /// How many `approved` records name a reviewer of the mock approver
    /// (`mock:` ids). A production log should have none.
    pub mock_approvals: u64,
}

impl Report {
    /// The head as lowercase hex, or `none`.
    pub fn head_hex(&self) -> String {
        self.head.map_or_else(|| "none".to_owned(), |h| hex(&h))
    }
}

/// Why verification did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A record fails.
    #[error("{0}")]
    Invalid(Failure),
    /// Reading the log failed.
    #[error("reading the log failed: {0}")]
    Io(#[from] io::Error),
}

/// Checks a whole log; see [`Verifier`] to tune it.
///
/// ```
/// use std::sync::Arc;
/// use approval_core::{verify, AuditSink, ChainWriter, Event, KeyId, Keyring, MemorySink, WriterSecret};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let secret = WriterSecret::generate()?;
/// let sink = MemorySink::new(Arc::new(ChainWriter::new(KeyId::new("k1")?, &secret)));
/// sink.append_event(Event::Cancelled { request_id: "r1".into(), why: "test".into() }).await?;
///
/// let keyring = Keyring::new().with(KeyId::new("k1")?, secret.record_key());
/// let report = verify(sink.read_back()?, &keyring)?;
/// assert_eq!(report.records, 1);
/// # Ok(())
/// # }
/// ```
pub fn verify(log: impl Read, keyring: &Keyring) -> Result<Report, VerifyError> {
    Verifier::new(keyring).verify(log)
}

/// A configurable verifier.
#[derive(Debug)]
pub struct Verifier<'k> {
    keyring: &'k Keyring,
    threads: usize,
    block: usize,
}

/// Lines longer than this are refused as malformed rather than buffered.
const MAX_LINE: usize = 64 * 1024 * 1024;

impl<'k> Verifier<'k> {
    /// A verifier over `keyring` using every core.
    pub fn new(keyring: &'k Keyring) -> Self {
        Self {
            keyring,
            threads: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            block: 4 * 1024 * 1024,
        }
    }

    /// Uses `threads` threads for the per-line checks (at least 1).
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Reads the log in blocks of about `bytes` (at least 1 KiB).
    #[must_use]
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block = bytes.max(1024);
        self
    }

    /// Reads `log` to the end and checks every record.
    pub fn verify(&self, mut log: impl Read) -> Result<Report, VerifyError> {
        let mut state = Links {
            line: 0,
            expected_seq: 0,
            prev: [0; 32],
            current_key: CurrentKey::First,
            mock_approvals: 0,
        };
        let mut buf = vec![0u8; self.block];
        let mut filled = 0;
        let mut at_eof = false;
        while !at_eof {
            // Fill the buffer, growing it only for a line longer than it.
            let n = read_full(&mut log, &mut buf[filled..])?;
            filled += n;
            at_eof = filled < buf.len();
            let complete = match buf[..filled].iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if at_eof => 0,
                None if buf.len() >= MAX_LINE => {
                    return Err(state.fail_next(Reason::Malformed));
                }
                None => {
                    buf.resize(buf.len() * 2, 0);
                    continue;
                }
            };
            self.check_block(&buf[..complete], &mut state)?;
            buf.copy_within(complete..filled, 0);
            filled -= complete;
        }
        if filled > 0 {
            // Bytes after the last newline: a record cut off mid-line.
            return Err(state.fail_next(Reason::Malformed));
        }
        Ok(Report {
            records: state.expected_seq,
            head: (state.expected_seq > 0).then_some(state.prev),
            mock_approvals: state.mock_approvals,
        })
    }

    fn check_block(&self, block: &[u8], state: &mut Links) -> Result<(), VerifyError> {
        if block.is_empty() {
            return Ok(());
        }
        let lines: Vec<&[u8]> = block
            .strip_suffix(b"\n")
            .unwrap_or(block)
            .split(|&b| b == b'\n')
            .collect();
        let keyring = self.keyring;
        let per_thread = lines.len().div_ceil(self.threads).max(1);
        let checked: Vec<LineCheck> = if self.threads == 1 || lines.len() < 64 {
            lines.iter().map(|l| check_line(l, keyring)).collect()
        } else {
            std::thread::scope(|scope| {
                let mut chunks = lines.chunks(per_thread);
                let first = chunks.next().unwrap_or_default();
                let handles: Vec<_> = chunks
                    .map(|chunk| {
                        scope.spawn(move || {
                            chunk
                                .iter()
                                .map(|l| check_line(l, keyring))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let mut all: Vec<LineCheck> =
                    first.iter().map(|l| check_line(l, keyring)).collect();
                for handle in handles {
                    // A panic in a check is a bug; report the block as
                    // unverifiable rather than passing it.
                    match handle.join() {
                        Ok(part) => all.extend(part),
                        Err(_) => all.push(LineCheck::Bad(Reason::Malformed)),
                    }
                }
                all
            })
        };
        for check in checked {
            state.link(check)?;
        }
        Ok(())
    }
}

fn read_full(log: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match log.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What one line's own checks found.
enum LineCheck {
    Bad(Reason),
    Good {
        seq: u64,
        prev: [u8; 32],
        mac: [u8; 32],
        /// The keyring index of `key_id`, if it is there.
        key: Option<usize>,
        /// Whether the MAC matches under `key` (false when `key` is `None`).
        mac_ok: bool,
        /// For `key_rotated`: the keyring index of the next key, if known.
        rotates_to: Option<Option<usize>>,
        mock_approval: bool,
    },
}

fn check_line(line: &[u8], keyring: &Keyring) -> LineCheck {
    let fields = match parse_line(line) {
        Ok(fields) => fields,
        Err(Fault::Malformed) => return LineCheck::Bad(Reason::Malformed),
        Err(Fault::NotCanonical) => return LineCheck::Bad(Reason::NotCanonical),
    };
    let key = keyring.index(&fields.key_id);
    let mac_ok = key.is_some_and(|k| fields.mac_matches(&keyring.keys[k], line));
    let mock_approval = fields.event == "approved"
        && fields
            .reviewers
            .as_ref()
            .is_some_and(|r| names_mock_reviewer(&line[r.clone()]));
    LineCheck::Good {
        seq: fields.seq,
        prev: fields.prev,
        mac: fields.mac,
        key,
        mac_ok,
        rotates_to: fields.next_key_id.as_deref().map(|next| keyring.index(next)),
        mock_approval,
    }
}

/// Whether a `reviewers` array names a reviewer whose id is `mock:…`.
fn names_mock_reviewer(reviewers: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_slice::<Vec<Id>>(reviewers)
        .is_ok_and(|ids| ids.iter().any(|r| r.id.starts_with("mock:")))
}

/// The key current at the next record.
#[derive(Clone, Copy)]
enum CurrentKey {
    /// The first record names it.
    First,
    /// A key in the keyring.
    Known(usize),
    /// A key rotated to that the keyring lacks.
    Missing,
}

/// The checks that link each record to the one before.
struct Links {
    line: u64,
    expected_seq: u64,
    prev: [u8; 32],
    current_key: CurrentKey,
    mock_approvals: u64,
}

impl Links {
    fn fail_next(&self, reason: Reason) -> VerifyError {
        VerifyError::Invalid(Failure {
            line: self.line + 1,
            seq: None,
            reason,
        })
    }

    fn link(&mut self, check: LineCheck) -> Result<(), VerifyError> {
        let (seq, prev, mac, key, mac_ok, rotates_to, mock_approval) = match check {
            LineCheck::Bad(reason) => return Err(self.fail_next(reason)),
            LineCheck::Good {
                seq,
                prev,
                mac,
                key,
                mac_ok,
                rotates_to,
                mock_approval,
            } => (seq, prev, mac, key, mac_ok, rotates_to, mock_approval),
        };
        self.line += 1;
        let fail = |reason| {
            Err(VerifyError::Invalid(Failure {
                line: self.line,
                seq: Some(seq),
                reason,
            }))
        };
        if seq != self.expected_seq {
            return fail(Reason::SeqGap);
        }
        if prev != self.prev {
            return fail(Reason::BrokenLink);
        }
        let Some(key) = key else {
            return fail(Reason::UnknownKey);
        };
        match self.current_key {
            CurrentKey::First => {}
            CurrentKey::Known(current) if current == key => {}
            CurrentKey::Known(_) | CurrentKey::Missing => return fail(Reason::WrongKey),
        }
        if !mac_ok {
            return fail(Reason::BadMac);
        }
        self.current_key = match rotates_to {
            None => CurrentKey::Known(key),
            Some(Some(next)) => CurrentKey::Known(next),
            Some(None) => CurrentKey::Missing,
        };
        self.expected_seq = seq.checked_add(1).ok_or_else(|| self.fail_next(Reason::Malformed))?;
        self.prev = mac;
        self.mock_approvals += u64::from(mock_approval);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
