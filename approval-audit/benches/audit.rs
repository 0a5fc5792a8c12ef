//! Audit chain benchmarks, each beside its floor measured in the same run.
//!
//! ```text
//! cargo bench -p approval-audit --bench audit            # all
//! cargo bench -p approval-audit --bench audit -- verify  # one: verify | append | jsonl | tree | checkpoint
//! ```
//!
//! A plain bench binary rather than criterion: the figures asked for are
//! throughputs over a million records and a group-commit ratio, each
//! compared with a floor in the same run, which a fixed workload measures
//! more directly than criterion's per-iteration sampling.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_audit::{
    Actor, ActorKind, AuditSink, CanonicalJson, ChainHead, ChainWriter, Event, JsonlFileSink,
    KeyId, Keyring, MemorySink, Outcome, Reviewer, Verifier, Vote, WriterSecret,
};
use ring::hmac;

fn secret() -> WriterSecret {
    WriterSecret::from_hex(&"42".repeat(32)).expect("valid hex")
}

fn key_id() -> KeyId {
    KeyId::new("bench").expect("valid id")
}

/// A realistic cycle of one approval: requested, reviewed, approved,
/// executed; about 400 bytes a record on average.
fn events(n: u64) -> [Event; 4] {
    let request_id = format!("01JDQ7Z8K{n:017}");
    let args = CanonicalJson::from_value(&serde_json::json!({
        "table": "customers_eu", "limit": 5000, "ratio": 0.25,
    }))
    .expect("canonical");
    let reviewer = Reviewer::new("slack:U024BE7LH")
        .person("alice")
        .display("Alice");
    [
        Event::Requested {
            request_id: request_id.clone(),
            action: "crm::export_table".into(),
            policy: "data-export".into(),
            policy_digest: [3; 32],
            args,
            skipped: vec![],
            binding: [9; 32],
            actor: Actor::new("agent-7")
                .kind(ActorKind::Agent)
                .model("gpt-5")
                .on_behalf_of("bob@example.com"),
            resource: Some("warehouse/customers_eu".into()),
            reason: Some("quarterly report".into()),
            deferred: false,
        },
        Event::Reviewed {
            request_id: request_id.clone(),
            reviewer: reviewer.clone(),
            vote: Vote::Approve,
            channel: "slack".into(),
            comment: Some("ok for Q3".into()),
        },
        Event::Approved {
            request_id: request_id.clone(),
            policy: "data-export".into(),
            reviewers: vec![reviewer],
        },
        Event::Executed {
            request_id,
            outcome: Outcome::Ok,
            error: None,
        },
    ]
}

fn make_log(records: u64) -> Vec<u8> {
    let writer = ChainWriter::new(key_id(), &secret());
    let mut head = ChainHead::genesis();
    let mut log = Vec::with_capacity(usize::try_from(records * 420).unwrap_or(0));
    for n in 0..records / 4 {
        let pending: Vec<_> = events(n)
            .iter()
            .map(|e| e.to_pending().expect("pending"))
            .collect();
        writer.seal(&mut head, &pending, &mut log).expect("seal");
    }
    log
}

