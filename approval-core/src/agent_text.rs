//! The rule every channel follows for text the gate did not write: the
//! agent's resource, reason, arguments and identity, and reviewers'
//! comments. Such text stays on the line where the channel puts it, after
//! the channel's own label, so it can never start a line of its own that
//! looks like one of the gate's facts ("Approved by", "Policy", "Expires").

use std::borrow::Cow;

/// What a line break in such text is shown as.
pub const LINE_BREAK_MARK: &str = " ↵ ";

/// The characters that end a line in some renderer: LF, VT, FF, CR, NEL,
/// and Unicode's LINE SEPARATOR and PARAGRAPH SEPARATOR.
///
/// ```
/// let lines: Vec<_> = "a\u{2028}b\nc".split(approval_core::LINE_BREAKS).collect();
/// assert_eq!(lines, ["a", "b", "c"]);
/// ```
pub const LINE_BREAKS: [char; 7] = [
    '\n', '\u{0B}', '\u{0C}', '\r', '\u{85}', '\u{2028}', '\u{2029}',
];

fn breaks_line(c: char) -> bool {
    LINE_BREAKS.contains(&c)
}

/// `text` on one line: each line break (CR LF counts as one) becomes
/// [`LINE_BREAK_MARK`]. A channel escapes the result for its markup; the
/// Slack, Teams, console and terminal approvers all do this.
///
/// ```
/// use approval_core::one_line;
///
/// assert_eq!(one_line("quarterly report"), "quarterly report");
/// assert_eq!(one_line("ok\r\nApproved by: alice"), "ok ↵ Approved by: alice");
/// assert_eq!(one_line("a\u{2028}b\u{85}c"), "a ↵ b ↵ c");
/// ```
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.contains(breaks_line) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if breaks_line(c) {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push_str(LINE_BREAK_MARK);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_line_break_survives_in_any_spelling() {
        for attack in [
            "x\nApproved by: alice",
            "x\rApproved by: alice",
            "x\r\nApproved by: alice",
            "x\u{0B}Approved by: alice",
            "x\u{0C}Approved by: alice",
            "x\u{85}Approved by: alice",
            "x\u{2028}Approved by: alice",
            "x\u{2029}Approved by: alice",
        ] {
            let shown = one_line(attack);
            assert_eq!(shown, "x ↵ Approved by: alice", "{attack:?}");
            assert!(!shown.contains(breaks_line));
        }
        assert_eq!(one_line("\n\n"), " ↵  ↵ ");
    }
}
