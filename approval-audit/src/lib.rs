//! The tamper-evident audit chain of human approvals: records, canonical
//! JSON, the HMAC chain, sinks, verification and checkpoints. It knows
//! nothing of gates or channels, so an auditor's tools (`approval verify`,
//! `approval prove`) need only this crate; `approval-core` builds the gate
//! on it and re-exports all of it.
//!
//! What it holds:
//!
//! - [`Event`]: the events of the audit format, as types;
//! - [`ChainWriter`]: seals records (`seq`, `prev`, `ts`, `mac`) with the
//!   writer's keys; sinks never compute the chain themselves;
//! - [`AuditSink`], with [`MemorySink`] and the durable [`JsonlFileSink`];
//! - [`verify`]: checks a log from any reader, streaming, on all cores;
//! - [`CanonicalJson`]: RFC 8785 canonical JSON, which the MACs cover.
//!
//! The record format is fixed in `AUDIT-FORMAT.md` (version 1), so that
//! auditors can check logs with tools of their own.
//!
//! ```
//! use std::sync::Arc;
//! use approval_audit::{
//!     verify, Actor, AuditSink, CanonicalJson, ChainWriter, Event, JsonlFileSink, KeyId,
//!     Keyring, WriterSecret,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let secret = WriterSecret::generate()?;
//! let writer = Arc::new(ChainWriter::new(KeyId::new("prod-1")?, &secret));
//! let sink = JsonlFileSink::open(dir.path().join("audit.jsonl"), writer.clone())?;
//!
//! let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "users"}))?;
//! sink.append_event(Event::Requested {
//!     request_id: "0190d6a4-export".into(),
//!     action: "billing::export_table".into(),
//!     policy: "data-export".into(),
//!     policy_digest: [0; 32],
//!     binding: writer.binding("billing::export_table", &args),
//!     args,
//!     skipped: vec![],
//!     actor: Actor::new("agent-7").on_behalf_of("alice"),
//!     resource: Some("warehouse/users".into()),
//!     reason: None,
//!     deferred: false,
//! })
//! .await?;
//!
//! // An auditor holds only the record key.
//! let keyring = Keyring::new().with(KeyId::new("prod-1")?, secret.record_key());
//! let report = verify(std::fs::File::open(sink.path())?, &keyring)?;
//! assert_eq!(report.records, 1);
//! # Ok(())
//! # }
//! ```
//!
//! Minimum supported Rust version: 1.89 (`File::try_lock`); CI builds with
//! the current stable release.

#![forbid(unsafe_code)]

pub mod canonical;
mod chain;
pub mod checkpoint;
pub mod clock;
mod error;
mod finite;
pub mod hex;
mod key;
mod reason;
mod record;
mod sink;
mod verify;

pub use canonical::{CanonicalError, CanonicalJson};
pub use chain::{ChainHead, ChainWriter, Receipt};
pub use clock::{Clock, ClockOutOfRange, ManualClock, SystemClock};
pub use error::AuditError;
pub use key::{DigestKey, KeyError, KeyId, RecordKey, WriterSecret};
pub use record::{
    Actor, ActorKind, Event, GrantTerms, Granted, Outcome, PendingRecord, RejectReason, Requested,
    Reviewer, Task, Vote,
};
pub use sink::{
    AuditSink, FsLogFile, JsonlFileSink, LogFile, LogSource, MemorySink, SyncHandle, dropped_path,
    durable_mark_path,
};
pub use verify::{
    Failure, GrantFailure, GrantFault, GrantSummary, Keyring, Reason, Report, Verifier,
    VerifyError, verify,
};
