//! Writing RFC 8785 canonical JSON.
//!
//! Two paths share the same primitives: [`write_value`] canonicalises any
//! `serde_json::Value` (user data, once per call), and the audit records'
//! own members are written directly in sorted order by [`Members`], which
//! skips the generic value tree altogether.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use super::CanonicalError;
use super::scan::find_special;

/// The largest integer magnitude JCS keeps exactly (2^53 − 1).
pub(crate) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Appends `s` as a JCS string literal, quotes included.
///
/// JCS escapes `"` and `\`, writes U+0008, U+0009, U+000A, U+000C and U+000D
/// as `\b \t \n \f \r`, every other control character below U+0020 as
/// `\u00xx` with lowercase hex, and everything else as literal UTF-8.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut rest = s.as_bytes();
    while let Some(i) = find_special(rest) {
        out.extend_from_slice(&rest[..i]);
        let b = rest[i];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends lowercase hex of `bytes`.
pub fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    hex_into(&mut out[start..], bytes);
}

/// Writes lowercase hex of `bytes` into `dest`, which is twice as long.
pub(crate) fn hex_into(dest: &mut [u8], bytes: &[u8]) {
    for (pair, &b) in dest.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// Appends an unsigned integer in decimal.
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends a finite double as ECMAScript's `Number::toString` writes it.
pub(crate) fn write_f64(out: &mut Vec<u8>, f: f64) -> Result<(), CanonicalError> {
    if !f.is_finite() {
        return Err(CanonicalError::NonFinite);
    }
    if f == 0.0 {
        // Both zeros print as `0`.
        out.push(b'0');
        return Ok(());
    }
    let mut buffer = ryu_js::Buffer::new();
    out.extend_from_slice(buffer.format_finite(f).as_bytes());
    Ok(())
}

fn write_number(out: &mut Vec<u8>, n: &Number) -> Result<(), CanonicalError> {
    if let Some(u) = n.as_u64() {
        write_data_u64(out, u);
        Ok(())
    } else if let Some(i) = n.as_i64() {
        write_data_i64(out, i);
        Ok(())
    } else {
        // serde_json only holds finite doubles, but check anyway.
        write_f64(out, n.as_f64().ok_or(CanonicalError::NonFinite)?)
    }
}

/// Appends an integer from user data. Outside ±(2^53 − 1) an integer would
/// become another number: AUDIT-FORMAT.md keeps its digits as a string
/// instead.
pub(crate) fn write_data_u64(out: &mut Vec<u8>, u: u64) {
    if u <= MAX_SAFE_INTEGER {
        write_u64(out, u);
    } else {
        out.push(b'"');
        write_u64(out, u);
        out.push(b'"');
    }
}

/// Appends a signed integer from user data; see [`write_data_u64`].
pub(crate) fn write_data_i64(out: &mut Vec<u8>, i: i64) {
    let magnitude = i.unsigned_abs();
    if i >= 0 {
        return write_data_u64(out, magnitude);
    }
    let quoted = magnitude > MAX_SAFE_INTEGER;
    if quoted {
        out.push(b'"');
    }
    out.push(b'-');
    write_u64(out, magnitude);
    if quoted {
        out.push(b'"');
    }
}

/// Appends the canonical form of `value`.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_str(out, s),
        Value::Array(items) => write_array(out, items, write_value)?,
        Value::Object(map) => write_object(out, map)?,
    }
    Ok(())
}

/// Appends `[…]` with each item written by `write`.
pub(crate) fn write_array<T>(
    out: &mut Vec<u8>,
    items: &[T],
    mut write: impl FnMut(&mut Vec<u8>, &T) -> Result<(), CanonicalError>,
) -> Result<(), CanonicalError> {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item)?;
    }
    out.push(b']');
    Ok(())
}

pub(crate) fn write_object(
    out: &mut Vec<u8>,
    map: &Map<String, Value>,
) -> Result<(), CanonicalError> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // `Map` iterates in UTF-8 byte order, which equals UTF-16 order except
    // between astral characters and U+E000..U+FFFF: sort only if needed.
    if !entries.is_sorted_by(|a, b| cmp_utf16(a.0, b.0) != Ordering::Greater) {
        entries.sort_by(|a, b| cmp_utf16(a.0, b.0));
    }
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value)?;
    }
    out.push(b'}');
    Ok(())
}

