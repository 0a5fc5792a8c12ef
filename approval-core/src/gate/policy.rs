//! Policies: who must approve what, how many, and how long to wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use approval_audit::CanonicalJson;

/// A policy, in the JSON shape its digest is taken over (and that policy
/// files load into). Members at their defaults are left out of that
/// shape, so a field added in a later version does not change the digest
/// of a policy that does not use it.
///
/// ```
/// use std::time::Duration;
/// use approval_core::Policy;
///
/// let policy = Policy::new("data-export", ["slack"], Duration::from_secs(900))
///     .required(2)
///     .approvers(["alice", "bob", "carol"]);
/// assert_eq!(policy.required, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Policy {
    /// The name gated functions use.
    pub name: String,
    /// The approvers (by their registered route names) a request goes to.
    pub routes: Vec<String>,
    /// Approvals needed, from different people; any deny denies.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub required: u32,
    /// People (directory names) or channel identities (`slack:U1`) who may
    /// approve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Directory groups whose members may approve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How long to wait for a decision, in milliseconds.
    pub timeout_ms: u64,
    /// Whether the approvals must come through distinct channels.
    #[serde(default, skip_serializing_if = "is_false")]
    pub distinct_channels: bool,
    /// Whether a failed body's error text goes into its `executed` record
    /// (it can carry secrets, so it does not by default).
    #[serde(default, skip_serializing_if = "is_false")]
    pub record_error_text: bool,
    /// Whether a call with no actor in scope is refused.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_actor: bool,
    /// How many requests one actor may have waiting at once, across the
    /// gate: [`DEFAULT_MAX_PENDING_PER_ACTOR`] unless raised, so an agent
    /// cannot flood reviewers.
    #[serde(
        default = "default_max_pending",
        skip_serializing_if = "is_default_max_pending"
    )]
    pub max_pending_per_actor: u32,
    /// Whether a request may be made for a principal the gate's directory
    /// does not know (refused by default, as
    /// [`UnknownPrincipal`](crate::ApprovalError::UnknownPrincipal): the
    /// gate could not stop that principal approving their own request).
    /// Part of the policy digest when set, so the opt-out is on record.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_unknown_principal: bool,
    /// How long after a request opens its reviewers are reminded, once,
    /// while it is still open ([`Notice::Reminder`](crate::Notice::Reminder)),
    /// in milliseconds; no reminder when absent. Shorter than the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_after_ms: Option<u64>,
    /// Shadow mode: a call is not held. The gate records `would_require`
    /// (what would have been asked, under this policy) and the body runs at
    /// once, so a team can see what a policy would stop before it does.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shadow: bool,
    /// What a request does when a route cannot be delivered to (the
    /// channel is down): [`Unreachable::Deny`] unless set. Never allows.
    #[serde(default, skip_serializing_if = "Unreachable::is_deny")]
    pub unreachable: Unreachable,
    /// How long after a request opens it is escalated while still open,
    /// in milliseconds: delivered to [`escalate_routes`](Self::escalate_routes)
    /// as well, and [`escalate_groups`](Self::escalate_groups)' members may
    /// vote too. No escalation when absent. Shorter than the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_after_ms: Option<u64>,
    /// The routes an escalated request goes to as well.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate_routes: Vec<String>,
    /// The directory groups whose members may vote once it is escalated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate_groups: Vec<String>,
    /// The credential each approved call's body gets, minted for that call
    /// alone and revoked when it ends; none when absent (the body runs with
    /// the process's own privileges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialPolicy>,
    /// When its reviewers can be reached; always when absent. A request
    /// asked outside them is unattended: [`unreachable`](Self::unreachable)
    /// says what happens (deny, wait, or queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attended: Option<super::AttendedHours>,
    /// Rules that decide by a call's facts how many approvals it needs
    /// (see [`Rule`](super::Rule)): the first whose condition holds
    /// applies, and none holding leaves [`required`](Self::required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<super::Rule>,
    /// Whether, and how far, a reviewer may approve a call together with
    /// more calls like it (see [`GrantPolicy`]); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantPolicy>,
}

