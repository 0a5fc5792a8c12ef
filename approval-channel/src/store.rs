//! Where each open request's message is, on disk, so a restart can take
//! the buttons down.

use std::fs;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use approval_core::Recovery;

/// Where a channel's message is, as a few lines of text: what a
/// [`MessageStore`] keeps for it.
///
/// ```
/// use approval_channel::StoredMessage;
///
/// #[derive(Debug, PartialEq)]
/// struct Posted { channel: String, ts: String }
///
/// impl StoredMessage for Posted {
///     fn fields(&self) -> Vec<&str> {
///         vec![&self.channel, &self.ts]
///     }
///     fn from_fields(fields: &[&str]) -> Option<Self> {
///         match fields {
///             [channel, ts] => Some(Self { channel: (*channel).into(), ts: (*ts).into() }),
///             _ => None,
///         }
///     }
/// }
/// ```
pub trait StoredMessage: Sized {
    /// Its fields, none holding a line break.
    fn fields(&self) -> Vec<&str>;
    /// The message back from its fields; `None` if they are not one.
    fn from_fields(fields: &[&str]) -> Option<Self>;
}

/// A message known by one id (a channel whose updates need nothing else).
impl StoredMessage for String {
    fn fields(&self) -> Vec<&str> {
        vec![self]
    }

    fn from_fields(fields: &[&str]) -> Option<Self> {
        match fields {
            [id] => Some((*id).to_owned()),
            _ => None,
        }
    }
}

/// Where the messages of open requests are, on disk, so that after a
/// restart their buttons can be taken down.
///
/// One small file per open request, named by the request id in hex (ids
/// are the gate's, but a file name is no place to trust them), holding the
/// message's fields one per line. Written to a temporary name and renamed,
/// so a crash leaves either no file or a whole one. One directory per
/// process and channel.
///
/// ```
/// use approval_channel::{MessageStore, StoredMessage};
/// # #[derive(Debug, PartialEq)]
/// # struct Posted { channel: String, ts: String }
/// # impl StoredMessage for Posted {
/// #     fn fields(&self) -> Vec<&str> { vec![&self.channel, &self.ts] }
/// #     fn from_fields(f: &[&str]) -> Option<Self> {
/// #         match f { [c, t] => Some(Self { channel: (*c).into(), ts: (*t).into() }), _ => None }
/// #     }
/// # }
///
/// let dir = tempfile::tempdir()?;
/// let store = MessageStore::<Posted>::open(dir.path())?;
/// let posted = Posted { channel: "C0APPROVALS".into(), ts: "1.1".into() };
/// store.remember("01J8Y5", &posted)?;
/// assert_eq!(store.all()?, [("01J8Y5".to_owned(), posted)]);
/// store.forget("01J8Y5");
/// assert!(store.all()?.is_empty());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct MessageStore<M> {
    dir: PathBuf,
    kind: PhantomData<fn() -> M>,
}

impl<M: StoredMessage> MessageStore<M> {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.into(),
            kind: PhantomData,
        })
    }

    fn path(&self, request_id: &str) -> PathBuf {
        let name: String = request_id.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    /// Keeps where `request_id`'s message is, durably enough to survive
    /// the process (not a power cut: a lost entry only leaves buttons up,
    /// which the gate refuses as settled).
    pub fn remember(&self, request_id: &str, message: &M) -> io::Result<()> {
        let fields = message.fields();
        if fields.iter().any(|f| f.contains(['\n', '\r'])) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a message field holds a line break",
            ));
        }
        let path = self.path(request_id);
        let partial = path.with_extension("partial");
        let mut text = fields.join("\n");
        text.push('\n');
        fs::write(&partial, text)?;
        fs::rename(partial, path)
    }

    /// Forgets a request; one already forgotten is no error.
    pub fn forget(&self, request_id: &str) {
        // Best effort: a file left behind only means its message is
        // marked ended at the next restart.
        match fs::remove_file(self.path(request_id)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(%request_id, %error, "forgetting a request's message failed");
            }
            _ => {}
        }
    }

    /// Every request remembered, with its message, by request id.
    /// Unreadable or partial files are skipped (they name no message that
    /// can be updated).
    pub fn all(&self) -> io::Result<Vec<(String, M)>> {
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
            let fields: Vec<&str> = text.lines().collect();
            if let Some(message) = M::from_fields(&fields) {
                out.push((id, message));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// After a restart (`recovery`, from the gate's `Recovered` notice):
    /// hands `take_down` each message a previous run left, with whether the
    /// restart cancelled its request, and forgets those it took down
    /// (`true`); the others stay for the next restart. Requests this run
    /// holds (`held`) and those the restart reopened (delivered again) are
    /// not the restart's to close.
    ///
    /// ```
    /// # use approval_channel::{MessageStore, StoredMessage};
    /// # #[derive(Debug, PartialEq)]
    /// # struct Posted(String);
    /// # impl StoredMessage for Posted {
    /// #     fn fields(&self) -> Vec<&str> { vec![&self.0] }
    /// #     fn from_fields(f: &[&str]) -> Option<Self> { f.first().map(|t| Self((*t).into())) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let dir = tempfile::tempdir()?;
    /// let store = MessageStore::open(dir.path())?;
    /// store.remember("old", &Posted("1.1".into()))?;
    /// store.remember("this-run", &Posted("1.2".into()))?;
    /// let mut recovery = approval_core::Recovery::default();
    /// recovery.cancelled.push("old".to_owned());
    /// store
    ///     .take_down_left(&recovery, |id| id == "this-run", async |id, _message, was_cancelled| {
    ///         assert_eq!((id.as_str(), was_cancelled), ("old", true));
    ///         true // taken down: forgotten
    ///     })
    ///     .await;
    /// assert_eq!(store.all()?, [("this-run".to_owned(), Posted("1.2".into()))]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn take_down_left<F, T>(
        &self,
        recovery: &Recovery,
        held: impl Fn(&str) -> bool,
        mut take_down: F,
    ) where
        F: FnMut(String, M, bool) -> T,
        T: Future<Output = bool>,
    {
        let left = match self.all() {
            Ok(left) => left,
            Err(error) => {
                tracing::warn!(%error, "the message store cannot be read; messages a restart left keep their buttons");
                return;
            }
        };
        for (id, message) in left {
            if held(&id) || recovery.reopened.contains(&id) {
                continue;
            }
            let was_cancelled = recovery.cancelled.contains(&id);
            if take_down(id.clone(), message, was_cancelled).await {
                self.forget(&id);
            }
        }
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

    #[derive(Debug, PartialEq)]
    struct Posted(String, String);

    impl StoredMessage for Posted {
        fn fields(&self) -> Vec<&str> {
            vec![&self.0, &self.1]
        }
        fn from_fields(fields: &[&str]) -> Option<Self> {
            match fields {
                [a, b] => Some(Self((*a).into(), (*b).into())),
                _ => None,
            }
        }
    }

    fn message(ts: &str) -> Posted {
        Posted("C0APPROVALS".into(), ts.into())
    }

    #[test]
    fn remembers_across_reopening_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
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
        let store = MessageStore::<Posted>::open(dir.path()).unwrap();
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

    #[test]
    fn a_field_with_a_line_break_is_refused_and_nothing_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(dir.path()).unwrap();
        let forged = Posted("C0\nC1".into(), "1.1".into());
        let error = store.remember("req_01", &forged).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(store.all().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