/// Orders strings by their UTF-16 code units, as RFC 8785 sorts members.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The first eight bytes of `key`, big-endian, zero-padded: ordering these
/// orders byte strings by their start.
pub(crate) fn prefix(key: impl AsRef<[u8]>) -> u64 {
    let key = key.as_ref();
    if let Some(head) = key.first_chunk::<8>() {
        return u64::from_be_bytes(*head);
    }
    // Shorter keys: shift bytes in (a copy into a buffer would be a call to
    // memcpy and a stalled load, on every comparison).
    key.iter()
        .zip((0..8).rev())
        .fold(0, |acc, (&b, shift)| acc | u64::from(b) << (shift * 8))
}

/// A member value the record writer knows how to put in canonical form.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Member<'a> {
    /// A string, escaped as JCS prescribes.
    Str(&'a str),
    /// A non-negative integer; must be at most 2^53 − 1.
    Int(u64),
    /// Bytes written as a lowercase hex string.
    Hex(&'a [u8]),
    /// Bytes that are already canonical JSON.
    Raw(&'a [u8]),
}

impl Member<'_> {
    /// Appends the value in canonical form.
    pub(crate) fn write(self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        match self {
            Member::Str(s) => write_str(out, s),
            Member::Int(n) => {
                if n > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::IntegerOutOfRange);
                }
                write_u64(out, n);
            }
            Member::Hex(bytes) => {
                out.push(b'"');
                write_hex(out, bytes);
                out.push(b'"');
            }
            Member::Raw(json) => out.extend_from_slice(json),
        }
        Ok(())
    }
}

/// Builds one JSON object from known members, in canonical order, without a
/// generic value tree: the fast path for audit records.
#[derive(Debug, Default)]
pub(crate) struct Members<'a> {
    /// (key's first eight bytes as an integer, key, value).
    items: Vec<(u64, &'a str, Member<'a>)>,
}

impl<'a> Members<'a> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            items: Vec::with_capacity(n),
        }
    }

    pub(crate) fn push(&mut self, key: &'a str, value: Member<'a>) -> &mut Self {
        self.items.push((prefix(key), key, value));
        self
    }

    pub(crate) fn push_opt_str(&mut self, key: &'a str, value: Option<&'a str>) -> &mut Self {
        if let Some(value) = value {
            self.push(key, Member::Str(value));
        }
        self
    }

    /// Writes the object; returns the byte offset in `out` at which a member
    /// named `split` would be inserted, including its leading comma.
    pub(crate) fn write(
        mut self,
        out: &mut Vec<u8>,
        split: Option<&str>,
    ) -> Result<Option<usize>, CanonicalError> {
        // Record members have short ASCII names, for which UTF-16 order is
        // byte order: compare their first eight bytes as one integer.
        if self.items.iter().all(|(_, key, _)| key.is_ascii()) {
            // The prefix was computed once, when the member was pushed.
            self.items
                .sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        } else {
            self.items.sort_unstable_by(|a, b| cmp_utf16(a.1, b.1));
        }
        if self.items.windows(2).any(|w| w[0].1 == w[1].1) {
            return Err(CanonicalError::DuplicateMember);
        }
        let mut split_at = None;
        out.push(b'{');
        for (i, (_, key, value)) in self.items.iter().enumerate() {
            if let Some(name) = split
                && split_at.is_none()
                && cmp_utf16(name, key) == Ordering::Less
            {
                // The inserted text starts with a comma, so something must
                // precede it; records always start with `event`.
                debug_assert!(i > 0, "split member would come first");
                split_at = Some(out.len());
            }
            if i > 0 {
                out.push(b',');
            }
            write_str(out, key);
            out.push(b':');
            value.write(out)?;
        }
        if split.is_some() && split_at.is_none() {
            split_at = Some(out.len());
        }
        out.push(b'}');
        Ok(split_at)
    }
}