/// How far a reviewer may grant more calls with an approval (`grant = {
/// max_uses = 5, max_within_ms = 3600000, match = ["table"] }` in a
/// policy file): at most `max_uses` more calls within `max_within_ms` of
/// the approval, each of the same action, by the same actor, under the
/// same rule, and with the same values of the `match` arguments as the
/// approved call. A quorum policy needs its quorum for the grant too.
///
/// ```
/// use std::time::Duration;
/// use approval_core::Policy;
///
/// let policy = Policy::new("data-export", ["slack"], Duration::from_secs(900))
///     .grants(5, Duration::from_secs(3600), ["table"]);
/// let grant = policy.grant.as_ref().unwrap();
/// assert_eq!((grant.max_uses, grant.max_within()), (5, Duration::from_secs(3600)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GrantPolicy {
    /// The most further calls one grant may cover.
    pub max_uses: u32,
    /// The longest a grant may last after its approval, in milliseconds.
    pub max_within_ms: u64,
    /// The arguments every covered call must have equal to the approved
    /// call's (by their recorded values, so redacted ones compare by
    /// digest). The approved call must have each of them.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<String>,
}

impl GrantPolicy {
    /// The longest a grant may last.
    pub fn max_within(&self) -> Duration {
        Duration::from_millis(self.max_within_ms)
    }

    /// Whether `terms` are within the caps.
    pub fn allows(&self, terms: &approval_audit::GrantTerms) -> bool {
        (1..=self.max_uses).contains(&terms.uses)
            && (1..=self.max_within_ms).contains(&terms.within_ms)
    }

    /// The most a reviewer may grant: the caps themselves, what a channel
    /// with one "approve and grant" button offers.
    pub fn widest(&self) -> approval_audit::GrantTerms {
        approval_audit::GrantTerms::new(self.max_uses, self.max_within())
    }
}

/// Which broker mints an approved call's credential, by which template,
/// for how long at most (`credential = { broker = "warehouse", template =
/// "select-table", lifetime_ms = 900000 }` in a policy file).
///
/// ```
/// use std::time::Duration;
/// use approval_core::Policy;
///
/// let policy = Policy::new("data-export", ["slack"], Duration::from_secs(900))
///     .credential("warehouse", "select-table", Duration::from_secs(600));
/// let credential = policy.credential.as_ref().unwrap();
/// assert_eq!(credential.lifetime(), Duration::from_secs(600));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CredentialPolicy {
    /// The broker's name in the gate ([`GateBuilder::broker`](crate::GateBuilder::broker)).
    pub broker: String,
    /// The broker's template that derives the scope from the arguments.
    pub template: String,
    /// The longest the credential may work, in milliseconds: the body
    /// should end well within it.
    pub lifetime_ms: u64,
}

impl CredentialPolicy {
    /// The longest the credential may work.
    pub fn lifetime(&self) -> Duration {
        Duration::from_millis(self.lifetime_ms)
    }
}

/// What a request does when one of its routes cannot be delivered to
/// (`unreachable` in a policy file: `"deny"`, `"wait"` or `"queue"`). None ever
/// lets the call run unapproved.
///
/// ```
/// use std::time::Duration;
/// use approval_core::{Policy, Unreachable};
///
/// let policy = Policy::new("data-export", ["slack", "api"], Duration::from_secs(600))
///     .when_unreachable(Unreachable::Wait);
/// assert_eq!(policy.unreachable, Unreachable::Wait);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Unreachable {
    /// The request is cancelled (`approver X unavailable`) and the call
    /// refused with [`ApproverUnavailable`](crate::ApprovalError::ApproverUnavailable):
    /// fail closed at once.
    #[default]
    Deny,
    /// The failure is traced and the request stays open for the routes that
    /// did get it (and the decision API, the console); it expires at its
    /// deadline if nobody decides.
    Wait,
    /// As `Wait`, and the caller does not wait: it gets
    /// [`Pending`](crate::ApprovalError::Pending) at once, as a deferred
    /// call does, and the request (recorded `queued`) stays open across a
    /// restart until its deadline. The same call made deferred
    /// (`#[requires_approval(defer)]`) later runs once if it was approved.
    Queue,
}

