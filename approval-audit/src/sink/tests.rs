//! Sink behaviour: chain resumption, locking, torn-line recovery, group
//! commit and failing closed.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::{Keyring, Reason, Verifier, verify};

fn key_id() -> KeyId {
    KeyId::new("k1").unwrap()
}

fn secret() -> WriterSecret {
    WriterSecret::from_hex(&"5a".repeat(32)).unwrap()
}

fn writer() -> Arc<ChainWriter> {
    Arc::new(ChainWriter::new(key_id(), &secret()))
}

fn keyring() -> Keyring {
    Keyring::new().with(key_id(), secret().record_key())
}

fn event(n: usize) -> Event {
    Event::Cancelled {
        request_id: format!("req-{n}"),
        why: "test".into(),
    }
}

fn read_all(sink: &dyn AuditSink) -> Vec<u8> {
    let mut out = Vec::new();
    sink.read_back().unwrap().read_to_end(&mut out).unwrap();
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

#[test]
fn memory_sink_chains_concurrent_appends_without_gaps() {
    let sink = Arc::new(MemorySink::new(writer()));
    runtime().block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|n| {
                let sink = sink.clone();
                tokio::spawn(async move { sink.append_event(event(n)).await.unwrap().seq })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..64).collect::<Vec<_>>());
    });
    let report = verify(&read_all(&*sink)[..], &keyring()).unwrap();
    assert_eq!(report.records, 64);
    assert_eq!(sink.len(), 64);
}

#[test]
fn a_batch_is_sealed_in_order_and_all_or_nothing() {
    let sink = MemorySink::new(writer());
    let rt = runtime();
    let batch = vec![
        event(0).to_pending().unwrap(),
        event(1).to_pending().unwrap(),
    ];
    let receipts = rt.block_on(sink.append(batch)).unwrap();
    assert_eq!(receipts.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1]);
    // A rotation to a key the writer lacks fails the whole batch.
    let rotate = Event::KeyRotated {
        next_key_id: KeyId::new("missing").unwrap(),
    };
    let before = sink.bytes();
    let err = rt
        .block_on(sink.append(vec![
            event(2).to_pending().unwrap(),
            rotate.to_pending().unwrap(),
        ]))
        .unwrap_err();
    assert!(
        matches!(err, AuditError::UnknownWriterKey { ref key_id } if key_id.as_str() == "missing")
    );
    assert_eq!(sink.bytes(), before);
    assert_eq!(rt.block_on(sink.append_event(event(3))).unwrap().seq, 2);
}

#[test]
fn jsonl_sink_resumes_the_chain_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rt = runtime();
    let first = {
        let sink = JsonlFileSink::open(&path, writer()).unwrap();
        rt.block_on(sink.append_event(event(0))).unwrap();
        rt.block_on(sink.append_event(event(1))).unwrap()
    };
    let sink = JsonlFileSink::open(&path, writer()).unwrap();
    let next = rt.block_on(sink.append_event(event(2))).unwrap();
    assert_eq!(next.seq, first.seq + 1);
    let report = verify(std::fs::File::open(&path).unwrap(), &keyring()).unwrap();
    assert_eq!((report.records, report.head), (3, Some(next.mac)));
    assert_eq!(read_all(&sink), std::fs::read(&path).unwrap());
}

#[test]
fn a_second_writer_gets_a_clear_lock_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let _first = JsonlFileSink::open(&path, writer()).unwrap();
    let err = JsonlFileSink::open(&path, writer()).unwrap_err();
    assert!(matches!(err, AuditError::Locked { path: ref p } if p == &path));
    assert!(
        err.to_string().contains("locked by another writer"),
        "{err}"
    );
}

#[test]
fn a_torn_last_line_is_removed_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rt = runtime();
    {
        let sink = JsonlFileSink::open(&path, writer()).unwrap();
        for n in 0..3 {
            rt.block_on(sink.append_event(event(n))).unwrap();
        }
    }
    let complete = std::fs::read(&path).unwrap();
    let fragment = b"{\"event\":\"cancelled\",\"key_id\":\"k1\",\"ma";
    std::fs::write(&path, [&complete[..], fragment].concat()).unwrap();

    let sink = JsonlFileSink::open(&path, writer()).unwrap();
    let after = std::fs::read(&path).unwrap();
    assert_eq!(
        &after[..complete.len()],
        &complete[..],
        "complete records kept byte for byte"
    );
    let recovered = std::str::from_utf8(&after[complete.len()..]).unwrap();
    let sha = crate::chain::hex(ring::digest::digest(&ring::digest::SHA256, fragment).as_ref());
    assert!(recovered.contains("\"event\":\"recovered\""), "{recovered}");
    assert!(
        recovered.contains(&format!("\"dropped_bytes\":{}", fragment.len())),
        "{recovered}"
    );
    assert!(
        recovered.contains(&format!("\"dropped_sha256\":\"{sha}\"")),
        "{recovered}"
    );
    assert!(recovered.contains("\"seq\":3"), "{recovered}");
    assert_eq!(rt.block_on(sink.append_event(event(9))).unwrap().seq, 4);
    assert_eq!(verify(&read_all(&sink)[..], &keyring()).unwrap().records, 5);
    assert_eq!(std::fs::read(dropped_path(&path, 3)).unwrap(), fragment);
}

