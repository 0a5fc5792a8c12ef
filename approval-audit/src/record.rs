//! The audit events of AUDIT-FORMAT.md as types, and their members in
//! canonical form, ready for the chain to seal.

use std::ops::Range;

use crate::canonical::{
    CanonicalError, CanonicalJson, MAX_SAFE_INTEGER, Member, Members, prefix, write_array,
    write_hex, write_str, write_u64,
};
use crate::key::KeyId;

/// Who asks: the agent, pipeline or person on whose call a request is made.
///
/// ```
/// use approval_audit::{Actor, ActorKind};
///
/// let actor = Actor::new("agent-7")
///     .kind(ActorKind::Agent)
///     .model("gpt-5")
///     .on_behalf_of("alice@example.com");
/// assert_eq!(actor.id, "agent-7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Actor {
    /// Stable id of the agent or pipeline.
    pub id: String,
    /// What kind of actor it is, where known.
    pub kind: Option<ActorKind>,
    /// The model driving an agent, where known.
    pub model: Option<String>,
    /// The person the actor acts for, where known.
    pub on_behalf_of: Option<String>,
    /// The task the actor is working on, where known.
    pub task: Option<Task>,
}

impl Actor {
    /// An actor known only by its id.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: None,
            model: None,
            on_behalf_of: None,
            task: None,
        }
    }

    /// Sets the kind.
    #[must_use]
    pub fn kind(mut self, kind: ActorKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Sets the model.
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the person the actor acts for.
    #[must_use]
    pub fn on_behalf_of(mut self, person: impl Into<String>) -> Self {
        self.on_behalf_of = Some(person.into());
        self
    }

    /// Sets the task.
    #[must_use]
    pub fn task(mut self, task: Task) -> Self {
        self.task = Some(task);
        self
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        let mut task = Vec::new();
        if let Some(t) = &self.task {
            let mut m = Members::with_capacity(2);
            m.push("id", Member::Str(&t.id))
                .push_opt_str("description", t.description.as_deref());
            m.write(&mut task, None)?;
        }
        let mut m = Members::with_capacity(5);
        m.push("id", Member::Str(&self.id))
            .push_opt_str("kind", self.kind.map(ActorKind::as_str))
            .push_opt_str("model", self.model.as_deref())
            .push_opt_str("on_behalf_of", self.on_behalf_of.as_deref());
        if self.task.is_some() {
            m.push("task", Member::Raw(&task));
        }
        m.write(out, None).map(drop)
    }
}

/// The kind of an [`Actor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ActorKind {
    /// An AI agent.
    Agent,
    /// An automated pipeline.
    Pipeline,
    /// A person acting directly.
    Human,
}

impl ActorKind {
    /// The word the audit log uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Pipeline => "pipeline",
            Self::Human => "human",
        }
    }

    /// The kind the audit log's word names, if one.
    ///
    /// ```
    /// use approval_audit::ActorKind;
    /// assert_eq!(ActorKind::from_word("agent"), Some(ActorKind::Agent));
    /// assert_eq!(ActorKind::from_word("robot"), None);
    /// ```
    pub fn from_word(word: &str) -> Option<Self> {
        [Self::Agent, Self::Pipeline, Self::Human]
            .into_iter()
            .find(|k| k.as_str() == word)
    }
}

/// The task an actor works on, recorded as `{"id":…,"description":…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Task {
    /// Task id.
    pub id: String,
    /// What the task is, in words.
    pub description: Option<String>,
}

impl Task {
    /// A task with an id and an optional description.
    pub fn new(id: impl Into<String>, description: Option<String>) -> Self {
        Self {
            id: id.into(),
            description,
        }
    }
}

/// A reviewer's identity as recorded: the channel identity, the person it
/// belongs to, and a display name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reviewer {
    /// The channel identity, qualified by channel: `slack:U123`, `mock:ci`.
    pub id: String,
    /// The person in the directory of reviewers, where known.
    pub person: Option<String>,
    /// A display name, where known.
    pub display: Option<String>,
}

