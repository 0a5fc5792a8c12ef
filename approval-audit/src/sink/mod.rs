//! Where audit records are stored.
//!
//! A sink stores sealed records durably and in order, and reads them back.
//! It never computes `seq`, `prev`, `ts` or `mac`: under its own lock it
//! passes its [`ChainHead`](crate::ChainHead) and the pending records to
//! [`ChainWriter::seal`](crate::ChainWriter::seal), then stores the bytes
//! that come back. A sink whose head lives in a shared database reads the
//! head there, under the database's lock, and does the same.

mod file;
mod jsonl;
mod memory;

use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use file::{FsLogFile, LogFile, LogSource, SyncHandle, durable_mark_path};
pub use jsonl::{JsonlFileSink, dropped_path};
pub use memory::MemorySink;

use crate::chain::{ChainWriter, Receipt};
use crate::error::AuditError;
use crate::key::{KeyId, WriterSecret};
use crate::record::{Event, PendingRecord};

/// Durable, ordered storage for the audit chain.
///
/// Implementations seal with [`ChainWriter::seal`] under their lock and
/// return only once the records are durable (on disk, committed). A failed
/// append writes nothing past the failed record and is reported to the
/// caller; the gated function then does not run.
///
/// ```
/// use std::sync::Arc;
/// use approval_audit::{AuditSink, ChainWriter, Event, KeyId, MemorySink, WriterSecret};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
/// let sink = MemorySink::new(writer);
/// let receipt = sink
///     .append_event(Event::Cancelled { request_id: "r1".into(), why: "test".into() })
///     .await?;
/// assert_eq!(receipt.seq, 0);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait AuditSink: Send + Sync + fmt::Debug {
    /// Seals `records` onto the chain in order and stores them durably;
    /// returns one receipt per record, once all are durable.
    async fn append(&self, records: Vec<PendingRecord>) -> Result<Vec<Receipt>, AuditError>;

    /// Reads back every record stored durably so far, as JSON Lines.
    fn read_back(&self) -> Result<Box<dyn Read + Send>, AuditError>;

    /// Reads back the records written within `window` before the last one
    /// (by their `ts`), and possibly some earlier ones: what a restart needs
    /// to see, without reading a long log from its start. By default, the
    /// whole log.
    fn read_recent(&self, _window: Duration) -> Result<Box<dyn Read + Send>, AuditError> {
        self.read_back()
    }

    /// The writer whose keys seal this sink's records.
    fn chain_writer(&self) -> &Arc<ChainWriter>;

    /// Whether this process is the log's only writer (a file lock says so,
    /// or the log lives in this process). Only then may a gate conclude
    /// from the log alone that an open request's waiter is gone.
    fn sole_writer(&self) -> bool {
        false
    }

    /// Appends one event.
    async fn append_event(&self, event: Event) -> Result<Receipt, AuditError> {
        let receipts = self.append(vec![event.to_pending()?]).await?;
        receipts.into_iter().next().ok_or(AuditError::Closed)
    }

    /// Rotates to a new key: the last record under the current key is a
    /// `key_rotated` record naming `key_id`, and every later record uses the
    /// new key.
    async fn rotate_key(
        &self,
        key_id: KeyId,
        secret: &WriterSecret,
    ) -> Result<Receipt, AuditError> {
        self.chain_writer().add_key(key_id.clone(), secret);
        self.append_event(Event::KeyRotated {
            next_key_id: key_id,
        })
        .await
    }
}

#[cfg(test)]
mod tests;