#[test]
fn a_log_that_is_only_a_fragment_restarts_at_seq_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, b"{\"even").unwrap();
    let sink = JsonlFileSink::open(&path, writer()).unwrap();
    let text = String::from_utf8(read_all(&sink)).unwrap();
    assert!(text.starts_with("{\"dropped_bytes\":6,"), "{text}");
    assert!(text.contains("\"seq\":0,"), "{text}");
    assert_eq!(verify(text.as_bytes(), &keyring()).unwrap().records, 1);
}

#[test]
fn a_tampered_last_record_refuses_to_open_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rt = runtime();
    {
        let sink = JsonlFileSink::open(&path, writer()).unwrap();
        rt.block_on(sink.append_event(event(0))).unwrap();
    }
    let good = std::fs::read(&path).unwrap();
    let tampered = String::from_utf8(good).unwrap().replace("req-0", "req-X");
    std::fs::write(&path, &tampered).unwrap();
    let err = JsonlFileSink::open(&path, writer()).unwrap_err();
    // The mark's line is checked with its MAC: damage, not a crash.
    assert!(
        matches!(
            err,
            AuditError::Damaged {
                offset: 0,
                reason: Reason::BadMac,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), tampered);

    // A writer without the tail's key cannot continue the chain either.
    std::fs::write(&path, tampered.replace("req-X", "req-0")).unwrap();
    let stranger = Arc::new(ChainWriter::new(KeyId::new("k9").unwrap(), &secret()));
    let err = JsonlFileSink::open(&path, stranger).unwrap_err();
    assert!(matches!(err, AuditError::UnknownWriterKey { ref key_id } if key_id.as_str() == "k1"));
}

/// Three records synced one by one, then a batch of 200 whose sync loses
/// power with a middle page zeroed; returns the file as the crash left it
/// and where the first record of the batch starts.
fn log_cut_mid_batch(path: &Path) -> (Vec<u8>, usize) {
    let rt = runtime();
    let (mut file, _) = instrumented(path, Duration::ZERO, Some(3));
    file.syncs.power_cut = Some(Arc::new(PowerCut {
        path: path.to_owned(),
        synced_len: AtomicU64::new(0),
    }));
    let sink = JsonlFileSink::with_file(file, writer()).unwrap();
    for n in 0..3 {
        rt.block_on(sink.append_event(event(n))).unwrap();
    }
    let synced = std::fs::read(path).unwrap().len();
    let batch: Vec<_> = (3..203).map(|n| event(n).to_pending().unwrap()).collect();
    let err = rt.block_on(sink.append(batch)).unwrap_err();
    assert!(err.to_string().contains("power lost"), "{err}");
    drop(sink);
    (std::fs::read(path).unwrap(), synced)
}

#[test]
fn a_garbled_page_in_an_unsynced_batch_is_cut_at_the_first_bad_line_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (crashed, synced) = log_cut_mid_batch(&path);
    // The damage is in the middle: the batch's last record is whole.
    let zeros = crashed.iter().position(|&b| b == 0).unwrap();
    assert!(zeros > synced && crashed.ends_with(b"}\n"));
    let cut = crashed[..zeros].iter().rposition(|&b| b == b'\n').unwrap() + 1;

    let sink = JsonlFileSink::open(&path, writer()).unwrap();
    let after = std::fs::read(&path).unwrap();
    assert_eq!(
        &after[..cut],
        &crashed[..cut],
        "the good lines are kept byte for byte"
    );
    let recovered = std::str::from_utf8(&after[cut..]).unwrap();
    let dropped = &crashed[cut..];
    let lines = dropped.iter().filter(|&&b| b == b'\n').count();
    let sha = crate::chain::hex(ring::digest::digest(&ring::digest::SHA256, dropped).as_ref());
    for member in [
        "\"event\":\"recovered\"".to_owned(),
        format!("\"dropped_bytes\":{}", dropped.len()),
        format!("\"dropped_lines\":{lines}"),
        format!("\"dropped_sha256\":\"{sha}\""),
        "\"fault\":\"malformed\"".to_owned(),
    ] {
        assert!(recovered.contains(&member), "{member} in {recovered}");
    }
    // The chain goes on from the last good line, and verifies whole.
    let kept = crashed[..cut].iter().filter(|&&b| b == b'\n').count() as u64;
    // What was cut is kept beside the log, byte for byte.
    assert_eq!(std::fs::read(dropped_path(&path, kept)).unwrap(), dropped);
    assert!(kept > 3, "the batch's records before the damage are kept");
    assert!(
        recovered.contains(&format!("\"seq\":{kept},")),
        "{recovered}"
    );
    let next = runtime().block_on(sink.append_event(event(999))).unwrap();
    assert_eq!(next.seq, kept + 1);
    let report = verify(&read_all(&sink)[..], &keyring()).unwrap();
    assert_eq!((report.records, report.head), (kept + 2, Some(next.mac)));
}

