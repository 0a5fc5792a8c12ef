//! The gate: every gated call asks, waits for people to decide through
//! verified channels, and runs only when approved, with each step recorded
//! on the audit chain first.

mod actor;
mod approver;
mod coordinator;
mod directory;
#[cfg(any(test, feature = "mock"))]
mod mock;
mod policy;
mod policy_file;
mod recover;
mod request;
mod terminal;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

pub use actor::{current_actor, with_actor, with_actor_sync};
pub use approver::{Approver, ApproverError, Ballots};
pub use coordinator::{Coordinator, CoordinatorError, Forwarded, Settlement};
pub use directory::Directory;
#[cfg(any(test, feature = "mock"))]
pub use mock::{MockApprover, ScriptedMock};
pub use policy::Policy;
pub use policy_file::PolicyFile;
pub use recover::Recovery;
pub use request::{ApprovalRequest, Ballot, BallotOutcome, Decision, EarlierDecision};
pub use terminal::TerminalApprover;

use crate::canonical::CanonicalJson;
use crate::clock::{Clock, SystemClock};
use crate::error::ApprovalError;
use crate::error::AuditError;
use crate::record::{Actor, Event, Outcome, PendingRecord, RejectReason, Reviewer, Vote};
use crate::sink::AuditSink;
use policy::{Policies, PolicyEntry};

