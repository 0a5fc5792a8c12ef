//! Building a gate: policies checked against approvers, before any call.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::background::Background;
use super::broker::CredentialBroker;
use super::deadline::Deadlines;
use super::limits;
use super::outbox::{Outbox, Retry};
use super::policy::{Policies, PolicyEntry};
use super::table::{self, Table};
use super::{Approver, Coordinator, Directory, Gate, GateInner, Policy, PolicyFile};
use approval_audit::AuditSink;
use approval_audit::Clock;

/// The longest timeout a policy may have: a deadline is a clock reading
/// plus the timeout, and must stay one.
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);
/// The most further calls one grant may cover.
const MAX_GRANT_USES: u32 = 1000;

/// Builds a [`Gate`]; [`build`](GateBuilder::build) checks the setup.
#[derive(Debug)]
#[must_use]
pub struct GateBuilder {
    sink: Arc<dyn AuditSink>,
    approvers: HashMap<String, Arc<dyn Approver>>,
    brokers: HashMap<String, Arc<dyn CredentialBroker>>,
    policies: Vec<Policy>,
    directory: Directory,
    clock: Arc<dyn Clock>,
    recovery_margin: std::time::Duration,
    coordinator: Option<Arc<dyn Coordinator>>,
    runtime: Option<tokio::runtime::Handle>,
    notice_retry: Retry,
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
    /// A gate with a directory has a policy naming an approver the
    /// directory does not map to a person: one person could count twice
    /// toward a quorum (as `alice` and as an unmapped `teams:` id).
    #[error("policy {policy} names approver {approver}, who is not in the directory")]
    UnmappedApprover {
        /// The policy.
        policy: String,
        /// The approver as the policy names them.
        approver: String,
    },
    /// A policy names a group the directory does not have: nobody could
    /// approve through it, and a group added later under that name would
    /// silently gain the right.
    #[error("policy {policy} names group {group}, which is not in the directory")]
    UnknownGroup {
        /// The policy.
        policy: String,
        /// The group as the policy names it.
        group: String,
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
    /// The gate's own thread (for its timer and outboxes, when it is built
    /// outside any runtime) could not be started.
    #[error("could not start the gate's background thread: {0}")]
    Background(#[source] std::io::Error),
    /// An approver refused to serve this gate (it serves another).
    #[error("approver {route}: {cause}")]
    Approver {
        /// The route it is registered under.
        route: String,
        /// Why it refused.
        cause: String,
    },
    /// A policy's credential names a broker that is not registered.
    #[error("policy {policy} mints its credential with broker {broker}, which is not registered")]
    UnknownBroker {
        /// The policy.
        policy: String,
        /// The broker it names.
        broker: String,
    },
    /// A policy's credential broker refused its template.
    #[error("policy {policy}: broker {broker}: {cause}")]
    Broker {
        /// The policy.
        policy: String,
        /// The broker.
        broker: String,
        /// What the broker said.
        cause: String,
    },
    /// A policy's rule is not a Cedar expression.
    #[error("policy {policy}: {error}")]
    Condition {
        /// The policy.
        policy: String,
        /// Which rule, and what Cedar said.
        error: super::ConditionError,
    },
    /// Gated functions in this program take a minted credential under a
    /// policy that mints none, or take none under one that mints one.
    #[error("gated functions and their policies disagree on a minted credential: {}", mismatched.iter().map(|(action, policy)| format!("{action} under {policy}")).collect::<Vec<_>>().join(", "))]
    CredentialMismatch {
        /// Each function's action and its policy.
        mismatched: Vec<(String, String)>,
    },
    /// Gated functions in this program name policies the gate lacks.
    #[error("gated functions name policies this gate does not have: {}", missing.iter().map(|(action, policy)| format!("{action} needs {policy}")).collect::<Vec<_>>().join(", "))]
    MissingPolicies {
        /// Each function's action and the policy it names.
        missing: Vec<(String, String)>,
    },
}

impl Gate {
    /// Starts building a gate that records to `sink`.
    pub fn builder(sink: Arc<dyn AuditSink>) -> GateBuilder {
        GateBuilder {
            sink,
            approvers: HashMap::new(),
            brokers: HashMap::new(),
            policies: Vec::new(),
            directory: Directory::new(),
            clock: Arc::new(approval_audit::clock::SystemClock),
            recovery_margin: std::time::Duration::from_secs(3600),
            coordinator: None,
            runtime: None,
            notice_retry: Retry::default(),
        }
    }
}

impl GateBuilder {
    /// Registers an approver under a route name policies refer to.
    pub fn approver(mut self, route: impl Into<String>, approver: Arc<dyn Approver>) -> Self {
        self.approvers.insert(route.into(), approver);
        self
    }

    /// Registers a credential broker under the name policies'
    /// [`credential`](Policy::credential) refers to.
    pub fn broker(mut self, name: impl Into<String>, broker: Arc<dyn CredentialBroker>) -> Self {
        self.brokers.insert(name.into(), broker);
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

    /// Runs the gate's own tasks (its deadline timer, its approvers'
    /// notice outboxes) on `runtime`. By default they run on the runtime
    /// current when [`build`](Self::build) is called or, outside any, on a
    /// thread of the gate's own. Either must outlive the gate.
    pub fn runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// How a failed [`Approver::notify`](super::Approver::notify) is
    /// retried: `attempts` tries in all, waiting `first_delay` after the
    /// first failure and twice as long after each next one, at most
    /// `max_delay`. By default 6 tries from 200 ms up to 10 s apart.
    pub fn notice_retry(
        mut self,
        attempts: u32,
        first_delay: std::time::Duration,
        max_delay: std::time::Duration,
    ) -> Self {
        self.notice_retry = Retry {
            attempts: attempts.max(1),
            first_delay,
            max_delay,
        };
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
            if policy.max_pending_per_actor == 0 {
                return Err(invalid("allows no pending request per actor"));
            }
            if policy.timeout() > MAX_TIMEOUT {
                return Err(invalid("has a timeout longer than 366 days"));
            }
            if let Some(after) = policy.reminder()
                && (after.is_zero() || after >= policy.timeout())
            {
                return Err(invalid("reminds at once or only after its timeout"));
            }
            if let Some(after) = policy.escalation() {
                if after.is_zero() || after >= policy.timeout() {
                    return Err(invalid("escalates at once or only after its timeout"));
                }
                if policy.escalate_routes.is_empty() && policy.escalate_groups.is_empty() {
                    return Err(invalid("escalates to no route and no group"));
                }
            } else if !policy.escalate_routes.is_empty() || !policy.escalate_groups.is_empty() {
                return Err(invalid(
                    "names escalation routes or groups but no escalation time",
                ));
            }
            if let Some(credential) = &policy.credential {
                if credential.lifetime_ms == 0 || credential.lifetime() > MAX_TIMEOUT {
                    return Err(invalid(
                        "gives its credential a zero lifetime or one longer than 366 days",
                    ));
                }
                if policy.shadow {
                    // Shadow calls are approved by nobody: nothing to mint for.
                    return Err(invalid(
                        "is in shadow mode and names a credential, which is minted only for an approved call",
                    ));
                }
                let broker = self.brokers.get(&credential.broker).ok_or_else(|| {
                    ConfigError::UnknownBroker {
                        policy: policy.name.clone(),
                        broker: credential.broker.clone(),
                    }
                })?;
                broker
                    .check_template(&credential.template)
                    .map_err(|e| ConfigError::Broker {
                        policy: policy.name.clone(),
                        broker: credential.broker.clone(),
                        cause: e.to_string(),
                    })?;
            }
            if policy.credential.is_some() && policy.rules.iter().any(|r| r.required == 0) {
                return Err(invalid(
                    "names a credential and a rule needing no approval, and credentials are minted only for an approved call",
                ));
            }
            if let Some(grant) = &policy.grant {
                if grant.max_uses == 0 || grant.max_uses > MAX_GRANT_USES {
                    return Err(invalid("lets a grant cover no call, or more than 1000"));
                }
                if grant.max_within_ms == 0 || grant.max_within() > MAX_TIMEOUT {
                    return Err(invalid(
                        "lets a grant last no time, or longer than 366 days",
                    ));
                }
                if policy.shadow {
                    return Err(invalid(
                        "is in shadow mode and allows grants, which only an approval makes",
                    ));
                }
                if policy.credential.is_some() {
                    return Err(invalid(
                        "names a credential and allows grants, and a call a grant covers gets no credential",
                    ));
                }
                if self.coordinator.is_some() {
                    // Each process would count uses of its own.
                    return Err(invalid(
                        "allows grants, which one process keeps, and the gate shares requests with other processes",
                    ));
                }
            }
            let conditions = if policy.rules.is_empty() {
                None
            } else {
                let parsed = super::Conditions::new(&policy.rules).map_err(|error| {
                    ConfigError::Condition {
                        policy: policy.name.clone(),
                        error,
                    }
                })?;
                Some(Arc::new(parsed))
            };
            if !self.directory.is_empty()
                && let Some(approver) = policy
                    .approvers
                    .iter()
                    .find(|a| self.directory.resolve(a).is_none())
            {
                return Err(ConfigError::UnmappedApprover {
                    policy: policy.name.clone(),
                    approver: approver.clone(),
                });
            }
            if let Some(group) = policy
                .groups
                .iter()
                .chain(&policy.escalate_groups)
                .find(|g| !self.directory.has_group(g))
            {
                return Err(ConfigError::UnknownGroup {
                    policy: policy.name.clone(),
                    group: group.clone(),
                });
            }
            if let Some(route) = policy
                .routes
                .iter()
                .chain(&policy.escalate_routes)
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
                conditions,
            };
            if policies.insert(name.clone(), Arc::new(entry)).is_some() {
                return Err(ConfigError::DuplicatePolicy(name));
            }
        }
        let background = match self.runtime {
            Some(handle) => Background::on(handle),
            None => Background::start().map_err(ConfigError::Background)?,
        };
        let mut outboxes = HashMap::new();
        for (route, approver) in &self.approvers {
            if !approver.hears_notices() {
                continue;
            }
            let outbox = Outbox::start(&background, route, approver.clone(), self.notice_retry);
            outboxes.insert(route.clone(), outbox);
        }
        let deadlines = Arc::new(Deadlines::default());
        let reminders = Arc::new(Deadlines::default());
        let escalations = Arc::new(Deadlines::default());
        let gate = Gate {
            inner: Arc::new(GateInner {
                sink: self.sink,
                approvers: self.approvers,
                brokers: self.brokers,
                policies,
                directory: self.directory,
                clock: self.clock,
                recovery_margin: self.recovery_margin,
                coordinator: self.coordinator,
                table: Table::default(),
                deferred: super::deferred::Deferred::default(),
                per_actor: limits::Counts::default(),
                deadlines: deadlines.clone(),
                reminders: reminders.clone(),
                escalations: escalations.clone(),
                outboxes,
                background,
                closing: AtomicBool::new(false),
                refusals: super::ballot_box::Refusals::default(),
                grants: super::grant::Grants::default(),
            }),
        };
        gate.inner
            .background
            .spawn(table::expiry_timer(Arc::downgrade(&gate.inner), deadlines));
        gate.inner.background.spawn(table::milestone_timer(
            Arc::downgrade(&gate.inner),
            reminders,
            GateInner::remind,
        ));
        gate.inner.background.spawn(table::milestone_timer(
            Arc::downgrade(&gate.inner),
            escalations,
            |gate, pending| {
                let escalating = gate.clone();
                gate.background
                    .spawn(async move { escalating.escalate(&pending).await });
            },
        ));
        for (route, approver) in &gate.inner.approvers {
            approver
                .attach(gate.ballots_for(route))
                .map_err(|e| ConfigError::Approver {
                    route: route.clone(),
                    cause: e.to_string(),
                })?;
        }
        if let Some(coordinator) = &gate.inner.coordinator {
            coordinator.attach(gate.ballots());
        }
        Ok(gate)
    }
}