#[test]
fn a_log_without_its_durable_mark_is_verified_whole_and_refused_unchanged_if_a_line_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (crashed, _) = log_cut_mid_batch(&path);
    std::fs::remove_file(durable_mark_path(&path)).unwrap();

    let err = JsonlFileSink::open(&path, writer()).unwrap_err();
    let zeros = crashed.iter().position(|&b| b == 0).unwrap();
    let first_bad = crashed[..zeros].iter().rposition(|&b| b == b'\n').unwrap() as u64 + 1;
    assert!(
        matches!(err, AuditError::Damaged { offset, reason: Reason::Malformed, .. } if offset == first_bad),
        "{err:?}"
    );
    assert!(err.to_string().contains("approval verify"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), crashed, "nothing changed");

    // An intact log without a mark opens after one whole check, and is
    // marked again.
    std::fs::write(&path, &crashed[..end_of_line(&crashed, 3)]).unwrap();
    let sink = JsonlFileSink::open(&path, writer()).unwrap();
    assert_eq!(
        runtime().block_on(sink.append_event(event(9))).unwrap().seq,
        3
    );
    assert!(durable_mark_path(&path).exists());
}

/// Where the `n`-th line ends (after its `\n`).
fn end_of_line(log: &[u8], n: usize) -> usize {
    log.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map(|(i, _)| i + 1)
        .unwrap()
}

#[test]
fn a_synced_line_a_torn_page_may_have_reached_is_checked_and_refuses_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rt = runtime();
    {
        let sink = JsonlFileSink::open(&path, writer()).unwrap();
        for n in 0..20 {
            rt.block_on(sink.append_event(event(n))).unwrap();
        }
    }
    // The mark names the last line; the line before it shares its page.
    let mut damaged = std::fs::read(&path).unwrap();
    let second_last = end_of_line(&damaged, 18);
    let at = second_last
        + damaged[second_last..]
            .windows(6)
            .position(|w| w == b"req-18")
            .unwrap();
    damaged[at + 4] = b'X';
    std::fs::write(&path, &damaged).unwrap();
    let err = JsonlFileSink::open(&path, writer()).unwrap_err();
    assert!(
        matches!(err, AuditError::Damaged { offset, reason: Reason::BadMac, .. } if offset == second_last as u64),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing changed");
}

#[test]
fn after_a_rotation_and_a_stale_mark_the_writer_needs_only_the_key_of_the_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rt = runtime();
    let k2 = KeyId::new("k2").unwrap();
    let k2_secret = WriterSecret::from_hex(&"6b".repeat(32)).unwrap();
    {
        let sink = JsonlFileSink::open(&path, writer()).unwrap();
        rt.block_on(sink.append_event(event(0))).unwrap();
    }
    // The mark of record 0; the marks written after it are lost.
    let stale = std::fs::read(durable_mark_path(&path)).unwrap();
    {
        let sink = JsonlFileSink::open(&path, writer()).unwrap();
        rt.block_on(sink.rotate_key(k2.clone(), &k2_secret))
            .unwrap();
        rt.block_on(sink.append_event(event(2))).unwrap();
    }
    std::fs::write(durable_mark_path(&path), &stale).unwrap();
    let before = std::fs::read(&path).unwrap();

    // The k1 lines after the mark are checked for form and links, and the
    // k2 line with its key.
    let k2_only = Arc::new(ChainWriter::new(k2.clone(), &k2_secret));
    let sink = JsonlFileSink::open(&path, k2_only).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing cut");
    assert_eq!(rt.block_on(sink.append_event(event(3))).unwrap().seq, 3);
    drop(sink);

    // A writer without the key of the line it would continue from is
    // refused, as without a mark, and changes nothing.
    std::fs::write(durable_mark_path(&path), &stale).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = JsonlFileSink::open(&path, writer()).unwrap_err();
    assert!(
        matches!(err, AuditError::UnknownWriterKey { ref key_id } if *key_id == k2),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// A file layer over a real file whose syncs are counted, and can be made
/// slow or failing.
struct Instrumented {
    inner: FsLogFile,
    syncs: SyncControl,
    /// Bytes read through `read_exact_at`.
    read: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct SyncControl {
    count: Arc<AtomicUsize>,
    delay: Duration,
    fail_from: Option<usize>,
    /// Failing syncs lose power instead of reporting EIO.
    power_cut: Option<Arc<PowerCut>>,
}

/// A power cut at a failing sync: a page in the middle of what was written
/// since the last good sync reads back as zeros, as a disk may leave a
/// write it had not finished. The batch's last line survives, so only
/// checking every line finds it.
struct PowerCut {
    path: std::path::PathBuf,
    synced_len: AtomicU64,
}

impl PowerCut {
    fn zero_a_middle_page(&self) -> io::Result<()> {
        const PAGE: usize = 4096;
        let (synced, len) = (
            self.synced_len.load(Ordering::SeqCst),
            std::fs::metadata(&self.path)?.len(),
        );
        let page = (synced + (len - synced) / 2) / PAGE as u64 * PAGE as u64;
        assert!(
            page > synced && page + (PAGE as u64) < len,
            "the unsynced batch must hold a whole page and more"
        );
        let file = std::fs::OpenOptions::new().write(true).open(&self.path)?;
        std::os::unix::fs::FileExt::write_all_at(&file, &[0; PAGE], page)
    }
}

impl SyncControl {
    fn sync(&self, then: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        let failing = self.fail_from.is_some_and(|from| n >= from);
        match &self.power_cut {
            Some(cut) if failing => {
                cut.zero_a_middle_page()?;
                Err(io::Error::other("power lost"))
            }
            Some(cut) => {
                let len = std::fs::metadata(&cut.path)?.len();
                then()?;
                cut.synced_len.store(len, Ordering::SeqCst);
                Ok(())
            }
            None if failing => Err(io::Error::other("injected EIO")),
            None => then(),
        }
    }
}

struct InstrumentedSync {
    inner: Box<dyn SyncHandle>,
    syncs: SyncControl,
}

impl SyncHandle for InstrumentedSync {
    fn sync_data(&mut self) -> io::Result<()> {
        let inner = &mut self.inner;
        self.syncs.sync(|| inner.sync_data())
    }
    fn write_mark(&mut self, mark: &[u8]) -> io::Result<()> {
        self.inner.write_mark(mark)
    }
}

impl LogFile for Instrumented {
    fn size(&mut self) -> io::Result<u64> {
        self.inner.size()
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read.fetch_add(buf.len(), Ordering::SeqCst);
        self.inner.read_exact_at(offset, buf)
    }
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.append(data)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let inner = &mut self.inner;
        self.syncs.sync(|| inner.sync_data())
    }
    fn sync_handle(&self) -> io::Result<Box<dyn SyncHandle>> {
        Ok(Box::new(InstrumentedSync {
            inner: self.inner.sync_handle()?,
            syncs: self.syncs.clone(),
        }))
    }
    fn source(&self) -> Box<dyn LogSource> {
        Box::new(CountingSource {
            inner: self.inner.source(),
            read: self.read.clone(),
        })
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn read_mark(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.inner.read_mark()
    }
}

/// Counts the bytes read through readers it opens.
struct CountingSource {
    inner: Box<dyn LogSource>,
    read: Arc<AtomicUsize>,
}

struct CountingReader {
    inner: Box<dyn Read + Send>,
    read: Arc<AtomicUsize>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n, Ordering::SeqCst);
        Ok(n)
    }
}