/// One gated call, as the macro (or a caller by hand) describes it.
#[derive(Clone)]
#[non_exhaustive]
pub struct Call {
    /// The function's full path.
    pub action: String,
    /// The policy's name.
    pub policy: String,
    /// The arguments as recorded: skipped ones absent, redacted ones as
    /// `{"redacted":"<digest>"}`.
    pub args: CanonicalJson,
    /// Names of skipped parameters.
    pub skipped: Vec<String>,
    /// The unredacted arguments, for the binding digest.
    pub binding_args: CanonicalJson,
    /// The system acted on.
    pub resource: Option<String>,
    /// Why, in the caller's words.
    pub reason: Option<String>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `binding_args` holds redacted values in clear: never shown.
        f.debug_struct("Call")
            .field("action", &self.action)
            .field("policy", &self.policy)
            .field("args", &self.args)
            .field("skipped", &self.skipped)
            .field("resource", &self.resource)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl Call {
    /// A call of `action` under `policy` with arguments that need no
    /// redaction.
    pub fn new(action: impl Into<String>, policy: impl Into<String>, args: CanonicalJson) -> Self {
        Self {
            action: action.into(),
            policy: policy.into(),
            binding_args: args.clone(),
            args,
            skipped: Vec::new(),
            resource: None,
            reason: None,
        }
    }

    /// Sets the resource.
    #[must_use]
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Sets the reason.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Puts a human in front of each gated call.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use approval_core::{
///     Actor, Approver, ApproverError, ApprovalRequest, Ballot, Ballots, CanonicalJson, Call,
///     ChainWriter, Directory, Gate, KeyId, MemorySink, Policy, Vote, WriterSecret, with_actor,
/// };
///
/// /// Approves every request as "ci-bot"; a stand-in for a real channel.
/// #[derive(Debug)]
/// struct AutoApprove;
///
/// #[async_trait::async_trait]
/// impl Approver for AutoApprove {
///     async fn deliver(&self, request: Arc<ApprovalRequest>, ballots: Ballots) -> Result<(), ApproverError> {
///         tokio::spawn(async move {
///             let _ = ballots.cast(Ballot::new(&request, "custom:ci-bot", "custom", Vote::Approve)).await;
///         });
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
/// let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
///     .approver("bot", Arc::new(AutoApprove))
///     .policy(Policy::new("export", ["bot"], Duration::from_secs(60)).approvers(["custom:ci-bot"]))
///     .directory(Directory::new())
///     .build()?;
/// let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "users"}))?;
/// let rows = with_actor(Actor::new("agent-7"), gate.run(
///     Call::new("crm::export", "export", args),
///     || Ok(None),
///     async { Ok::<_, approval_core::ApprovalError>(42) },
/// ))
/// .await?;
/// assert_eq!(rows, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

/// Builds a [`Gate`]; [`build`](GateBuilder::build) checks the setup.
#[derive(Debug)]
#[must_use]
pub struct GateBuilder {
    sink: Arc<dyn AuditSink>,
    approvers: HashMap<String, Arc<dyn Approver>>,
    policies: Vec<Policy>,
    directory: Directory,
    clock: Arc<dyn Clock>,
    recovery_margin: std::time::Duration,
    coordinator: Option<Arc<dyn Coordinator>>,
}

/// A mistake in the gate's setup, found before any call is made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A policy routes to an approver that is not registered.
    #[error("policy {policy} routes to {route}, which is not a registered approver")]
    UnknownRoute {
        /// The policy.
        policy: String,
        /// The route it names.
        route: String,
    },
    /// A policy has no route, or needs no approval.
    #[error("policy {policy} {problem}")]
    InvalidPolicy {
        /// The policy.
        policy: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// Two policies share a name.
    #[error("policy {0} is defined twice")]
    DuplicatePolicy(String),
    /// A policy file could not be read or parsed.
    #[error("{}:{line}: {cause}", path.display())]
    PolicyFile {
        /// The file.
        path: std::path::PathBuf,
        /// The line (from 1; 0 when the file could not be read).
        line: usize,
        /// What is wrong.
        cause: String,
    },
    /// Gated functions in this program name policies the gate lacks.
    #[error("gated functions name policies this gate does not have: {}", missing.iter().map(|(action, policy)| format!("{action} needs {policy}")).collect::<Vec<_>>().join(", "))]
    MissingPolicies {
        /// Each function's action and the policy it names.
        missing: Vec<(String, String)>,
    },
}

impl GateBuilder {
    /// Registers an approver under a route name policies refer to.
    pub fn approver(mut self, route: impl Into<String>, approver: Arc<dyn Approver>) -> Self {
        self.approvers.insert(route.into(), approver);
        self
    }

    /// Adds a policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// Adds a policy file's policies and uses its directory.
    pub fn policy_file(mut self, file: &PolicyFile) -> Self {
        self.policies.extend(file.policies().iter().cloned());
        self.directory = file.directory();
        self
    }

    /// Sets the directory of reviewers.
    pub fn directory(mut self, directory: Directory) -> Self {
        self.directory = directory;
        self
    }

    /// Uses `clock` for request expiry times shown to reviewers.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Shares requests and votes with gates in other processes through
    /// `coordinator` (see [`Coordinator`]): decisions stand only once the
    /// shared store accepts them, and votes for requests another process
    /// waits on are taken there.
    pub fn coordinator(mut self, coordinator: Arc<dyn Coordinator>) -> Self {
        self.coordinator = Some(coordinator);
        self
    }

    /// How much further back than the longest policy timeout
    /// [`Gate::recover`] reads the log: the longest a gated body may run
    /// and still be found unfinished after a crash. One hour by default.
    pub fn recovery_margin(mut self, margin: std::time::Duration) -> Self {
        self.recovery_margin = margin;
        self
    }

    /// Checks every policy against the approvers and builds the gate.
    pub fn build(self) -> Result<Gate, ConfigError> {
        let mut policies = Policies::new();
        for policy in self.policies {
            let invalid = |problem| ConfigError::InvalidPolicy {
                policy: policy.name.clone(),
                problem,
            };
            if policy.routes.is_empty() {
                return Err(invalid("has no route to any approver"));
            }
            if policy.required == 0 {
                return Err(invalid("needs at least one approval"));
            }
            if policy.timeout_ms == 0 {
                return Err(invalid("has a zero timeout"));
            }
            if let Some(route) = policy
                .routes
                .iter()
                .find(|r| !self.approvers.contains_key(*r))
            {
                return Err(ConfigError::UnknownRoute {
                    policy: policy.name.clone(),
                    route: route.clone(),
                });
            }
            let name = policy.name.clone();
            let entry = PolicyEntry {
                digest: policy.digest(),
                policy: Arc::new(policy),
            };
            if policies.insert(name.clone(), Arc::new(entry)).is_some() {
                return Err(ConfigError::DuplicatePolicy(name));
            }
        }
        let gate = Gate {
            inner: Arc::new(GateInner {
                sink: self.sink,
                approvers: self.approvers,
                policies,
                directory: self.directory,
                clock: self.clock,
                recovery_margin: self.recovery_margin,
                coordinator: self.coordinator,
                pending: Mutex::default(),
                settled: Mutex::default(),
                history: Mutex::default(),
                per_actor: Mutex::default(),
            }),
        };
        for approver in gate.inner.approvers.values() {
            approver.attach(gate.ballots());
        }
        if let Some(coordinator) = &gate.inner.coordinator {
            coordinator.attach(gate.ballots());
        }
        Ok(gate)
    }
}

#[derive(Debug)]
pub(crate) struct GateInner {
    sink: Arc<dyn AuditSink>,
    approvers: HashMap<String, Arc<dyn Approver>>,
    policies: Policies,
    directory: Directory,
    clock: Arc<dyn Clock>,
    recovery_margin: std::time::Duration,
    coordinator: Option<Arc<dyn Coordinator>>,
    pending: Mutex<HashMap<String, Arc<Pending>>>,
    /// Ids of requests settled lately, so a late vote is told `settled`.
    settled: Mutex<Recent>,
    /// How recent requests ended, by binding, for reviewers of the next.
    history: Mutex<History>,
    per_actor: Mutex<HashMap<Arc<str>, u32>>,
}

/// Recent decisions by binding: at most `PER_BINDING` each, for at most
/// `BINDINGS` bindings, the oldest binding forgotten first.
#[derive(Debug, Default)]
struct History {
    by_binding: HashMap<[u8; 32], Vec<Ended>, DigestHash>,
    order: std::collections::VecDeque<[u8; 32]>,
}

impl History {
    const PER_BINDING: usize = 8;
    const BINDINGS: usize = 10_000;

    fn add(&mut self, binding: [u8; 32], request_id: &str, decision: &Arc<Decision>) {
        let earlier = (request_id.to_owned(), decision.clone());
        let list = self.by_binding.entry(binding).or_insert_with(|| {
            self.order.push_back(binding);
            Vec::new()
        });
        if list.len() == Self::PER_BINDING {
            list.remove(0);
        }
        list.push(earlier);
        if self.order.len() > Self::BINDINGS
            && let Some(old) = self.order.pop_front()
        {
            self.by_binding.remove(&old);
        }
    }
}

/// A request id and how that request ended.
type Ended = (String, Arc<Decision>);

/// Hashes keys that are already uniform and secret, binding digests (HMAC
/// outputs), by their first eight bytes: nobody who cannot compute the
/// HMAC can pick keys that collide, so a keyed hash would add only cost.
type DigestHash = std::hash::BuildHasherDefault<DigestHasher>;

#[derive(Debug, Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut head = [0u8; 8];
        let n = bytes.len().min(8);
        head[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(head);
    }
}

/// The most recent settled request ids, oldest dropped first.
#[derive(Debug, Default)]
struct Recent {
    ids: std::collections::HashSet<Arc<str>>,
    order: std::collections::VecDeque<Arc<str>>,
}

impl Recent {
    const CAPACITY: usize = 10_000;

    fn insert(&mut self, id: &str) {
        let id: Arc<str> = id.into();
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }
}

/// A request waiting for its decision.
#[derive(Debug)]
struct Pending {
    request: Arc<ApprovalRequest>,
    entry: Arc<PolicyEntry>,
    /// Serialises the votes of this request, across their audit writes.
    votes_lock: tokio::sync::Mutex<()>,
    state: Mutex<VoteState>,
}

/// What [`GateInner::admit`] found a vote to be.
enum Admission {
    /// A new vote, to count.
    Count,
    /// The same person's same vote again.
    Redelivered,
}

/// A vote the gate accepted.
#[derive(Debug)]
struct Accepted {
    /// The person, or the identity when the directory does not know it.
    who: String,
    channel: String,
    vote: Vote,
    /// As recorded; `id` is the channel identity.
    reviewer: Reviewer,
}

#[derive(Debug, Default)]
struct VoteState {
    votes: Vec<Accepted>,
    /// Shared: the waiting call, later voters and the approvers' notices
    /// all read the one decision.
    decision: Option<Arc<Decision>>,
    waiter: Option<tokio::sync::oneshot::Sender<Arc<Decision>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; if something did, the data
    // is still consistent (every update is a single assignment).
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    /// Starts building a gate that records to `sink`.
    pub fn builder(sink: Arc<dyn AuditSink>) -> GateBuilder {
        GateBuilder {
            sink,
            approvers: HashMap::new(),
            policies: Vec::new(),
            directory: Directory::new(),
            clock: Arc::new(SystemClock),
            recovery_margin: std::time::Duration::from_secs(3600),
            coordinator: None,
        }
    }

    /// Makes this the gate that gated functions use when they name none and
    /// none is scoped. Set once per process; a second call returns the gate
    /// back as the error.
    pub fn install_global(self) -> Result<(), Gate> {
        crate::private::install_global(self)
    }

    /// Runs `future` with this gate as the one its gated calls use (tests
    /// use this to give each test its own gate).
    pub fn scope<F: Future>(&self, future: F) -> impl Future<Output = F::Output> {
        crate::private::scope(self.clone(), future)
    }

    /// Runs `f` with this gate scoped, for synchronous code.
    pub fn sync_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        crate::private::sync_scope(self.clone(), f)
    }

    /// HMAC-SHA256 of `data` under the audit writer's digest key.
    pub(crate) fn digest(&self, data: &[u8]) -> [u8; 32] {
        self.inner.sink.chain_writer().digest(data)
    }

    /// Looks up the policy, takes the actor's slot, and builds the request.
    fn prepare(&self, call: Call) -> Result<Prepared, ApprovalError> {
        let inner = &self.inner;
        let entry = inner.policies.get(&call.policy).cloned().ok_or_else(|| {
            ApprovalError::UnknownPolicy {
                policy: call.policy.clone(),
            }
        })?;
        let policy = &entry.policy;
        let actor = current_actor();
        if actor.is_none() && policy.require_actor {
            return Err(ApprovalError::NoActor {
                policy: policy.name.clone(),
            });
        }
        let slot = ActorSlot::take(inner, actor.as_ref(), policy.max_pending_per_actor)?;
        let now = inner.clock.now();
        let binding = inner
            .sink
            .chain_writer()
            .binding(&call.action, &call.binding_args);
        let earlier = lock(&inner.history)
            .by_binding
            .get(&binding)
            .map(|list| {
                list.iter()
                    .map(|(request_id, decision)| EarlierDecision {
                        request_id: request_id.clone(),
                        decision: Decision::clone(decision),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let binds_recorded = call.binding_args.as_str() == call.args.as_str();
        let request = Arc::new(ApprovalRequest {
            id: request::new_request_id(now).map_err(|_| ApprovalError::Random)?,
            binding,
            earlier,
            action: call.action,
            policy: policy.clone(),
            policy_digest: entry.digest,
            args: call.args,
            skipped: call.skipped,
            actor,
            resource: call.resource,
            reason: call.reason,
            expires_at: now + policy.timeout(),
        });
        Ok(Prepared {
            entry,
            slot,
            request,
            binds_recorded,
        })
    }

    /// Checks that every gated function linked into this program names a
    /// policy this gate has: call it at start-up, so a missing policy is
    /// reported before any call is made (each call would fail closed).
    pub fn check_registry(&self) -> Result<(), ConfigError> {
        let missing: Vec<(String, String)> = crate::registry::gated_functions()
            .into_iter()
            .filter(|f| !self.inner.policies.contains_key(f.policy()))
            .map(|f| (f.action(), f.policy().to_owned()))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::MissingPolicies { missing })
        }
    }

    /// Where channels report votes.
    pub fn ballots(&self) -> Ballots {
        Ballots {
            gate: Arc::downgrade(&self.inner),
        }
    }

    /// Hands a vote to the gate; see [`Ballots::cast`].
    pub async fn cast(&self, ballot: Ballot) -> Result<BallotOutcome, ApprovalError> {
        self.inner.cast(ballot).await
    }

    /// Asks for approval of `call`, waits for the decision, and runs `body`
    /// only if approved. `rebind` recomputes the unredacted arguments just
    /// before the body runs (`Ok(None)` when they cannot change); if they
    /// differ from what was approved, the body does not run.
    ///
    /// Every ending but the body's own result is an [`ApprovalError`],
    /// converted into the body's error type.
    pub async fn run<T, E, F>(
        &self,
        call: Call,
        rebind: impl FnOnce() -> Result<Option<CanonicalJson>, ApprovalError>,
        body: F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<ApprovalError> + std::fmt::Display,
    {
        let approval = self.approve(call).await?;
        if let Some(args) = rebind()? {
            approval.confirm_args(&args).await?;
        }
        approval.execute(body).await
    }

    /// Asks for approval of `call` and waits for the decision. The
    /// [`Approval`] it returns is the only way to run a gated body.
    ///
    /// The request is built (policy, actor, binding) when this is called;
    /// nothing is recorded or delivered until the future is polled.
    pub fn approve(&self, call: Call) -> impl Future<Output = Result<Approval, ApprovalError>> {
        // Built outside the waiting future, so it holds neither the call nor
        // the actor while it waits (an `async fn` keeps its arguments for
        // its whole life); the rare error is boxed for the same reason.
        let prepared = self.prepare(call).map_err(Box::new);
        self.clone().request(prepared)
    }

    async fn request(
        self,
        prepared: Result<Prepared, Box<ApprovalError>>,
    ) -> Result<Approval, ApprovalError> {
        let inner = &self.inner;
        let Prepared {
            entry,
            slot,
            request,
            binds_recorded,
        } = prepared.map_err(|e| *e)?;
        let policy = &entry.policy;
        // Durable before any reviewer can see the request. (Built in a
        // block so nothing it borrows is held across the write.)
        let record = {
            static NOBODY: std::sync::LazyLock<Actor> =
                std::sync::LazyLock::new(|| Actor::new(NO_ACTOR));
            let actor = request.actor.as_ref().unwrap_or(&NOBODY);
            crate::record::PendingRecord::requested(&crate::record::Requested {
                request_id: &request.id,
                action: &request.action,
                policy: &policy.name,
                policy_digest: &entry.digest,
                args: &request.args,
                skipped: &request.skipped,
                binding: &request.binding,
                actor,
                resource: request.resource.as_deref(),
                reason: request.reason.as_deref(),
            })
            .map_err(ApprovalError::InvalidArguments)?
        };
        inner.sink.append(vec![record]).await?;

        let (waiter, decided) = tokio::sync::oneshot::channel();
        let pending = Arc::new(Pending {
            request: request.clone(),
            entry: entry.clone(),
            votes_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(VoteState {
                waiter: Some(waiter),
                ..VoteState::default()
            }),
        });
        lock(&inner.pending).insert(request.id.clone(), pending.clone());
        // From here on, dropping this future cancels the request.
        let mut guard = CancelOnDrop {
            gate: inner.clone(),
            pending: pending.clone(),
            armed: true,
        };
        // Other processes learn who waits before any reviewer sees it.
        if let Some(coordinator) = &inner.coordinator
            && let Err(e) = coordinator.opened(&request).await
        {
            let why = format!("not shared with the other processes: {e}");
            let standing = Box::pin(inner.finish(&pending, Decision::Cancelled { why })).await;
            guard.armed = false;
            inner.forget(&request.id);
            standing?;
            return Err(ApprovalError::Coordination(e));
        }

        for route in &policy.routes {
            let approver = inner.approvers.get(route).cloned();
            let delivered = match approver {
                Some(approver) => approver.deliver(request.clone(), self.ballots()).await,
                None => Err(ApproverError::Unreachable("not registered".into())),
            };
            if let Err(source) = delivered {
                let standing = Box::pin(inner.finish(
                    &pending,
                    Decision::Cancelled {
                        why: format!("approver {route} unavailable"),
                    },
                ))
                .await;
                if let Ok(decision) = &standing
                    && !matches!(**decision, Decision::Cancelled { .. })
                {
                    // Reviewers on an earlier route decided first: that
                    // decision stands, and is waiting below.
                    break;
                }
                guard.armed = false;
                inner.forget(&request.id);
                let standing = standing?;
                inner.tell_approvers(&request, &standing);
                return Err(ApprovalError::ApproverUnavailable {
                    route: route.clone(),
                    source,
                });
            }
        }

        let decision = match tokio::time::timeout(policy.timeout(), decided).await {
            Ok(Ok(decision)) => decision,
            // The sender lives in the pending state until a decision is
            // sent; losing it means the gate is gone.
            Ok(Err(_)) => Arc::new(Decision::Cancelled {
                why: "gate shut down".into(),
            }),
            Err(_elapsed) => {
                Box::pin(inner.finish(&pending, Decision::Expired)).await?;
                // A vote may have settled it in the meantime: the state says.
                lock(&pending.state)
                    .decision
                    .clone()
                    .unwrap_or_else(|| Arc::new(Decision::Expired))
            }
        };
        guard.armed = false;
        drop(slot);
        inner.forget(&request.id);
        lock(&inner.history).add(request.binding, &request.id, &decision);
        inner.tell_approvers(&request, &decision);
        match &*decision {
            Decision::Approved { .. } => Ok(Approval {
                gate: self.inner.clone(),
                request,
                entry,
                binds_recorded,
            }),
            Decision::Denied { reviewer, comment } => Err(ApprovalError::Denied {
                reviewer: reviewer.clone(),
                comment: comment.clone(),
            }),
            Decision::Expired => Err(ApprovalError::Expired {
                policy: policy.name.clone(),
                timeout: policy.timeout(),
            }),
            Decision::Cancelled { why } => Err(ApprovalError::Cancelled { why: why.clone() }),
        }
    }
}

/// The `actor` recorded when none was in scope.
pub const NO_ACTOR: &str = "none";

/// Proof that one call was approved, for exactly its arguments; only
/// [`Gate::approve`] makes one, and [`execute`](Approval::execute) uses it
/// up.
#[derive(Debug)]
#[must_use = "an approval does nothing until its body is executed"]
pub struct Approval {
    gate: Arc<GateInner>,
    request: Arc<ApprovalRequest>,
    entry: Arc<PolicyEntry>,
    binds_recorded: bool,
}

impl Approval {
    /// The approved request.
    pub fn request(&self) -> &ApprovalRequest {
        &self.request
    }

    /// Checks that `args` (unredacted, as when the call was made) still bind
    /// to what was approved; if they changed while waiting, records the
    /// request as cancelled and refuses.
    pub async fn confirm_args(&self, args: &CanonicalJson) -> Result<(), ApprovalError> {
        // Without redactions the binding is a MAC of the recorded arguments:
        // the same bytes bind the same, with no second MAC to compute.
        let unchanged = if self.binds_recorded && args.as_str() == self.request.args.as_str() {
            true
        } else {
            let writer = self.gate.sink.chain_writer();
            constant_time_eq(
                &writer.binding(&self.request.action, args),
                &self.request.binding,
            )
        };
        if unchanged {
            return Ok(());
        }
        self.gate
            .sink
            .append_event(Event::Cancelled {
                request_id: self.request.id.clone(),
                why: "arguments changed while waiting".into(),
            })
            .await?;
        Err(ApprovalError::ArgumentsChanged)
    }

    /// Runs the approved body and records how it ended (`executed`: `ok`,
    /// `error`, or `panicked`, after which the panic goes on).
    pub async fn execute<T, E, F>(self, body: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<ApprovalError> + std::fmt::Display,
    {
        let result = CatchUnwind(Box::pin(body)).await;
        // Decided before the write: the future must not hold the panic
        // payload (which is not `Sync`) across an await.
        let (outcome, error) = self.outcome_of(&result);
        self.record(outcome, error).await?;
        match result {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// How a body's result is recorded (`Err` is a panic).
    pub(crate) fn outcome_of<T, E: std::fmt::Display>(
        &self,
        result: &Result<Result<T, E>, Box<dyn std::any::Any + Send>>,
    ) -> (Outcome, Option<String>) {
        match result {
            Ok(Ok(_)) => (Outcome::Ok, None),
            Ok(Err(e)) => (
                Outcome::Error,
                self.entry.policy.record_error_text.then(|| e.to_string()),
            ),
            Err(_) => (Outcome::Panicked, None),
        }
    }

    /// Records `executed`.
    pub(crate) async fn record(
        &self,
        outcome: Outcome,
        error: Option<String>,
    ) -> Result<(), ApprovalError> {
        self.gate
            .sink
            .append_event(Event::Executed {
                request_id: self.request.id.clone(),
                outcome,
                error,
            })
            .await?;
        Ok(())
    }
}

/// A request built and ready to record.
struct Prepared {
    entry: Arc<PolicyEntry>,
    /// The actor's place in its quota of waiting requests.
    slot: ActorSlot,
    request: Arc<ApprovalRequest>,
    /// Whether the binding covers exactly the recorded arguments (nothing
    /// was redacted).
    binds_recorded: bool,
}

/// A place in an actor's quota of waiting requests, given back on drop.
struct ActorSlot {
    gate: Arc<GateInner>,
    actor: Option<Arc<str>>,
}

impl ActorSlot {
    fn take(
        gate: &Arc<GateInner>,
        actor: Option<&Actor>,
        limit: Option<u32>,
    ) -> Result<Self, ApprovalError> {
        let id = actor.map_or(NO_ACTOR, |a| a.id.as_str());
        let mut counts = lock(&gate.per_actor);
        // The key is shared by the actor's waiting calls: allocated once.
        let id = match counts.get_key_value(id) {
            Some((key, _)) => key.clone(),
            None => Arc::from(id),
        };
        let count = counts.get(&id).copied().unwrap_or(0);
        if let Some(limit) = limit
            && count >= limit
        {
            return Err(ApprovalError::TooManyPending {
                actor: id.to_string(),
                limit,
            });
        }
        counts.insert(id.clone(), count + 1);
        Ok(Self {
            gate: gate.clone(),
            actor: Some(id),
        })
    }
}

impl Drop for ActorSlot {
    fn drop(&mut self) {
        if let Some(id) = self.actor.take() {
            let mut counts = lock(&self.gate.per_actor);
            if let Some(count) = counts.get_mut(&id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&id);
                }
            }
        }
    }
}

/// Ends a request as `cancelled` if the waiting future is dropped: the
/// state flips at once, so no later vote can approve it, and the record is
/// written right after.
struct CancelOnDrop {
    gate: Arc<GateInner>,
    pending: Arc<Pending>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        const WHY: &str = "caller stopped waiting";
        let decision = Arc::new(Decision::Cancelled { why: WHY.into() });
        let settled_now = {
            let mut state = lock(&self.pending.state);
            if state.decision.is_none() {
                state.decision = Some(decision.clone());
                state.waiter = None;
                true
            } else {
                false
            }
        };
        self.gate.forget(&self.pending.request.id);
        if settled_now {
            let gate = self.gate.clone();
            let request = self.pending.request.clone();
            let record = PendingRecord::cancelled(&request.id, WHY);
            // The sink keeps what it was handed even if this task is not
            // polled to the end; without a runtime there is nowhere to run
            // the write, and the restart scan closes the request instead.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = gate.sink.append(vec![record]).await;
                    // Other processes learn it ended (else its row stays
                    // open, and renewed, until this process stops).
                    if let Some(coordinator) = &gate.coordinator {
                        let _ = coordinator.settle(&request, &decision).await;
                    }
                    gate.tell_approvers(&request, &decision);
                });
            }
        }
    }
}

impl GateInner {
    /// Moves a request from pending to recently settled.
    fn forget(&self, id: &str) {
        lock(&self.pending).remove(id);
        lock(&self.settled).insert(id);
    }

