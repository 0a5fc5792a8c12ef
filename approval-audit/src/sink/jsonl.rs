//! The JSON Lines file sink: one record per line, durable on return, one
//! writer per file, group commit.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ring::digest;
use tokio::sync::oneshot;

use crate::chain::{ChainHead, ChainWriter, LineFault, Receipt};
use crate::checkpoint::{Cadence, Checkpoint, CheckpointStatus, Checkpointing, Signer};
use crate::error::AuditError;
use crate::reason::Reason;
use crate::record::{Event, PendingRecord};
use crate::sink::AuditSink;
use crate::sink::file::{FsLogFile, LogFile, LogSource, SyncHandle};

/// How many callers' records one write and one `fdatasync` may carry.
const MAX_GROUP: usize = 4096;

/// How long the sync stage may wait for the callers it just answered to
/// append again before it starts the next sync; a sync takes about 0.2 ms
/// on the machines we measured.
const GATHER_WAIT: Duration = Duration::from_micros(100);

/// Reads of the file's tail go backwards in pieces of this size.
const TAIL_CHUNK: usize = 64 * 1024;

/// An audit log in a JSON Lines file.
///
/// - **Durable**: [`append`](AuditSink::append) returns once the records
///   are written and an `fdatasync` that began after the write has returned.
///   Concurrent appends share syncs (group commit): one thread seals and
///   writes records while another syncs, so every record written during a
///   sync is covered by the next one.
/// - **One writer**: the file is locked (`flock`); a second writer, in this
///   process or another, gets [`AuditError::Locked`].
/// - **Resumes** from its last point known durable, which it keeps in a
///   mark beside the log ([`durable_mark_path`](crate::durable_mark_path)),
///   rewritten after each sync. Every line after the mark is checked as a
///   verifier would, and the line the chain continues from with its MAC;
///   after a clean close that reads only the tail of the file.
/// - **Recovers** from a crash mid-write: a torn last line (bytes after the
///   last `\n`), and every line from the first one after the mark that
///   fails (a page of an unsynced batch the disk never finished), are
///   removed, and a `recovered` record says what was removed; a copy of the
///   removed bytes is kept first ([`dropped_path`]). Callers are told only
///   of synced records, which a stale mark or a disk tearing a page it had
///   synced could put among them: the copy keeps those too.
/// - **Never continues a chain verification refuses**: lines up to the mark
///   are never dropped or rewritten, and those in the page before it (which
///   a torn write may reach) are checked too; one that fails, or without a
///   mark any line that fails, refuses the log unchanged
///   ([`AuditError::Damaged`]).
/// - **Fails closed**: after a failed write or sync the sink is broken and
///   refuses every later append, since a later sync could succeed with the
///   data already lost. Records being written at that moment are never
///   acknowledged; like a crash's, they may remain in the file.
///
/// Records handed to `append` are written even if the caller stops waiting.
/// Dropping the sink writes what is queued, then releases the lock.
///
/// ```
/// use std::sync::Arc;
/// use approval_audit::{AuditSink, ChainWriter, Event, JsonlFileSink, KeyId, WriterSecret};
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
    checkpoints: Option<Arc<Mutex<CheckpointStatus>>>,
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    /// The write stage; it owns and joins the sync stage.
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
    /// Set once, with `cause`, when a write or sync fails; checked on every
    /// append, so it is an atomic before it is a lock.
    is_broken: AtomicBool,
    cause: Mutex<Option<String>>,
}

impl Shared {
    fn broken(&self) -> Option<String> {
        if !self.is_broken.load(Ordering::Acquire) {
            return None;
        }
        self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn break_with(&self, cause: String) {
        self.cause
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(cause);
        self.is_broken.store(true, Ordering::Release);
    }
}

/// Where a caller waits for its receipts.
type Reply = oneshot::Sender<Result<Vec<Receipt>, AuditError>>;

struct Job {
    records: Vec<PendingRecord>,
    reply: Reply,
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
        Self::open_file(Box::new(file), writer, None)
    }

