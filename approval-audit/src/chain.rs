//! The HMAC chain: sealing records with `v`, `seq`, `ts`, `event`,
//! `key_id`, `prev` and `mac`, and reading those members back from a line.
//!
//! Sinks never compute any of this: they hold a [`ChainHead`] (in memory, or
//! read from their store under their own lock) and hand it to
//! [`ChainWriter::seal`], which advances it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use ring::hmac;
use subtle::ConstantTimeEq;

use crate::canonical::{self, CanonicalJson, Fault, Member, decode_str};
use crate::clock::{Clock, SystemClock, format_ts};
use crate::error::AuditError;
use crate::key::{DigestKey, KeyId, RecordKey, WriterSecret};
use crate::reason::Reason;
use crate::record::PendingRecord;

/// Where the chain stands: the next record's `seq`, the `mac` it links to,
/// and the key it is sealed with. Made only by [`ChainHead::genesis`] and
/// [`ChainWriter::resume`], and advanced only by sealing.
#[derive(Clone, PartialEq, Eq)]
pub struct ChainHead {
    next_seq: u64,
    prev: [u8; 32],
    /// `None` before the first record: the writer's active key starts it.
    key_id: Option<KeyId>,
}

impl ChainHead {
    /// The head of an empty log.
    pub fn genesis() -> Self {
        Self {
            next_seq: 0,
            prev: [0; 32],
            key_id: None,
        }
    }

    /// The `seq` the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The `mac` of the last record (all zeros for an empty log).
    pub fn prev_mac(&self) -> [u8; 32] {
        self.prev
    }

    /// Any head at all, for tests that forge chains.
    #[cfg(test)]
    pub(crate) fn forged(next_seq: u64, prev: [u8; 32], key_id: KeyId) -> Self {
        Self {
            next_seq,
            prev,
            key_id: Some(key_id),
        }
    }
}

impl fmt::Debug for ChainHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainHead")
            .field("next_seq", &self.next_seq)
            .field("prev", &hex(&self.prev))
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// Proof that a record was stored: its `seq` and `mac`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The record's position in the chain.
    pub seq: u64,
    /// The record's MAC.
    pub mac: [u8; 32],
}