impl Reviewer {
    /// A reviewer known by channel identity only.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            person: None,
            display: None,
        }
    }

    /// Sets the person.
    #[must_use]
    pub fn person(mut self, person: impl Into<String>) -> Self {
        self.person = Some(person.into());
        self
    }

    /// Sets the display name.
    #[must_use]
    pub fn display(mut self, display: impl Into<String>) -> Self {
        self.display = Some(display.into());
        self
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        let mut m = Members::with_capacity(3);
        m.push("id", Member::Str(&self.id))
            .push_opt_str("person", self.person.as_deref())
            .push_opt_str("display", self.display.as_deref());
        m.write(out, None).map(drop)
    }
}

/// What a reviewer grants with an approval: this call, and up to `uses`
/// more calls like it (same action, actor and rule, the policy's pinned
/// arguments equal) within `within_ms` of the approval. Written as the
/// `grant` member of the vote's `reviewed` record, `{"uses":N,"within_ms":T}`.
///
/// ```
/// use std::time::Duration;
/// use approval_audit::GrantTerms;
///
/// let alice = GrantTerms::new(5, Duration::from_secs(3600));
/// let bob = GrantTerms::new(10, Duration::from_secs(600));
/// assert_eq!(alice.narrowest(bob), GrantTerms::new(5, Duration::from_secs(600)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[non_exhaustive]
pub struct GrantTerms {
    /// How many more calls the grant covers.
    pub uses: u32,
    /// For how long after the approval, in milliseconds.
    pub within_ms: u64,
}

impl GrantTerms {
    /// Up to `uses` more calls within `within` of the approval.
    pub fn new(uses: u32, within: std::time::Duration) -> Self {
        Self {
            uses,
            within_ms: u64::try_from(within.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// How long after the approval the grant lasts.
    pub fn within(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.within_ms)
    }

    /// What both terms allow: the fewer uses and the shorter time, which
    /// is all that several approvers agreed to together.
    #[must_use]
    pub fn narrowest(self, other: Self) -> Self {
        Self {
            uses: self.uses.min(other.uses),
            within_ms: self.within_ms.min(other.within_ms),
        }
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        let mut m = Members::with_capacity(2);
        m.push("uses", Member::Int(u64::from(self.uses)))
            .push("within_ms", Member::Int(self.within_ms));
        m.write(out, None).map(drop)
    }
}

/// A reviewer's vote. More kinds may come (an approval with edited
/// arguments, a grant): a channel shows one it does not know as what its
/// [`as_str`](Self::as_str) word says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Vote {
    /// Let the call run.
    Approve,
    /// Refuse the call.
    Deny,
}

impl Vote {
    /// The word the audit log uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }
}

/// Why a vote was refused (`rejected_vote.why`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The reviewer may not approve under this policy.
    NotEligible,
    /// The reviewer is the requester or the person it acts for.
    SelfApproval,
    /// The channel's signature or token did not verify.
    BadSignature,
    /// The same message was replayed.
    Replayed,
    /// The request was already settled.
    Settled,
    /// The vote names another binding digest.
    WrongBinding,
    /// No such request.
    UnknownRequest,
    /// The same person already voted otherwise on this request (their first
    /// vote is final). Project word: `already_voted`.
    AlreadyVoted,
    /// The vote came through a channel that is not among the request's
    /// routes. Project word: `wrong_route`.
    WrongRoute,
    /// The vote asked for a grant its policy does not allow, or beyond
    /// the policy's caps. Project word: `grant_refused`.
    GrantRefused,
}

