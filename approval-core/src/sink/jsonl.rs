//! The JSON Lines file sink: one record per line, durable on return, one
//! writer per file, group commit.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use ring::digest;
use tokio::sync::oneshot;

use crate::chain::{ChainHead, ChainWriter, Receipt};
use crate::error::AuditError;
use crate::record::{Event, PendingRecord};
use crate::sink::AuditSink;
use crate::sink::file::{FsLogFile, LogFile, LogSource};

/// How many callers' records one write and one `fdatasync` may carry.
const MAX_GROUP: usize = 4096;

/// Reads of the file's tail go backwards in pieces of this size.
const TAIL_CHUNK: usize = 64 * 1024;

/// An audit log in a JSON Lines file.
///
/// - **Durable**: [`append`](AuditSink::append) returns once the records
///   are written and `fdatasync` has returned. Concurrent appends share one
///   write and one sync (group commit) on the sink's writer thread.
/// - **One writer**: the file is locked (`flock`); a second writer, in this
///   process or another, gets [`AuditError::Locked`].
/// - **Resumes** from the last line, reading only the tail of the file, and
///   checks that line's MAC before continuing the chain.
/// - **Recovers** from a crash mid-write: a torn last line (bytes after the
///   last `\n`, which no caller was told were written) is removed and a
///   `recovered` record gives its length and SHA-256. Complete lines are
///   never dropped or rewritten.
/// - **Fails closed**: after a failed write or sync the sink is broken and
///   refuses every later append, since a later sync could succeed with the
///   data already lost.
///
/// Records handed to `append` are written even if the caller stops waiting.
/// Dropping the sink writes what is queued, then releases the lock.
///
/// ```
/// use std::sync::Arc;
/// use approval_core::{AuditSink, ChainWriter, Event, JsonlFileSink, KeyId, WriterSecret};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
/// let sink = JsonlFileSink::open(dir.path().join("audit.jsonl"), writer.clone())?;
/// sink.append_event(Event::Cancelled { request_id: "r1".into(), why: "test".into() }).await?;
///
/// // A second writer is refused while the first holds the file.
/// assert!(JsonlFileSink::open(dir.path().join("audit.jsonl"), writer.clone()).is_err());
/// drop(sink);
/// let reopened = JsonlFileSink::open(dir.path().join("audit.jsonl"), writer)?;
/// let receipt = reopened
///     .append_event(Event::Cancelled { request_id: "r2".into(), why: "test".into() })
///     .await?;
/// assert_eq!(receipt.seq, 1);
/// # Ok(())
/// # }
/// ```
pub struct JsonlFileSink {
    writer: Arc<ChainWriter>,
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    source: Box<dyn LogSource>,
    path: PathBuf,
}

impl std::fmt::Debug for JsonlFileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlFileSink")
            .field("path", &self.path)
            .field("durable_len", &self.durable_len())
            .field("broken", &self.shared.broken())
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// Bytes of the file that are durable and hold whole records.
    durable_len: AtomicU64,
    broken: Mutex<Option<String>>,
}

impl Shared {
    fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn break_with(&self, cause: String) {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(cause);
    }
}

struct Job {
    records: Vec<PendingRecord>,
    reply: oneshot::Sender<Result<Vec<Receipt>, AuditError>>,
}

impl JsonlFileSink {
    /// Opens (or creates) the log at `path`, locks it, recovers a torn last
    /// line, and resumes the chain; `writer` must hold the key the log's
    /// last record was sealed with.
    pub fn open(path: impl AsRef<Path>, writer: Arc<ChainWriter>) -> Result<Self, AuditError> {
        Self::with_file(FsLogFile::open(path)?, writer)
    }

    /// Like [`open`](Self::open), on any [`LogFile`].
    pub fn with_file(file: impl LogFile, writer: Arc<ChainWriter>) -> Result<Self, AuditError> {
        let mut file: Box<dyn LogFile> = Box::new(file);
        let path = file.path().to_owned();
        let io = |what: &'static str| {
            let path = path.clone();
            move |source| AuditError::Io { path, what, source }
        };

        let len = file.size().map_err(io("stat"))?;
        let fragment_start = match rfind_newline(&mut *file, len).map_err(io("read"))? {
            Some(newline) => newline + 1,
            None => 0,
        };
        let mut head = if fragment_start == 0 {
            ChainHead::genesis()
        } else {
            let last_line = read_last_line(&mut *file, fragment_start - 1).map_err(io("read"))?;
            writer.resume(&last_line)?
        };

        let mut durable_len = fragment_start;
        if fragment_start < len {
            let dropped_sha256 =
                sha256_range(&mut *file, fragment_start, len).map_err(io("read"))?;
            file.truncate(fragment_start).map_err(io("truncate"))?;
            file.sync_data().map_err(io("fdatasync"))?;
            let mut line = Vec::new();
            let recovered = Event::Recovered {
                dropped_bytes: len - fragment_start,
                dropped_sha256,
            };
            writer.seal(&mut head, &[recovered.to_pending()?], &mut line)?;
            file.append(&line).map_err(io("write"))?;
            file.sync_data().map_err(io("fdatasync"))?;
            durable_len += line.len() as u64;
        }

