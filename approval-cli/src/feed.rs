//! `approval feed`: the log's records, copied as JSON lines (or as RFC
//! 5424 syslog lines carrying each record) to a file a SIEM reads, exactly
//! once across restarts.
//!
//! The feed is its own cursor: its last line is the last record copied.
//! At start the log's record with that `seq` must be that same line (else
//! the log is not the one the feed followed), and each record copied next
//! must continue the chain (`seq` + 1, `prev` the last `mac`). Lines are
//! appended in batches and synced; a torn last line (a crash mid-write) is
//! cut off and written again. A record the writer has not finished (no
//! line end yet) is left for the next pass.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// Records copied per write (and sync) of the feed.
const BATCH: usize = 1024;

/// How each record is written to the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Format {
    /// The record's line, unchanged.
    Json,
    /// An RFC 5424 line whose message is the record's line: facility 13
    /// (log audit), severity warning for a refusal and notice otherwise,
    /// the record's `ts`, `hostname` (or `-`), app `approval`, and the
    /// event word as the message id.
    Syslog { hostname: String },
}

impl Format {
    /// Parses `--format` and `--hostname`.
    pub(crate) fn parse(format: &str, hostname: Option<&str>) -> Result<Self, String> {
        match (format, hostname) {
            ("json", None) => Ok(Self::Json),
            ("json", Some(_)) => Err("--hostname is for --format syslog".into()),
            ("syslog", hostname) => {
                let hostname = hostname.unwrap_or("-");
                // RFC 5424's PRINTUSASCII, at most 255 characters, and no
                // `{`, so that a line's record is where its first `{` is.
                if hostname.is_empty()
                    || hostname.len() > 255
                    || !hostname
                        .bytes()
                        .all(|b| (33..=126).contains(&b) && b != b'{')
                {
                    return Err(format!(
                        "--hostname {hostname:?}: printable ASCII without spaces"
                    ));
                }
                Ok(Self::Syslog {
                    hostname: hostname.to_owned(),
                })
            }
            (other, _) => Err(format!("--format {other:?}: json or syslog")),
        }
    }

    /// Appends the feed line for a record's `line` (with its line end),
    /// already parsed as `record`.
    fn append(&self, record: &Value, line: &[u8], out: &mut Vec<u8>) {
        let Self::Syslog { hostname } = self else {
            out.extend_from_slice(line);
            return;
        };
        let event = record["event"].as_str().unwrap_or_default();
        // A refusal, a failed body or a removed tail is worth a warning.
        let warning = matches!(event, "denied" | "expired" | "rejected_vote" | "recovered")
            || matches!(record["outcome"].as_str(), Some("error" | "panicked"));
        let priority = 13 * 8 + if warning { 4 } else { 5 };
        // The event word, if it is one (a log is text anyone could write).
        let msgid = if !event.is_empty()
            && event.len() <= 32
            && event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            event
        } else {
            "-"
        };
        let ts = record["ts"]
            .as_str()
            .filter(|ts| approval_audit::clock::parse_ts(ts.as_bytes()).is_some())
            .unwrap_or("-");
        out.extend_from_slice(
            format!("<{priority}>1 {ts} {hostname} approval - {msgid} - ").as_bytes(),
        );
        out.extend_from_slice(line);
    }
}

/// The record a feed line carries, and the format it is in.
fn record_of(line: &[u8]) -> Option<(&[u8], bool)> {
    match line.first()? {
        b'{' => Some((line, false)),
        b'<' => {
            let start = line.iter().position(|&b| b == b'{')?;
            Some((&line[start..], true))
        }
        _ => None,
    }
}

/// The last record copied: what the next one must continue.
struct Last {
    seq: u64,
    mac: String,
    line: Vec<u8>,
}

/// Runs the feed: one pass, or with `follow` one every `poll` for ever.
pub(crate) fn feed(
    log: &Path,
    out: &Path,
    format: &Format,
    follow: bool,
    poll: Duration,
) -> Result<ExitCode, String> {
    let shown = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let (mut last, syslog) = match resume(out).map_err(|e| shown(out, e))? {
        Some((last, syslog)) => (Some(last), Some(syslog)),
        None => (None, None),
    };
    if syslog.is_some_and(|syslog| syslog != matches!(format, Format::Syslog { .. })) {
        return Err(format!(
            "{} is a feed in the other format; keep its --format",
            out.display()
        ));
    }
    let mut feed = OpenOptions::new()
        .append(true)
        .open(out)
        .map_err(|e| shown(out, e))?;
    let mut source = BufReader::new(File::open(log).map_err(|e| shown(log, e))?);
    let mut checked = last.is_none();
    loop {
        match pass(&mut source, &mut feed, format, &mut last, &mut checked) {
            Ok(()) => {}
            Err(Refused(why)) => {
                eprintln!("refused: {}: {why}", log.display());
                return Ok(ExitCode::from(1));
            }
            Err(Io(e)) => return Err(format!("{}: {e}", log.display())),
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(poll);
    }
}

enum Stop {
    /// The log does not continue the feed.
    Refused(String),
    Io(std::io::Error),
}
use Stop::{Io, Refused};

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Io(e)
    }
}