impl Receipt {
    /// The MAC as lowercase hex, as it stands in the log.
    pub fn mac_hex(&self) -> String {
        hex(&self.mac)
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt")
            .field("seq", &self.seq)
            .field("mac", &self.mac_hex())
            .finish()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    canonical::write_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

struct KeyPair {
    record: RecordKey,
    digest: DigestKey,
}

impl KeyPair {
    fn derive(secret: &WriterSecret) -> Arc<Self> {
        Arc::new(Self {
            record: secret.record_key(),
            digest: secret.digest_key(),
        })
    }
}

struct Keys {
    active_id: KeyId,
    active: Arc<KeyPair>,
    all: HashMap<KeyId, Arc<KeyPair>>,
}

/// The writer side of the chain: the keys this process seals records with,
/// and the clock for `ts`.
///
/// ```
/// use approval_audit::{ChainHead, ChainWriter, Event, KeyId, WriterSecret};
///
/// let writer = ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?);
/// let mut head = ChainHead::genesis();
/// let mut log = Vec::new();
/// let event = Event::Cancelled { request_id: "r1".into(), why: "shutdown".into() };
/// let receipts = writer.seal(&mut head, &[event.to_pending()?], &mut log)?;
/// assert_eq!(receipts[0].seq, 0);
/// assert_eq!(head.next_seq(), 1);
/// assert!(log.starts_with(br#"{"event":"cancelled","key_id":"k1","mac":""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ChainWriter {
    keys: RwLock<Keys>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for ChainWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainWriter")
            .field("active_key", &self.active_key_id())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl ChainWriter {
    /// A writer whose first (active) key is `secret` under `key_id`.
    pub fn new(key_id: KeyId, secret: &WriterSecret) -> Self {
        let active = KeyPair::derive(secret);
        let all = HashMap::from([(key_id.clone(), active.clone())]);
        Self {
            keys: RwLock::new(Keys {
                active_id: key_id,
                active,
                all,
            }),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for `ts` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds a key: the next key before a rotation, or an older key the log
    /// being resumed ends with. It does not make the key active.
    pub fn add_key(&self, key_id: KeyId, secret: &WriterSecret) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.all.insert(key_id, KeyPair::derive(secret));
    }

    /// The key new chains start with and the one digests are taken under;
    /// it moves when a `key_rotated` record is sealed.
    pub fn active_key_id(&self) -> KeyId {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .active_id
            .clone()
    }

    /// HMAC-SHA256 of `data` under the active key's digest key.
    pub fn digest(&self, data: &[u8]) -> [u8; 32] {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.active.digest.digest(data)
    }

    /// The binding digest of a call: HMAC-SHA256, under the active digest
    /// key, of the canonical form of `{"action":…,"args":…}` with the
    /// unredacted arguments. What a vote is bound to.
    ///
    /// ```
    /// use approval_audit::{CanonicalJson, ChainWriter, KeyId, WriterSecret};
    ///
    /// let writer = ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?);
    /// let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "users"}))?;
    /// let explicit = CanonicalJson::from_serialize(
    ///     &serde_json::json!({"action": "crm::export", "args": {"table": "users"}}),
    /// )?;
    /// assert_eq!(writer.binding("crm::export", &args), writer.digest(explicit.as_str().as_bytes()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn binding(&self, action: &str, args: &CanonicalJson) -> [u8; 32] {
        let mut text = Vec::with_capacity(args.as_str().len() + action.len() + 24);
        text.extend_from_slice(b"{\"action\":");
        canonical::write_str(&mut text, action);
        text.extend_from_slice(b",\"args\":");
        text.extend_from_slice(args.as_str().as_bytes());
        text.push(b'}');
        self.digest(&text)
    }

    /// Seals `records` in order onto the chain at `head`, appending their
    /// lines (each ending in `\n`) to `out`.
    ///
    /// All or nothing: on error `head` and `out` are as they were.
    pub fn seal(
        &self,
        head: &mut ChainHead,
        records: &[PendingRecord],
        out: &mut Vec<u8>,
    ) -> Result<Vec<Receipt>, AuditError> {
        let start_len = out.len();
        let mut next = head.clone();
        let mut receipts = Vec::with_capacity(records.len());
        let mut rotated_to = None;
        // One clock reading and one key lookup for the batch (records
        // written together bear one time), looked up again after a
        // rotation.
        let ts = format_ts(self.clock.now())?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        for record in records {
            let sealed = self.seal_one(&keys, &ts, &mut next, record, out);
            match sealed {
                Ok((receipt, rotation)) => {
                    receipts.push(receipt);
                    if rotation.is_some() {
                        rotated_to = rotation;
                    }
                }
                Err(e) => {
                    out.truncate(start_len);
                    return Err(e);
                }
            }
        }
        drop(keys);
        *head = next;
        if let Some(key_id) = rotated_to {
            let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
            // Keys are never removed, and sealing checked this one exists.
            if let Some(pair) = keys.all.get(&key_id).cloned() {
                keys.active = pair;
                keys.active_id = key_id;
            }
        }
        Ok(receipts)
    }

    fn seal_one(
        &self,
        keys: &Keys,
        ts: &[u8; 24],
        head: &mut ChainHead,
        record: &PendingRecord,
        out: &mut Vec<u8>,
    ) -> Result<(Receipt, Option<KeyId>), AuditError> {
        let key_id = head.key_id.as_ref().unwrap_or(&keys.active_id);
        // The active key, without a lookup, unless the chain is at another.
        let pair = if *key_id == keys.active_id {
            &keys.active
        } else {
            keys.all
                .get(key_id)
                .ok_or_else(|| AuditError::UnknownWriterKey {
                    key_id: key_id.clone(),
                })?
        };
        let key = &pair.record;
        if let Some(next) = record.next_key_id()
            && !keys.all.contains_key(next)
        {
            // Rotating to a key we cannot seal with would end the chain.
            return Err(AuditError::UnknownWriterKey {
                key_id: next.clone(),
            });
        }
        let seq = head.next_seq;
        let next_seq = seq.checked_add(1).ok_or(AuditError::SeqExhausted)?;

        let line_start = out.len();
        let ts = std::str::from_utf8(ts)
            .map_err(|_| AuditError::Canonical(canonical::CanonicalError::NotCanonical))?;
        // The chain's members, sorted by name.
        let chain = [
            ("event", Member::Str(record.event())),
            ("key_id", Member::Str(key_id.as_str())),
            ("prev", Member::Hex(&head.prev)),
            ("seq", Member::Int(seq)),
            ("ts", Member::Str(ts)),
            ("v", Member::Int(1)),
        ];
        // On error `seal` truncates `out` back to where the batch began.
        let split = record
            .write_with(&chain, out)
            .map_err(AuditError::Canonical)?;

        let tag = hmac::sign(key.hmac(), &out[line_start..]);
        let mut mac = [0u8; 32];
        mac.copy_from_slice(tag.as_ref());
        // `,"mac":"<64 hex>"` goes in at `split`: room is made by moving
        // the members after it once.
        const MAC_MEMBER: usize = 8 + 64 + 1;
        let end = out.len();
        out.resize(end + MAC_MEMBER, 0);
        out.copy_within(split..end, split + MAC_MEMBER);
        let slot = &mut out[split..split + MAC_MEMBER];
        slot[..8].copy_from_slice(b",\"mac\":\"");
        canonical::hex_into(&mut slot[8..72], &mac);
        slot[72] = b'"';
        out.push(b'\n');

        let rotation = record.next_key_id().cloned();
        head.next_seq = next_seq;
        head.prev = mac;
        head.key_id = Some(rotation.clone().unwrap_or_else(|| key_id.clone()));
        Ok((Receipt { seq, mac }, rotation))
    }

    /// Resumes a chain after its last stored line (without its `\n`): checks
    /// that the line is a well-formed record sealed with a key this writer
    /// holds, and returns the head that follows it.
    pub fn resume(&self, last_line: &[u8]) -> Result<ChainHead, AuditError> {
        let checked = self.check(None, last_line).map_err(LineFault::at_tail)?;
        match checked.unheld_key {
            Some(key_id) => Err(AuditError::UnknownWriterKey { key_id }),
            None => Ok(checked.head),
        }
    }

    /// Checks that `line` (without its `\n`) is the record that follows
    /// `head`: canonical, `seq` and `prev` linked, sealed with the key
    /// current at `head`, and, where this writer holds that key, with a
    /// matching MAC. Returns the head after it.
    pub(crate) fn follow(&self, head: &ChainHead, line: &[u8]) -> Result<ChainHead, LineFault> {
        Ok(self.check(Some(head), line)?.head)
    }

    /// The head after a stored line known durable, from its form alone.
    pub(crate) fn head_after(&self, line: &[u8]) -> Result<ChainHead, LineFault> {
        Ok(self.check(None, line)?.head)
    }

    /// A line's own checks, and with `after` its links to the head before it.
    fn check(&self, after: Option<&ChainHead>, line: &[u8]) -> Result<Checked, LineFault> {
        let bad = LineFault::Bad;
        let fields = parse_line(line).map_err(|fault| {
            bad(match fault {
                Fault::Malformed => Reason::Malformed,
                Fault::NotCanonical => Reason::NotCanonical,
            })
        })?;
        if let Some(head) = after {
            if fields.seq != head.next_seq {
                return Err(bad(Reason::SeqGap));
            }
            if fields.prev != head.prev {
                return Err(bad(Reason::BrokenLink));
            }
        }
        let key_id = KeyId::new(&fields.key_id).map_err(|_| bad(Reason::Malformed))?;
        if after
            .and_then(|head| head.key_id.as_ref())
            .is_some_and(|current| *current != key_id)
        {
            return Err(bad(Reason::WrongKey));
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let held = keys.all.get(&key_id);
        if held.is_some_and(|pair| !fields.mac_matches(&pair.record, line)) {
            return Err(bad(Reason::BadMac));
        }
        let unheld_key = held.is_none().then(|| key_id.clone());
        let next_key = match &fields.next_key_id {
            Some(next) => KeyId::new(next).map_err(|_| bad(Reason::Malformed))?,
            None => key_id,
        };
        Ok(Checked {
            head: ChainHead {
                next_seq: fields.seq.checked_add(1).ok_or(LineFault::SeqExhausted)?,
                prev: fields.mac,
                key_id: Some(next_key),
            },
            unheld_key,
        })
    }
}

/// A line that passed [`ChainWriter::check`].
struct Checked {
    head: ChainHead,
    /// The line's key, when this writer does not hold it (so its MAC was
    /// not checked).
    unheld_key: Option<KeyId>,
}

/// Why a stored line does not continue a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineFault {
    /// It fails a verifier's check.
    Bad(Reason),
    /// Its `seq` is the last one a chain can have.
    SeqExhausted,
}

impl LineFault {
    /// The error for a last stored line with this fault.
    pub(crate) fn at_tail(self) -> AuditError {
        let invalid = |why: &'static str| AuditError::InvalidTail { why };
        match self {
            Self::SeqExhausted => AuditError::SeqExhausted,
            Self::Bad(Reason::NotCanonical) => invalid("not canonical"),
            Self::Bad(Reason::BadMac) => invalid("sealed with another key or altered"),
            Self::Bad(_) => invalid("malformed"),
        }
    }
}

/// The chain members of one sealed line, read in one pass.
#[derive(Debug)]
pub(crate) struct LineFields<'a> {
    pub(crate) seq: u64,
    pub(crate) prev: [u8; 32],
    pub(crate) mac: [u8; 32],
    /// The `,"mac":"…"` member: removing it leaves what the MAC covers.
    pub(crate) mac_member: Range<usize>,
    pub(crate) key_id: Cow<'a, str>,
    pub(crate) event: Cow<'a, str>,
    /// The `ts` text, without quotes.
    pub(crate) ts: Range<usize>,
    pub(crate) next_key_id: Option<Cow<'a, str>>,
    /// The raw `reviewers` value, for counting mock approvals.
    pub(crate) reviewers: Option<Range<usize>>,
}

impl LineFields<'_> {
    /// Checks the line's MAC in constant time, without copying the line.
    pub(crate) fn mac_matches(&self, key: &RecordKey, line: &[u8]) -> bool {
        let mut ctx = hmac::Context::with_key(key.hmac());
        ctx.update(&line[..self.mac_member.start]);
        ctx.update(&line[self.mac_member.end..]);
        ctx.sign().as_ref().ct_eq(&self.mac[..]).into()
    }
}