    /// Settles `pending` with `decision` unless it is settled already;
    /// records it first.
    async fn finish(
        &self,
        pending: &Pending,
        decision: Decision,
    ) -> Result<Arc<Decision>, ApprovalError> {
        let _votes = pending.votes_lock.lock().await;
        self.settle(pending, decision, None).await
    }

    /// Settles `pending` with `decision`, recording it first, unless it is
    /// settled already; returns the decision that stands. The caller holds
    /// `votes_lock`, so no other vote can settle it in between.
    ///
    /// `preceding` (the deciding vote's `reviewed` record) is written in the
    /// same append, before the outcome: one write, not two.
    async fn settle(
        &self,
        pending: &Pending,
        decision: Decision,
        preceding: Option<PendingRecord>,
    ) -> Result<Arc<Decision>, ApprovalError> {
        let existing = lock(&pending.state).decision.clone();
        if let Some(existing) = existing {
            if let Some(record) = preceding {
                self.sink.append(vec![record]).await?;
            }
            return Ok(existing);
        }
        // With other processes, the shared store says whether it stands.
        let decision = match &self.coordinator {
            Some(coordinator) => match coordinator.settle(&pending.request, &decision).await {
                Ok(Settlement::Settled) => decision,
                Ok(Settlement::Already { why }) => Decision::Cancelled {
                    why: format!("ended elsewhere: {why}"),
                },
                // An approval the store has not accepted does not stand:
                // the vote fails, and the request stays open.
                Err(e) if matches!(decision, Decision::Approved { .. }) => {
                    return Err(ApprovalError::Coordination(e));
                }
                // Any other ending runs nothing, so it stands here; the
                // store's row lapses with its lease.
                Err(_) => decision,
            },
            None => decision,
        };
        let id = &pending.request.id;
        let policy = &pending.entry.policy;
        let record = match &decision {
            Decision::Approved { reviewers } => {
                PendingRecord::decided("approved", id, &policy.name, reviewers)
            }
            Decision::Denied { reviewer, .. } => {
                PendingRecord::decided("denied", id, &policy.name, std::slice::from_ref(reviewer))
            }
            Decision::Expired => PendingRecord::expired(id, &policy.name, policy.timeout_ms),
            Decision::Cancelled { why } => Ok(PendingRecord::cancelled(id, why)),
        }
        .map_err(AuditError::from)?;
        let batch = match preceding {
            Some(first) => vec![first, record],
            None => vec![record],
        };
        self.sink.append(batch).await?;
        let mut state = lock(&pending.state);
        // A dropped caller flips the state without the votes lock (it
        // cannot wait in `Drop`): its cancellation stands.
        if let Some(existing) = &state.decision {
            return Ok(existing.clone());
        }
        let decision = Arc::new(decision);
        state.decision = Some(decision.clone());
        if let Some(waiter) = state.waiter.take() {
            let _ = waiter.send(decision.clone());
        }
        Ok(decision)
    }

