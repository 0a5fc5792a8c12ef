//! The file layer under [`JsonlFileSink`](super::JsonlFileSink).
//!
//! The sink talks to its file only through [`LogFile`], so the same sink
//! code runs on a real file ([`FsLogFile`]) and, in tests, on a layer that
//! forgets unsynced writes to simulate power loss.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::AuditError;

/// An append-only file as the JSON Lines sink needs it.
pub trait LogFile: Send + 'static {
    /// The file's length in bytes.
    fn size(&mut self) -> io::Result<u64>;
    /// Fills `buf` from `offset`.
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Appends `data` at the end.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// A second handle that syncs the same file from another thread, so a
    /// sync can run while the next records are written. A sync through it
    /// must cover at least every write that completed before it began.
    fn sync_handle(&self) -> io::Result<Box<dyn SyncHandle>>;
    /// Something that opens readers of the file, for reading back while the
    /// sink keeps writing.
    fn source(&self) -> Box<dyn LogSource>;
    /// The file's name, for error messages.
    fn path(&self) -> &Path;
    /// The durable mark last written through [`SyncHandle::write_mark`],
    /// if this layer keeps marks. Without one, the sink verifies the whole
    /// log when it opens it, and refuses a log with any failing line.
    fn read_mark(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Keeps a durable copy of the log from byte `from` to its end at
    /// `copy` (see [`dropped_path`](crate::dropped_path)) before the sink
    /// cuts those bytes. By default a file at `copy`, synced with its
    /// name; a layer without a file system keeps it elsewhere.
    fn keep_copy(&mut self, from: u64, copy: &Path) -> io::Result<()> {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(copy)?;
        io::copy(&mut self.source().open_from(from)?, &mut out)?;
        out.sync_all()?;
        if let Some(dir) = copy.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Syncs a log file from the sink's sync thread.
pub trait SyncHandle: Send + 'static {
    /// Makes everything written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Keeps `mark`, which names a point of the log already durable, for
    /// [`LogFile::read_mark`] at the next open. The mark itself is not
    /// synced after its first write: a stale one makes the next open check
    /// more of the log (and cut, keeping a copy, from the first line that
    /// fails), a lost one makes it check the whole log (and refuse it if a
    /// line fails). By default marks are not kept.
    fn write_mark(&mut self, _mark: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// Where [`FsLogFile`] keeps a log's durable mark: the log's name with
/// `.durable` added.
///
/// ```
/// use std::path::Path;
/// let mark = approval_audit::durable_mark_path(Path::new("/var/log/audit.jsonl"));
/// assert_eq!(mark, Path::new("/var/log/audit.jsonl.durable"));
/// ```
pub fn durable_mark_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".durable");
    PathBuf::from(name)
}

/// Opens readers of a log's contents.
pub trait LogSource: Send + Sync {
    /// A reader from the start of the file.
    fn open(&self) -> io::Result<Box<dyn Read + Send>>;

    /// A reader from byte `offset`. By default, [`open`](Self::open) and
    /// skip; a real file seeks.
    fn open_from(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let mut reader = self.open()?;
        let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())?;
        if skipped < offset {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(reader)
    }
}

/// A real file, opened for appending and locked against other writers with
/// an OS lock (`flock`), so a second writer process gets a clear error
/// rather than interleaved lines.
#[derive(Debug)]
pub struct FsLogFile {
    file: File,
    path: PathBuf,
}

impl FsLogFile {
    /// Opens (creating with mode 0600) and locks `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let path = path.as_ref().to_owned();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| AuditError::Io {
                path: path.clone(),
                what: "open",
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { file, path }),
            Err(TryLockError::WouldBlock) => Err(AuditError::Locked { path }),
            Err(TryLockError::Error(source)) => Err(AuditError::Io {
                path,
                what: "lock",
                source,
            }),
        }
    }
}

impl LogFile for FsLogFile {
    fn size(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_handle(&self) -> io::Result<Box<dyn SyncHandle>> {
        let mark_path = durable_mark_path(&self.path);
        let mark = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&mark_path)?;
        Ok(Box::new(FileSync {
            log: self.file.try_clone()?,
            mark,
            mark_path,
            mark_synced: false,
        }))
    }

    fn source(&self) -> Box<dyn LogSource> {
        Box::new(PathSource(self.path.clone()))
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn read_mark(&mut self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(durable_mark_path(&self.path)) {
            Ok(mark) => Ok(Some(mark)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A second descriptor of the same open file (`fdatasync` on it syncs the
/// file's data whichever descriptor wrote it), and the durable mark.
struct FileSync {
    log: File,
    mark: File,
    mark_path: PathBuf,
    /// Whether the mark file and its name are durable: made so by the first
    /// write, so that a crash soon after a log is created still leaves a
    /// mark to start verifying from.
    mark_synced: bool,
}

impl SyncHandle for FileSync {
    fn sync_data(&mut self) -> io::Result<()> {
        self.log.sync_data()
    }

    fn write_mark(&mut self, mark: &[u8]) -> io::Result<()> {
        // Marks have one length, so each write replaces the whole mark.
        self.mark.write_all_at(mark, 0)?;
        if !self.mark_synced {
            self.mark.set_len(mark.len() as u64)?;
            self.mark.sync_all()?;
            if let Some(dir) = self
                .mark_path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                File::open(dir)?.sync_all()?;
            }
            self.mark_synced = true;
        }
        Ok(())
    }
}

struct PathSource(PathBuf);

impl LogSource for PathSource {
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(&self.0)?))
    }

    fn open_from(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        use std::io::{Seek, SeekFrom};
        let mut file = File::open(&self.0)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(file))
    }
}
