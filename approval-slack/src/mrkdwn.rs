//! Agent text in Slack's `mrkdwn`: escaped so it cannot become a mention, a
//! link or markup, and cut to Slack's limits without breaking a character
//! or an escape (SLACK.md §2.1, §2.4).

/// Escapes Slack's three control characters, `&` first: `&` → `&amp;`,
/// `<` → `&lt;`, `>` → `&gt;`. Nothing else is encoded.
///
/// ```
/// use approval_slack::mrkdwn::escape;
///
/// assert_eq!(escape("Hello & <world>"), "Hello &amp; &lt;world&gt;");
/// assert_eq!(escape("<!channel> <@U0BOSS>"), "&lt;!channel&gt; &lt;@U0BOSS&gt;");
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Agent text as a literal: on one line ([`approval_core::one_line`]: a
/// line break shows as ` ↵ `, so the text cannot start a line that looks
/// like the gate's facts), escaped, and with the characters that start
/// `mrkdwn` formatting (`*`, `_`, `~`, `` ` ``) shown as themselves by
/// wrapping the whole in a code span, with backticks inside replaced by a
/// look-alike (U+02CB) so the span cannot be closed early. Cut to at most
/// `max` characters (an ellipsis marks the cut), never inside an escape.
///
/// ```
/// use approval_slack::mrkdwn::literal;
///
/// assert_eq!(literal("*urgent* <!here>", 100), "`*urgent* &lt;!here&gt;`");
/// assert_eq!(literal("abcdef", 6), "`abc…`");
/// assert_eq!(literal("ok\n*Approved* by alice", 100), "`ok ↵ *Approved* by alice`");
/// ```
pub fn literal(text: &str, max: usize) -> String {
    let body: String = approval_core::one_line(text)
        .chars()
        .map(|c| if c == '`' { '\u{2cb}' } else { c })
        .collect();
    // Two backticks wrap it; the rest is the budget for escaped text.
    let budget = max.saturating_sub(2);
    let escaped = escape(&body);
    if escaped.chars().count() <= budget {
        return format!("`{escaped}`");
    }
    // Cut the text before escaping, so no `&amp;` is split.
    let mut cut = String::new();
    let mut used = 0;
    for c in body.chars() {
        let width = match c {
            '&' => 5,
            '<' | '>' => 4,
            _ => 1,
        };
        if used + width + 1 > budget {
            break;
        }
        used += width;
        cut.push(c);
    }
    format!("`{}…`", escape(&cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_an_agent_writes_becomes_a_mention_a_link_or_an_early_end() {
        for attack in [
            "<!channel>",
            "<!here|here>",
            "<@U0ADMIN>",
            "<#C0SECRET>",
            "<https://evil.example|your bank>",
            "&lt;!channel&gt;",
            "`code` breaks out",
        ] {
            let shown = literal(attack, 3000);
            assert!(
                !shown[1..shown.len() - 1].contains(['<', '>', '`']),
                "{shown}"
            );
            assert!(shown.starts_with('`') && shown.ends_with('`'));
        }
        assert_eq!(escape("&lt;"), "&amp;lt;");
    }

    #[test]
    fn long_text_is_cut_within_the_limit_without_splitting_an_escape() {
        for max in 3..60 {
            for text in ["a".repeat(100), "&".repeat(100), "é<".repeat(50)] {
                let shown = literal(&text, max);
                assert!(shown.chars().count() <= max, "{max}: {shown}");
                let inner = &shown[1..shown.len() - 1];
                let inner = inner.strip_suffix('…').unwrap_or(inner);
                // Every `&` starts a whole escape.
                for (i, _) in inner.match_indices('&') {
                    let rest = &inner[i..];
                    assert!(
                        rest.starts_with("&amp;")
                            || rest.starts_with("&lt;")
                            || rest.starts_with("&gt;"),
                        "{max}: {shown}"
                    );
                }
            }
        }
    }
}