impl RejectReason {
    /// The word the audit log uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotEligible => "not_eligible",
            Self::SelfApproval => "self_approval",
            Self::BadSignature => "bad_signature",
            Self::Replayed => "replayed",
            Self::Settled => "settled",
            Self::WrongBinding => "wrong_binding",
            Self::UnknownRequest => "unknown_request",
            Self::AlreadyVoted => "already_voted",
            Self::WrongRoute => "wrong_route",
            Self::GrantRefused => "grant_refused",
        }
    }

    /// The reason named by its word in the audit log ([`as_str`](Self::as_str)).
    ///
    /// ```
    /// use approval_audit::RejectReason;
    ///
    /// assert_eq!(RejectReason::parse("settled"), Some(RejectReason::Settled));
    /// assert_eq!(RejectReason::parse("nonsense"), None);
    /// ```
    pub fn parse(word: &str) -> Option<Self> {
        [
            Self::NotEligible,
            Self::SelfApproval,
            Self::BadSignature,
            Self::Replayed,
            Self::Settled,
            Self::WrongBinding,
            Self::UnknownRequest,
            Self::AlreadyVoted,
            Self::WrongRoute,
            Self::GrantRefused,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == word)
    }
}

/// How a gated body ended (`executed.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// It returned `Ok`.
    Ok,
    /// It returned `Err`.
    Error,
    /// It panicked.
    Panicked,
    /// A restart found it approved and not known to have finished.
    Unknown,
}

impl Outcome {
    /// The word the audit log uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Panicked => "panicked",
            Self::Unknown => "unknown",
        }
    }
}

/// One audit event, with the members AUDIT-FORMAT.md gives it. The chain
/// adds `v`, `seq`, `ts`, `event`, `key_id`, `prev` and `mac` when sealing.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[allow(
    clippy::large_enum_variant,
    reason = "an event lives only until it is written; boxing would cost an allocation per record"
)]
pub enum Event {
    /// A gated call asks for approval.
    Requested {
        /// Unique, time-sortable request id.
        request_id: String,
        /// The function's full path.
        action: String,
        /// The policy's name.
        policy: String,
        /// Hex SHA-256 of the policy's canonical JSON.
        policy_digest: [u8; 32],
        /// The arguments by name (a canonical JSON object).
        args: CanonicalJson,
        /// Names of parameters left out of `args`.
        skipped: Vec<String>,
        /// Keyed digest of the action and unredacted arguments.
        binding: [u8; 32],
        /// Who asks.
        actor: Actor,
        /// The system acted on, where given.
        resource: Option<String>,
        /// Why, in the agent's words, where given.
        reason: Option<String>,
        /// Whether the caller does not wait (a deferred call, which comes
        /// back later): such a request stays open across a restart.
        /// Written only when `true`.
        deferred: bool,
    },
    /// A reviewer's vote was accepted.
    Reviewed {
        /// The request.
        request_id: String,
        /// Who voted.
        reviewer: Reviewer,
        /// The vote.
        vote: Vote,
        /// The channel it came through (`slack`, `mock`, …).
        channel: String,
        /// The reviewer's comment, where given.
        comment: Option<String>,
    },
    /// A vote was refused.
    RejectedVote {
        /// The request the vote named.
        request_id: String,
        /// Who voted, where known.
        reviewer: Option<Reviewer>,
        /// The channel it came through.
        channel: String,
        /// Why it was refused.
        why: RejectReason,
    },
    /// The policy's rule approved the request.
    Approved {
        /// The request.
        request_id: String,
        /// The policy's name.
        policy: String,
        /// The reviewers whose votes settled it.
        reviewers: Vec<Reviewer>,
    },
    /// A reviewer denied the request.
    Denied {
        /// The request.
        request_id: String,
        /// The policy's name.
        policy: String,
        /// The reviewers whose votes settled it.
        reviewers: Vec<Reviewer>,
    },
    /// Nobody decided before the policy's timeout.
    Expired {
        /// The request.
        request_id: String,
        /// The policy's name.
        policy: String,
        /// The timeout, in milliseconds.
        timeout_ms: u64,
    },
    /// The request went to more reviewers, its policy's escalation
    /// (routes and groups added; who may vote widens).
    Escalated {
        /// The request.
        request_id: String,
        /// Routes it was delivered to as well.
        routes: Vec<String>,
        /// Directory groups whose members may vote as well.
        groups: Vec<String>,
    },
    /// A route could not be delivered to and the policy queues: the
    /// request stays open, deferred (nobody waits; it outlives a restart).
    Queued {
        /// The request.
        request_id: String,
        /// The route that could not be reached, if that is why.
        route: Option<String>,
        /// The attended hours it was asked outside of, if that is why.
        attended: Option<String>,
    },
    /// A credential broker minted a credential scoped to an approved call,
    /// for its body (never the secret: what it may do and until when).
    CredentialMinted {
        /// The approved request.
        request_id: String,
        /// The broker's name in the gate.
        broker: String,
        /// What the credential is known by to the system it opens (a role
        /// name, a session name): how it is revoked.
        credential_id: String,
        /// What it may do, as the broker derived it from the approved
        /// arguments (a canonical JSON object).
        scope: CanonicalJson,
        /// When it stops working by itself.
        expires_at: std::time::SystemTime,
    },
    /// A minted credential was revoked: its body ended, or a restart found
    /// it still live.
    CredentialRevoked {
        /// The approved request.
        request_id: String,
        /// The broker's name in the gate.
        broker: String,
        /// The credential, as in its `credential_minted` record.
        credential_id: String,
        /// Why now.
        why: String,
    },
    /// A grant was revoked before its uses or its time ran out: no later
    /// call is covered by it.
    GrantRevoked {
        /// The request whose approval made the grant (the grant's id).
        request_id: String,
        /// Who revoked it, where a person did.
        reviewer: Option<Reviewer>,
        /// The channel it came through (`slack`, `api`, `cli`, …).
        channel: String,
        /// Why, in the revoker's words or the gate's.
        why: String,
    },
    /// The caller gave up, or a restart found the request open.
    Cancelled {
        /// The request.
        request_id: String,
        /// Why.
        why: String,
    },
    /// The gated body ran.
    Executed {
        /// The request.
        request_id: String,
        /// How it ended.
        outcome: Outcome,
        /// Its error text, only where the policy opts in.
        error: Option<String>,
    },
    /// The writer moves to a new key after this record.
    KeyRotated {
        /// The key of the records that follow.
        next_key_id: KeyId,
    },
    /// A log was reopened after a crash left a torn last line, or lines
    /// after its last point known durable that fail verification.
    Recovered {
        /// Length of what was removed.
        dropped_bytes: u64,
        /// SHA-256 of what was removed.
        dropped_sha256: [u8; 32],
        /// How many whole lines were removed with it (written as
        /// `dropped_lines` when not 0).
        dropped_lines: u64,
        /// Why the first removed line failed (written as `fault`); `None`
        /// when only a torn last line was removed.
        fault: Option<crate::reason::Reason>,
    },
}

