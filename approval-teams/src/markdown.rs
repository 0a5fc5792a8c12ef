//! Agent text in an Adaptive Card's Markdown (TextBlock text and FactSet
//! values): escaped so it cannot become bold, a list, a link, a mention or
//! a date function, kept on one line so it cannot fake the card's layout,
//! and cut without splitting a character or an escape.

/// Characters Teams' card Markdown (or CommonMark, which its renderers
/// follow) gives a meaning, escaped with a backslash. `<` and `>` are
/// escaped too (mentions, autolinks), and `{`/`}` so that `{{DATE(…)}}`
/// and `{{TIME(…)}}` functions cannot be formed.
const SPECIAL: &[char] = &[
    '\\', '*', '_', '[', ']', '(', ')', '~', '`', '<', '>', '#', '{', '}', '|', '!', '-', '+', '.',
    '=', '&',
];

/// Escapes `text` for a TextBlock or a fact value: every character Teams'
/// Markdown reacts to gets a backslash; line breaks become ` ↵ `
/// ([`approval_core::one_line`], the rule of every channel) and other
/// control characters `�`, so agent text stays on its line.
///
/// ```
/// use approval_teams::markdown::escape;
///
/// assert_eq!(escape("**Approved** by [security](https://x)"),
///            r"\*\*Approved\*\* by \[security\]\(https://x\)");
/// assert_eq!(escape("ok\n- Policy: none"), r"ok ↵ \- Policy: none");
/// assert_eq!(escape("{{DATE(2026-01-01T00:00:00Z)}}"), r"\{\{DATE\(2026\-01\-01T00:00:00Z\)\}\}");
/// ```
pub fn escape(text: &str) -> String {
    let text = approval_core::one_line(text);
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// One character of text already on one line, escaped.
fn push_escaped(out: &mut String, c: char) {
    match c {
        c if c.is_control() => out.push('\u{fffd}'),
        c if SPECIAL.contains(&c) => {
            out.push('\\');
            out.push(c);
        }
        c => out.push(c),
    }
}

/// [`escape`]d and cut to at most `max` characters of the escaped text,
/// an ellipsis marking the cut; the cut falls between source characters,
/// never inside an escape.
///
/// ```
/// use approval_teams::markdown::literal;
///
/// assert_eq!(literal("a*b", 10), r"a\*b");
/// assert_eq!(literal("abcdef", 4), "abc…");
/// assert_eq!(literal("ab*cd", 4), "ab…");
/// ```
pub fn literal(text: &str, max: usize) -> String {
    let escaped = escape(text);
    if escaped.chars().count() <= max {
        return escaped;
    }
    let budget = max.saturating_sub(1);
    let mut out = String::new();
    let mut used = 0;
    let mut piece = String::new();
    for c in approval_core::one_line(text).chars() {
        piece.clear();
        push_escaped(&mut piece, c);
        let width = piece.chars().count();
        if used + width > budget {
            break;
        }
        used += width;
        out.push_str(&piece);
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_character_is_escaped_and_nothing_else() {
        for &c in SPECIAL {
            assert_eq!(escape(&c.to_string()), format!("\\{c}"));
        }
        assert_eq!(escape("plain words 123 é 🙂"), "plain words 123 é 🙂");
    }

    #[test]
    fn control_characters_cannot_break_lines_or_hide() {
        assert_eq!(
            escape("a\r\nb\rc\u{0}d\u{1b}e\u{2028}f"),
            "a ↵ b ↵ c\u{fffd}d\u{fffd}e ↵ f"
        );
    }

    #[test]
    fn a_cut_never_splits_an_escape_and_respects_the_limit() {
        let hostile = "\\*_".repeat(1000);
        for max in 1..40 {
            let cut = literal(&hostile, max);
            assert!(cut.chars().count() <= max, "{max}: {cut}");
            let body = cut.trim_end_matches('…');
            // Whole escapes only: pairs, each starting with its backslash.
            assert!(body.len().is_multiple_of(2), "{max}: {cut}");
            assert!(body.as_bytes().chunks(2).all(|pair| pair[0] == b'\\'));
        }
    }
}