impl LogSource for CountingSource {
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        self.open_from(0)
    }
    fn open_from(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(CountingReader {
            inner: self.inner.open_from(offset)?,
            read: self.read.clone(),
        }))
    }
}

fn instrumented(
    path: &Path,
    delay: Duration,
    fail_from: Option<usize>,
) -> (Instrumented, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let file = Instrumented {
        inner: FsLogFile::open(path).unwrap(),
        syncs: SyncControl {
            count: count.clone(),
            delay,
            fail_from,
            power_cut: None,
        },
        read: Arc::default(),
    };
    (file, count)
}

#[test]
fn concurrent_appends_share_one_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let (file, syncs) = instrumented(
        &dir.path().join("audit.jsonl"),
        Duration::from_millis(100),
        None,
    );
    let sink = Arc::new(JsonlFileSink::with_file(file, writer()).unwrap());
    runtime().block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|n| {
                let sink = sink.clone();
                tokio::spawn(async move { sink.append_event(event(n)).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    // The first append may sync alone; the other 63 queue behind its slow
    // sync and share at most a few.
    let syncs = syncs.load(Ordering::SeqCst);
    assert!(syncs <= 4, "{syncs} syncs for 64 appends");
    assert_eq!(
        verify(&read_all(&*sink)[..], &keyring()).unwrap().records,
        64
    );
}

#[test]
fn a_failed_fdatasync_breaks_the_sink_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = instrumented(&dir.path().join("audit.jsonl"), Duration::ZERO, Some(2));
    let sink = JsonlFileSink::with_file(file, writer()).unwrap();
    let rt = runtime();
    rt.block_on(sink.append_event(event(0))).unwrap();
    rt.block_on(sink.append_event(event(1))).unwrap();
    let err = rt.block_on(sink.append_event(event(2))).unwrap_err();
    let AuditError::Broken { cause } = &err else {
        panic!("{err}")
    };
    assert!(
        cause.contains("fdatasync") && cause.contains("injected EIO"),
        "{cause}"
    );
    // Every later append is refused with the same cause, even though the
    // file layer would now accept a write.
    for n in 3..5 {
        let later = rt.block_on(sink.append_event(event(n))).unwrap_err();
        assert!(
            matches!(later, AuditError::Broken { cause: ref c } if c == cause),
            "{later}"
        );
    }
    // What was durable stays readable and valid; the failed record is not
    // counted as durable.
    let report = verify(&read_all(&sink)[..], &keyring()).unwrap();
    assert_eq!(report.records, 2);
}

#[test]
fn rotation_through_the_sink_and_reopening_with_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rt = runtime();
    let new_id = KeyId::new("k2").unwrap();
    let new_secret = WriterSecret::from_hex(&"6b".repeat(32)).unwrap();
    {
        let sink = JsonlFileSink::open(&path, writer()).unwrap();
        rt.block_on(sink.append_event(event(0))).unwrap();
        let rotated = rt
            .block_on(sink.rotate_key(new_id.clone(), &new_secret))
            .unwrap();
        assert_eq!(rotated.seq, 1);
        assert_eq!(sink.chain_writer().active_key_id(), new_id);
        rt.block_on(sink.append_event(event(2))).unwrap();
    }
    // After a restart the writer needs only the key the last record used.
    let later = Arc::new(ChainWriter::new(new_id.clone(), &new_secret));
    let sink = JsonlFileSink::open(&path, later).unwrap();
    rt.block_on(sink.append_event(event(3))).unwrap();
    let text = String::from_utf8(read_all(&sink)).unwrap();
    assert!(
        text.contains("\"event\":\"key_rotated\",\"key_id\":\"k1\""),
        "{text}"
    );
    assert!(text.contains("\"next_key_id\":\"k2\""), "{text}");
    let both = keyring().with(new_id, new_secret.record_key());
    assert_eq!(
        Verifier::new(&both)
            .verify(text.as_bytes())
            .unwrap()
            .records,
        4
    );
    assert!(verify(text.as_bytes(), &keyring()).is_err());
}