impl Event {
    /// The `event` word of this event.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Requested { .. } => "requested",
            Self::Reviewed { .. } => "reviewed",
            Self::RejectedVote { .. } => "rejected_vote",
            Self::Approved { .. } => "approved",
            Self::Denied { .. } => "denied",
            Self::Expired { .. } => "expired",
            Self::Cancelled { .. } => "cancelled",
            Self::Escalated { .. } => "escalated",
            Self::Queued { .. } => "queued",
            Self::CredentialMinted { .. } => "credential_minted",
            Self::CredentialRevoked { .. } => "credential_revoked",
            Self::GrantRevoked { .. } => "grant_revoked",
            Self::Executed { .. } => "executed",
            Self::KeyRotated { .. } => "key_rotated",
            Self::Recovered { .. } => "recovered",
        }
    }

    /// Writes the event's own members in canonical form.
    pub fn to_pending(&self) -> Result<PendingRecord, CanonicalError> {
        let mut r = PendingRecord::new(self.name());
        match self {
            Self::Requested {
                request_id,
                action,
                policy,
                policy_digest,
                args,
                skipped,
                binding,
                actor,
                resource,
                reason,
                deferred,
            } => {
                return PendingRecord::requested(&Requested {
                    request_id,
                    action,
                    policy,
                    policy_digest,
                    args,
                    skipped,
                    binding,
                    actor,
                    resource: resource.as_deref(),
                    reason: reason.as_deref(),
                    deferred: *deferred,
                    rule: None,
                });
            }
            Self::Reviewed {
                request_id,
                reviewer,
                vote,
                channel,
                comment,
            } => {
                return PendingRecord::reviewed(
                    request_id,
                    reviewer,
                    *vote,
                    channel,
                    comment.as_deref(),
                    None,
                );
            }
            Self::RejectedVote {
                request_id,
                reviewer,
                channel,
                why,
            } => {
                r.str("request_id", request_id)
                    .str("channel", channel)
                    .str("why", why.as_str());
                if let Some(reviewer) = reviewer {
                    r.with("reviewer", |out| reviewer.write(out))?;
                }
            }
            Self::Approved {
                request_id,
                policy,
                reviewers,
            }
            | Self::Denied {
                request_id,
                policy,
                reviewers,
            } => return PendingRecord::decided(self.name(), request_id, policy, reviewers),
            Self::Expired {
                request_id,
                policy,
                timeout_ms,
            } => return PendingRecord::expired(request_id, policy, *timeout_ms),
            Self::Cancelled { request_id, why } => {
                return Ok(PendingRecord::cancelled(request_id, why));
            }
            Self::GrantRevoked {
                request_id,
                reviewer,
                channel,
                why,
            } => {
                r.str("request_id", request_id)
                    .str("channel", channel)
                    .str("why", why);
                if let Some(reviewer) = reviewer {
                    r.with("reviewer", |out| reviewer.write(out))?;
                }
            }
            Self::Escalated {
                request_id,
                routes,
                groups,
            } => return PendingRecord::escalated(request_id, routes, groups),
            Self::Queued {
                request_id,
                route,
                attended,
            } => {
                r.str("request_id", request_id)
                    .opt_str("route", route.as_deref())
                    .opt_str("attended", attended.as_deref());
            }
            Self::CredentialMinted {
                request_id,
                broker,
                credential_id,
                scope,
                expires_at,
            } => {
                if !scope.is_object() {
                    return Err(CanonicalError::NotCanonical);
                }
                r.str("request_id", request_id)
                    .str("broker", broker)
                    .str("credential_id", credential_id)
                    .raw("scope", scope.as_str())
                    .time("expires_at", *expires_at)?;
            }
            Self::CredentialRevoked {
                request_id,
                broker,
                credential_id,
                why,
            } => {
                r.str("request_id", request_id)
                    .str("broker", broker)
                    .str("credential_id", credential_id)
                    .str("why", why);
            }
            Self::Executed {
                request_id,
                outcome,
                error,
            } => {
                r.str("request_id", request_id)
                    .str("outcome", outcome.as_str())
                    .opt_str("error", error.as_deref());
            }
            Self::KeyRotated { next_key_id } => {
                r.str("next_key_id", next_key_id.as_str());
                r.next_key_id = Some(next_key_id.clone());
            }
            Self::Recovered {
                dropped_bytes,
                dropped_sha256,
                dropped_lines,
                fault,
            } => {
                r.int("dropped_bytes", *dropped_bytes)?
                    .hex("dropped_sha256", dropped_sha256)
                    .opt_str("fault", fault.map(crate::reason::Reason::as_str));
                if *dropped_lines > 0 {
                    r.int("dropped_lines", *dropped_lines)?;
                }
            }
        }
        Ok(r)
    }
}

