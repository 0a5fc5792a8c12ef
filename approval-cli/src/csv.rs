//! CSV rows (RFC 4180) for spreadsheets: every field quoted, and a field
//! that a spreadsheet would run as a formula (agent text such as
//! `=HYPERLINK(..)`) prefixed with `'`, so opening the file runs nothing.

/// Appends one row.
pub(crate) fn row(out: &mut String, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            out.push('\'');
        }
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        let mut out = String::new();
        row(
            &mut out,
            &["a,b", "say \"hi\"", "=cmd|' /c calc'!A0", "-1", "plain"],
        );
        assert_eq!(
            out,
            "\"a,b\",\"say \"\"hi\"\"\",\"'=cmd|' /c calc'!A0\",\"'-1\",\"plain\"\n"
        );
    }
}
