//! Simulated power loss: the sink runs on a file layer that keeps only what
//! was synced (plus a random part of what was not), so a sink that skipped
//! `fdatasync` would lose acknowledged records and fail here.

use std::io::{self, Cursor, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approval_core::{
    AuditSink, ChainWriter, Event, JsonlFileSink, KeyId, Keyring, LogFile, LogSource, Receipt,
    SyncHandle, WriterSecret, verify,
};

/// What a disk holds: what the process sees, and what would survive power
/// loss (the state at the last sync).
#[derive(Default)]
struct Disk {
    visible: Vec<u8>,
    durable: Vec<u8>,
    /// A lying disk acknowledges syncs without making anything durable.
    lies: bool,
    /// Copies of what reopening cut, by name.
    kept: Vec<(std::path::PathBuf, Vec<u8>)>,
}

impl Disk {
    /// The contents after a power cut: what was durable, plus a random
    /// prefix of what was written after it (a torn write).
    fn after_power_cut(&self, random: u64) -> Vec<u8> {
        let mut out = self.durable.clone();
        if self.visible.starts_with(&self.durable) {
            let unsynced = &self.visible[self.durable.len()..];
            let keep = usize::try_from(random % (unsynced.len() as u64 + 1)).unwrap();
            out.extend_from_slice(&unsynced[..keep]);
        }
        out
    }
}

#[derive(Clone)]
struct SimFile(Arc<Mutex<Disk>>);

impl LogFile for SimFile {
    fn size(&mut self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().visible.len() as u64)
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let disk = self.0.lock().unwrap();
        let start = usize::try_from(offset).unwrap();
        let src = disk
            .visible
            .get(start..start + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.lock().unwrap().visible.extend_from_slice(data);
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0
            .lock()
            .unwrap()
            .visible
            .truncate(usize::try_from(len).unwrap());
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        SyncHandle::sync_data(self)
    }
    fn sync_handle(&self) -> io::Result<Box<dyn SyncHandle>> {
        Ok(Box::new(self.clone()))
    }
    fn source(&self) -> Box<dyn LogSource> {
        Box::new(self.clone())
    }
    fn path(&self) -> &Path {
        Path::new("sim://audit.jsonl")
    }
    fn keep_copy(&mut self, from: u64, copy: &Path) -> io::Result<()> {
        let mut disk = self.0.lock().unwrap();
        let from = usize::try_from(from).unwrap();
        let bytes = disk.visible[from..].to_vec();
        disk.kept.push((copy.to_owned(), bytes));
        Ok(())
    }
}

impl SyncHandle for SimFile {
    /// Makes durable what was written before the sync began: the copy is
    /// taken at the start, then the sync takes time, as on a real disk,
    /// during which later writes queue up.
    fn sync_data(&mut self) -> io::Result<()> {
        let snapshot = {
            let disk = self.0.lock().unwrap();
            (!disk.lies).then(|| disk.visible.clone())
        };
        std::thread::sleep(Duration::from_micros(200));
        if let Some(snapshot) = snapshot {
            let mut disk = self.0.lock().unwrap();
            // A truncation since the snapshot (recovery on open) already
            // replaced the contents; keep the shorter, newer state.
            if disk.visible.starts_with(&snapshot) {
                disk.durable = snapshot;
            }
        }
        Ok(())
    }
}

impl LogSource for SimFile {
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(Cursor::new(
            self.0.lock().unwrap().visible.clone(),
        )))
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs appenders on `disk`, cuts the power at a random moment, and returns
/// the surviving bytes and the receipts acknowledged before the cut.
fn run_until_power_cut(
    disk: &Arc<Mutex<Disk>>,
    writer: &Arc<ChainWriter>,
    random: &mut u64,
    run_for: Duration,
) -> (Vec<u8>, Vec<Receipt>) {
    let sink = Arc::new(JsonlFileSink::with_file(SimFile(disk.clone()), writer.clone()).unwrap());
    let acks = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (sink, acks, stop) = (sink.clone(), acks.clone(), stop.clone());
            runtime.spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let event = Event::Cancelled {
                        request_id: format!("t{task}-{i}"),
                        why: "w".repeat(i % 50),
                    };
                    let receipt = sink.append_event(event).await.unwrap();
                    acks.lock().unwrap().push(receipt);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(run_for);
    // Everything acknowledged so far had its sync return before this point.
    let acknowledged = acks.lock().unwrap().clone();
    let survived = disk.lock().unwrap().after_power_cut(xorshift(random));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runtime.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    (survived, acknowledged)
}

fn writer(secret: &WriterSecret) -> Arc<ChainWriter> {
    Arc::new(ChainWriter::new(KeyId::new("pl").unwrap(), secret))
}

#[test]
fn power_loss_keeps_every_acknowledged_record() {
    let secret = WriterSecret::from_hex(&"3e".repeat(32)).unwrap();
    let keyring = Keyring::new().with(KeyId::new("pl").unwrap(), secret.record_key());
    let mut random = 0x9E37_79B9_7F4A_7C15;
    let mut bytes = Vec::new();
    let mut all_acked: Vec<Receipt> = Vec::new();
    let mut recoveries = 0;
    for round in 0..40 {
        let disk = Arc::new(Mutex::new(Disk {
            visible: bytes.clone(),
            durable: bytes.clone(),
            lies: false,
            kept: Vec::new(),
        }));
        let run_for = Duration::from_micros(500 + xorshift(&mut random) % 20_000);
        let (survived, acked) = run_until_power_cut(&disk, &writer(&secret), &mut random, run_for);
        all_acked.extend(acked);

        // Reopen on what survived: a torn tail is recovered, the chain
        // verifies, and every acknowledged record is there.
        let reopened = Arc::new(Mutex::new(Disk {
            visible: survived.clone(),
            durable: survived.clone(),
            lies: false,
            kept: Vec::new(),
        }));
        let sink = JsonlFileSink::with_file(SimFile(reopened.clone()), writer(&secret)).unwrap();
        drop(sink);
        bytes = reopened.lock().unwrap().visible.clone();
        let torn = !survived.ends_with(b"\n") && !survived.is_empty();
        recoveries += usize::from(torn);
        // A torn tail is cut only after a copy of it is kept.
        let kept = reopened.lock().unwrap().kept.clone();
        let fragment = survived.rsplit(|&b| b == b'\n').next().unwrap_or_default();
        match &kept[..] {
            [] => assert!(!torn, "round {round}: a torn tail was cut without a copy"),
            [(_, copy)] => assert_eq!(copy, fragment, "round {round}"),
            more => panic!("round {round}: {} copies", more.len()),
        }
        let report = verify(&bytes[..], &keyring).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        for receipt in &all_acked {
            let needle = format!("\"mac\":\"{}\"", receipt.mac_hex());
            let line = lines[usize::try_from(receipt.seq).unwrap()];
            assert!(
                String::from_utf8_lossy(line).contains(&needle),
                "round {round}: acknowledged record {} lost",
                receipt.seq
            );
        }
        assert!(report.records >= all_acked.len() as u64);
    }
    assert!(
        all_acked.len() > 200,
        "only {} acknowledged",
        all_acked.len()
    );
    assert!(
        recoveries > 0,
        "no power cut tore a line; the test did not exercise recovery"
    );
}

/// The harness itself must catch a sink whose syncs do nothing: on a disk
/// that acknowledges syncs without persisting, acknowledged records are
/// lost, and the check above would see it.
#[test]
fn the_power_loss_harness_catches_a_sink_that_does_not_sync() {
    let secret = WriterSecret::from_hex(&"3e".repeat(32)).unwrap();
    // Zero is xorshift's fixed point: the cut keeps none of the unsynced
    // tail.
    let mut random = 0;
    let disk = Arc::new(Mutex::new(Disk {
        lies: true,
        ..Disk::default()
    }));
    let run_for = Duration::from_millis(30);
    let (survived, acked) = run_until_power_cut(&disk, &writer(&secret), &mut random, run_for);
    assert!(!acked.is_empty());
    let lost = acked.iter().filter(|r| {
        let needle = format!("\"mac\":\"{}\"", r.mac_hex());
        !String::from_utf8_lossy(&survived).contains(&needle)
    });
    assert!(
        lost.count() > 0,
        "a non-syncing disk kept every record; the harness proves nothing"
    );
}
