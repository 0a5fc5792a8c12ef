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
pub use crate::reason::Reason;
use grants::GrantFact;
pub use grants::{GrantFault, GrantSummary};

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

/// A grant record that does not hold up against the records before it
/// (its chain members are fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantFailure {
    /// The line, counting from 1.
    pub line: u64,
    /// The record's `seq`.
    pub seq: u64,
    /// Why it does not hold up.
    pub fault: GrantFault,
}

impl fmt::Display for GrantFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record seq {} (line {}): {}",
            self.seq, self.line, self.fault
        )
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
    /// How many grants were made (`granted` records).
    pub grants: u64,
    /// How many calls ran under a grant (`grant_used` records), each
    /// checked against its grant.
    pub grant_uses: u64,
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
    /// A grant record does not hold up: a use beyond its grant's count or
    /// time, after its revocation, or of a call it does not cover.
    #[error("{0}")]
    Grant(GrantFailure),
    /// Reading the log failed.
    #[error("reading the log failed: {0}")]
    Io(#[from] io::Error),
}

/// Checks a whole log; see [`Verifier`] to tune it.
///
/// ```
/// use std::sync::Arc;
/// use approval_audit::{verify, AuditSink, ChainWriter, Event, KeyId, Keyring, MemorySink, WriterSecret};
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

/// The first read of a log; later reads double up to the block size.
const FIRST_READ: usize = 64 * 1024;

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
    pub fn verify(&self, log: impl Read) -> Result<Report, VerifyError> {
        self.verify_with_grants(log).map(|(report, _)| report)
    }

    /// [`verify`](Self::verify), also giving each grant the log made and
    /// what became of it (uses, revocation), in the order they were made.
    pub fn verify_with_grants(
        &self,
        mut log: impl Read,
    ) -> Result<(Report, Vec<GrantSummary>), VerifyError> {
        let mut links = Links {
            line: 0,
            expected_seq: 0,
            prev: [0; 32],
            current_key: CurrentKey::First,
            mock_approvals: 0,
            grants: grants::Ledger::default(),
        };
        // Two buffers: the workers check the lines of one while this thread
        // reads the next block into the other.
        let mut current = BlockBuf::default();
        let mut next = BlockBuf::default();
        let mut carry = Vec::new();
        let mut read = self.read_block(&mut log, &mut current, &mut carry)?;
        // With one thread, this thread reads and then checks: no worker.
        let workers = if self.threads == 1 { 0 } else { self.threads };
        loop {
            let parts = split_parts(current.lines(), self.threads * PARTS_PER_THREAD);
            let queue = Parts::new(&parts, self.keyring);
            let (checks, next_read) = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..workers).map(|_| scope.spawn(|| queue.work())).collect();
                let next_read = match read {
                    Block::More => self.read_block(&mut log, &mut next, &mut carry),
                    Block::Last | Block::LineTooLong => Ok(Block::Last),
                };
                // Done reading: help with the checks rather than wait.
                let mut done = queue.work();
                for worker in workers {
                    // A panic in a check is a bug; fail the block rather
                    // than pass it.
                    match worker.join() {
                        Ok(part) => done.extend(part),
                        Err(_) => done.push((0, Chunk::failed())),
                    }
                }
                done.sort_unstable_by_key(|(index, _)| *index);
                (done, next_read)
            });
            for (_, chunk) in &checks {
                links.link(chunk)?;
            }
            match read {
                Block::More => {}
                Block::Last => break,
                Block::LineTooLong => return Err(links.fail_next(Reason::Malformed)),
            }
            read = next_read?;
            std::mem::swap(&mut current, &mut next);
        }
        if !carry.is_empty() {
            // Bytes after the last newline: a record cut off mid-line.
            return Err(links.fail_next(Reason::Malformed));
        }
        let report = Report {
            records: links.expected_seq,
            head: (links.expected_seq > 0).then_some(links.prev),
            mock_approvals: links.mock_approvals,
            grants: links.grants.granted(),
            grant_uses: links.grants.uses,
        };
        Ok((report, links.grants.into_summaries()))
    }

    /// Fills `buf` with `carry` and then whole lines from `log`, about one
    /// block's worth; what follows the last newline goes back to `carry`.
    fn read_block(
        &self,
        log: &mut impl Read,
        buf: &mut BlockBuf,
        carry: &mut Vec<u8>,
    ) -> io::Result<Block> {
        buf.len = 0;
        buf.grow_to(carry.len());
        buf.data[..carry.len()].copy_from_slice(carry);
        buf.len = carry.len();
        carry.clear();
        // Grow towards the block size as the log proves long, so a short log
        // never pays for a large buffer.
        let floor = FIRST_READ.min(self.block);
        let mut target = (buf.data.len() * 2)
            .max(floor)
            .min(self.block)
            .max(buf.len + 1);
        loop {
            buf.grow_to(target);
            let at_eof = fill(log, &mut buf.data[..target], &mut buf.len)?;
            match memchr::memrchr(b'\n', &buf.data[..buf.len]) {
                Some(newline) => {
                    carry.extend_from_slice(&buf.data[newline + 1..buf.len]);
                    buf.len = newline + 1;
                    return Ok(if at_eof { Block::Last } else { Block::More });
                }
                None if at_eof => {
                    carry.extend_from_slice(&buf.data[..buf.len]);
                    buf.len = 0;
                    return Ok(Block::Last);
                }
                // No newline in the largest block we buffer.
                None if target >= MAX_LINE => return Ok(Block::LineTooLong),
                None => target = target.saturating_mul(2).min(MAX_LINE),
            }
        }
    }
}

