//! Checkpoints on the writer's side: when to sign, keeping the newest in
//! `LOG.checkpoint`, and handing each to publishers the writer cannot
//! rewrite.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::{Checkpoint, Coverage, MerkleFrontier, SigningKey};

/// How a log's writer signs checkpoints: with `key` (whose name is the
/// log's origin), at least every 1,000 records and every 60 seconds while
/// records come in (both configurable), and on a clean close.
///
/// ```
/// use std::time::Duration;
/// use approval_audit::checkpoint::{Checkpointing, DirectoryPublisher, SigningKey};
///
/// let key = SigningKey::generate("example.com/approvals/prod")?;
/// let checkpointing = Checkpointing::new(key)
///     .every_records(500)
///     .every(Duration::from_secs(30))
///     .publish_to(DirectoryPublisher::new("/mnt/worm/checkpoints"));
/// # Ok::<(), approval_audit::checkpoint::NoteError>(())
/// ```
#[derive(Debug)]
pub struct Checkpointing {
    pub(crate) key: SigningKey,
    pub(crate) every_records: u64,
    pub(crate) every: Duration,
    pub(crate) publishers: Vec<Arc<dyn CheckpointPublisher>>,
    pub(crate) close_grace: Duration,
}

impl Checkpointing {
    /// Signs with `key`, on the default cadence.
    pub fn new(key: SigningKey) -> Self {
        Self {
            key,
            every_records: 1000,
            every: Duration::from_secs(60),
            publishers: Vec::new(),
            close_grace: Duration::from_secs(5),
        }
    }

    /// How long closing the log waits for its last checkpoint to be
    /// published (retrying a publisher that fails); 5 seconds by default.
    #[must_use]
    pub fn close_grace(mut self, grace: Duration) -> Self {
        self.close_grace = grace;
        self
    }

    /// Signs at least every `records` records (at least 1).
    #[must_use]
    pub fn every_records(mut self, records: u64) -> Self {
        self.every_records = records.max(1);
        self
    }

    /// Signs at least every `interval` while records come in.
    #[must_use]
    pub fn every(mut self, interval: Duration) -> Self {
        self.every = interval;
        self
    }

    /// Also hands each checkpoint to `publisher`.
    #[must_use]
    pub fn publish_to(mut self, publisher: impl CheckpointPublisher + 'static) -> Self {
        self.publishers.push(Arc::new(publisher));
        self
    }
}

/// A place that keeps checkpoints where the log's writer cannot rewrite
/// them: a write-once directory, a witness, a transparency service.
///
/// Publishing runs on its own thread and may block; a failure is retried
/// with backoff and reported ([`CheckpointStatus`]), and never stops
/// appends.
pub trait CheckpointPublisher: Send + Sync + fmt::Debug {
    /// Hands over one signed checkpoint (`signed` is the note's bytes).
    fn publish(&self, checkpoint: &Checkpoint, signed: &[u8]) -> Result<(), String>;
}

/// Writes each checkpoint to its own new file, `<dir>/<size>.checkpoint`,
/// never replacing one: on a write-once mount or a directory the writer's
/// account may create files in but not change, it keeps every checkpoint.
#[derive(Debug, Clone)]
pub struct DirectoryPublisher {
    dir: PathBuf,
}

impl DirectoryPublisher {
    /// Publishes into `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl CheckpointPublisher for DirectoryPublisher {
    fn publish(&self, checkpoint: &Checkpoint, signed: &[u8]) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let path = self.dir.join(format!("{}.checkpoint", checkpoint.size));
        match std::fs::read(&path) {
            // Published before (a retry after a lost answer): the same bytes
            // are fine, different ones are not replaced.
            Ok(existing) if existing == signed => return Ok(()),
            Ok(_) => return Err(format!("{} exists with other content", path.display())),
            Err(_) => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.write_all(signed)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::File::open(&self.dir)?.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// How checkpointing stands, for monitoring: the newest checkpoint written
/// beside the log, and each publisher's last success and last failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointStatus {
    /// The newest checkpoint in `LOG.checkpoint`.
    pub written: Option<Checkpoint>,
    /// Why the last attempt to write `LOG.checkpoint` failed, if it did.
    pub write_error: Option<String>,
    /// Per publisher, in the order configured: the size of the newest
    /// checkpoint it took, and its last error since then.
    pub publishers: Vec<(Option<u64>, Option<String>)>,
}

/// The path of a log's checkpoint file: `LOG.checkpoint`.
pub fn checkpoint_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".checkpoint");
    PathBuf::from(name)
}