/// The members of a `requested` record, borrowed: the gate writes it from
/// its request without copying anything.
#[derive(Debug, Clone, Copy)]
pub struct Requested<'a> {
    /// The request's id.
    pub request_id: &'a str,
    /// The gated function's path.
    pub action: &'a str,
    /// The policy's name.
    pub policy: &'a str,
    /// SHA-256 of the policy's canonical form.
    pub policy_digest: &'a [u8; 32],
    /// The recorded arguments (redacted ones as digests).
    pub args: &'a CanonicalJson,
    /// Arguments left out of the record and the binding.
    pub skipped: &'a [String],
    /// What an approval is bound to (see `ChainWriter::binding`).
    pub binding: &'a [u8; 32],
    /// Who asked, for whom.
    pub actor: &'a Actor,
    /// The system acted on, if named.
    pub resource: Option<&'a str>,
    /// The agent's stated reason, if any.
    pub reason: Option<&'a str>,
    /// Whether the caller comes back later rather than waiting.
    pub deferred: bool,
    /// The policy's rule that decided how many approvals it needs, by its
    /// place in the policy's `rules` (from 0); `None` when no rule did.
    pub rule: Option<u32>,
}

/// The members of a `granted` record, borrowed: the approval of
/// `request_id` covers up to `uses` more calls like it until `expires_at`.
#[derive(Debug, Clone, Copy)]
pub struct Granted<'a> {
    /// The approved request, whose id is the grant's.
    pub request_id: &'a str,
    /// The action every covered call must be.
    pub action: &'a str,
    /// The policy every covered call must be under.
    pub policy: &'a str,
    /// That policy's digest: a changed policy covers nothing.
    pub policy_digest: &'a [u8; 32],
    /// The rule the approved call was held under (a covered call must be
    /// held under the same one); `None` when no rule applied.
    pub rule: Option<u32>,
    /// Who asked: a covered call must have the same actor `id` and
    /// `on_behalf_of`.
    pub actor: &'a Actor,
    /// How many more calls it covers.
    pub uses: u32,
    /// When it stops covering any call.
    pub expires_at: std::time::SystemTime,
    /// The pinned arguments, as the approved call's record has them (a
    /// canonical JSON object): a covered call's must be equal.
    pub pinned: &'a CanonicalJson,
    /// The reviewers whose approvals made it.
    pub reviewers: &'a [Reviewer],
}

