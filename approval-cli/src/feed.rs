//! `approval feed`: the log's records, copied as JSON lines to a file a
//! SIEM reads, exactly once across restarts.
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
    follow: bool,
    poll: Duration,
) -> Result<ExitCode, String> {
    let shown = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let mut last = resume(out).map_err(|e| shown(out, e))?;
    let mut feed = OpenOptions::new()
        .append(true)
        .open(out)
        .map_err(|e| shown(out, e))?;
    let mut source = BufReader::new(File::open(log).map_err(|e| shown(log, e))?);
    let mut checked = last.is_none();
    loop {
        match pass(&mut source, &mut feed, &mut last, &mut checked) {
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
        let (seq, prev, mac) = facts(&line)
            .ok_or_else(|| Refused(format!("the line at byte {start} is not a record")))?;
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
        batch.extend_from_slice(&line);
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

/// The feed's last whole record, creating the feed if it does not exist
/// and cutting off a torn last line.
fn resume(out: &Path) -> std::io::Result<Option<Last>> {
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
    let (seq, _, mac) = facts(line).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the feed's last line is not a record",
        )
    })?;
    Ok(Some(Last {
        seq,
        mac,
        line: line.to_vec(),
    }))
}

/// A record line's `seq`, `prev` and `mac`.
fn facts(line: &[u8]) -> Option<(u64, String, String)> {
    let record: Value = serde_json::from_slice(line).ok()?;
    Some((
        record["seq"].as_u64()?,
        record["prev"].as_str()?.to_owned(),
        record["mac"].as_str()?.to_owned(),
    ))
}