/// The writer's tree and cadence.
#[derive(Debug)]
pub(crate) struct Cadence {
    origin: String,
    tree: MerkleFrontier,
    every_records: u64,
    every: Duration,
    last_size: u64,
    last_time: Instant,
}

impl Cadence {
    pub(crate) fn new(checkpointing: &Checkpointing, tree: MerkleFrontier, signed: u64) -> Self {
        Self {
            origin: checkpointing.key.name().to_owned(),
            tree,
            every_records: checkpointing.every_records,
            every: checkpointing.every,
            last_size: signed,
            last_time: Instant::now(),
        }
    }

    /// Adds the lines just written (each ending in `\n`); returns a
    /// checkpoint to sign once they are durable, if one is due.
    pub(crate) fn add(&mut self, lines: &[u8]) -> Option<Checkpoint> {
        self.tree.push_lines(lines);
        let due = self.tree.size() - self.last_size >= self.every_records
            || (self.tree.size() > self.last_size && self.last_time.elapsed() >= self.every);
        due.then(|| self.take())
    }

    /// The checkpoint of records not yet signed (at a clean close, at open
    /// after a crash, or when the interval passes with no new record).
    pub(crate) fn pending(&mut self) -> Option<Checkpoint> {
        (self.tree.size() > self.last_size).then(|| self.take())
    }

    /// How long until unsigned records are due for signing by time alone;
    /// `None` when every record is signed.
    pub(crate) fn due_in(&self) -> Option<Duration> {
        (self.tree.size() > self.last_size)
            .then(|| self.every.saturating_sub(self.last_time.elapsed()))
    }

    fn take(&mut self) -> Checkpoint {
        self.last_size = self.tree.size();
        self.last_time = Instant::now();
        Checkpoint::new(self.origin.clone(), self.tree.size(), self.tree.root())
    }
}

/// Signs durable checkpoints, keeps the newest beside the log, and feeds
/// the publishing thread.
pub(crate) struct Signer {
    key: SigningKey,
    path: PathBuf,
    status: Arc<Mutex<CheckpointStatus>>,
    publish: Option<mpsc::Sender<(Checkpoint, Vec<u8>)>>,
    /// Says when the publishing thread has ended.
    published: Option<mpsc::Receiver<()>>,
    close_grace: Duration,
}

impl Drop for Signer {
    fn drop(&mut self) {
        // Let the publishing thread finish the newest checkpoint (the one
        // covering the log's tail), within the grace period.
        self.publish.take();
        if let Some(published) = self.published.take() {
            match published.recv_timeout(self.close_grace + Duration::from_secs(1)) {
                Ok(()) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => tracing::warn!(
                    "the checkpoint publishing thread did not finish within the close grace period"
                ),
                // The thread ends by saying so, unless it panicked.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    tracing::error!("the checkpoint publishing thread panicked");
                }
            }
        }
    }
}

impl Signer {
    pub(crate) fn new(
        checkpointing: Checkpointing,
        log: &Path,
        status: Arc<Mutex<CheckpointStatus>>,
    ) -> Self {
        let (publish, published) = if checkpointing.publishers.is_empty() {
            (None, None)
        } else {
            let (send, receive) = mpsc::channel();
            let (done, published) = mpsc::channel();
            let publishers = checkpointing.publishers.clone();
            let status = status.clone();
            let grace = checkpointing.close_grace;
            let spawned = std::thread::Builder::new()
                .name("approval-checkpoint-publish".into())
                .spawn(move || {
                    publish_loop(&publishers, &receive, &status, grace);
                    // The signer stops waiting after the close grace period.
                    if done.send(()).is_err() {
                        tracing::debug!("checkpoint publishing ended: the signer is gone");
                    }
                });
            match spawned {
                Ok(_detached) => (Some(send), Some(published)),
                // The sender's sends fail and publishing is reported as
                // failing; appends go on, and there is no thread to wait for.
                Err(error) => {
                    tracing::error!(%error, "the checkpoint publishing thread could not start");
                    (Some(send), None)
                }
            }
        };
        lock(&status).publishers = vec![(None, None); checkpointing.publishers.len()];
        Self {
            key: checkpointing.key,
            path: checkpoint_path(log),
            status,
            publish,
            published,
            close_grace: checkpointing.close_grace,
        }
    }