/// A block is cut into this many parts per thread, taken in turn by whichever
/// thread is free, so no thread idles while another finishes a big share.
const PARTS_PER_THREAD: usize = 4;

/// Cuts `block` into about `count` runs of whole lines.
fn split_parts(block: &[u8], count: usize) -> Vec<&[u8]> {
    let share = block.len().div_ceil(count.max(1)).max(1);
    let mut parts = Vec::with_capacity(count + 1);
    let mut rest = block;
    while !rest.is_empty() {
        // Cut after the first newline at or past `share` bytes.
        let at = share.min(rest.len());
        let cut = memchr::memchr(b'\n', &rest[at - 1..]).map_or(rest.len(), |p| at + p);
        let (part, tail) = rest.split_at(cut);
        parts.push(part);
        rest = tail;
    }
    parts
}

/// The parts of a block, handed out one at a time.
struct Parts<'a> {
    parts: &'a [&'a [u8]],
    next: std::sync::atomic::AtomicUsize,
    keyring: &'a Keyring,
}

impl<'a> Parts<'a> {
    fn new(parts: &'a [&'a [u8]], keyring: &'a Keyring) -> Self {
        Self {
            parts,
            next: std::sync::atomic::AtomicUsize::new(0),
            keyring,
        }
    }

    /// Checks parts until none is left; returns them with their indexes.
    fn work(&self) -> Vec<(usize, Chunk)> {
        let mut done = Vec::new();
        loop {
            let index = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(part) = self.parts.get(index) else {
                return done;
            };
            done.push((index, Chunk::check(part, self.keyring)));
        }
    }
}

/// What reading a block found.
#[derive(Clone, Copy)]
enum Block {
    /// Whole lines, and more to read.
    More,
    /// Whole lines, then the end of the log (any unterminated rest is in
    /// the carry).
    Last,
    /// A line longer than the verifier buffers.
    LineTooLong,
}

/// A reusable read buffer: its bytes are initialised once, when it grows,
/// not on every block.
#[derive(Default)]
struct BlockBuf {
    data: Vec<u8>,
    len: usize,
}

impl BlockBuf {
    fn grow_to(&mut self, size: usize) {
        if self.data.len() < size {
            self.data.resize(size, 0);
        }
    }

