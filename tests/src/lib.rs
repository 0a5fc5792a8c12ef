//! End-to-end tests of the approval workspace; see `tests/*.rs`.

#![forbid(unsafe_code)]

/// The README's examples, compiled and run as doc tests here, where every
/// crate they use is a dependency.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// `docs/gate.md`: gating a function, submit, deferred calls.
#[doc = include_str!("../../docs/gate.md")]
#[cfg(doctest)]
pub struct DocsGateDoctests;

/// `docs/policies.md`: policies and the directory.
#[doc = include_str!("../../docs/policies.md")]
#[cfg(doctest)]
pub struct DocsPoliciesDoctests;

/// `docs/testing.md`: the mock approver.
#[doc = include_str!("../../docs/testing.md")]
#[cfg(doctest)]
pub struct DocsTestingDoctests;

/// `docs/custom-approver.md`: writing your own channel.
#[doc = include_str!("../../docs/custom-approver.md")]
#[cfg(doctest)]
pub struct DocsCustomApproverDoctests;

/// `docs/slack.md`: approving in Slack.
#[doc = include_str!("../../docs/slack.md")]
#[cfg(doctest)]
pub struct DocsSlackDoctests;

/// `docs/teams.md`: approving in Microsoft Teams.
#[doc = include_str!("../../docs/teams.md")]
#[cfg(doctest)]
pub struct DocsTeamsDoctests;

/// `docs/webhook.md`: the signed webhook.
#[doc = include_str!("../../docs/webhook.md")]
#[cfg(doctest)]
pub struct DocsWebhookDoctests;

/// `docs/decision-api.md`: the decision API and the review console.
#[doc = include_str!("../../docs/decision-api.md")]
#[cfg(doctest)]
pub struct DocsDecisionApiDoctests;

/// `docs/verifying.md`: verifying a log, checkpoints, proofs.
#[doc = include_str!("../../docs/verifying.md")]
#[cfg(doctest)]
pub struct DocsVerifyingDoctests;

/// `docs/audit-chain.md`: writing the audit chain, sinks, keys.
#[doc = include_str!("../../docs/audit-chain.md")]
#[cfg(doctest)]
pub struct DocsAuditChainDoctests;

/// `docs/postgres.md`: several processes and replicas on PostgreSQL.
#[doc = include_str!("../../docs/postgres.md")]
#[cfg(doctest)]
pub struct DocsPostgresDoctests;

/// `docs/credentials.md`: a credential per approved call, brokers.
#[doc = include_str!("../../docs/credentials.md")]
#[cfg(doctest)]
pub struct DocsCredentialsDoctests;