/// How many members a record has room for at first: `requested` has at
/// most 12.
const MEMBERS_INLINE: usize = 12;

/// An event's own members in canonical form, waiting for the chain to add
/// its members and seal it. Only [`Event::to_pending`] and the typed
/// constructors below make one (each for its own event), so a sink
/// cannot inject members of its own.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    event: &'static str,
    /// For `key_rotated`: the key of the records that follow.
    next_key_id: Option<KeyId>,
    /// Canonical member values, back to back.
    values: Vec<u8>,
    /// (name's first eight bytes as an integer, name, value's bytes), in
    /// canonical order; inline up to the most members an event has.
    members: Vec<(u64, &'static str, Range<usize>)>,
}

impl PendingRecord {
    fn new(event: &'static str) -> Self {
        Self {
            event,
            next_key_id: None,
            values: Vec::with_capacity(256),
            members: Vec::with_capacity(MEMBERS_INLINE),
        }
    }

    /// A `requested` record from borrowed members.
    pub fn requested(e: &Requested<'_>) -> Result<Self, CanonicalError> {
        Self::asked("requested", e)
    }

    /// A `would_require` record: a call under a policy in shadow mode, run
    /// without being held, with the members a `requested` record would
    /// have had (never `deferred`).
    pub fn would_require(e: &Requested<'_>) -> Result<Self, CanonicalError> {
        Self::asked("would_require", e)
    }

    /// An `exempted` record: a call that a rule of its policy lets run
    /// without approval, with the members of a `requested` record (its
    /// `rule` always, never `deferred`).
    pub fn exempted(e: &Requested<'_>) -> Result<Self, CanonicalError> {
        if e.rule.is_none() {
            return Err(CanonicalError::NotCanonical);
        }
        Self::asked("exempted", e)
    }

    fn asked(event: &'static str, e: &Requested<'_>) -> Result<Self, CanonicalError> {
        if !e.args.is_object() {
            return Err(CanonicalError::NotCanonical);
        }
        let mut r = Self::new(event);
        r.str("request_id", e.request_id)
            .str("action", e.action)
            .str("policy", e.policy)
            .hex("policy_digest", e.policy_digest)
            .raw("args", e.args.as_str())
            .hex("binding", e.binding)
            .opt_str("resource", e.resource)
            .opt_str("reason", e.reason);
        if e.deferred && event == "requested" {
            r.raw("deferred", "true");
        }
        r.with("skipped", |out| {
            write_array(out, e.skipped, |out, s| {
                write_str(out, s);
                Ok(())
            })
        })?;
        r.with("actor", |out| e.actor.write(out))?;
        if let Some(rule) = e.rule {
            r.int("rule", u64::from(rule))?;
        }
        Ok(r)
    }