    /// Like [`open`](Self::open), signing checkpoints as `checkpointing`
    /// says: the tree is rebuilt from the whole log, which must match its
    /// newest checkpoint (`LOG.checkpoint`), or it is not opened.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use approval_audit::checkpoint::{Checkpoint, Checkpointing, SigningKey, checkpoint_path};
    /// use approval_audit::{AuditSink, ChainWriter, Event, JsonlFileSink, KeyId, WriterSecret};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let log = dir.path().join("audit.jsonl");
    /// let key = SigningKey::generate("example.com/approvals")?;
    /// let public = key.verifier();
    /// let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
    /// let sink = JsonlFileSink::open_with_checkpoints(&log, writer, Checkpointing::new(key))?;
    /// sink.append_event(Event::Cancelled { request_id: "r1".into(), why: "test".into() }).await?;
    /// drop(sink); // a clean close signs a checkpoint of everything
    /// let signed = std::fs::read(checkpoint_path(&log))?;
    /// assert_eq!(Checkpoint::open(&signed, &[public])?.size, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_with_checkpoints(
        path: impl AsRef<Path>,
        writer: Arc<ChainWriter>,
        checkpointing: Checkpointing,
    ) -> Result<Self, AuditError> {
        Self::open_file(
            Box::new(FsLogFile::open(path)?),
            writer,
            Some(checkpointing),
        )
    }

    /// Like [`open_with_checkpoints`](Self::open_with_checkpoints), on any
    /// [`LogFile`].
    pub fn with_file_and_checkpoints(
        file: impl LogFile,
        writer: Arc<ChainWriter>,
        checkpointing: Checkpointing,
    ) -> Result<Self, AuditError> {
        Self::open_file(Box::new(file), writer, Some(checkpointing))
    }

    fn open_file(
        mut file: Box<dyn LogFile>,
        writer: Arc<ChainWriter>,
        checkpointing: Option<Checkpointing>,
    ) -> Result<Self, AuditError> {
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
        // Every line after the last point known durable is checked as a
        // verifier would; the first that fails, and all after it, are cut.
        // Without a mark, nothing tells acknowledged lines from the others:
        // all are checked, and a fault anywhere refuses.
        let Durable {
            end: durable_end,
            checked_from,
            head,
            line_before,
        } = durable_point(&mut *file, &writer, fragment_start, &path)?.unwrap_or(Durable {
            end: fragment_start,
            checked_from: 0,
            head: ChainHead::genesis(),
            line_before: Vec::new(),
        });
        let source = file.source();
        let Tail {
            last_kept,
            fault,
            lines_after_fault,
        } = check_tail(
            &*source,
            &writer,
            checked_from,
            fragment_start,
            head,
            line_before,
        )
        .map_err(io("read"))?;
        let cut = match fault {
            None => fragment_start,
            // A line known durable fails: damage, not a crash. Change
            // nothing.
            Some(TailFault::Line { at, reason, .. }) if at < durable_end => {
                return Err(AuditError::Damaged {
                    path,
                    offset: at,
                    reason,
                });
            }
            Some(TailFault::Line { at, .. }) => at,
            Some(TailFault::SeqExhausted) => return Err(AuditError::SeqExhausted),
        };
        // The chain goes on from the last line kept, which must be a record
        // sealed with a key this writer holds.
        let mut head = if last_kept.is_empty() {
            ChainHead::genesis()
        } else {
            writer.resume(&last_kept)?
        };

        // With checkpoints, the tree over every line kept, checked against
        // the newest checkpoint before anything is written.
        let mut checkpointed = match &checkpointing {
            Some(checkpointing) => {
                let reader = source.open().map_err(io("read"))?.take(cut);
                let (tree, signed) =
                    crate::checkpoint::resume(&path, reader, Some(&checkpointing.key))
                        .map_err(|why| AuditError::CheckpointMismatch { why })?;
                Some((tree, signed))
            }
            None => {
                // Not signing now, but signed before: the log must still
                // hold what its checkpoint signs.
                if crate::checkpoint::checkpoint_path(&path).exists() {
                    let reader = source.open().map_err(io("read"))?.take(cut);
                    crate::checkpoint::resume(&path, reader, None)
                        .map_err(|why| AuditError::CheckpointMismatch { why })?;
                }
                None
            }
        };

        let mut durable_len = cut;
        if cut < len {
            let dropped_sha256 = sha256_range(&mut *file, cut, len).map_err(io("read"))?;
            // Whole lines are cut only from a faulty line on.
            let dropped_lines = if cut < fragment_start {
                lines_after_fault
            } else {
                0
            };
            let fault = fault.as_ref().and_then(TailFault::reason);
            // A stale mark, or a disk that tore a page it had synced, could
            // put an acknowledged record among what is cut: a copy is kept.
            let copy = dropped_path(&path, head.next_seq());
            file.keep_copy(cut, &copy)
                .map_err(io("keep a copy of the dropped bytes"))?;
            tracing::warn!(
                log = %path.display(),
                copy = %copy.display(),
                dropped_bytes = len - cut,
                dropped_lines,
                fault = fault.map(Reason::as_str),
                "audit log reopened after a crash: removing what was never known durable"
            );
            file.truncate(cut).map_err(io("truncate"))?;
            file.sync_data().map_err(io("fdatasync"))?;
            let mut line = Vec::new();
            let recovered = Event::Recovered {
                dropped_bytes: len - cut,
                dropped_sha256,
                dropped_lines,
                fault,
            };
            writer.seal(&mut head, &[recovered.to_pending()?], &mut line)?;
            file.append(&line).map_err(io("write"))?;
            durable_len += line.len() as u64;
            if let Some((tree, _)) = &mut checkpointed {
                tree.push_lines(&line);
            }
        }
        let mut syncer = file.sync_handle().map_err(io("open a sync handle"))?;
        if durable_len > checked_from {
            // Lines checked now may be only in the page cache (after a crash
            // of the process, not of the machine): durable before marked.
            file.sync_data().map_err(io("fdatasync"))?;
            syncer
                .write_mark(&encode_mark(durable_len, &head.prev_mac()))
                .map_err(io("write the durable mark"))?;
        }
        let status = checkpointing
            .as_ref()
            .map(|_| Arc::new(Mutex::new(CheckpointStatus::default())));
        let (cadence, signer) = match (checkpointing, checkpointed, &status) {
            (Some(checkpointing), Some((tree, signed)), Some(status)) => (
                Some(Cadence::new(&checkpointing, tree, signed)),
                Some(Signer::new(checkpointing, &path, status.clone())),
            ),
            _ => (None, None),
        };

        let shared = Arc::new(Shared {
            durable_len: AtomicU64::new(durable_len),
            is_broken: AtomicBool::new(false),
            cause: Mutex::new(None),
        });
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("approval-audit-writer".into())
            .spawn({
                let writer = writer.clone();
                let shared = shared.clone();
                move || {
                    write_stage(
                        file, syncer, head, cadence, signer, &writer, &shared, &queue,
                    );
                }
            })
            .map_err(io("spawn writer thread"))?;
        Ok(Self {
            writer,
            checkpoints: status,
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

    /// How checkpointing stands (`None` when the sink signs none).
    pub fn checkpoint_status(&self) -> Option<CheckpointStatus> {
        self.checkpoints
            .as_ref()
            .map(|status| status.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Drop for JsonlFileSink {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit;
        // joining it releases the file lock before `drop` returns.
        self.jobs.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(log = %self.path.display(), "the audit writer thread panicked");
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

    fn read_recent(&self, window: Duration) -> Result<Box<dyn Read + Send>, AuditError> {
        let len = self.durable_len();
        let io_error = |source| AuditError::Io {
            path: self.path.clone(),
            what: "read the tail",
            source,
        };
        let start = recent_start(&*self.source, len, window).map_err(io_error)?;
        let reader = self.source.open_from(start).map_err(io_error)?;
        Ok(Box::new(reader.take(len - start)))
    }

    fn chain_writer(&self) -> &Arc<ChainWriter> {
        &self.writer
    }

    fn sole_writer(&self) -> bool {
        // The log is locked (file) or private to this process (memory).
        true
    }
}

/// Where the lines written within `window` before the last one begin, in
/// the first `len` bytes of the log: found by reading backwards from the
/// end, line by line, until a line's `ts` is older. (`ts` has a fixed
/// width, so comparing its text compares times.) A line that cannot be read
/// stops the search at the start, so the caller reads and reports it.
fn recent_start(source: &dyn LogSource, len: u64, window: Duration) -> std::io::Result<u64> {
    let mut cutoff: Option<[u8; 24]> = None;
    // `pending` holds bytes [pos, pos + pending.len()) not yet looked at;
    // it ends with a line's `\n`.
    let mut pos = len;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        while let Some((&b'\n', before)) = pending.split_last() {
            let start = match before.iter().rposition(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None if pos == 0 => 0,
                None => break, // the line starts in an earlier block
            };
            let Ok(fields) = crate::chain::parse_line(&before[start..]) else {
                return Ok(0);
            };
            let ts = &before[start..][fields.ts];
            let cutoff = match cutoff {
                Some(cutoff) => cutoff,
                None => {
                    let oldest = crate::clock::parse_ts(ts)
                        .and_then(|last| last.checked_sub(window))
                        .and_then(|t| crate::clock::format_ts(t).ok());
                    match oldest {
                        Some(oldest) => *cutoff.insert(oldest),
                        None => return Ok(0),
                    }
                }
            };
            if ts < &cutoff[..] {
                return Ok(pos + pending.len() as u64);
            }
            pending.truncate(start);
        }
        if pos == 0 {
            return Ok(0);
        }
        let from = pos.saturating_sub(TAIL_CHUNK as u64);
        let mut block = vec![0; usize::try_from(pos - from).unwrap_or(TAIL_CHUNK)];
        source.open_from(from)?.read_exact(&mut block)?;
        block.extend_from_slice(&pending);
        pending = block;
        pos = from;
    }
}

/// Records written to the file, waiting for a sync to acknowledge them.
struct Written {
    bytes: u64,
    replies: Vec<(Reply, Vec<Receipt>)>,
    /// A checkpoint to sign once these bytes are durable.
    checkpoint: Option<Checkpoint>,
}

impl Written {
    /// Nothing new written: a checkpoint of records already written, to
    /// sign after the next sync.
    fn checkpoint_only(checkpoint: Checkpoint) -> Self {
        Self {
            bytes: 0,
            replies: Vec::new(),
            checkpoint: Some(checkpoint),
        }
    }
}

/// The write stage: takes every queued job, seals the jobs in order and
/// writes them with one write, then hands them to the sync stage. Sealing
/// and writing the next group overlap with the sync of the last one.
#[allow(
    clippy::too_many_arguments,
    reason = "the stage's state, handed over once by `open`"
)]
fn write_stage(
    mut file: Box<dyn LogFile>,
    syncer: Box<dyn SyncHandle>,
    mut head: ChainHead,
    mut cadence: Option<Cadence>,
    signer: Option<Signer>,
    writer: &ChainWriter,
    shared: &Arc<Shared>,
    queue: &mpsc::Receiver<Job>,
) {
    let (to_sync, written) = mpsc::channel();
    let sync_thread = std::thread::Builder::new()
        .name("approval-audit-sync".into())
        .spawn({
            let shared = shared.clone();
            let path = file.path().to_owned();
            move || sync_stage(syncer, &path, &shared, signer.as_ref(), &written)
        });
    let sync_thread = match sync_thread {
        Ok(thread) => thread,
        Err(e) => {
            shared.break_with(format!("spawning the sync thread failed: {e}"));
            // Answer every caller with the cause until the sink is dropped.
            while let Ok(job) = queue.recv() {
                answer(job.reply, Err(broken_error(shared)));
            }
            return;
        }
    };

    let mut buf = Vec::with_capacity(64 * 1024);
    let mut group = Vec::new();
    // Records not yet signed at open (after a crash, say) are durable:
    // sign them now.
    if let Some(checkpoint) = cadence.as_mut().and_then(Cadence::pending) {
        hand_over(&to_sync, Written::checkpoint_only(checkpoint));
    }
    loop {
        // With unsigned records, wake when they are due by time alone.
        let first = match cadence.as_ref().and_then(Cadence::due_in) {
            Some(wait) => match queue.recv_timeout(wait) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(checkpoint) = cadence.as_mut().and_then(Cadence::pending)
                        && shared.broken().is_none()
                    {
                        hand_over(&to_sync, Written::checkpoint_only(checkpoint));
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        group.push(first);
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        buf.clear();
        let mut replies = Vec::with_capacity(group.len());
        for job in group.drain(..) {
            if shared.broken().is_some() {
                answer(job.reply, Err(broken_error(shared)));
                continue;
            }
            // `seal` is all or nothing per job: a job that fails leaves the
            // head and the buffer as they were for the jobs after it.
            match writer.seal(&mut head, &job.records, &mut buf) {
                Ok(receipts) => replies.push((job.reply, receipts)),
                Err(e) => {
                    answer(job.reply, Err(e));
                }
            }
        }
        if replies.is_empty() {
            continue;
        }
        // A sync may have failed since the jobs were sealed: write nothing
        // past it.
        let outcome = match shared.broken() {
            Some(_) => Err(broken_error(shared)),
            None => file.append(&buf).map_err(|e| {
                shared.break_with(format!("write of {} failed: {e}", file.path().display()));
                broken_error(shared)
            }),
        };
        match outcome {
            Ok(()) => {
                let bytes = buf.len() as u64;
                let checkpoint = cadence.as_mut().and_then(|c| c.add(&buf));
                if let Err(mpsc::SendError(lost)) = to_sync.send(Written {
                    bytes,
                    replies,
                    checkpoint,
                }) {
                    // The sync stage is gone (it only ends when this one
                    // does, or by a bug): fail closed.
                    shared.break_with("the sync thread stopped".into());
                    for (reply, _) in lost.replies {
                        answer(reply, Err(broken_error(shared)));
                    }
                }
            }
            Err(e) => {
                let cause = e.to_string();
                for (reply, _) in replies {
                    answer(
                        reply,
                        Err(AuditError::Broken {
                            cause: cause.clone(),
                        }),
                    );
                }
            }
        }
    }
    // A clean close: sign what came since the last checkpoint.
    if let Some(checkpoint) = cadence.as_mut().and_then(Cadence::pending)
        && shared.broken().is_none()
    {
        hand_over(&to_sync, Written::checkpoint_only(checkpoint));
    }
    drop(to_sync);
    if sync_thread.join().is_err() {
        tracing::error!(log = %file.path().display(), "the audit sync thread panicked");
    }
}

/// The sync stage: syncs whatever has been written since its last sync
/// began, then acknowledges it; failure breaks the sink for good.
fn sync_stage(
    mut syncer: Box<dyn SyncHandle>,
    path: &Path,
    shared: &Shared,
    signer: Option<&Signer>,
    written: &mpsc::Receiver<Written>,
) {
    let mut batch: Vec<Written> = Vec::new();
    let mut last_acknowledged = 0;
    while let Ok(first) = written.recv() {
        let mut callers = first.replies.len();
        batch.push(first);
        // The callers the last sync answered are about to append again.
        // Waiting a moment for them (never more than GATHER_WAIT, and not
        // at all for a lone caller) lets one sync cover them all instead of
        // splitting them over two.
        let deadline = Instant::now() + GATHER_WAIT;
        loop {
            let more = if callers >= last_acknowledged {
                written.try_recv().ok()
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                written.recv_timeout(left).ok()
            };
            match more {
                Some(more) => {
                    callers += more.replies.len();
                    batch.push(more);
                }
                None => break,
            }
        }
        last_acknowledged = callers;
        let synced = match shared.broken() {
            Some(_) => Err(broken_error(shared)),
            None => syncer.sync_data().map_err(|e| {
                shared.break_with(format!("fdatasync of {} failed: {e}", path.display()));
                broken_error(shared)
            }),
        };
        let mut due = None;
        let mut newest = None;
        for Written {
            bytes,
            replies,
            checkpoint,
        } in batch.drain(..)
        {
            match &synced {
                Ok(()) => {
                    shared.durable_len.fetch_add(bytes, Ordering::AcqRel);
                    // The last record of the group (a caller may append none).
                    if let Some(receipt) = replies.iter().rev().find_map(|(_, r)| r.last()) {
                        newest = Some(receipt.mac);
                    }
                    for (reply, receipts) in replies {
                        answer(reply, Ok(receipts));
                    }
                    due = checkpoint.or(due);
                }
                Err(_) => {
                    for (reply, _) in replies {
                        answer(reply, Err(broken_error(shared)));
                    }
                }
            }
        }
        if let Some(mac) = newest {
            let mark = encode_mark(shared.durable_len.load(Ordering::Acquire), &mac);
            if let Err(e) = syncer.write_mark(&mark) {
                // Only the next open's work grows: it verifies from an
                // older mark, or the whole log.
                tracing::warn!(log = %path.display(), error = %e, "writing the durable mark failed");
            }
        }
        // Signed after the callers are answered; the next group's sync waits
        // for it, once per checkpoint.
        if let (Some(signer), Some(checkpoint)) = (signer, due) {
            signer.sign(checkpoint);
        }
    }
}

/// Answers a caller; one that stopped waiting needs no answer, and what
/// it handed over is written all the same.
fn answer(reply: Reply, result: Result<Vec<Receipt>, AuditError>) {
    if reply.send(result).is_err() {
        tracing::trace!("an audit append's caller stopped waiting before its answer");
    }
}

/// Hands a checkpoint to the sync stage, which is gone only once the sink
/// is broken or closing; the checkpoint is then signed at the next open.
fn hand_over(to_sync: &mpsc::Sender<Written>, written: Written) {
    if to_sync.send(written).is_err() {
        tracing::warn!("the audit sync stage is gone: the checkpoint is signed at the next open");
    }
}

fn broken_error(shared: &Shared) -> AuditError {
    AuditError::Broken {
        cause: shared
            .broken()
            .unwrap_or_else(|| "an earlier write failed".into()),
    }
}

/// Where the bytes cut at reopening are kept: the log's name with
/// `.dropped-SEQ` added, `SEQ` being the `recovered` record's `seq`.
///
/// ```
/// use std::path::Path;
/// let copy = approval_audit::dropped_path(Path::new("audit.jsonl"), 7);
/// assert_eq!(copy, Path::new("audit.jsonl.dropped-7"));
/// ```
pub fn dropped_path(log: &Path, seq: u64) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".dropped-{seq}"));
    PathBuf::from(name)
}

/// A durable mark: the length of the log known durable, and the `mac` of
/// the line that ends there, in a fixed width so that each write replaces
/// the whole mark.
fn encode_mark(len: u64, mac: &[u8; 32]) -> Vec<u8> {
    format!("{len:020} {}\n", crate::chain::hex(mac)).into_bytes()
}

fn decode_mark(mark: &[u8]) -> Option<(u64, [u8; 32])> {
    let text = std::str::from_utf8(mark).ok()?.strip_suffix('\n')?;
    let (len, mac) = text.split_once(' ')?;
    if len.len() != 20 {
        return None;
    }
    Some((len.parse().ok()?, crate::hex::decode32(mac)?))
}

/// Where checking starts when the durable mark names a line of this log.
struct Durable {
    /// The end of the line the mark names: known durable up to here.
    end: u64,
    /// The start of the line holding the byte a page before `end`: a disk
    /// that tore the page it was writing may have damaged the synced lines
    /// sharing it, so they are checked too.
    checked_from: u64,
    /// The chain head before `checked_from`, and the line that ends there.
    head: ChainHead,
    line_before: Vec<u8>,
}

/// The disk's unit of writing, as far back as a torn write may reach.
const PAGE: u64 = 4096;

/// The last point of the log known durable, if the durable mark names a
/// line of this log, and where checking starts.
fn durable_point(
    file: &mut dyn LogFile,
    writer: &ChainWriter,
    lines_end: u64,
    path: &Path,
) -> Result<Option<Durable>, AuditError> {
    let io = |what: &'static str| {
        move |source| AuditError::Io {
            path: path.to_owned(),
            what,
            source,
        }
    };
    let Some(mark) = file.read_mark().map_err(io("read the durable mark"))? else {
        return Ok(None);
    };
    let ignored = |why: &str| {
        tracing::warn!(
            log = %path.display(),
            why,
            "durable mark ignored: verifying the whole log"
        );
        Ok(None)
    };
    let Some((end, mac)) = decode_mark(&mark) else {
        return ignored("unreadable");
    };
    if end == 0 || end > lines_end {
        return ignored("beyond the log's last line");
    }
    let mut last = [0u8; 1];
    file.read_exact_at(end - 1, &mut last).map_err(io("read"))?;
    if last != *b"\n" {
        return ignored("not at the end of a line");
    }
    let line = read_last_line(file, end - 1).map_err(io("read"))?;
    if crate::chain::parse_line(&line)
        .ok()
        .map(|fields| fields.mac)
        != Some(mac)
    {
        return ignored("names another record");
    }
    let checked_from = match rfind_newline(file, end.saturating_sub(PAGE)).map_err(io("read"))? {
        Some(newline) => newline + 1,
        None => 0,
    };
    if checked_from == 0 {
        return Ok(Some(Durable {
            end,
            checked_from,
            head: ChainHead::genesis(),
            line_before: Vec::new(),
        }));
    }
    // The line before the checked ones ends before the torn page could
    // begin: durable, read for its head alone.
    let line_before = read_last_line(file, checked_from - 1).map_err(io("read"))?;
    let head = writer
        .head_after(&line_before)
        .map_err(LineFault::at_tail)?;
    Ok(Some(Durable {
        end,
        checked_from,
        head,
        line_before,
    }))
}