/// Reads the chain members of a line (without its `\n`), checking that the
/// line is canonical JSON and that each member has its format's type.
pub(crate) fn parse_line(line: &[u8]) -> Result<LineFields<'_>, Fault> {
    #[derive(Default)]
    struct Spans {
        v: Option<Range<usize>>,
        seq: Option<Range<usize>>,
        ts: Option<Range<usize>>,
        event: Option<Range<usize>>,
        key_id: Option<Range<usize>>,
        prev: Option<Range<usize>>,
        mac: Option<(usize, Range<usize>)>,
        next_key_id: Option<Range<usize>>,
        reviewers: Option<Range<usize>>,
    }
    let mut spans = Spans::default();
    canonical::check_object(line, &mut |key, key_start, value| match key {
        b"v" => spans.v = Some(value),
        b"seq" => spans.seq = Some(value),
        b"ts" => spans.ts = Some(value),
        b"event" => spans.event = Some(value),
        b"key_id" => spans.key_id = Some(value),
        b"prev" => spans.prev = Some(value),
        b"mac" => spans.mac = Some((key_start, value)),
        b"next_key_id" => spans.next_key_id = Some(value),
        b"reviewers" => spans.reviewers = Some(value),
        _ => {}
    })?;

    let bytes = |r: &Option<Range<usize>>| r.clone().map(|r| &line[r]);
    if bytes(&spans.v) != Some(b"1") {
        return Err(Fault::Malformed);
    }
    let seq = bytes(&spans.seq)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or(Fault::Malformed)?;
    let ts = spans
        .ts
        .clone()
        .filter(|r| r.len() >= 2 && line[r.start] == b'"' && line[r.end - 1] == b'"')
        .map(|r| r.start + 1..r.end - 1)
        .ok_or(Fault::Malformed)?;
    let text = |r: &Option<Range<usize>>| {
        bytes(r)
            .and_then(string_contents)
            .and_then(decode_str)
            .ok_or(Fault::Malformed)
    };
    let event = text(&spans.event)?;
    let key_id = text(&spans.key_id)?;
    let next_key_id = if event == "key_rotated" {
        Some(text(&spans.next_key_id)?)
    } else {
        None
    };
    let prev = bytes(&spans.prev).and_then(hex32).ok_or(Fault::Malformed)?;
    let (mac_key_start, mac_value) = spans.mac.ok_or(Fault::Malformed)?;
    let mac = hex32(&line[mac_value.clone()]).ok_or(Fault::Malformed)?;
    // In a canonical record `mac` follows `event` and `key_id`, so a comma
    // precedes it.
    let comma = mac_key_start.checked_sub(1).ok_or(Fault::Malformed)?;
    if line[comma] != b',' {
        return Err(Fault::Malformed);
    }
    Ok(LineFields {
        seq,
        prev,
        mac,
        mac_member: comma..mac_value.end,
        key_id,
        event,
        ts,
        next_key_id,
        reviewers: spans.reviewers,
    })
}

/// The raw contents of a JSON string value, without quotes.
fn string_contents(value: &[u8]) -> Option<&[u8]> {
    value.strip_prefix(b"\"")?.strip_suffix(b"\"")
}

/// A quoted string of exactly 64 lowercase hex digits, as 32 bytes.
fn hex32(value: &[u8]) -> Option<[u8; 32]> {
    digits32(string_contents(value)?)
}

/// Exactly 64 lowercase hex digits, as 32 bytes.
#[inline]
pub(crate) fn digits32(digits: &[u8]) -> Option<[u8; 32]> {
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    // Table lookups with one validity check at the end: this runs twice
    // for every record a verifier reads.
    let mut invalid = 0u8;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        invalid |= hi | lo;
        *byte = hi << 4 | (lo & 0x0f);
    }
    (invalid & 0x80 == 0).then_some(out)
}

/// Lowercase hex digit values; 0x80 marks every other byte.
static NIBBLE: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut digit = 0u8;
    while digit < 16 {
        let symbol = if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        };
        table[symbol as usize] = digit;
        digit += 1;
    }
    table
};