    /// Tells every route of `request` how it ended.
    fn tell_approvers(&self, request: &Arc<ApprovalRequest>, decision: &Decision) {
        for route in &request.policy.routes {
            if let Some(approver) = self.approvers.get(route) {
                // A broken hook must not turn a recorded decision into a
                // failed call; the panic hook has already reported it.
                let _ = catch_unwind(AssertUnwindSafe(|| approver.settled(request, decision)));
            }
        }
    }

    async fn reject(
        &self,
        ballot: &Ballot,
        reviewer: Option<Reviewer>,
        why: RejectReason,
    ) -> Result<BallotOutcome, ApprovalError> {
        self.sink
            .append_event(Event::RejectedVote {
                request_id: ballot.request_id.clone(),
                reviewer,
                channel: ballot.channel.clone(),
                why,
            })
            .await?;
        Ok(BallotOutcome::Rejected(why))
    }

    /// Whether `ballot` may count on `pending`: the checks core makes of
    /// every vote, in order. The caller holds the votes lock.
    fn admit(
        &self,
        pending: &Pending,
        ballot: &Ballot,
        person: Option<&str>,
        who: &str,
    ) -> Result<Admission, RejectReason> {
        let request = &pending.request;
        let policy = &pending.entry.policy;
        if lock(&pending.state).decision.is_some() {
            return Err(RejectReason::Settled);
        }
        if !constant_time_eq(&ballot.binding, &request.binding) {
            return Err(RejectReason::WrongBinding);
        }
        if let Some(actor) = &request.actor {
            let requesters = [Some(actor.id.as_str()), actor.on_behalf_of.as_deref()];
            let is_requester = requesters.into_iter().flatten().any(|r| {
                r == who || r == ballot.identity || self.directory.person_of(r) == Some(who)
            });
            if is_requester {
                return Err(RejectReason::SelfApproval);
            }
        }
        let eligible = policy.approvers.contains(&ballot.identity)
            || person.is_some_and(|p| {
                policy.approvers.iter().any(|a| a == p)
                    || policy.groups.iter().any(|g| self.directory.in_group(p, g))
            });
        if !eligible {
            return Err(RejectReason::NotEligible);
        }
        let state = lock(&pending.state);
        match state.votes.iter().find(|v| v.who == who) {
            None => Ok(Admission::Count),
            // A person's first vote is final; the same vote again is a
            // channel's redelivery, absorbed without a record.
            Some(v) if v.reviewer.id == ballot.identity && v.vote == ballot.vote => {
                Ok(Admission::Redelivered)
            }
            Some(_) => Err(RejectReason::AlreadyVoted),
        }
    }