/// What checking the lines after the durable point found.
struct Tail {
    /// The last line that continues the chain (the mark's line if none
    /// after it does), without its `\n`; empty for none.
    last_kept: Vec<u8>,
    fault: Option<TailFault>,
    /// How many whole lines there are from the fault on.
    lines_after_fault: u64,
}

/// The first line after the durable point that does not continue the chain.
enum TailFault {
    /// It fails a verifier's check: cut here.
    Line {
        /// Where it begins.
        at: u64,
        reason: Reason,
    },
    /// It is valid and its `seq` is the last a chain can have.
    SeqExhausted,
}

impl TailFault {
    fn reason(&self) -> Option<Reason> {
        match self {
            Self::Line { reason, .. } => Some(*reason),
            Self::SeqExhausted => None,
        }
    }
}

/// Lines longer than this fail as malformed rather than being buffered.
const MAX_LINE: u64 = 64 * 1024 * 1024;

/// Checks the whole lines in `from..to` in order, from `head` and the line
/// before them, `last_kept`.
fn check_tail(
    source: &dyn LogSource,
    writer: &ChainWriter,
    from: u64,
    to: u64,
    mut head: ChainHead,
    mut last_kept: Vec<u8>,
) -> std::io::Result<Tail> {
    use std::io::BufRead;
    let mut reader =
        std::io::BufReader::with_capacity(TAIL_CHUNK, source.open_from(from)?.take(to - from));
    let mut line = Vec::new();
    let mut at = from;
    let mut fault = None;
    let mut lines_after_fault = 0;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let whole = line.ends_with(b"\n");
        if fault.is_some() {
            lines_after_fault += u64::from(whole);
            continue;
        }
        let checked = match line.strip_suffix(b"\n") {
            Some(record) => writer.follow(&head, record),
            None => Err(LineFault::Bad(Reason::Malformed)),
        };
        match checked {
            Ok(next) => {
                head = next;
                line.pop();
                std::mem::swap(&mut line, &mut last_kept);
            }
            Err(LineFault::Bad(reason)) => {
                fault = Some(TailFault::Line { at, reason });
                lines_after_fault = u64::from(whole);
            }
            Err(LineFault::SeqExhausted) => {
                fault = Some(TailFault::SeqExhausted);
                break;
            }
        }
        at += n as u64;
    }
    Ok(Tail {
        last_kept,
        fault,
        lines_after_fault,
    })
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
