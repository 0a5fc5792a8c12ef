//! Checking that bytes are RFC 8785 canonical JSON, in one pass.
//!
//! Parsing a line into a value tree and serialising it again costs far more
//! than the line's HMAC; instead this parser walks the bytes once, accepts
//! exactly JSON (RFC 8259), and notes anything a canonical writer would have
//! written differently: white space, a member out of UTF-16 order or
//! repeated, an escape JCS does not use, a number not in ECMAScript form.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::Range;

use super::scan::{find_special, find_special_or_high};
use super::write::{cmp_utf16, prefix, write_f64};

/// Why bytes are not canonical JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Not JSON at all (or not UTF-8, or nested too deep).
    Malformed,
    /// Valid JSON, but not byte for byte its own canonical form.
    NotCanonical,
}

/// Called with each member's raw key, the offset of the key's opening
/// quote, and the value's range.
type OnMember<'f> = dyn FnMut(&[u8], usize, Range<usize>) + 'f;

/// Nesting deeper than this is refused as malformed, as serde_json does.
const MAX_DEPTH: u32 = 128;

/// Checks that `bytes` hold exactly one canonical JSON value.
pub(crate) fn check_value(bytes: &[u8]) -> Result<(), Fault> {
    let mut parser = Parser::new(bytes)?;
    parser.value(&mut |_, _, _| {})?;
    parser.finish()
}

/// Checks that `bytes` hold one canonical JSON object, calling `member` with
/// the raw key, the offset of the key's opening quote and the value's range
/// for each top-level member in order.
pub(crate) fn check_object(bytes: &[u8], member: &mut OnMember<'_>) -> Result<(), Fault> {
    let mut parser = Parser::new(bytes)?;
    if parser.peek() != Some(b'{') {
        // Valid JSON that is not an object is still no record.
        return Err(Fault::Malformed);
    }
    parser.object(member)?;
    parser.finish()
}

/// Decodes a JSON string's raw contents (between the quotes).
pub(crate) fn decode_str(raw: &[u8]) -> Option<Cow<'_, str>> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(Cow::Owned)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: u32,
    canonical: bool,
}

type Step = Result<(), Fault>;

impl<'a> Parser<'a> {
    fn new(s: &'a [u8]) -> Result<Self, Fault> {
        // UTF-8 is validated per string, and only in strings with non-ASCII
        // bytes: outside strings, JSON's grammar admits only ASCII.
        let mut parser = Self {
            s,
            i: 0,
            depth: 0,
            canonical: true,
        };
        parser.whitespace();
        Ok(parser)
    }

    fn finish(mut self) -> Step {
        self.whitespace();
        if self.i != self.s.len() {
            return Err(Fault::Malformed);
        }
        if self.canonical {
            Ok(())
        } else {
            Err(Fault::NotCanonical)
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, b: u8) -> Step {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(Fault::Malformed)
        }
    }

    fn whitespace(&mut self) {
        let start = self.i;
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
        if self.i != start {
            self.canonical = false;
        }
    }