#[test]
fn records_handed_over_are_written_even_if_the_caller_stops_waiting() {
    use std::future::Future;
    use std::task::{Context, Waker};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (file, _) = instrumented(&path, Duration::from_millis(20), None);
    let sink = JsonlFileSink::with_file(file, writer()).unwrap();
    for n in 0..8 {
        // One poll hands the record over; then the caller gives up.
        let mut append = Box::pin(sink.append_event(event(n)));
        let polled = append
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending(), "a sync takes 20 ms");
        drop(append);
    }
    // Dropping the sink writes what is queued.
    drop(sink);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(verify(text.as_bytes(), &keyring()).unwrap().records, 8);
    for n in 0..8 {
        assert!(text.contains(&format!("\"req-{n}\"")), "record {n} lost");
    }
}

#[test]
fn reopening_reads_only_the_tail_of_a_large_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rt = runtime();
    {
        let sink = JsonlFileSink::open(&path, writer()).unwrap();
        let batch: Vec<_> = (0..5000).map(|n| event(n).to_pending().unwrap()).collect();
        rt.block_on(sink.append(batch)).unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 1_000_000, "{size}");
    let (file, _) = instrumented(&path, Duration::ZERO, None);
    let read = file.read.clone();
    let sink = JsonlFileSink::with_file(file, writer()).unwrap();
    assert_eq!(rt.block_on(sink.append_event(event(9))).unwrap().seq, 5000);
    // Four backward reads of at most 64 KiB each (the last line, the mark's,
    // the page before it), those lines and that page.
    let read = read.load(Ordering::SeqCst);
    assert!(read <= 5 * 64 * 1024, "read {read} of {size} bytes");
}

#[test]
fn writer_and_keyring_debug_show_no_key_material() {
    let hex_secret = "5a".repeat(32);
    let record_key_hex = {
        let mut out = Vec::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        secret().record_key().write_new_file(&path).unwrap();
        out.extend(std::fs::read(&path).unwrap());
        String::from_utf8(out).unwrap().trim_end().to_owned()
    };
    let shown = [
        format!("{:?}", writer()),
        format!("{:?}", keyring()),
        format!("{:?}", MemorySink::new(writer())),
    ];
    for text in shown {
        assert!(!text.contains(&hex_secret[..16]), "{text}");
        assert!(!text.contains(&record_key_hex[..16]), "{text}");
        assert!(!text.contains("90, 90, 90"), "raw bytes shown: {text}");
    }
}

/// A file log with `old` records at one time, then, two hours later,
/// `recent` records (one of them longer than a read block).
fn log_with_old_and_recent(dir: &Path, old: usize, recent: usize) -> JsonlFileSink {
    let clock = Arc::new(crate::ManualClock::new(
        std::time::UNIX_EPOCH + Duration::from_secs(1_795_513_267),
    ));
    let writer = Arc::new(ChainWriter::new(key_id(), &secret()).with_clock(clock.clone()));
    let sink = JsonlFileSink::open(dir.join("log.jsonl"), writer).unwrap();
    runtime().block_on(async {
        for n in 0..old {
            sink.append_event(event(n)).await.unwrap();
        }
        clock.advance(Duration::from_secs(7200));
        for n in 0..recent {
            let why = if n == 1 {
                "x".repeat(100_000)
            } else {
                "test".into()
            };
            sink.append_event(Event::Cancelled {
                request_id: format!("new-{n}"),
                why,
            })
            .await
            .unwrap();
            clock.advance(Duration::from_millis(1));
        }
    });
    sink
}

