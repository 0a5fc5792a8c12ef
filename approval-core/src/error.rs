//! Errors of the audit chain and its sinks.

use std::io;
use std::path::PathBuf;

use crate::canonical::CanonicalError;
use crate::clock::ClockOutOfRange;
use crate::gate::ApproverError;
use crate::key::KeyId;
use crate::record::Reviewer;

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
        reason: crate::verify::Reason,
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

/// Why a gated call did not run. Each ending is its own variant: a human
/// "no" ([`Denied`](Self::Denied)) is never folded into a timeout or a
/// failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// A reviewer denied the call; their comment is for the agent to read.
    #[error("denied by {}{}", reviewer.id, comment.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Denied {
        /// Who denied.
        reviewer: Reviewer,
        /// Why, in their words.
        comment: Option<String>,
    },
    /// Nobody decided before the policy's timeout (not a human "no").
    #[error("no decision under policy {policy} within {timeout:?}")]
    Expired {
        /// The policy.
        policy: String,
        /// Its timeout.
        timeout: std::time::Duration,
    },
    /// The request was cancelled.
    #[error("request cancelled: {why}")]
    Cancelled {
        /// Why.
        why: String,
    },
    /// The call names a policy the gate does not have.
    #[error("unknown policy {policy}")]
    UnknownPolicy {
        /// The name.
        policy: String,
    },
    /// The policy requires an actor and none was in scope.
    #[error("policy {policy} requires an actor in scope and there is none")]
    NoActor {
        /// The policy.
        policy: String,
    },
    /// The gate has a directory, and the principal the actor acts for is
    /// nobody in it: the gate cannot tell who may not approve the request,
    /// so it refuses it (unless the policy sets `allow_unknown_principal`).
    #[error("policy {policy}: the actor acts for {principal}, whom the directory does not know")]
    UnknownPrincipal {
        /// The principal, as the actor named it.
        principal: String,
        /// The policy.
        policy: String,
    },
    /// The actor already has as many requests waiting as the policy allows.
    #[error("actor {actor} already has {limit} requests waiting")]
    TooManyPending {
        /// The actor.
        actor: String,
        /// The policy's limit.
        limit: u32,
    },
    /// An approver could not deliver the request.
    #[error("approver {route} could not deliver the request")]
    ApproverUnavailable {
        /// The route.
        route: String,
        /// Why.
        source: ApproverError,
    },
    /// The audit sink failed; nothing runs unrecorded.
    #[error("audit sink failed")]
    Audit(#[from] AuditError),
    /// The arguments changed between approval and execution.
    #[error("the arguments changed while waiting for approval")]
    ArgumentsChanged,
    /// The arguments have no canonical JSON form (a NaN, say).
    #[error("the arguments cannot be recorded: {0}")]
    InvalidArguments(#[source] CanonicalError),
    /// The gate was dropped.
    #[error("the gate has shut down")]
    GateClosed,
    /// A deferred call: its request is open, waiting for people. The same
    /// call with the same arguments, made again later, runs once if it was
    /// approved, gets the refusal if not, and this again while open. What a
    /// tool-calling agent tells its model: "waiting for approval, id X".
    #[error("waiting for approval: request {request_id}")]
    Pending {
        /// The request to come back for.
        request_id: String,
        /// When it expires.
        expires_at: std::time::SystemTime,
    },
    /// A deferred call whose approval was already used: an approval runs
    /// its call once. The same call can be asked for again once this
    /// request's deadline has passed.
    #[error("request {request_id} was approved once and has run; ask again after it expires")]
    AlreadyUsed {
        /// The request whose approval was used.
        request_id: String,
    },
    /// No open or lately settled request has this id.
    #[error("no request {request_id}")]
    UnknownRequest {
        /// The id asked for.
        request_id: String,
    },
    /// The store shared with other gate processes could not be asked (see
    /// [`Coordinator`](crate::Coordinator)): the call does not run.
    #[error(transparent)]
    Coordination(crate::CoordinatorError),
    /// A gated function found no gate: none named, scoped or installed.
    #[error("no approval gate: name one in the attribute, scope one, or install a global gate")]
    NoGate,
    /// A blocking gated function was called on a current-thread tokio
    /// runtime, whose only thread it would block (starving any approver on
    /// it).
    #[error(
        "a blocking gated function cannot wait on a current-thread tokio runtime; make it async, or call it from a multi-thread runtime or outside any runtime"
    )]
    WouldBlockRuntime,
    /// The log could not be read back to recover open requests, or other
    /// processes write it too (a shared log recovers by leases instead).
    #[error("cannot recover open requests: {0}")]
    Recovery(String),
    /// A runtime to wait on could not be started.
    #[error("could not start a runtime to wait for approval: {0}")]
    Runtime(String),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}