    fn value(&mut self, member: &mut OnMember<'_>) -> Step {
        match self.peek().ok_or(Fault::Malformed)? {
            b'{' => self.object(member),
            b'[' => self.array(),
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Fault::Malformed),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Step {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Fault::Malformed)
        }
    }

    fn enter(&mut self) -> Step {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Fault::Malformed)
        } else {
            Ok(())
        }
    }

    /// Parses an object; `member` sees its members (nested objects report
    /// to a no-op).
    fn object(&mut self, member: &mut OnMember<'_>) -> Step {
        self.enter()?;
        self.expect(b'{')?;
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        let mut previous: Option<(Range<usize>, bool)> = None;
        loop {
            self.whitespace();
            if self.peek() != Some(b'"') {
                return Err(Fault::Malformed);
            }
            let key_start = self.i;
            let plain = self.string()?;
            let key = key_start + 1..self.i - 1;
            if let Some((prev, prev_plain)) = previous.take()
                && self.key_order(prev, prev_plain, key.clone(), plain) != Ordering::Less
            {
                // Out of order, or a duplicate member.
                self.canonical = false;
            }
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            let value_start = self.i;
            self.value(&mut |_, _, _| {})?;
            member(&self.s[key.clone()], key_start, value_start..self.i);
            self.whitespace();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(Fault::Malformed),
            }
            previous = Some((key, plain));
        }
    }

    fn key_order(
        &self,
        a: Range<usize>,
        a_plain: bool,
        b: Range<usize>,
        b_plain: bool,
    ) -> Ordering {
        let (a, b) = (&self.s[a], &self.s[b]);
        if a_plain && b_plain {
            // Plain keys order by their bytes; most differ in the first
            // eight, compared as one integer.
            return (prefix(a), a).cmp(&(prefix(b), b));
        }
        match (decode_str(a), decode_str(b)) {
            (Some(a), Some(b)) => cmp_utf16(&a, &b),
            // Unreachable for strings the parser accepted; order them
            // "equal" so the line is flagged rather than passed.
            _ => Ordering::Equal,
        }
    }

    fn array(&mut self) -> Step {
        self.enter()?;
        self.expect(b'[')?;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.whitespace();
            self.value(&mut |_, _, _| {})?;
            self.whitespace();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(Fault::Malformed),
            }
        }
    }

    /// Parses a string; returns whether it is plain (ASCII, no escapes),
    /// so that its raw bytes order as its UTF-16 code units.
    fn string(&mut self) -> Result<bool, Fault> {
        self.expect(b'"')?;
        let start = self.i;
        let mut plain = true;
        let mut non_ascii = false;
        loop {
            let rest = &self.s[self.i..];
            let stop = if non_ascii {
                find_special(rest)
            } else {
                find_special_or_high(rest)
            };
            self.i += stop.ok_or(Fault::Malformed)?;
            match self.s[self.i] {
                b'"' => {
                    if non_ascii {
                        std::str::from_utf8(&self.s[start..self.i])
                            .map_err(|_| Fault::Malformed)?;
                    }
                    self.i += 1;
                    return Ok(plain);
                }
                b'\\' => {
                    plain = false;
                    self.escape()?;
                }
                0x80.. => {
                    plain = false;
                    non_ascii = true;
                }
                // A raw control character is not JSON.
                _ => return Err(Fault::Malformed),
            }
        }
    }

    fn escape(&mut self) -> Step {
        let kind = *self.s.get(self.i + 1).ok_or(Fault::Malformed)?;
        self.i += 2;
        match kind {
            b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'/' => {
                self.canonical = false;
                Ok(())
            }
            b'u' => {
                let (unit, lowercase) = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must pair with a low one; JCS
                        // writes the pair as literal UTF-8.
                        if !self.s[self.i..].starts_with(b"\\u") {
                            return Err(Fault::Malformed);
                        }
                        self.i += 2;
                        let (low, _) = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Fault::Malformed);
                        }
                        self.canonical = false;
                    }
                    0xDC00..=0xDFFF => return Err(Fault::Malformed),
                    0x08 | 0x09 | 0x0a | 0x0c | 0x0d => self.canonical = false,
                    0x00..=0x1f if lowercase => {}
                    _ => self.canonical = false,
                }
                Ok(())
            }
            _ => Err(Fault::Malformed),
        }
    }

    /// Reads four hex digits; also says whether none was an uppercase letter.
    fn hex4(&mut self) -> Result<(u32, bool), Fault> {
        let digits = self.s.get(self.i..self.i + 4).ok_or(Fault::Malformed)?;
        let mut unit = 0u32;
        let mut lowercase = true;
        for &d in digits {
            let nibble = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => {
                    lowercase = false;
                    d - b'A' + 10
                }
                _ => return Err(Fault::Malformed),
            };
            unit = unit << 4 | u32::from(nibble);
        }
        self.i += 4;
        Ok((unit, lowercase))
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Step {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_digits = match self.peek() {
            Some(b'0') => {
                self.i += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Fault::Malformed),
        };
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integer = false;
            if self.digits() == 0 {
                return Err(Fault::Malformed);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Fault::Malformed);
            }
        }
        let token = &self.s[start..self.i];
        if integer && int_digits <= 15 {
            // Every integer of up to 15 digits is a double that ECMAScript
            // prints digit for digit; only `-0` prints otherwise.
            if token == b"-0" {
                self.canonical = false;
            }
            return Ok(());
        }
        // A number beyond a double's range is refused as serde_json does.
        let value = std::str::from_utf8(token)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .ok_or(Fault::Malformed)?;
        let mut printed = Vec::with_capacity(token.len());
        write_f64(&mut printed, value).map_err(|_| Fault::Malformed)?;
        if printed != token {
            self.canonical = false;
        }
        Ok(())
    }
}
