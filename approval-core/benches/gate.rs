//! Gate benchmarks: the overhead of a gated call, and memory per pending
//! request.
//!
//! ```text
//! cargo bench -p approval-core --features mock --bench gate
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approval_core::{
    ApprovalError, AuditError, AuditSink, ChainHead, ChainWriter, Gate, KeyId, MemorySink,
    MockApprover, PendingRecord, Policy, Receipt, WriterSecret, requires_approval,
};

#[requires_approval(policy = "bench")]
async fn gated(name: &str, count: u64, ratio: f64) -> Result<u64, ApprovalError> {
    Ok(count + name.len() as u64 + u64::from(ratio > 0.25))
}

async fn plain(name: &str, count: u64, ratio: f64) -> Result<u64, ApprovalError> {
    Ok(count + name.len() as u64 + u64::from(ratio > 0.25))
}

fn writer() -> Arc<ChainWriter> {
    let secret = WriterSecret::from_hex(&"42".repeat(32)).expect("hex");
    Arc::new(ChainWriter::new(KeyId::new("bench").expect("id"), &secret))
}

/// A gate whose own tasks run on `rt`, as in a program built inside its
/// runtime (`#[tokio::main]`).
fn gate(
    rt: &tokio::runtime::Runtime,
    sink: Arc<dyn AuditSink>,
    approver: Arc<MockApprover>,
    timeout: Duration,
) -> Gate {
    Gate::builder(sink)
        .runtime(rt.handle().clone())
        .approver("mock", approver)
        // One actor (none) makes every call here: no per-actor limit.
        .policy(
            Policy::new("bench", ["mock"], timeout)
                .approvers(["mock:ci"])
                .max_pending_per_actor(u32::MAX),
        )
        .build()
        .expect("gate")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn bench_overhead() {
    const CALLS: usize = 20_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    // Round 0 warms caches and the allocator and is not reported.
    let (mut all_gated, mut all_plain, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..4 {
        // A fresh sink each round, so the log's growth stays small.
        let sink = Arc::new(MemorySink::new(writer()));
        let gate = gate(
            &rt,
            sink.clone(),
            Arc::new(MockApprover::approve_all("ci")),
            Duration::from_secs(60),
        );
        let (gated_times, plain_times) = rt.block_on(gate.scope(async {
            let mut gated_times = Vec::with_capacity(CALLS);
            let mut plain_times = Vec::with_capacity(CALLS);
            for i in 0..CALLS as u64 {
                let start = Instant::now();
                black_box(
                    gated(black_box("users"), black_box(i), black_box(0.5))
                        .await
                        .expect("approved"),
                );
                gated_times.push(start.elapsed());
                let start = Instant::now();
                black_box(
                    plain(black_box("users"), black_box(i), black_box(0.5))
                        .await
                        .expect("plain"),
                );
                plain_times.push(start.elapsed());
            }
            (gated_times, plain_times)
        }));
        if round == 0 {
            continue;
        }
        all_gated.extend_from_slice(&gated_times);
        all_plain.extend_from_slice(&plain_times);
        let (g, p) = (median(gated_times), median(plain_times));
        let floor = hmac_floor(&sink);
        floors.push(floor);
        let overhead = g.saturating_sub(p);
        println!(
            "gate overhead round {round}: gated call median {:.2} µs, plain call median {:.3} µs, overhead {:.2} µs; floor (the call's MACs: its four records and its binding) {:.2} µs, overhead/floor {:.2}",
            g.as_secs_f64() * 1e6,
            p.as_secs_f64() * 1e6,
            overhead.as_secs_f64() * 1e6,
            floor.as_secs_f64() * 1e6,
            overhead.as_secs_f64() / floor.as_secs_f64()
        );
    }
    // The machine's noise comes in bursts that can slow a whole round: the
    // median of all rounds' calls together is the figure to compare.
    let (g, p, floor) = (median(all_gated), median(all_plain), median(floors));
    println!(
        "gate overhead, all {} calls: gated call median {:.2} µs, overhead {:.2} µs, overhead/floor {:.2}",
        3 * CALLS,
        g.as_secs_f64() * 1e6,
        g.saturating_sub(p).as_secs_f64() * 1e6,
        g.saturating_sub(p).as_secs_f64() / floor.as_secs_f64()
    );
}

/// The median time of the MACs one call cannot avoid, over the same bytes
/// the gate wrote for its last call: HMAC-SHA256 of its four records and of
/// its binding text.
fn hmac_floor(sink: &MemorySink) -> Duration {
    let mut log = String::new();
    sink.read_back()
        .expect("read back")
        .read_to_string(&mut log)
        .expect("utf-8");
    let records: Vec<&str> = log.lines().rev().take(4).collect();
    let requested: serde_json::Value =
        serde_json::from_str(records[3]).expect("the requested record");
    let binding_text = format!(
        "{{\"action\":{},\"args\":{}}}",
        requested["action"], requested["args"]
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[0x42; 32]);
    let samples = (0..20_000)
        .map(|_| {
            let start = Instant::now();
            for record in &records {
                black_box(ring::hmac::sign(&key, black_box(record.as_bytes())));
            }
            black_box(ring::hmac::sign(&key, black_box(binding_text.as_bytes())));
            start.elapsed()
        })
        .collect();
    median(samples)
}

/// Seals records and keeps only the head: memory figures then show the
/// pending requests, not the log.
#[derive(Debug)]
struct DiscardSink {
    writer: Arc<ChainWriter>,
    head: Mutex<ChainHead>,
}

#[async_trait::async_trait]
impl AuditSink for DiscardSink {
    async fn append(&self, records: Vec<PendingRecord>) -> Result<Vec<Receipt>, AuditError> {
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        self.writer.seal(&mut head, &records, &mut Vec::new())
    }

    fn read_back(&self) -> Result<Box<dyn Read + Send>, AuditError> {
        Ok(Box::new(std::io::empty()))
    }

    fn chain_writer(&self) -> &Arc<ChainWriter> {
        &self.writer
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn bench_pending_memory() {
    const PENDING: usize = 100_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let sink = Arc::new(DiscardSink {
        writer: writer(),
        head: Mutex::new(ChainHead::genesis()),
    });
    let mock = Arc::new(MockApprover::silent("ci"));
    let gate = gate(&rt, sink, mock.clone(), Duration::from_secs(3600));
    let waiting = gate.scope(gated("users", 0, 0.5));
    println!(
        "pending memory: a gated call's future is {} bytes, {} with the gate scoped",
        std::mem::size_of_val(&gated("users", 0, 0.5)),
        std::mem::size_of_val(&waiting)
    );
    drop(waiting);
    rt.block_on(async {
        let before = resident_bytes();
        let mut tasks = Vec::with_capacity(PENDING);
        for i in 0..PENDING as u64 {
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                // Each waits until aborted at the end of the run: none may
                // finish, and none may run.
                let ended = gate.scope(gated("users", i, 0.5)).await;
                assert!(ended.is_err(), "a pending request ran");
            }));
        }
        while mock.requests().len() < PENDING {
            tokio::task::yield_now().await;
        }
        let after = resident_bytes();
        println!(
            "pending memory: {PENDING} requests waiting, {:.0} bytes each (resident set growth, including the tasks and the mock's list of requests)",
            (after.saturating_sub(before)) as f64 / PENDING as f64
        );
        for task in tasks {
            task.abort();
        }
    });
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wanted("overhead") {
        bench_overhead();
    }
    if wanted("memory") {
        bench_pending_memory();
    }
}