        let shared = Arc::new(Shared {
            durable_len: AtomicU64::new(durable_len),
            broken: Mutex::new(None),
        });
        let source = file.source();
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("approval-audit-writer".into())
            .spawn({
                let writer = writer.clone();
                let shared = shared.clone();
                move || write_loop(file, head, &writer, &shared, &queue)
            })
            .map_err(io("spawn writer thread"))?;
        Ok(Self {
            writer,
            shared,
            jobs: Some(jobs),
            thread: Some(thread),
            source,
            path,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many bytes of the file hold durable records.
    pub fn durable_len(&self) -> u64 {
        self.shared.durable_len.load(Ordering::Acquire)
    }
}

impl Drop for JsonlFileSink {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit;
        // joining it releases the file lock before `drop` returns.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[async_trait]
impl AuditSink for JsonlFileSink {
    async fn append(&self, records: Vec<PendingRecord>) -> Result<Vec<Receipt>, AuditError> {
        if let Some(cause) = self.shared.broken() {
            return Err(AuditError::Broken { cause });
        }
        let (reply, done) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or(AuditError::Closed)?
            .send(Job { records, reply })
            .map_err(|_| AuditError::Closed)?;
        done.await.map_err(|_| AuditError::Closed)?
    }

    fn read_back(&self) -> Result<Box<dyn Read + Send>, AuditError> {
        // Only bytes already durable: a write in progress is not shown.
        let len = self.durable_len();
        let reader = self.source.open().map_err(|source| AuditError::Io {
            path: self.path.clone(),
            what: "open for reading",
            source,
        })?;
        Ok(Box::new(reader.take(len)))
    }

    fn chain_writer(&self) -> &Arc<ChainWriter> {
        &self.writer
    }
}

/// The writer thread: takes every queued job, seals them in order, writes
/// them with one write and one `fdatasync`, then answers each caller.
fn write_loop(
    mut file: Box<dyn LogFile>,
    mut head: ChainHead,
    writer: &ChainWriter,
    shared: &Shared,
    queue: &mpsc::Receiver<Job>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut group = Vec::new();
    while let Ok(first) = queue.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        buf.clear();
        let mut sealed = Vec::with_capacity(group.len());
        for job in group.drain(..) {
            if let Some(cause) = shared.broken() {
                let _ = job.reply.send(Err(AuditError::Broken { cause }));
                continue;
            }
            // `seal` is all or nothing per job: a job that fails leaves the
            // head and the buffer as they were for the jobs after it.
            match writer.seal(&mut head, &job.records, &mut buf) {
                Ok(receipts) => sealed.push((job.reply, receipts)),
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        if sealed.is_empty() {
            continue;
        }
        let written = file
            .append(&buf)
            .map_err(|e| ("write", e))
            .and_then(|()| file.sync_data().map_err(|e| ("fdatasync", e)));
        match written {
            Ok(()) => {
                shared
                    .durable_len
                    .fetch_add(buf.len() as u64, Ordering::AcqRel);
                for (reply, receipts) in sealed {
                    let _ = reply.send(Ok(receipts));
                }
            }
            Err((what, e)) => {
                let cause = format!("{what} of {} failed: {e}", file.path().display());
                shared.break_with(cause.clone());
                for (reply, _) in sealed {
                    let _ = reply.send(Err(AuditError::Broken {
                        cause: cause.clone(),
                    }));
                }
            }
        }
    }
}

/// Offset of the last `\n` before `end`, reading backwards.
fn rfind_newline(file: &mut dyn LogFile, end: u64) -> std::io::Result<Option<u64>> {
    let mut chunk = vec![0u8; TAIL_CHUNK];
    let mut end = end;
    while end > 0 {
        let n = usize::try_from(end).map_or(TAIL_CHUNK, |e| e.min(TAIL_CHUNK));
        let start = end - n as u64;
        file.read_exact_at(start, &mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

/// The line that ends at the `\n` at `newline`, without it.
fn read_last_line(file: &mut dyn LogFile, newline: u64) -> std::io::Result<Vec<u8>> {
    let start = rfind_newline(file, newline)?.map_or(0, |n| n + 1);
    let len = usize::try_from(newline - start)
        .map_err(|_| std::io::Error::other("last line too long"))?;
    let mut line = vec![0u8; len];
    file.read_exact_at(start, &mut line)?;
    Ok(line)
}

fn sha256_range(file: &mut dyn LogFile, start: u64, end: u64) -> std::io::Result<[u8; 32]> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut chunk = vec![0u8; TAIL_CHUNK];
    let mut at = start;
    while at < end {
        let n = usize::try_from(end - at).map_or(TAIL_CHUNK, |r| r.min(TAIL_CHUNK));
        file.read_exact_at(at, &mut chunk[..n])?;
        ctx.update(&chunk[..n]);
        at += n as u64;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}