    /// A `reviewed` record from borrowed members.
    pub fn reviewed(
        request_id: &str,
        reviewer: &Reviewer,
        vote: Vote,
        channel: &str,
        comment: Option<&str>,
        grant: Option<GrantTerms>,
    ) -> Result<Self, CanonicalError> {
        let mut r = Self::new("reviewed");
        r.str("request_id", request_id)
            .str("vote", vote.as_str())
            .str("channel", channel)
            .opt_str("comment", comment);
        r.with("reviewer", |out| reviewer.write(out))?;
        if let Some(grant) = grant {
            r.with("grant", |out| grant.write(out))?;
        }
        Ok(r)
    }

    /// A `granted` record: an approval that covers more calls like it.
    pub fn granted(e: &Granted<'_>) -> Result<Self, CanonicalError> {
        if !e.pinned.is_object() {
            return Err(CanonicalError::NotCanonical);
        }
        let mut r = Self::new("granted");
        r.str("request_id", e.request_id)
            .str("action", e.action)
            .str("policy", e.policy)
            .hex("policy_digest", e.policy_digest)
            .raw("match", e.pinned.as_str())
            .int("uses", u64::from(e.uses))?
            .time("expires_at", e.expires_at)?;
        if let Some(rule) = e.rule {
            r.int("rule", u64::from(rule))?;
        }
        r.with("actor", |out| e.actor.write(out))?;
        r.with("reviewers", |out| {
            write_array(out, e.reviewers, |out, rv| rv.write(out))
        })?;
        Ok(r)
    }

    /// A `grant_used` record: a call covered by the grant `grant` (its
    /// `use`-th, from 1), with the members its `requested` record would
    /// have had (never `deferred`). It ran without being held.
    pub fn grant_used(
        e: &Requested<'_>,
        grant: &str,
        use_number: u32,
    ) -> Result<Self, CanonicalError> {
        let mut r = Self::asked("grant_used", e)?;
        r.str("grant", grant).int("use", u64::from(use_number))?;
        Ok(r)
    }

    /// An `approved` or `denied` record (`event`) from borrowed members.
    pub fn decided(
        event: &'static str,
        request_id: &str,
        policy: &str,
        reviewers: &[Reviewer],
    ) -> Result<Self, CanonicalError> {
        debug_assert!(matches!(event, "approved" | "denied"));
        let mut r = Self::new(event);
        r.str("request_id", request_id).str("policy", policy);
        r.with("reviewers", |out| {
            write_array(out, reviewers, |out, rv| rv.write(out))
        })?;
        Ok(r)
    }

    /// An `expired` record from borrowed members.
    pub fn expired(
        request_id: &str,
        policy: &str,
        timeout_ms: u64,
    ) -> Result<Self, CanonicalError> {
        let mut r = Self::new("expired");
        r.str("request_id", request_id)
            .str("policy", policy)
            .int("timeout_ms", timeout_ms)?;
        Ok(r)
    }

    /// An `escalated` record from borrowed members.
    pub fn escalated(
        request_id: &str,
        routes: &[String],
        groups: &[String],
    ) -> Result<Self, CanonicalError> {
        let mut r = Self::new("escalated");
        r.str("request_id", request_id);
        for (key, names) in [("routes", routes), ("groups", groups)] {
            r.with(key, |out| {
                write_array(out, names, |out, name| {
                    write_str(out, name);
                    Ok(())
                })
            })?;
        }
        Ok(r)
    }

    /// A `cancelled` record from borrowed members.
    pub fn cancelled(request_id: &str, why: &str) -> Self {
        let mut r = Self::new("cancelled");
        r.str("request_id", request_id).str("why", why);
        r
    }

