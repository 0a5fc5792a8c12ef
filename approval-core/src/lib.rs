//! Human approval for an AI agent's privileged actions, with a
//! tamper-evident audit chain.
//!
//! The gate (policies, approvers, the request table) lives here; the audit
//! chain every decision is written to comes from `approval-audit` and is
//! re-exported whole, so one dependency serves both:
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
//! use approval_core::{
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

mod agent_text;
mod error;
mod gate;
mod private;
mod redact;
mod registry;
pub mod signed;

pub use agent_text::{LINE_BREAK_MARK, LINE_BREAKS, one_line};
pub use approval_audit::{
    Actor, ActorKind, AuditError, AuditSink, CanonicalError, CanonicalJson, ChainHead, ChainWriter,
    Clock, ClockOutOfRange, DigestKey, Event, Failure, FsLogFile, GrantFailure, GrantFault,
    GrantTerms, JsonlFileSink, KeyError, KeyId, Keyring, LogFile, LogSource, ManualClock,
    MemorySink, Outcome, PendingRecord, Reason, Receipt, RecordKey, RejectReason, Report, Reviewer,
    SyncHandle, SystemClock, Task, Verifier, VerifyError, Vote, WriterSecret, checkpoint, clock,
    dropped_path, durable_mark_path, hex, verify,
};
pub use error::{ApprovalError, ApproverError, BrokerError, CoordinatorError};
pub use gate::{
    Approval, ApprovalRequest, Approver, AttendedHours, Ballot, BallotOutcome, Ballots, Call,
    ConditionError, Conditions, ConfigError, Confirmed, Coordinator, Credential, CredentialBroker,
    CredentialHandle, CredentialPolicy, DEFAULT_MAX_PENDING_PER_ACTOR, Decision, Directory,
    EarlierDecision, Facts, Forwarded, Gate, GateBallots, GateBuilder, GrantPolicy, GrantView,
    HoursError, MintRequest, NO_ACTOR, Notice, Policy, PolicyFile, Recovery, RefusalCounts,
    RequestView, Rule, Settlement, TerminalApprover, Ticket, Unreachable, VoteView, current_actor,
    normal_identity, with_actor, with_actor_sync,
};
#[cfg(any(test, feature = "mock"))]
pub use gate::{MockApprover, MockBroker, ScriptedMock};
pub use redact::Redact;
pub use registry::{GatedFunction, gated_functions};

/// `#[requires_approval]`: see [its documentation](macro@requires_approval).
pub use approval_macros::requires_approval;

/// Support for generated code; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::private::*;
}
