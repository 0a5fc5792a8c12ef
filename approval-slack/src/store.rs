//! Where the messages of open requests are, kept on disk so that after a
//! restart their buttons can be taken down (SlackApprover's
//! `message_store`).
//!
//! One small file per open request, named by the request id in hex (ids
//! are the gate's, but a file name is no place to trust them), holding the
//! channel and `ts` on two lines. Written to a temporary name and renamed,
//! so a crash leaves either no file or a whole one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::api::PostedMessage;

#[derive(Debug)]
pub(crate) struct MessageStore {
    dir: PathBuf,
}

impl MessageStore {
    /// Opens (creating if needed) the store in `dir`.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.into() })
    }

    fn path(&self, request_id: &str) -> PathBuf {
        let name: String = request_id.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    pub(crate) fn remember(&self, request_id: &str, message: &PostedMessage) -> io::Result<()> {
        let path = self.path(request_id);
        let partial = path.with_extension("partial");
        fs::write(&partial, format!("{}\n{}\n", message.channel, message.ts))?;
        fs::rename(partial, path)
    }

    /// Forgets a request; one already forgotten is no error.
    pub(crate) fn forget(&self, request_id: &str) {
        // Best effort: a file left behind only means its message is
        // marked ended at the next restart.
        match fs::remove_file(self.path(request_id)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(%request_id, %error, "forgetting a request's Slack message failed");
            }
            _ => {}
        }
    }

    /// Every request remembered, with its message. Unreadable or partial
    /// files are skipped (they name no message that can be updated).
    pub(crate) fn all(&self) -> io::Result<Vec<(String, PostedMessage)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(unhex) else {
                continue;
            };
            let Ok(text) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let mut lines = text.lines();
            if let (Some(channel), Some(ts)) = (lines.next(), lines.next()) {
                let message = PostedMessage {
                    channel: channel.to_owned(),
                    ts: ts.to_owned(),
                };
                out.push((id, message));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn unhex(name: &str) -> Option<String> {
    if !name.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_reopening_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let message = |ts: &str| PostedMessage {
            channel: "C0APPROVALS".into(),
            ts: ts.into(),
        };
        {
            let store = MessageStore::open(dir.path()).unwrap();
            store.remember("req_01", &message("1.1")).unwrap();
            store.remember("../etc/passwd", &message("1.2")).unwrap();
            store.remember("req_02", &message("1.3")).unwrap();
            store.forget("req_02");
            store.forget("never-there");
        }
        // A crash mid-write leaves a partial file, which is skipped.
        std::fs::write(dir.path().join("7265715f3033.partial"), "C0").unwrap();
        let store = MessageStore::open(dir.path()).unwrap();
        assert_eq!(
            store.all().unwrap(),
            [
                ("../etc/passwd".to_owned(), message("1.2")),
                ("req_01".to_owned(), message("1.1")),
            ]
        );
        // Names are hex: nothing escaped the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
