//! Why a gated call did not run, and the errors channels and coordinators
//! report to the gate. Nothing here depends on the gate itself.

use approval_audit::{AuditError, CanonicalError, Reviewer};

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
    /// The call came outside its policy's attended hours and the policy
    /// denies unattended requests: recorded `cancelled`, never run.
    #[error("policy {policy}: no reviewer attends now (outside its attended hours)")]
    Unattended {
        /// The policy.
        policy: String,
    },
    /// A rule of the policy could not be evaluated on the call's facts (a
    /// member it reads is missing or of another type, a number Cedar
    /// cannot hold): refused before anything is recorded or anyone asked,
    /// since the rule might have asked for more approvals. The reason is
    /// traced by the rule's place only, since Cedar's text can quote the
    /// arguments; `approval policy test` shows it.
    #[error("policy {policy}: rule {rule} could not be evaluated on this call")]
    Condition {
        /// The policy.
        policy: String,
        /// The rule's place in the policy's `rules`, from 0.
        rule: usize,
    },
    /// The policy mints a credential for each approved call and the gated
    /// function takes none (`policy_mints`), or the function takes one and
    /// the policy mints none: refused before anyone is asked.
    #[error("policy {policy} {}", if *policy_mints { "mints a credential for each approved call, and this call does not take one" } else { "mints no credential, and this call takes one" })]
    CredentialMismatch {
        /// The policy.
        policy: String,
        /// Whether the policy names a credential.
        policy_mints: bool,
    },
    /// The policy's broker could not mint the approved call's credential:
    /// the body did not run (recorded `cancelled`).
    #[error("credential broker {broker} could not mint the call's credential")]
    Credential {
        /// The broker's name in the gate.
        broker: String,
        /// What went wrong.
        #[source]
        source: BrokerError,
    },
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
    /// No grant this gate holds has this id.
    #[error("no grant {grant_id}")]
    UnknownGrant {
        /// The id asked for (the id of the request whose approval made it).
        grant_id: String,
    },
    /// A grant's revocation was refused: who asked may not approve under
    /// its policy, or asked through a channel outside its routes.
    #[error("may not revoke grant {grant_id}: {}", why.as_str())]
    RevokeRefused {
        /// The grant.
        grant_id: String,
        /// Why.
        why: approval_audit::RejectReason,
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
    Coordination(CoordinatorError),
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

/// Why an approver could not deliver a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApproverError {
    /// The channel could not be reached.
    #[error("channel unreachable: {0}")]
    Unreachable(String),
    /// The channel refused the request (bad credentials, unknown channel).
    #[error("channel refused the request: {0}")]
    Refused(String),
}

/// The shared store could not be asked: the call or vote it serves fails
/// closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("coordination: {what} failed: {cause}")]
pub struct CoordinatorError {
    /// What was being done.
    pub what: &'static str,
    /// The cause.
    pub cause: String,
}

/// Why a broker could not mint or revoke.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker has no such template.
    #[error("no credential template {0}")]
    UnknownTemplate(String),
    /// The approved arguments do not give a scope under the template (a
    /// missing argument, a name the system cannot hold).
    #[error("template {template}: {why}")]
    Scope {
        /// The template.
        template: String,
        /// What is wrong with the arguments for it.
        why: String,
    },
    /// The system the broker mints for failed or refused.
    #[error("{0}")]
    Backend(String),
}

impl BrokerError {
    /// The kind of failure in one word (`unknown_template`, `scope`,
    /// `backend`), for traces: the text itself can quote the call's
    /// arguments, which traces never carry.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownTemplate(_) => "unknown_template",
            Self::Scope { .. } => "scope",
            Self::Backend(_) => "backend",
        }
    }
}