    /// Records a vote refused before it could be read as one (a forged or
    /// stale signature), if it names a request this gate knows.
    pub(crate) async fn refuse(
        &self,
        request_id: &str,
        channel: &str,
        why: RejectReason,
    ) -> Result<bool, ApprovalError> {
        let known = lock(&self.pending).contains_key(request_id)
            || lock(&self.settled).ids.contains(request_id);
        if known {
            self.sink
                .append_event(Event::RejectedVote {
                    request_id: request_id.to_owned(),
                    reviewer: None,
                    channel: channel.to_owned(),
                    why,
                })
                .await?;
        }
        Ok(known)
    }

    pub(crate) async fn cast(&self, ballot: Ballot) -> Result<BallotOutcome, ApprovalError> {
        self.cast_here_or_forward(ballot, true).await
    }

    /// Casts `ballot`; a ballot for a request this process does not wait
    /// on goes to the coordinator when `may_forward` (never for a ballot
    /// that was itself forwarded here: it would go round).
    pub(crate) async fn cast_here_or_forward(
        &self,
        ballot: Ballot,
        may_forward: bool,
    ) -> Result<BallotOutcome, ApprovalError> {
        let person = self
            .directory
            .person_of(&ballot.identity)
            .map(str::to_owned);
        let mut reviewer = Reviewer::new(ballot.identity.clone());
        reviewer.person.clone_from(&person);
        reviewer.display.clone_from(&ballot.display);

        let pending = lock(&self.pending).get(&ballot.request_id).cloned();
        let Some(pending) = pending else {
            let settled_here = lock(&self.settled).ids.contains(ballot.request_id.as_str());
            if !settled_here
                && may_forward
                && let Some(coordinator) = &self.coordinator
            {
                match Box::pin(coordinator.forward(&ballot))
                    .await
                    .map_err(ApprovalError::Coordination)?
                {
                    Forwarded::Answered(outcome) => return Ok(outcome),
                    // Nobody waits on it: refused here, recorded here.
                    Forwarded::NotWaiting(why) => {
                        return Box::pin(self.reject(&ballot, Some(reviewer), why)).await;
                    }
                }
            }
            let why = if settled_here {
                RejectReason::Settled
            } else {
                RejectReason::UnknownRequest
            };
            return Box::pin(self.reject(&ballot, Some(reviewer), why)).await;
        };
        let _votes = pending.votes_lock.lock().await;
        let request = &pending.request;
        let policy = &pending.entry.policy;
        // People, not identities: the requester may not approve in any
        // channel, whatever the policy says.
        let who = person.clone().unwrap_or_else(|| ballot.identity.clone());
        match self.admit(&pending, &ballot, person.as_deref(), &who) {
            Ok(Admission::Count) => {}
            Ok(Admission::Redelivered) => return Ok(BallotOutcome::Absorbed),
            // Boxed: rare, and kept out of every vote's future.
            Err(why) => return Box::pin(self.reject(&ballot, Some(reviewer), why)).await,
        }
        let record = PendingRecord::reviewed(
            &request.id,
            &reviewer,
            ballot.vote,
            &ballot.channel,
            ballot.comment.as_deref(),
        )
        .map_err(AuditError::from)?;
        // Counted now (this task holds the votes lock, so no other vote
        // sees it), taken back if it cannot be recorded.
        let reached = {
            let mut state = lock(&pending.state);
            let (vote, comment) = (ballot.vote, ballot.comment);
            state.votes.push(Accepted {
                who,
                channel: ballot.channel,
                vote,
                reviewer,
            });
            decide(&state.votes, policy, vote, comment)
        };
        // Settled under the same lock as the vote, so a vote arriving on
        // another route cannot settle it differently in between.
        let written = match reached {
            Some(decision) => Box::pin(self.settle(&pending, decision, Some(record)))
                .await
                .map(|standing| Some(Decision::clone(&standing))),
            None => self
                .sink
                .append(vec![record])
                .await
                .map(|_| None)
                .map_err(Into::into),
        };
        match written {
            Ok(decision) => {
                if decision.is_none() {
                    self.tell_vote(&pending);
                }
                Ok(BallotOutcome::Counted { decision })
            }
            Err(e) => {
                lock(&pending.state).votes.pop();
                Err(e)
            }
        }
    }

