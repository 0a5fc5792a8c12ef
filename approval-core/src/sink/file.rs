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
}

/// Syncs a log file from the sink's sync thread.
pub trait SyncHandle: Send + 'static {
    /// Makes everything written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
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
        Ok(Box::new(FileSync(self.file.try_clone()?)))
    }

    fn source(&self) -> Box<dyn LogSource> {
        Box::new(PathSource(self.path.clone()))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// A second descriptor of the same open file: `fdatasync` on it syncs the
/// file's data whichever descriptor wrote it.
struct FileSync(File);

impl SyncHandle for FileSync {
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
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
