//! `PostgresSink` with 64 concurrent appenders on a throwaway local
//! cluster (fsync on, as shipped): records per second, against one
//! committed transaction per record (the same sealed lines inserted one
//! statement, one commit, at a time on one connection: what the sink would
//! do without group commit), measured in the same run.
//!
//! ```text
//! cargo bench -p approval-postgres --bench appends
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_core::{AuditSink, ChainHead, ChainWriter, Event, KeyId, WriterSecret};
use approval_postgres::PostgresSink;

#[path = "../tests/cluster/mod.rs"]
mod cluster;

const APPENDERS: usize = 64;

fn writer() -> Arc<ChainWriter> {
    let secret = WriterSecret::from_hex(&"42".repeat(32)).expect("hex");
    Arc::new(ChainWriter::new(KeyId::new("bench").expect("id"), &secret))
}

fn event(n: usize) -> Event {
    Event::Cancelled {
        request_id: format!("01JBENCH{n:018}"),
        why: "benchmark".into(),
    }
}

/// 64 tasks appending `per_task` records each, concurrently.
async fn grouped(sink: &Arc<PostgresSink>, per_task: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..APPENDERS {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                sink.append_event(event(task * per_task + i))
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    (APPENDERS * per_task) as f64 / started.elapsed().as_secs_f64()
}

/// The same kind of lines, one committed transaction each.
async fn one_by_one(url: &str, chain: &str, n: usize) -> f64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .execute(
            "INSERT INTO audit_chains (name) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&chain],
        )
        .await
        .expect("chain");
    let writer = writer();
    let mut head = ChainHead::genesis();
    let mut lines = Vec::with_capacity(n);
    for i in 0..n {
        let mut out = Vec::new();
        writer
            .seal(
                &mut head,
                &[event(i).to_pending().expect("event")],
                &mut out,
            )
            .expect("seal");
        out.pop();
        lines.push((
            head.next_seq() as i64 - 1,
            String::from_utf8(out).expect("utf8"),
        ));
    }
    let insert = client
        .prepare("INSERT INTO audit_records (chain, seq, ts, line) VALUES ($1, $2, now(), $3)")
        .await
        .expect("prepare");
    let started = Instant::now();
    for (seq, line) in &lines {
        client
            .execute(&insert, &[&chain, seq, line])
            .await
            .expect("insert");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let cluster = cluster::Cluster::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let sink = Arc::new(
            PostgresSink::connect(&cluster.database(), "bench", writer())
                .await
                .expect("sink"),
        );
        println!(
            "| round | 64 appenders, records/s | one transaction per record, records/s | ratio |"
        );
        println!("| --- | --- | --- | --- |");
        // Round 0 warms up and is not reported.
        for round in 0..4 {
            let group = grouped(&sink, 300).await;
            let single = one_by_one(&cluster.url(), &format!("single-{round}"), 1_000).await;
            if round > 0 {
                println!(
                    "| {round} | {group:.0} | {single:.0} | {:.1} |",
                    group / single
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