    /// Signs `checkpoint` (its records are durable), replaces
    /// `LOG.checkpoint` with it and queues it for publishing.
    pub(crate) fn sign(&self, checkpoint: Checkpoint) {
        let signed = match checkpoint.sign(&self.key) {
            Ok(signed) => signed.into_bytes(),
            Err(e) => {
                lock(&self.status).write_error = Some(format!("signing failed: {e}"));
                return;
            }
        };
        match replace_file(&self.path, &signed) {
            Ok(()) => {
                let mut status = lock(&self.status);
                status.written = Some(checkpoint.clone());
                status.write_error = None;
            }
            Err(e) => {
                lock(&self.status).write_error = Some(format!("{}: {e}", self.path.display()));
            }
        }
        if let Some(publish) = &self.publish
            && publish.send((checkpoint, signed)).is_err()
        {
            for publisher in &mut lock(&self.status).publishers {
                publisher.1 = Some("the publishing thread is not running".into());
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `bytes` to `path` atomically: a temporary file, synced, renamed
/// over it, and the directory synced.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The first retry waits this long, doubling up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Hands each checkpoint to every publisher, retrying failures with
/// backoff until they succeed or a newer checkpoint replaces them.
fn publish_loop(
    publishers: &[Arc<dyn CheckpointPublisher>],
    queue: &mpsc::Receiver<(Checkpoint, Vec<u8>)>,
    status: &Mutex<CheckpointStatus>,
    close_grace: Duration,
) {
    let mut current = match queue.recv() {
        Ok(first) => first,
        Err(_) => return,
    };
    let mut pending: Vec<bool> = vec![true; publishers.len()];
    let mut backoff = FIRST_BACKOFF;
    // Set once the sink closes: the newest checkpoint is still retried
    // until then.
    let mut closing: Option<Instant> = None;
    loop {
        for (i, publisher) in publishers.iter().enumerate() {
            if !pending[i] {
                continue;
            }
            let result = publisher.publish(&current.0, &current.1);
            let mut status = lock(status);
            if let Some(entry) = status.publishers.get_mut(i) {
                match result {
                    Ok(()) => {
                        pending[i] = false;
                        *entry = (Some(current.0.size), None);
                    }
                    Err(e) => entry.1 = Some(e),
                }
            }
        }
        let next = if pending.iter().any(|p| *p) {
            if let Some(deadline) = closing {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                std::thread::sleep(backoff.min(left));
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            // Wait, unless a newer checkpoint arrives first.
            let waited = queue.recv_timeout(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match waited {
                Ok(newer) => Some(newer),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    closing = Some(Instant::now() + close_grace);
                    None
                }
            }
        } else {
            match queue.recv() {
                Ok(newer) => Some(newer),
                Err(_) => return,
            }
        };
        if let Some(mut newer) = next {
            // Only the newest matters: it covers everything older.
            while let Ok(newest) = queue.try_recv() {
                newer = newest;
            }
            current = newer;
            pending.fill(true);
            backoff = FIRST_BACKOFF;
        }
    }
}

/// Rebuilds the tree from the log's whole lines and checks the log against
/// its own newest checkpoint (`LOG.checkpoint`; its signature is checked
/// with `key` when the writer signs, else only its size and root): a log
/// that no longer holds what it signed must not be written to. Returns the
/// tree and the size of that checkpoint (0 without one).
pub(crate) fn resume(
    log: &Path,
    reader: impl Read,
    key: Option<&SigningKey>,
) -> Result<(MerkleFrontier, u64), String> {
    let path = checkpoint_path(log);
    let signed = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let checkpoint = match (&signed, key) {
        (Some(bytes), Some(key)) => Some(Checkpoint::open(bytes, &[key.verifier()])),
        (Some(bytes), None) => Some(Checkpoint::parse_signed(bytes)),
        (None, _) => None,
    }
    .transpose()
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let at = checkpoint.as_ref().map_or(0, |c| c.size);
    let (tree, root_at) =
        super::tree_of(reader, at).map_err(|e| format!("{}: {e}", log.display()))?;
    let Some(checkpoint) = checkpoint else {
        return Ok((tree, 0));
    };
    let coverage = super::coverage(tree.size(), root_at, &checkpoint);
    if matches!(coverage, Coverage::Consistent { .. }) {
        return Ok((tree, checkpoint.size));
    }
    Err(format!(
        "{} does not match {}: {coverage:?}",
        log.display(),
        path.display()
    ))
}
