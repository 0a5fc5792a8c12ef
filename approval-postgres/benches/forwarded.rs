//! A vote cast on endpoint replica B for a request gate A waits on: the
//! time from the cast on B until A's call resumes, on a throwaway local
//! cluster (fsync on). A and B are gates in this process, each with its own
//! `PostgresSink` chain, `PostgresCoordinator` and connections, exactly as
//! two processes would have; the path between them is the database:
//! B stores the vote and `NOTIFY`s, A reads it, casts it (recording
//! `reviewed` and `approved` on its chain), settles it in the ledger, and
//! resumes.
//!
//! ```text
//! cargo bench -p approval-postgres --bench forwarded
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_core::{
    Ballot, Call, CanonicalJson, ChainWriter, Directory, Gate, KeyId, MockApprover, Policy, Vote,
    WriterSecret,
};
use approval_postgres::{Database, ForwardingKey, PostgresCoordinator, PostgresSink};

#[path = "../tests/cluster/mod.rs"]
mod cluster;

async fn gate(database: &Database, name: &str) -> (Gate, Arc<MockApprover>) {
    let secret = WriterSecret::from_hex(&"42".repeat(32)).expect("hex");
    let writer = Arc::new(ChainWriter::new(KeyId::new("bench").expect("id"), &secret));
    let sink = PostgresSink::connect(database, name, writer)
        .await
        .expect("sink");
    let key = ForwardingKey::from_bytes(&[7; 32]);
    let coordinator = PostgresCoordinator::connect(database, name, Duration::from_secs(30), key)
        .await
        .expect("coordinator");
    let mock = Arc::new(MockApprover::silent("endpoint"));
    let gate = Gate::builder(Arc::new(sink))
        .approver("replicas", mock.clone())
        .policy(
            Policy::new("bench", ["replicas"], Duration::from_secs(600))
                .approvers(["alice"])
                .max_pending_per_actor(u32::MAX),
        )
        .directory(Directory::new().person("alice", ["api:alice"]))
        .coordinator(Arc::new(coordinator))
        .build()
        .expect("gate");
    (gate, mock)
}

fn main() {
    let cluster = cluster::Cluster::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let (a, a_requests) = gate(&cluster.database(), "gate-a").await;
        let (b, _) = gate(&cluster.database(), "replica-b").await;
        println!("| round | samples | p50 cast on B → A resumes | p99 | max |");
        println!("| --- | --- | --- | --- | --- |");
        let mut n = 0u64;
        // Round 0 warms up and is not reported.
        for round in 0..4 {
            let mut latencies = Vec::with_capacity(300);
            for _ in 0..300 {
                n += 1;
                let call = Call::new(
                    "bench::export",
                    "bench",
                    CanonicalJson::from_serialize(&serde_json::json!({"n": n})).expect("args"),
                );
                let before = a_requests.requests().len();
                let waiting = {
                    let a = a.clone();
                    tokio::spawn(async move {
                        drop(a.approve(call).await.expect("approved"));
                        Instant::now()
                    })
                };
                let request = loop {
                    if let Some(r) = a_requests.requests().get(before) {
                        break r.clone();
                    }
                    tokio::task::yield_now().await;
                };
                let ballot = Ballot::new(&request, "api:alice", "api", Vote::Approve);
                let cast = Instant::now();
                b.cast(ballot).await.expect("forwarded");
                let resumed = waiting.await.expect("resumed");
                latencies.push(resumed.saturating_duration_since(cast));
            }
            latencies.sort_unstable();
            let at = |per_mille: usize| {
                latencies[(latencies.len() * per_mille / 1000).min(latencies.len() - 1)]
                    .as_secs_f64()
                    * 1e3
            };
            if round > 0 {
                println!(
                    "| {round} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
                    latencies.len(),
                    at(500),
                    at(990),
                    latencies.last().expect("samples").as_secs_f64() * 1e3
                );
            }
        }
    });
}
