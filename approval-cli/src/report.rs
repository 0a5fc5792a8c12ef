//! `report.html`: the evidence pack's summary for people, every value
//! escaped (actions, resources and reviewers can be agent text).

use std::path::Path;

use crate::population::{COLUMNS, Population, heading};

/// Text safe inside HTML elements and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One table row of cells (escaped).
fn tr(out: &mut String, cell: &str, cells: &[&str]) {
    out.push_str("<tr>");
    for value in cells {
        out.push_str(&format!("<{cell}>{}</{cell}>", escape(value)));
    }
    out.push_str("</tr>\n");
}

/// The report for `population`, read from `log`.
pub(crate) fn html(population: &Population, log: &Path) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>Approval evidence</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}\
         td,th{border:1px solid #999;padding:.2em .5em;text-align:left}</style></head><body>\n",
    );
    out.push_str("<h1>Approval evidence</h1>\n<p>");
    out.push_str(&escape(&format!(
        "{} requests in the period, from {}. Check the pack with CHECK.sh before relying on it.",
        population.requests().len(),
        log.display()
    )));
    out.push_str("</p>\n<h2>Per policy</h2>\n<table>\n");
    let headings: Vec<String> = COLUMNS.iter().map(|c| heading(c)).collect();
    let mut header = vec!["policy"];
    header.extend(headings.iter().map(String::as_str));
    tr(&mut out, "th", &header);
    for (policy, counts) in population.by_policy() {
        let numbers: Vec<String> = counts.iter().map(ToString::to_string).collect();
        let mut cells = vec![policy.as_str()];
        cells.extend(numbers.iter().map(String::as_str));
        tr(&mut out, "td", &cells);
    }
    out.push_str("</table>\n<h2>Per reviewer</h2>\n<table>\n");
    tr(&mut out, "th", &["reviewer", "approve votes", "deny votes"]);
    for (who, approve, deny) in population.by_reviewer() {
        tr(
            &mut out,
            "td",
            &[&who, &approve.to_string(), &deny.to_string()],
        );
    }
    out.push_str("</table>\n<h2>Denied, expired and cancelled</h2>\n<table>\n");
    tr(
        &mut out,
        "th",
        &[
            "request",
            "asked at",
            "action",
            "policy",
            "actor",
            "outcome",
            "reviewers",
        ],
    );
    for r in population
        .requests()
        .iter()
        .filter(|r| matches!(r.outcome.as_str(), "denied" | "expired" | "cancelled"))
    {
        tr(
            &mut out,
            "td",
            &[
                &r.id,
                &r.requested_at,
                &r.action,
                &r.resource,
                &r.policy,
                &r.actor,
                &r.outcome,
                &r.reviewers.join(", "),
            ],
        );
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_text_is_escaped() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