    /// Tells every route of a request about the vote just recorded that
    /// did not settle it.
    fn tell_vote(&self, pending: &Pending) {
        let Some((reviewer, vote)) = lock(&pending.state)
            .votes
            .last()
            .map(|v| (v.reviewer.clone(), v.vote))
        else {
            return;
        };
        for route in &pending.request.policy.routes {
            if let Some(approver) = self.approvers.get(route) {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    approver.voted(&pending.request, &reviewer, vote);
                }));
            }
        }
    }
}

/// The policy's rule: any deny denies; enough approvals from different
/// people (through different channels, if the policy says) approve.
fn decide(
    votes: &[Accepted],
    policy: &Policy,
    last_vote: Vote,
    comment: Option<String>,
) -> Option<Decision> {
    if last_vote == Vote::Deny {
        // The deny is the last vote pushed.
        return votes.last().map(|last| Decision::Denied {
            reviewer: last.reviewer.clone(),
            comment,
        });
    }
    let approvals = || votes.iter().filter(|v| v.vote == Vote::Approve);
    let counted = if policy.distinct_channels {
        let mut channels: Vec<&str> = approvals().map(|v| v.channel.as_str()).collect();
        channels.sort_unstable();
        channels.dedup();
        channels.len()
    } else {
        approvals().count()
    };
    (counted >= usize::try_from(policy.required).unwrap_or(usize::MAX)).then(|| {
        Decision::Approved {
            reviewers: approvals().map(|v| v.reviewer.clone()).collect(),
        }
    })
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Runs a future, turning a panic inside it into an `Err` so it can be
/// recorded before it goes on.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