fn ids(reader: Box<dyn Read + Send>) -> Vec<String> {
    use std::io::BufRead as _;
    io::BufReader::new(reader)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            value["request_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn reading_recent_records_reads_back_from_the_end_only_as_far_as_the_window() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_with_old_and_recent(dir.path(), 5000, 4));
    let path = dir.path().join("log.jsonl");
    let size = std::fs::metadata(&path).unwrap().len();
    let (file, _) = instrumented(&path, Duration::ZERO, None);
    let read = file.read.clone();
    let sink = JsonlFileSink::with_file(file, writer()).unwrap();
    read.store(0, Ordering::SeqCst);
    let new: Vec<String> = (0..4).map(|n| format!("new-{n}")).collect();
    assert_eq!(
        ids(sink.read_recent(Duration::from_secs(3600)).unwrap()),
        new
    );
    // Backward reads reach one block past the window, then the window is
    // read once more to hand it over: far less than the log.
    let read = read.load(Ordering::SeqCst);
    assert!(read < 5 * 64 * 1024, "read {read} of {size} bytes");
    assert!(size > 1_000_000, "{size}");
    // A window reaching the old records includes them all.
    let all = ids(sink.read_recent(Duration::from_secs(7201)).unwrap());
    assert_eq!(all.len(), 5004);
    assert_eq!(all, ids(sink.read_back().unwrap()));
    // The default for any sink: the whole log.
    let memory = MemorySink::new(writer());
    assert!(ids(memory.read_recent(Duration::ZERO).unwrap()).is_empty());
}

#[test]
fn reading_recent_records_of_an_empty_or_all_recent_log_is_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let empty = JsonlFileSink::open(dir.path().join("empty.jsonl"), writer()).unwrap();
    assert!(ids(empty.read_recent(Duration::from_secs(60)).unwrap()).is_empty());
    drop(empty);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let sink = log_with_old_and_recent(&dir.path().join("sub"), 0, 3);
    assert_eq!(
        ids(sink.read_recent(Duration::from_secs(60)).unwrap()).len(),
        3
    );
}

mod checkpoints {
    use std::sync::Mutex;

    use super::*;
    use crate::checkpoint::{
        Checkpoint, CheckpointPublisher, Checkpointing, Coverage, DirectoryPublisher, SigningKey,
        VerifierKey, check_log, checkpoint_path,
    };

    const ORIGIN: &str = "example.com/approvals/test";

    /// The same key for every open in a test (a reopened log must be
    /// signed by the key that signed it).
    fn signing() -> SigningKey {
        fixed_key()
    }

