//! A writer process for the crash tests: appends records from many tasks
//! and prints `ack SEQ MAC` for each append that returned, until killed.
//!
//! Usage: `approval-test-writer LOG KEY_HEX`

#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "the parent test reads acknowledgements from stdout"
)]

use std::sync::Arc;

use approval_core::{AuditSink, ChainWriter, Event, JsonlFileSink, KeyId, WriterSecret};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, log, key] = &args[..] else {
        eprintln!("usage: approval-test-writer LOG KEY_HEX");
        std::process::exit(2);
    };
    let Some(secret) = WriterSecret::from_hex(key) else {
        eprintln!("bad key");
        std::process::exit(2);
    };
    let writer = Arc::new(ChainWriter::new(KeyId::new("crash").unwrap(), &secret));
    let sink = match JsonlFileSink::open(log, writer) {
        Ok(sink) => Arc::new(sink),
        Err(e) => {
            eprintln!("open: {e}");
            std::process::exit(3);
        }
    };
    println!("open");
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let sink = sink.clone();
            tokio::spawn(async move {
                for i in 0u64.. {
                    // Records of varied length, so kills land mid-line too.
                    let why = "x".repeat(usize::try_from(i % 97).unwrap_or(0) * 7);
                    let event = Event::Cancelled {
                        request_id: format!("task{task}-{i}"),
                        why,
                    };
                    match sink.append_event(event).await {
                        Ok(receipt) => println!("ack {} {}", receipt.seq, receipt.mac_hex()),
                        Err(e) => {
                            eprintln!("append: {e}");
                            std::process::exit(4);
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        if let Err(e) = task.await {
            eprintln!("writer task: {e}");
            std::process::exit(4);
        }
    }
}