    fn lines(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// Reads from `log` into `buf[*filled..]` until it is full or `log` ends;
/// returns whether it ended.
fn fill(log: &mut impl Read, buf: &mut [u8], filled: &mut usize) -> io::Result<bool> {
    while *filled < buf.len() {
        match log.read(&mut buf[*filled..]) {
            Ok(0) => return Ok(true),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// What one line's own checks found.
enum LineCheck {
    Bad(Reason),
    Good {
        seq: u64,
        /// Whether `prev` is the `mac` of the line before it in the chunk;
        /// `None` for the chunk's first line (see [`Chunk::first_prev`]).
        follows: Option<bool>,
        /// The keyring index of `key_id`, if it is there.
        key: Option<usize>,
        /// Whether the MAC matches under `key` (false when `key` is `None`).
        mac_ok: bool,
        /// For `key_rotated`: the keyring index of the next key, if known.
        rotates_to: Option<Option<usize>>,
        mock_approval: bool,
        /// For a grant's records: what the ledger checks, read.
        grant: Option<Box<GrantFact>>,
    },
}

/// The checks of a run of consecutive lines. Links inside the run are
/// checked by the worker; only the run's ends meet the running state.
struct Chunk {
    lines: Vec<LineCheck>,
    /// `prev` of the first line.
    first_prev: [u8; 32],
    /// `mac` of the last line.
    last_mac: [u8; 32],
}

impl Chunk {
    fn failed() -> Self {
        Self {
            lines: vec![LineCheck::Bad(Reason::Malformed)],
            first_prev: [0; 32],
            last_mac: [0; 32],
        }
    }

    /// Checks `part` (whole lines, each ending in a newline).
    fn check(part: &[u8], keyring: &Keyring) -> Self {
        let mut chunk = Self {
            // Records are a few hundred bytes; reserve for short ones.
            lines: Vec::with_capacity(part.len() / 128 + 1),
            first_prev: [0; 32],
            last_mac: [0; 32],
        };
        let mut previous_mac: Option<[u8; 32]> = None;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', part) {
            let line = &part[start..end];
            start = end + 1;
            let fields = match parse_line(line) {
                Ok(fields) => fields,
                Err(fault) => {
                    chunk.lines.push(LineCheck::Bad(match fault {
                        Fault::Malformed => Reason::Malformed,
                        Fault::NotCanonical => Reason::NotCanonical,
                    }));
                    // Verification stops at this line; nothing after it counts.
                    break;
                }
            };
            let follows = match previous_mac {
                Some(mac) => Some(mac == fields.prev),
                None => {
                    chunk.first_prev = fields.prev;
                    None
                }
            };
            previous_mac = Some(fields.mac);
            chunk.last_mac = fields.mac;
            let key = keyring.index(&fields.key_id);
            chunk.lines.push(LineCheck::Good {
                seq: fields.seq,
                follows,
                key,
                mac_ok: key.is_some_and(|k| fields.mac_matches(&keyring.keys[k], line)),
                rotates_to: fields
                    .next_key_id
                    .as_deref()
                    .map(|next| keyring.index(next)),
                mock_approval: fields.event == "approved"
                    && fields
                        .reviewers
                        .as_ref()
                        .is_some_and(|r| names_mock_reviewer(&line[r.clone()])),
                grant: GrantFact::read(&fields.event, line),
            });
        }
        chunk
    }
}

/// Whether a `reviewers` array names a reviewer whose id is `mock:…`.
fn names_mock_reviewer(reviewers: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    // In canonical JSON a `mock:` id can only appear as these bytes; most
    // approvals lack them and need no parse.
    const NEEDLE: &[u8] = b"\"id\":\"mock:";
    if !reviewers.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
        return false;
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
    grants: grants::Ledger,
}

impl Links {
    fn fail_next(&self, reason: Reason) -> VerifyError {
        VerifyError::Invalid(Failure {
            line: self.line + 1,
            seq: None,
            reason,
        })
    }

    fn link(&mut self, chunk: &Chunk) -> Result<(), VerifyError> {
        for check in &chunk.lines {
            let (seq, follows, key, mac_ok, rotates_to, mock_approval, grant) = match check {
                LineCheck::Bad(reason) => return Err(self.fail_next(*reason)),
                LineCheck::Good {
                    seq,
                    follows,
                    key,
                    mac_ok,
                    rotates_to,
                    mock_approval,
                    grant,
                } => (
                    *seq,
                    *follows,
                    *key,
                    *mac_ok,
                    *rotates_to,
                    *mock_approval,
                    grant,
                ),
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
            if !follows.unwrap_or(chunk.first_prev == self.prev) {
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
            self.expected_seq = seq
                .checked_add(1)
                .ok_or_else(|| self.fail_next(Reason::Malformed))?;
            self.mock_approvals += u64::from(mock_approval);
            // Its MAC holds: what it says about a grant is the writer's.
            if let Some(fact) = grant {
                self.grants.apply(fact).map_err(|fault| {
                    VerifyError::Grant(GrantFailure {
                        line: self.line,
                        seq,
                        fault,
                    })
                })?;
            }
        }
        self.prev = chunk.last_mac;
        Ok(())
    }
}

mod grants;
#[cfg(test)]
mod tests;