    fn fixed_key() -> SigningKey {
        use std::sync::OnceLock;
        static LINE: OnceLock<String> = OnceLock::new();
        let line = LINE.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("k");
            SigningKey::generate(ORIGIN)
                .unwrap()
                .write_new_file(&path)
                .unwrap();
            std::fs::read_to_string(&path).unwrap()
        });
        SigningKey::from_private_line(line).unwrap()
    }

    fn public() -> VerifierKey {
        signing().verifier()
    }

    fn append(sink: &JsonlFileSink, n: usize) {
        runtime().block_on(async {
            for i in 0..n {
                sink.append_event(event(i)).await.unwrap();
            }
        });
    }

    fn newest(log: &Path) -> Checkpoint {
        let signed = std::fs::read(checkpoint_path(log)).unwrap();
        Checkpoint::open(&signed, &[public()]).unwrap()
    }

    #[test]
    fn the_writer_signs_on_its_cadence_and_on_close_and_the_log_matches() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let sink = JsonlFileSink::open_with_checkpoints(
            &log,
            writer(),
            Checkpointing::new(signing()).every_records(10),
        )
        .unwrap();
        append(&sink, 25);
        // Signed once 10 and 20 records were durable (the file holds the
        // newest), and not yet for the last 5.
        let status = sink.checkpoint_status().unwrap();
        assert_eq!(
            status.written.as_ref().map(|c| c.size),
            Some(20),
            "{status:?}"
        );
        assert_eq!(newest(&log).size, 20);
        drop(sink);
        let last = newest(&log);
        assert_eq!((last.size, last.origin.as_str()), (25, ORIGIN));
        let file = std::fs::File::open(&log).unwrap();
        assert_eq!(
            check_log(file, &last).unwrap(),
            Coverage::Consistent {
                covered: 25,
                beyond: 0
            }
        );

        // Reopening resumes the tree from the log itself.
        let sink = JsonlFileSink::open_with_checkpoints(
            &log,
            writer(),
            Checkpointing::new(signing()).every_records(1000),
        )
        .unwrap();
        append(&sink, 3);
        drop(sink);
        let last = newest(&log);
        assert_eq!(last.size, 28);
        let file = std::fs::File::open(&log).unwrap();
        assert_eq!(
            check_log(file, &last).unwrap(),
            Coverage::Consistent {
                covered: 28,
                beyond: 0
            }
        );
        // And the chain still verifies.
        assert_eq!(
            verify(&std::fs::read(&log).unwrap()[..], &keyring())
                .unwrap()
                .records,
            28
        );
    }

    #[test]
    fn a_log_that_no_longer_matches_its_checkpoint_is_not_opened_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let sink =
            JsonlFileSink::open_with_checkpoints(&log, writer(), Checkpointing::new(signing()))
                .unwrap();
        append(&sink, 6);
        drop(sink);
        let original = std::fs::read(&log).unwrap();
        let lines: Vec<&[u8]> = original.split_inclusive(|&b| b == b'\n').collect();

        // Cut off after 4 records (at a line boundary: the chain alone would
        // continue from there).
        std::fs::write(&log, lines[..4].concat()).unwrap();
        let err =
            JsonlFileSink::open_with_checkpoints(&log, writer(), Checkpointing::new(signing()))
                .unwrap_err();
        assert!(
            matches!(&err, AuditError::CheckpointMismatch { why } if why.contains("Truncated")),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&log).unwrap(),
            lines[..4].concat(),
            "nothing written"
        );

        // A record inside the signed part rewritten (same length): in the
        // log's last page, the line check finds it before the checkpoint's.
        let mut edited = original.clone();
        let at = edited.windows(5).position(|w| w == b"req-2").unwrap();
        edited[at + 4] = b'9';
        std::fs::write(&log, &edited).unwrap();
        let err =
            JsonlFileSink::open_with_checkpoints(&log, writer(), Checkpointing::new(signing()))
                .unwrap_err();
        assert!(
            matches!(
                &err,
                AuditError::Damaged {
                    reason: Reason::BadMac,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(std::fs::read(&log).unwrap(), edited, "nothing written");

        // Another signing key than the one that signed it.
        std::fs::write(&log, &original).unwrap();
        let other = SigningKey::generate(ORIGIN).unwrap();
        let err = JsonlFileSink::open_with_checkpoints(&log, writer(), Checkpointing::new(other))
            .unwrap_err();
        assert!(
            matches!(&err, AuditError::CheckpointMismatch { why } if why.contains("no trusted key")),
            "{err}"
        );
        // The original opens.
        drop(
            JsonlFileSink::open_with_checkpoints(&log, writer(), Checkpointing::new(signing()))
                .unwrap(),
        );
    }

    #[test]
    fn records_left_unsigned_are_signed_when_idle_and_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        // Written without checkpoints (as if a crash came before any).
        let plain = JsonlFileSink::open(&log, writer()).unwrap();
        append(&plain, 5);
        drop(plain);
        let sink = JsonlFileSink::open_with_checkpoints(
            &log,
            writer(),
            Checkpointing::new(signing()).every(Duration::from_millis(100)),
        )
        .unwrap();
        let signed =
            |sink: &JsonlFileSink| sink.checkpoint_status().unwrap().written.map(|c| c.size);
        for _ in 0..100 {
            if signed(&sink) == Some(5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(signed(&sink), Some(5), "signed at open");
        // Three more, then nothing: the interval alone signs them.
        append(&sink, 3);
        for _ in 0..100 {
            if signed(&sink) == Some(8) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(signed(&sink), Some(8), "signed when idle");
        assert_eq!(newest(&log).size, 8);
    }

    #[test]
    fn opening_without_signing_still_refuses_a_log_its_checkpoint_contradicts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let sink =
            JsonlFileSink::open_with_checkpoints(&log, writer(), Checkpointing::new(signing()))
                .unwrap();
        append(&sink, 6);
        drop(sink);
        let original = std::fs::read(&log).unwrap();
        let lines: Vec<&[u8]> = original.split_inclusive(|&b| b == b'\n').collect();
        std::fs::write(&log, lines[..4].concat()).unwrap();
        let err = JsonlFileSink::open(&log, writer()).unwrap_err();
        assert!(
            matches!(&err, AuditError::CheckpointMismatch { why } if why.contains("Truncated")),
            "{err}"
        );
        std::fs::write(&log, &original).unwrap();
        drop(JsonlFileSink::open(&log, writer()).unwrap());
    }

    #[test]
    fn the_checkpoint_of_a_clean_close_is_published_before_the_sink_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let flaky = Arc::new(Flaky {
            failures: Mutex::new(2),
            kept: Mutex::default(),
        });
        let sink = JsonlFileSink::open_with_checkpoints(
            &log,
            writer(),
            Checkpointing::new(signing()).publish_to(flaky.clone()),
        )
        .unwrap();
        append(&sink, 2);
        drop(sink);
        // Failed twice, retried within the close's grace period.
        assert_eq!(*flaky.kept.lock().unwrap(), [2]);
    }

    /// A witness on 127.0.0.1 that answers 503 to its first `failures`
    /// requests and 200 after; it keeps (path, content type, body) of each.
    /// What the fake witness saw of each request: path, content type, body.
    #[cfg(feature = "http-publisher")]
    type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

    #[cfg(feature = "http-publisher")]
    fn fake_witness(failures: usize) -> (String, Seen) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/add-checkpoint", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let kept = seen.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let (mut length, mut content_type) = (0, String::new());
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(": ").unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.parse().unwrap(),
                        "content-type" => content_type = value.to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let path = request_line.split(' ').nth(1).unwrap().to_owned();
                kept.lock().unwrap().push((path, content_type, body));
                let status = if n < failures {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let mut stream = reader.into_inner();
                write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
            }
        });
        (url, seen)
    }

    #[cfg(feature = "http-publisher")]
    #[test]
    fn the_http_publisher_posts_each_checkpoint_and_retries_a_witness_that_is_down() {
        use crate::checkpoint::HttpPublisher;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let (url, seen) = fake_witness(1);
        let sink = JsonlFileSink::open_with_checkpoints(
            &log,
            writer(),
            Checkpointing::new(signing())
                .every_records(3)
                .publish_to(HttpPublisher::new(url)),
        )
        .unwrap();
        append(&sink, 3);
        for _ in 0..200 {
            if sink.checkpoint_status().unwrap().publishers[0].0 == Some(3) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = sink.checkpoint_status().unwrap();
        assert_eq!(status.publishers, [(Some(3), None)], "{status:?}");
        let seen = seen.lock().unwrap().clone();
        // Refused once (503), then taken: the same signed note both times.
        assert_eq!(seen.len(), 2, "{seen:?}");
        for (path, content_type, body) in &seen {
            assert_eq!(path, "/add-checkpoint");
            assert_eq!(content_type, "text/plain; charset=utf-8");
            assert_eq!(Checkpoint::open(body, &[public()]).unwrap().size, 3);
        }
        drop(sink);
    }

    #[cfg(feature = "http-publisher")]
    #[test]
    fn a_witness_nobody_answers_is_reported_and_never_holds_up_appends() {
        use crate::checkpoint::HttpPublisher;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = JsonlFileSink::open_with_checkpoints(
            &log,
            writer(),
            Checkpointing::new(signing())
                .every_records(1)
                .close_grace(Duration::from_millis(200))
                .publish_to(HttpPublisher::new(format!("http://127.0.0.1:{port}/w"))),
        )
        .unwrap();
        append(&sink, 20);
        let mut error = None;
        for _ in 0..200 {
            error = sink.checkpoint_status().unwrap().publishers[0].1.clone();
            if error.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let error = error.expect("the failure is reported");
        assert!(
            error.contains(&format!("POST http://127.0.0.1:{port}/w")),
            "{error}"
        );
        // The log and its own checkpoint kept going.
        for _ in 0..100 {
            if sink.checkpoint_status().unwrap().written.map(|c| c.size) == Some(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            sink.checkpoint_status().unwrap().written.map(|c| c.size),
            Some(20)
        );
        // Closing waits for the witness no longer than its grace period.
        let closing = std::time::Instant::now();
        drop(sink);
        assert!(
            closing.elapsed() < Duration::from_secs(3),
            "{:?}",
            closing.elapsed()
        );
    }

    /// Fails its first `failures` attempts, then keeps what it is given.
    #[derive(Debug, Default)]
    struct Flaky {
        failures: Mutex<usize>,
        kept: Mutex<Vec<u64>>,
    }

    impl CheckpointPublisher for Arc<Flaky> {
        fn publish(&self, checkpoint: &Checkpoint, _: &[u8]) -> Result<(), String> {
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err("witness unreachable".into());
            }
            self.kept.lock().unwrap().push(checkpoint.size);
            Ok(())
        }
    }

    #[test]
    fn publishers_get_each_checkpoint_and_a_failing_one_is_retried_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let worm = dir.path().join("worm");
        let flaky = Arc::new(Flaky {
            failures: Mutex::new(2),
            kept: Mutex::default(),
        });
        let sink = JsonlFileSink::open_with_checkpoints(
            &log,
            writer(),
            Checkpointing::new(signing())
                .every_records(5)
                .publish_to(DirectoryPublisher::new(&worm))
                .publish_to(flaky.clone()),
        )
        .unwrap();
        append(&sink, 5);
        // Appends were never held up; the failures show in the status until
        // a retry succeeds.
        let mut seen_error = false;
        for _ in 0..200 {
            let status = sink.checkpoint_status().unwrap();
            seen_error |= status.publishers[1].1.is_some();
            if status.publishers[1].0 == Some(5) && status.publishers[0].0 == Some(5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = sink.checkpoint_status().unwrap();
        assert!(seen_error, "{status:?}");
        assert_eq!(status.publishers, [(Some(5), None), (Some(5), None)]);
        assert_eq!(*flaky.kept.lock().unwrap(), [5]);
        let published = std::fs::read(worm.join("5.checkpoint")).unwrap();
        assert_eq!(Checkpoint::open(&published, &[public()]).unwrap().size, 5);
        drop(sink);
    }
}

#[test]
fn the_memory_sink_keeps_the_tree_of_what_it_sealed() {
    use crate::checkpoint::{leaf_hashes, root};
    let sink = MemorySink::new(writer());
    runtime().block_on(async {
        for n in 0..37 {
            sink.append_event(event(n)).await.unwrap();
        }
        // A batch, too.
        let batch = (37..50).map(|n| event(n).to_pending().unwrap()).collect();
        sink.append(batch).await.unwrap();
    });
    let checkpoint = sink.checkpoint("example.com/memory");
    assert_eq!(checkpoint.size, 50);
    assert_eq!(
        checkpoint.root,
        root(&leaf_hashes(&sink.bytes()[..]).unwrap())
    );
}
