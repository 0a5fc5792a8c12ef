//! Errors of the audit chain and its sinks.

use std::io;
use std::path::PathBuf;

use crate::canonical::CanonicalError;
use crate::clock::ClockOutOfRange;
use crate::key::KeyId;

/// Why an audit record could not be written. Whatever the variant, nothing
/// was written past the failed record, and records already stored stay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A record's members have no canonical form.
    #[error("audit record cannot be canonicalised: {0}")]
    Canonical(#[from] CanonicalError),
    /// The clock reads a time a record cannot hold.
    #[error(transparent)]
    Clock(#[from] ClockOutOfRange),
    /// The chain is at a key (or rotates to one) this writer does not hold.
    #[error("the chain needs key {key_id}, which this writer does not hold")]
    UnknownWriterKey {
        /// The key the chain needs.
        key_id: KeyId,
    },
    /// The last stored record cannot be continued.
    #[error("the log's last record is {why}; refusing to continue the chain")]
    InvalidTail {
        /// What is wrong with it.
        why: &'static str,
    },
    /// A record the log holds up to its last point known durable (or in
    /// the page before it, which a torn write may reach) fails
    /// verification, or, for a log without a durable mark, any record does: the bytes were damaged or altered after they were written, so
    /// the log is not opened and nothing in it is changed.
    #[error(
        "audit log {path}: the line at byte {offset} fails verification ({reason}) and may have \
         been acknowledged; refusing to continue the chain (run `approval verify` on it)"
    )]
    Damaged {
        /// The log file.
        path: PathBuf,
        /// Where the first failing line begins, in bytes.
        offset: u64,
        /// Why it fails.
        reason: crate::reason::Reason,
    },
    /// Another writer holds the log.
    #[error("audit log {path} is locked by another writer; a log has exactly one writer process")]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// An I/O operation failed.
    #[error("audit log {path}: {what} failed: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// An earlier write or sync failed, so the sink refuses every append:
    /// after a failed `fdatasync` the data may be lost even if a later sync
    /// succeeds.
    #[error("audit sink is broken and refuses appends: {cause}")]
    Broken {
        /// The failure that broke it.
        cause: String,
    },
    /// The sink has shut down.
    #[error("audit sink has shut down")]
    Closed,
    /// The database behind a sink failed or could not be reached: the
    /// append did not happen, or its outcome could not be confirmed and it
    /// is reported as failed.
    #[error("audit store: {what} failed: {cause}")]
    Store {
        /// What was being done.
        what: &'static str,
        /// The cause, as the database or its client gave it.
        cause: String,
    },
    /// Another process writes this chain: a chain has exactly one writer.
    #[error("audit chain {chain} is written by another process; a chain has exactly one writer")]
    ChainTaken {
        /// The chain's name.
        chain: String,
    },
    /// `seq` cannot grow further.
    #[error("the chain's seq cannot grow further")]
    SeqExhausted,
    /// The log does not hold what its own newest checkpoint signs (cut
    /// off, rewritten), or that checkpoint cannot be read: the log is not
    /// opened for writing.
    #[error("refusing to write to the log: {why}")]
    CheckpointMismatch {
        /// What does not match, naming the files.
        why: String,
    },
}
