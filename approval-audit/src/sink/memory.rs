//! An in-memory sink, for tests and benchmarks.

use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::chain::{ChainHead, ChainWriter, Receipt};
use crate::checkpoint::{Checkpoint, MerkleFrontier};
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
    /// Filled chunks of the log, then the one being written. Chunks, not one
    /// growing buffer, so a long log is never copied to grow.
    full: Vec<Vec<u8>>,
    current: Vec<u8>,
    /// The Merkle tree over the records, brought up to date when a
    /// checkpoint asks for it (not on every append: most logs in tests
    /// and benchmarks are never checkpointed).
    tree: MerkleFrontier,
    /// How far the tree covers: the chunk (an index into `full`, or
    /// `full.len()` for `current`) and the offset in it.
    tree_covers: (usize, usize),
}

impl State {
    /// Adds to the tree every record sealed since it was last brought up
    /// to date.
    fn catch_up_tree(&mut self) {
        let (mut chunk, mut offset) = self.tree_covers;
        while chunk < self.full.len() {
            self.tree.push_lines(&self.full[chunk][offset..]);
            (chunk, offset) = (chunk + 1, 0);
        }
        self.tree.push_lines(&self.current[offset..]);
        self.tree_covers = (chunk, self.current.len());
    }
}

/// Bytes per chunk before the next one starts.
const CHUNK: usize = 1 << 20;

impl MemorySink {
    /// An empty log sealed by `writer`.
    pub fn new(writer: Arc<ChainWriter>) -> Self {
        Self {
            writer,
            state: Mutex::new(State {
                head: ChainHead::genesis(),
                full: Vec::new(),
                current: Vec::new(),
                tree: MerkleFrontier::new(),
                tree_covers: (0, 0),
            }),
        }
    }

    /// The log's bytes so far: JSON Lines, exactly as a file sink writes.
    pub fn bytes(&self) -> Vec<u8> {
        let state = self.lock();
        let mut bytes = Vec::with_capacity(
            state.full.iter().map(Vec::len).sum::<usize>() + state.current.len(),
        );
        for chunk in state.full.iter().chain([&state.current]) {
            bytes.extend_from_slice(chunk);
        }
        bytes
    }

    /// How many records the log holds.
    pub fn len(&self) -> u64 {
        self.lock().head.next_seq()
    }

    /// A checkpoint of everything in the log, for log `origin`: the root
    /// of the Merkle tree over its records. Sign it with
    /// [`Checkpoint::sign`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use approval_audit::checkpoint::{Coverage, check_log};
    /// use approval_audit::{AuditSink, ChainWriter, Event, KeyId, MemorySink, WriterSecret};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sink = MemorySink::new(Arc::new(ChainWriter::new(KeyId::new("k")?, &WriterSecret::generate()?)));
    /// sink.append_event(Event::Cancelled { request_id: "r".into(), why: "test".into() }).await?;
    /// let checkpoint = sink.checkpoint("example.com/log");
    /// assert_eq!(check_log(&sink.bytes()[..], &checkpoint)?, Coverage::Consistent { covered: 1, beyond: 0 });
    /// # Ok(())
    /// # }
    /// ```
    pub fn checkpoint(&self, origin: &str) -> Checkpoint {
        let mut state = self.lock();
        state.catch_up_tree();
        Checkpoint::new(origin, state.tree.size(), state.tree.root())
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
        let State {
            head,
            full,
            current,
            ..
        } = &mut *state;
        if current.len() >= CHUNK {
            full.push(std::mem::replace(
                current,
                Vec::with_capacity(CHUNK + CHUNK / 4),
            ));
        }
        self.writer.seal(head, &records, current)
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
