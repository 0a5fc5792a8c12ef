//! An in-memory sink, for tests and benchmarks.

use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::chain::{ChainHead, ChainWriter, Receipt};
use crate::error::AuditError;
use crate::record::PendingRecord;
use crate::sink::AuditSink;

/// Keeps the log in memory: same chain, same bytes as a file, no
/// durability. For tests, examples and benchmarks.
#[derive(Debug)]
pub struct MemorySink {
    writer: Arc<ChainWriter>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    head: ChainHead,
    log: Vec<u8>,
}

impl MemorySink {
    /// An empty log sealed by `writer`.
    pub fn new(writer: Arc<ChainWriter>) -> Self {
        Self {
            writer,
            state: Mutex::new(State {
                head: ChainHead::genesis(),
                log: Vec::new(),
            }),
        }
    }

    /// The log's bytes so far: JSON Lines, exactly as a file sink writes.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().log.clone()
    }

    /// How many records the log holds.
    pub fn len(&self) -> u64 {
        self.lock().head.next_seq()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Sealing leaves the state as it was on error, so a poisoned lock
        // still guards a consistent log.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl AuditSink for MemorySink {
    async fn append(&self, records: Vec<PendingRecord>) -> Result<Vec<Receipt>, AuditError> {
        let mut state = self.lock();
        let State { head, log } = &mut *state;
        self.writer.seal(head, &records, log)
    }

    fn read_back(&self) -> Result<Box<dyn Read + Send>, AuditError> {
        Ok(Box::new(Cursor::new(self.bytes())))
    }

    fn chain_writer(&self) -> &Arc<ChainWriter> {
        &self.writer
    }

    fn sole_writer(&self) -> bool {
        // The log is locked (file) or private to this process (memory).
        true
    }
}