    /// The `event` word.
    pub fn event(&self) -> &'static str {
        self.event
    }

    /// For `key_rotated`: the key of the records that follow.
    pub fn next_key_id(&self) -> Option<&KeyId> {
        self.next_key_id.as_ref()
    }

    fn with(
        &mut self,
        key: &'static str,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), CanonicalError>,
    ) -> Result<&mut Self, CanonicalError> {
        let start = self.values.len();
        write(&mut self.values)?;
        self.member(key, start);
        Ok(self)
    }

    fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        let start = self.values.len();
        write_str(&mut self.values, value);
        self.member(key, start);
        self
    }

    fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.str(key, value);
        }
        self
    }

    fn hex(&mut self, key: &'static str, bytes: &[u8]) -> &mut Self {
        let start = self.values.len();
        self.values.push(b'"');
        write_hex(&mut self.values, bytes);
        self.values.push(b'"');
        self.member(key, start);
        self
    }

    fn raw(&mut self, key: &'static str, json: &str) -> &mut Self {
        let start = self.values.len();
        self.values.extend_from_slice(json.as_bytes());
        self.member(key, start);
        self
    }

    /// A time, written as `ts` is.
    fn time(
        &mut self,
        key: &'static str,
        time: std::time::SystemTime,
    ) -> Result<&mut Self, CanonicalError> {
        let text = crate::clock::format_ts(time).map_err(|_| CanonicalError::NotCanonical)?;
        // ASCII digits and separators: a string as it stands.
        Ok(self.str(key, std::str::from_utf8(&text).unwrap_or_default()))
    }

    fn int(&mut self, key: &'static str, n: u64) -> Result<&mut Self, CanonicalError> {
        if n > MAX_SAFE_INTEGER {
            return Err(CanonicalError::IntegerOutOfRange);
        }
        self.with(key, |out| {
            write_u64(out, n);
            Ok(())
        })
    }

    /// Records that the member `key` starts at `start` in `values` and runs
    /// to its end, keeping members in canonical order (record member names
    /// are plain ASCII, for which UTF-16 order is byte order).
    fn member(&mut self, key: &'static str, start: usize) {
        debug_assert!(
            key.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
        let sort_key = (prefix(key), key);
        let at = self
            .members
            .partition_point(|(p, k, _)| (*p, *k) < sort_key);
        self.members
            .insert(at, (sort_key.0, key, start..self.values.len()));
    }

    /// Writes the sealed line's object without its `mac`: the event's
    /// members merged with the chain's `chain` (sorted by name). Returns the
    /// offset at which `,"mac":…` goes.
    pub(crate) fn write_with(
        &self,
        chain: &[(&'static str, Member<'_>)],
        out: &mut Vec<u8>,
    ) -> Result<usize, CanonicalError> {
        debug_assert!(chain.windows(2).all(|w| w[0].0 < w[1].0));
        // Names compare by their first eight bytes as one integer (record
        // names are short), then in full.
        let mac = (prefix("mac"), "mac");
        let mut own = self.members.iter().peekable();
        let mut chain = chain.iter().map(|(k, v)| (prefix(k), *k, *v)).peekable();
        let mut split = None;
        out.push(b'{');
        let mut first = true;
        loop {
            let (sort_key, value) = match (own.peek(), chain.peek()) {
                (Some(&&(p, a, ref range)), Some(&(q, b, _))) if (p, a) < (q, b) => {
                    own.next();
                    ((p, a), Member::Raw(&self.values[range.clone()]))
                }
                (Some(&&(p, a, _)), Some(&(q, b, _))) if (p, a) == (q, b) => {
                    return Err(CanonicalError::DuplicateMember);
                }
                (_, Some(&(q, b, value))) => {
                    chain.next();
                    ((q, b), value)
                }
                (Some(&&(p, a, ref range)), None) => {
                    own.next();
                    ((p, a), Member::Raw(&self.values[range.clone()]))
                }
                (None, None) => break,
            };
            let key = sort_key.1;
            if split.is_none() && sort_key > mac {
                split = Some(out.len());
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            value.write(out)?;
        }
        let split = split.unwrap_or(out.len());
        out.push(b'}');
        Ok(split)
    }
}

#[cfg(test)]
mod tests;