impl Unreachable {
    #[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
    fn is_deny(&self) -> bool {
        *self == Self::Deny
    }
}

fn widened<'a>(
    own: &'a [String],
    added: &'a [String],
    escalated: bool,
) -> impl Iterator<Item = &'a String> {
    own.iter().chain(if escalated { added } else { &[] })
}

/// How many requests one actor may have waiting at once unless its
/// policy says otherwise ([`Policy::max_pending_per_actor`]).
pub const DEFAULT_MAX_PENDING_PER_ACTOR: u32 = 16;

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_false(b: &bool) -> bool {
    !*b
}

fn default_max_pending() -> u32 {
    DEFAULT_MAX_PENDING_PER_ACTOR
}

fn is_default_max_pending(n: &u32) -> bool {
    *n == DEFAULT_MAX_PENDING_PER_ACTOR
}

impl Policy {
    /// A policy needing one approval from the named approvers.
    pub fn new<R: Into<String>>(
        name: impl Into<String>,
        routes: impl IntoIterator<Item = R>,
        timeout: Duration,
    ) -> Self {
        Self {
            name: name.into(),
            routes: routes.into_iter().map(Into::into).collect(),
            required: 1,
            approvers: Vec::new(),
            groups: Vec::new(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            distinct_channels: false,
            record_error_text: false,
            require_actor: false,
            max_pending_per_actor: DEFAULT_MAX_PENDING_PER_ACTOR,
            allow_unknown_principal: false,
            remind_after_ms: None,
            shadow: false,
            unreachable: Unreachable::Deny,
            escalate_after_ms: None,
            escalate_routes: Vec::new(),
            escalate_groups: Vec::new(),
            credential: None,
            attended: None,
            rules: Vec::new(),
            grant: None,
        }
    }

    /// Sets how many approvals from different people are needed.
    #[must_use]
    pub fn required(mut self, n: u32) -> Self {
        self.required = n;
        self
    }

    /// Adds people or channel identities who may approve.
    #[must_use]
    pub fn approvers<S: Into<String>>(mut self, who: impl IntoIterator<Item = S>) -> Self {
        self.approvers.extend(who.into_iter().map(Into::into));
        self
    }

    /// Adds directory groups whose members may approve.
    #[must_use]
    pub fn groups<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> Self {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    /// Requires the approvals to come through distinct channels.
    #[must_use]
    pub fn distinct_channels(mut self) -> Self {
        self.distinct_channels = true;
        self
    }

    /// Records a failed body's error text in its `executed` record.
    #[must_use]
    pub fn record_error_text(mut self) -> Self {
        self.record_error_text = true;
        self
    }

    /// Refuses calls made with no actor in scope.
    #[must_use]
    pub fn require_actor(mut self) -> Self {
        self.require_actor = true;
        self
    }

    /// How many requests one actor may have waiting at once (by default
    /// [`DEFAULT_MAX_PENDING_PER_ACTOR`]); `u32::MAX` for no limit.
    #[must_use]
    pub fn max_pending_per_actor(mut self, n: u32) -> Self {
        self.max_pending_per_actor = n;
        self
    }

    /// Allows requests for principals the directory does not know (see
    /// [`Policy::allow_unknown_principal`]).
    #[must_use]
    pub fn allow_unknown_principal(mut self) -> Self {
        self.allow_unknown_principal = true;
        self
    }

    /// Reminds the reviewers of a request still open `after` it opened
    /// (once; see [`Notice::Reminder`](crate::Notice::Reminder)). Part of
    /// the policy digest when set.
    ///
    /// ```
    /// use std::time::Duration;
    /// use approval_core::Policy;
    ///
    /// let policy = Policy::new("data-export", ["slack"], Duration::from_secs(3600))
    ///     .remind_after(Duration::from_secs(600));
    /// assert_eq!(policy.reminder(), Some(Duration::from_secs(600)));
    /// ```
    #[must_use]
    pub fn remind_after(mut self, after: Duration) -> Self {
        self.remind_after_ms = Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Escalates a request still open `after` it opened: it goes to
    /// `routes` as well, and the members of `groups` may vote too (the
    /// `escalated` record says so first). Part of the policy digest when
    /// set.
    ///
    /// ```
    /// use std::time::Duration;
    /// use approval_core::Policy;
    ///
    /// let policy = Policy::new("data-export", ["slack"], Duration::from_secs(3600))
    ///     .groups(["data-owners"])
    ///     .escalate_after(Duration::from_secs(1800), ["pager"], ["security-leads"]);
    /// assert_eq!(policy.escalation(), Some(Duration::from_secs(1800)));
    /// ```
    #[must_use]
    pub fn escalate_after<R: Into<String>, G: Into<String>>(
        mut self,
        after: Duration,
        routes: impl IntoIterator<Item = R>,
        groups: impl IntoIterator<Item = G>,
    ) -> Self {
        self.escalate_after_ms = Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        self.escalate_routes = routes.into_iter().map(Into::into).collect();
        self.escalate_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// The routes a request goes to: its own, and once `escalated`, its
    /// escalation routes.
    pub(crate) fn routes_with(&self, escalated: bool) -> impl Iterator<Item = &String> {
        widened(&self.routes, &self.escalate_routes, escalated)
    }

    /// The groups whose members may vote: its own, and once `escalated`,
    /// its escalation groups.
    pub(crate) fn groups_with(&self, escalated: bool) -> impl Iterator<Item = &String> {
        widened(&self.groups, &self.escalate_groups, escalated)
    }

    /// What an escalation adds, groups first, then routes (as channels
    /// name them on an escalated request's message).
    pub fn escalation_targets(&self) -> impl Iterator<Item = &String> {
        self.escalate_groups.iter().chain(&self.escalate_routes)
    }

    /// When a request still open is escalated, if it is.
    pub fn escalation(&self) -> Option<Duration> {
        self.escalate_after_ms.map(Duration::from_millis)
    }

    /// Shadow mode: calls run at once, each recorded as `would_require`
    /// (see [`shadow`](Self::shadow)); for rolling a policy out. Part of
    /// the policy digest.
    ///
    /// ```
    /// use std::time::Duration;
    /// use approval_core::Policy;
    ///
    /// let trial = Policy::new("data-export", ["slack"], Duration::from_secs(600)).in_shadow();
    /// assert!(trial.shadow);
    /// ```
    #[must_use]
    pub fn in_shadow(mut self) -> Self {
        self.shadow = true;
        self
    }

    /// Gives each approved call's body a credential that `broker` mints by
    /// `template` from the approved arguments, working at most `lifetime`,
    /// and revoked when the body ends (see [`CredentialPolicy`]). A gated
    /// function under this policy takes the credential as its
    /// `credential = ..` parameter. Part of the policy digest when set.
    #[must_use]
    pub fn credential(
        mut self,
        broker: impl Into<String>,
        template: impl Into<String>,
        lifetime: Duration,
    ) -> Self {
        self.credential = Some(CredentialPolicy {
            broker: broker.into(),
            template: template.into(),
            lifetime_ms: u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
        });
        self
    }

    /// Reviewers attend only in `hours`: a request outside them is
    /// unattended, and [`when_unreachable`](Self::when_unreachable) says
    /// what happens (by default it is denied). Part of the policy digest
    /// when set.
    ///
    /// ```
    /// use std::time::Duration;
    /// use approval_core::{AttendedHours, Policy, Unreachable};
    ///
    /// let office = AttendedHours::new(["mon", "tue", "wed", "thu", "fri"], "09:00", "18:00", "+01:00")?;
    /// let policy = Policy::new("data-export", ["slack"], Duration::from_secs(3600))
    ///     .attended(office)
    ///     .when_unreachable(Unreachable::Queue);
    /// assert!(policy.attended.is_some());
    /// # Ok::<(), approval_core::HoursError>(())
    /// ```
    #[must_use]
    pub fn attended(mut self, hours: super::AttendedHours) -> Self {
        self.attended = Some(hours);
        self
    }

    /// Adds a rule: a call for which the Cedar condition `when` holds (and
    /// no earlier rule does) needs `required` approvals; `0` lets it run
    /// unheld, recorded `exempted`. Part of the policy digest when set.
    ///
    /// ```
    /// use std::time::Duration;
    /// use approval_core::Policy;
    ///
    /// let policy = Policy::new("payment", ["slack"], Duration::from_secs(900))
    ///     .rule("context.args.amount_cents > 1000000", 2)
    ///     .rule("context.args.amount_cents < 10000", 0);
    /// assert_eq!(policy.rules.len(), 2);
    /// ```
    #[must_use]
    pub fn rule(mut self, when: impl Into<String>, required: u32) -> Self {
        self.rules.push(super::Rule::new(when, required));
        self
    }

    /// Lets reviewers approve a call together with up to `max_uses` more
    /// like it within `max_within`, the `pinned` arguments equal (see
    /// [`GrantPolicy`]). Part of the policy digest when set.
    #[must_use]
    pub fn grants<S: Into<String>>(
        mut self,
        max_uses: u32,
        max_within: Duration,
        pinned: impl IntoIterator<Item = S>,
    ) -> Self {
        self.grant = Some(GrantPolicy {
            max_uses,
            max_within_ms: u64::try_from(max_within.as_millis()).unwrap_or(u64::MAX),
            pinned: pinned.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// The approvals a call needs when `rule` (a place in
    /// [`rules`](Self::rules)) applied, or none did: that rule's count, or
    /// [`required`](Self::required).
    ///
    /// ```
    /// use std::time::Duration;
    /// use approval_core::Policy;
    ///
    /// let policy = Policy::new("payment", ["slack"], Duration::from_secs(900)).rule("true", 3);
    /// assert_eq!((policy.required_under(Some(0)), policy.required_under(None)), (3, 1));
    /// ```
    pub fn required_under(&self, rule: Option<usize>) -> u32 {
        rule.and_then(|at| self.rules.get(at))
            .map_or(self.required, |r| r.required)
    }

    /// What a request does when a route cannot be delivered to.
    #[must_use]
    pub fn when_unreachable(mut self, unreachable: Unreachable) -> Self {
        self.unreachable = unreachable;
        self
    }

    /// When reviewers are reminded, if they are.
    pub fn reminder(&self) -> Option<Duration> {
        self.remind_after_ms.map(Duration::from_millis)
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// SHA-256 of the policy's canonical JSON: the `policy_digest` an
    /// auditor can recompute from the policy file.
    pub fn digest(&self) -> [u8; 32] {
        let json = CanonicalJson::from_serialize(self).map_or_else(
            |e| format!("unserialisable policy: {e}"),
            |j| j.as_str().to_owned(),
        );
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, json.as_bytes()).as_ref());
        out
    }
}

/// A policy with its digest, as the gate keeps it.
#[derive(Debug)]
pub(crate) struct PolicyEntry {
    pub(crate) policy: Arc<Policy>,
    pub(crate) digest: [u8; 32],
    /// The policy's rules, parsed; `None` when it has none.
    pub(crate) conditions: Option<Arc<super::Conditions>>,
}

impl PolicyEntry {
    /// Whether its calls run at once, held by nobody: in shadow mode, or
    /// under a rule that needs no approval.
    pub(crate) fn runs_unheld(&self) -> bool {
        self.policy.shadow || self.policy.required == 0
    }

    /// The entry a call under rule `rule` is held by: the same policy and
    /// digest, needing the rule's number of approvals.
    pub(crate) fn under_rule(self: &Arc<Self>, rule: usize) -> Arc<Self> {
        let required = self.policy.required_under(Some(rule));
        if required == self.policy.required {
            return self.clone();
        }
        let mut policy = (*self.policy).clone();
        policy.required = required;
        Arc::new(Self {
            policy: Arc::new(policy),
            digest: self.digest,
            conditions: self.conditions.clone(),
        })
    }
}

pub(crate) type Policies = HashMap<String, Arc<PolicyEntry>>;
