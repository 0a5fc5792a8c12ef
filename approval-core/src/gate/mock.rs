//! The mock approver, for tests and CI (feature `mock`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::approver::{Approver, Ballots};
use super::request::{ApprovalRequest, Ballot};
use crate::error::ApproverError;
use approval_audit::Vote;

type Rule = dyn Fn(&ApprovalRequest) -> Option<(Vote, Option<String>)> + Send + Sync;

/// An approver that votes by rule, for tests and CI. Its votes come from
/// the identity `mock:<name>` through channel `mock`, so the audit log shows
/// them as such and `approval verify` counts approvals resting on them.
///
/// It exists only with the `mock` feature, which production builds leave
/// off; nothing in a default build can approve without a person.
///
/// ```
/// use approval_core::MockApprover;
///
/// let ci = MockApprover::approve_all("ci");
/// let strict = MockApprover::deny_all("ci", "not in tests");
/// let by_action = MockApprover::scripted("ci")
///     .on("crm::export", approval_core::Vote::Approve, None)
///     .on("keys::rotate", approval_core::Vote::Deny, Some("never"));
/// assert!(ci.requests().is_empty());
/// ```
pub struct MockApprover {
    name: String,
    /// `mock:<name>`.
    identity: String,
    rule: Box<Rule>,
    delay: Option<Duration>,
    requests: Mutex<Vec<Arc<ApprovalRequest>>>,
}

impl fmt::Debug for MockApprover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockApprover")
            .field("name", &self.name)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl MockApprover {
    /// Votes by `rule`; `None` means no vote (the request waits, expires,
    /// or is decided by a vote cast by hand).
    pub fn with(
        name: impl Into<String>,
        rule: impl Fn(&ApprovalRequest) -> Option<(Vote, Option<String>)> + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        Self {
            identity: format!("mock:{name}"),
            name,
            rule: Box::new(rule),
            delay: None,
            requests: Mutex::default(),
        }
    }

    /// Approves every request.
    pub fn approve_all(name: impl Into<String>) -> Self {
        Self::with(name, |_| Some((Vote::Approve, None)))
    }

    /// Denies every request with `comment`.
    pub fn deny_all(name: impl Into<String>, comment: impl Into<String>) -> Self {
        let comment = comment.into();
        Self::with(name, move |_| Some((Vote::Deny, Some(comment.clone()))))
    }

    /// Never votes: requests wait for votes cast by hand, or expire.
    pub fn silent(name: impl Into<String>) -> Self {
        Self::with(name, |_| None)
    }

    /// Votes per action; build the script with [`ScriptedMock::on`]. Actions
    /// not in the script get no vote.
    pub fn scripted(name: impl Into<String>) -> ScriptedMock {
        ScriptedMock {
            name: name.into(),
            script: HashMap::new(),
        }
    }

    /// Waits `delay` (on tokio's clock) before voting.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The identity its votes come from: `mock:<name>`.
    pub fn identity(&self) -> String {
        self.identity.clone()
    }

    /// Every request delivered so far, in order.
    pub fn requests(&self) -> Vec<Arc<ApprovalRequest>> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A [`MockApprover`] being scripted per action.
#[derive(Debug)]
#[must_use]
pub struct ScriptedMock {
    name: String,
    script: HashMap<String, (Vote, Option<String>)>,
}

impl ScriptedMock {
    /// Votes `vote` (with `comment`) on requests for `action`.
    pub fn on(mut self, action: &str, vote: Vote, comment: Option<&str>) -> Self {
        self.script
            .insert(action.to_owned(), (vote, comment.map(str::to_owned)));
        self
    }

    /// The approver.
    pub fn build(self) -> MockApprover {
        let script = self.script;
        MockApprover::with(self.name, move |request| {
            script.get(request.action.as_ref()).cloned()
        })
    }
}

impl From<ScriptedMock> for MockApprover {
    fn from(scripted: ScriptedMock) -> Self {
        scripted.build()
    }
}

#[async_trait]
impl Approver for MockApprover {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.clone());
        let Some((vote, comment)) = (self.rule)(&request) else {
            return Ok(());
        };
        let mut ballot = Ballot::new(&request, self.identity.as_str(), "mock", vote);
        ballot.comment = comment;
        match self.delay {
            None => {
                ballots
                    .cast(ballot)
                    .await
                    .map_err(|e| ApproverError::Refused(e.to_string()))?;
            }
            Some(delay) => {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let request_id = ballot.request_id.clone();
                    // Nobody waits for a delayed vote: its failure is told here.
                    if let Err(error) = ballots.cast(ballot).await {
                        tracing::warn!(%request_id, %error, "the mock's delayed vote could not be cast");
                    }
                });
            }
        }
        Ok(())
    }

    /// The mock records requests, not what happened after: it keeps no
    /// outbox.
    fn hears_notices(&self) -> bool {
        false
    }
}