/// Copies the whole records the log has past `last`.
fn pass(
    source: &mut BufReader<File>,
    feed: &mut File,
    format: &Format,
    last: &mut Option<Last>,
    checked: &mut bool,
) -> Result<(), Stop> {
    let mut batch = Vec::new();
    let mut count = 0;
    loop {
        let start = source.stream_position()?;
        let mut line = Vec::new();
        source.read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') {
            // The end, or a record still being written: read it again next
            // pass, whole.
            source.seek(SeekFrom::Start(start))?;
            break;
        }
        let not_a_record = || Refused(format!("the line at byte {start} is not a record"));
        let record: Value = serde_json::from_slice(&line).map_err(|_| not_a_record())?;
        let (seq, prev, mac) = facts(&record).ok_or_else(not_a_record)?;
        match last {
            Some(l) if !*checked => {
                // Finding the feed's last record in the log.
                if seq < l.seq {
                    continue;
                }
                if seq > l.seq || line != l.line {
                    return Err(Refused(format!(
                        "its record {} is not the feed's last line: not the log this feed follows",
                        l.seq
                    )));
                }
                *checked = true;
                continue;
            }
            Some(l) if seq != l.seq + 1 || prev != l.mac => {
                // What did follow is copied; nothing past the break.
                write(feed, &mut batch)?;
                return Err(Refused(format!(
                    "record {seq} does not follow record {} (seq or prev)",
                    l.seq
                )));
            }
            None if seq != 0 => {
                return Err(Refused(format!("it starts at record {seq}, not 0")));
            }
            _ => {}
        }
        format.append(&record, &line, &mut batch);
        count += 1;
        *last = Some(Last { seq, mac, line });
        if count == BATCH {
            write(feed, &mut batch)?;
            count = 0;
        }
    }
    if !*checked {
        return Err(Refused(
            "it ends before the feed's last record: not the log this feed follows".into(),
        ));
    }
    write(feed, &mut batch)?;
    Ok(())
}

/// Appends `batch` to the feed and syncs it.
fn write(feed: &mut File, batch: &mut Vec<u8>) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    feed.write_all(batch)?;
    feed.sync_data()?;
    batch.clear();
    Ok(())
}

/// The feed's last whole record (and whether the feed is in syslog form),
/// creating the feed if it does not exist and cutting off a torn last line.
fn resume(out: &Path) -> std::io::Result<Option<(Last, bool)>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(out)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let whole = text
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1);
    if whole < text.len() {
        file.set_len(u64::try_from(whole).unwrap_or(u64::MAX))?;
        file.sync_data()?;
    }
    let lines = &text[..whole];
    let Some(line) =
        lines
            .strip_suffix(b"\n")
            .map(|body| match body.iter().rposition(|&b| b == b'\n') {
                Some(i) => &lines[i + 1..],
                None => lines,
            })
    else {
        return Ok(None);
    };
    let not_a_record = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the feed's last line is not a record",
        )
    };
    let (line, syslog) = record_of(line).ok_or_else(not_a_record)?;
    let record: Value = serde_json::from_slice(line).map_err(|_| not_a_record())?;
    let (seq, _, mac) = facts(&record).ok_or_else(not_a_record)?;
    Ok(Some((
        Last {
            seq,
            mac,
            line: line.to_vec(),
        },
        syslog,
    )))
}

/// A record's `seq`, `prev` and `mac`.
fn facts(record: &Value) -> Option<(u64, String, String)> {
    Some((
        record["seq"].as_u64()?,
        record["prev"].as_str()?.to_owned(),
        record["mac"].as_str()?.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syslog() -> Format {
        Format::parse("syslog", Some("gate-1")).unwrap()
    }

    /// The feed line `format` writes for a record's line.
    fn line_of(format: &Format, line: &[u8]) -> Vec<u8> {
        let record: Value = serde_json::from_slice(line).unwrap();
        let mut out = Vec::new();
        format.append(&record, line, &mut out);
        out
    }

    #[test]
    fn a_syslog_line_carries_the_record_with_its_time_event_and_weight() {
        let approved = br#"{"event":"approved","seq":3,"ts":"2026-12-07T10:00:00.000Z"}
"#;
        let line = line_of(&syslog(), approved);
        let text = String::from_utf8(line.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "<109>1 2026-12-07T10:00:00.000Z gate-1 approval - approved - {}",
                String::from_utf8_lossy(approved)
            )
        );
        assert_eq!(record_of(&line), Some((&approved[..], true)));
        let denied = br#"{"event":"denied","ts":"2026-12-07T10:00:00.000Z"}
"#;
        assert!(line_of(&syslog(), denied).starts_with(b"<108>1 "));
        let failed = br#"{"event":"executed","outcome":"error","ts":"2026-12-07T10:00:00.000Z"}
"#;
        assert!(line_of(&syslog(), failed).starts_with(b"<108>1 "));
        // What is not an event word or a time is left out, not copied.
        let odd = br#"{"event":"x - y","ts":"yesterday"}
"#;
        assert!(line_of(&syslog(), odd).starts_with(b"<109>1 - gate-1 approval - - - {"));
    }

    #[test]
    fn formats_and_hostnames_are_checked() {
        assert_eq!(Format::parse("json", None), Ok(Format::Json));
        assert!(Format::parse("json", Some("h")).is_err());
        assert!(
            Format::parse("cef", None)
                .unwrap_err()
                .contains("json or syslog")
        );
        for bad in ["", "two words", "a{b", "é"] {
            assert!(Format::parse("syslog", Some(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(
            Format::parse("syslog", None),
            Ok(Format::Syslog {
                hostname: "-".into()
            })
        );
    }
}