/// The log's lines, without their newlines.
fn lines_of(log: &[u8]) -> Vec<&[u8]> {
    log.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// The floor: raw HMAC-SHA256 over each line, one thread.
fn raw_hmac(lines: &[&[u8]]) -> Duration {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"any 32-byte key for the floor...");
    let start = Instant::now();
    for line in lines {
        black_box(hmac::sign(&key, black_box(line)));
    }
    start.elapsed()
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn bench_verify() {
    const RECORDS: u64 = 1_000_000;
    let log = make_log(RECORDS);
    let lines = lines_of(&log);
    println!(
        "verify: {} records, {} bytes, {:.0} bytes/record",
        lines.len(),
        log.len(),
        log.len() as f64 / lines.len() as f64
    );
    let keyring = Keyring::new().with(key_id(), secret().record_key());

    for round in 0..3 {
        let floor = raw_hmac(&lines);

        let start = Instant::now();
        let report = Verifier::new(&keyring).verify(&log[..]).expect("valid log");
        let all_cores = start.elapsed();
        assert_eq!(report.records, RECORDS);

        let start = Instant::now();
        Verifier::new(&keyring)
            .threads(1)
            .verify(&log[..])
            .expect("valid log");
        let one_thread = start.elapsed();

        println!(
            "verify round {round}: raw HMAC 1 thread {:.0} rec/s | verify all cores {:.0} rec/s (ratio {:.2}) | verify 1 thread {:.0} rec/s (ratio {:.2})",
            per_sec(RECORDS, floor),
            per_sec(RECORDS, all_cores),
            floor.as_secs_f64() / all_cores.as_secs_f64(),
            per_sec(RECORDS, one_thread),
            floor.as_secs_f64() / one_thread.as_secs_f64(),
        );
    }
}

/// Keeping the Merkle tree while appending: a leaf hash and the frontier's
/// merges per record, against the record's HMAC (the chain's own cost per
/// record), over the same lines.
fn bench_tree() {
    use approval_audit::checkpoint::{MerkleFrontier, leaf_hash};
    const RECORDS: u64 = 200_000;
    let log = make_log(RECORDS);
    let lines = lines_of(&log);
    for round in 0..3 {
        let floor = raw_hmac(&lines);
        let start = Instant::now();
        let mut tree = MerkleFrontier::new();
        for line in &lines {
            tree.push(leaf_hash(black_box(line)));
        }
        black_box(tree.root());
        let kept = start.elapsed();
        println!(
            "tree round {round}: {:.3} µs/record keeping the tree, {:.3} µs/record HMAC; ratio {:.2} (target at most 1.5)",
            kept.as_secs_f64() * 1e6 / RECORDS as f64,
            floor.as_secs_f64() * 1e6 / RECORDS as f64,
            kept.as_secs_f64() / floor.as_secs_f64()
        );
    }
}

/// Checking a 1,000,000-record log against a checkpoint of it, against raw
/// SHA-256 over the same bytes (one thread), in the same run.
fn bench_checkpoint() {
    use approval_audit::checkpoint::{Checkpoint, Coverage, check_log, leaf_hashes, root};
    const RECORDS: u64 = 1_000_000;
    let log = make_log(RECORDS);
    let lines = lines_of(&log);
    let checkpoint = Checkpoint::new(
        "bench",
        RECORDS,
        root(&leaf_hashes(&log[..]).expect("in memory")),
    );
    for round in 0..3 {
        let start = Instant::now();
        for line in &lines {
            black_box(ring::digest::digest(&ring::digest::SHA256, black_box(line)));
        }
        let floor = start.elapsed();
        let start = Instant::now();
        let coverage = check_log(&log[..], &checkpoint).expect("in memory");
        let checked = start.elapsed();
        assert_eq!(
            coverage,
            Coverage::Consistent {
                covered: RECORDS,
                beyond: 0
            }
        );
        println!(
            "checkpoint round {round}: raw SHA-256 {:.0} rec/s | check against checkpoint {:.0} rec/s (ratio {:.2}, target at least 0.5)",
            per_sec(RECORDS, floor),
            per_sec(RECORDS, checked),
            floor.as_secs_f64() / checked.as_secs_f64()
        );
    }
}

fn bench_append() {
    const RECORDS: u64 = 200_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let all: Vec<Event> = (0..RECORDS / 4).flat_map(events).collect();
    // The bytes the MAC covers are about the line's length; use the lines
    // themselves for the floor.
    let log = make_log(RECORDS);
    let lines = lines_of(&log);
    for round in 0..3 {
        let floor = raw_hmac(&lines);

        let sink = MemorySink::new(Arc::new(ChainWriter::new(key_id(), &secret())));
        let start = Instant::now();
        rt.block_on(async {
            for event in &all {
                sink.append(vec![event.to_pending().expect("pending")])
                    .await
                    .expect("append");
            }
        });
        let append = start.elapsed();
        println!(
            "memory append round {round}: {:.2} µs/record (event to sealed line), raw HMAC {:.2} µs/record, ratio {:.2}",
            append.as_secs_f64() * 1e6 / RECORDS as f64,
            floor.as_secs_f64() * 1e6 / RECORDS as f64,
            append.as_secs_f64() / floor.as_secs_f64(),
        );
    }
}

fn bench_jsonl() {
    const APPENDERS: u64 = 64;
    const PER_APPENDER: u64 = 200;
    const BASELINE_RECORDS: u64 = 400;
    let dir = tempfile::tempdir().expect("temp dir");
    let line = make_log(4)
        .split(|&b| b == b'\n')
        .next()
        .expect("a line")
        .to_vec();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for round in 0..3 {
        // Floors: a bare loop of one write and one fdatasync per record, and
        // the sink itself with a single appender.
        let path = dir.path().join(format!("baseline-{round}.jsonl"));
        let mut file = std::fs::File::create(&path).expect("create");
        let start = Instant::now();
        for _ in 0..BASELINE_RECORDS {
            file.write_all(&line).expect("write");
            file.sync_data().expect("sync");
        }
        let raw = per_sec(BASELINE_RECORDS, start.elapsed());

        // The sink with one appender: one write and one fdatasync a record.
        let path = dir.path().join(format!("single-{round}.jsonl"));
        let writer = Arc::new(ChainWriter::new(key_id(), &secret()));
        let sink = JsonlFileSink::open(&path, writer).expect("open");
        let reviews: Vec<Event> = (0..BASELINE_RECORDS)
            .map(|n| {
                let [_, reviewed, _, _] = events(n);
                reviewed
            })
            .collect();
        let start = Instant::now();
        rt.block_on(async {
            for reviewed in reviews {
                sink.append_event(reviewed).await.expect("append");
            }
        });
        let single = per_sec(BASELINE_RECORDS, start.elapsed());
        drop(sink);

        let path = dir.path().join(format!("group-{round}.jsonl"));
        let writer = Arc::new(ChainWriter::new(key_id(), &secret()));
        let sink = Arc::new(JsonlFileSink::open(&path, writer).expect("open"));
        // Made before the clock starts: the figure is the sink's.
        let work: Vec<Vec<Event>> = (0..APPENDERS)
            .map(|task| {
                (0..PER_APPENDER)
                    .map(|n| {
                        let [_, reviewed, _, _] = events(task * PER_APPENDER + n);
                        reviewed
                    })
                    .collect()
            })
            .collect();
        let start = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = work
                .into_iter()
                .map(|reviews| {
                    let sink = sink.clone();
                    tokio::spawn(async move {
                        for reviewed in reviews {
                            sink.append_event(reviewed).await.expect("append");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
        });
        let grouped = per_sec(APPENDERS * PER_APPENDER, start.elapsed());
        println!(
            "jsonl round {round}: 64 appenders {grouped:.0} rec/s | one appender (one fdatasync per record) {single:.0} rec/s, ratio {:.1} | raw write+fdatasync loop {raw:.0} rec/s, ratio {:.1}",
            grouped / single,
            grouped / raw
        );
    }
}

/// One thread, the verifier only: for profiling (`perf record … profile`).
fn profile_verify() {
    let log = make_log(400_000);
    let keyring = Keyring::new().with(key_id(), secret().record_key());
    let start = Instant::now();
    for _ in 0..5 {
        Verifier::new(&keyring)
            .threads(1)
            .verify(&log[..])
            .expect("valid log");
    }
    println!(
        "profile: {:.0} rec/s on one thread",
        per_sec(2_000_000, start.elapsed())
    );
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| {
        filter.is_empty()
            || filter
                .iter()
                .any(|f| f != "profile" && name.contains(f.as_str()))
    };
    if wanted("verify") {
        bench_verify();
    }
    if wanted("append") {
        bench_append();
    }
    if wanted("jsonl") {
        bench_jsonl();
    }
    if wanted("tree") {
        bench_tree();
    }
    if wanted("checkpoint") {
        bench_checkpoint();
    }
    // Only on request: not a figure of BENCHMARKS.md.
    if filter.iter().any(|f| f == "profile") {
        profile_verify();
    }
}
