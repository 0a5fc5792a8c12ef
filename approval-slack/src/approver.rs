//! The Slack approver: posts one message per request to a channel, and
//! replaces it with the outcome once the request ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use approval_core::{ApprovalRequest, Approver, ApproverError, Ballots, Decision};
use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::api::{Identity, PostedMessage, SlackApi, SlackError};
use crate::message::{approval_blocks, outcome_blocks, outcome_text};

/// Posts approval requests to a Slack channel (`chat.postMessage`) and
/// updates each message with its outcome (`chat.update`, from a task of
/// its own, so the gate never waits on Slack for it).
///
/// Votes come back through the interactivity endpoint, which hands them to
/// the gate as `slack:<user id>` ballots.
///
/// ```no_run
/// use std::sync::Arc;
/// use approval_slack::SlackApprover;
/// use approval_slack::api::{BotToken, SlackApi};
///
/// # async fn setup(builder: approval_core::GateBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// let slack = SlackApprover::connect(SlackApi::new(BotToken::new("xoxb-…")), "C0APPROVALS").await?;
/// let gate = builder.approver("slack", Arc::new(slack)).build()?;
/// # let _ = gate;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SlackApprover {
    api: SlackApi,
    channel: String,
    identity: Identity,
    posted: Arc<Mutex<HashMap<String, PostedMessage>>>,
    ballots: Mutex<Option<Ballots>>,
    updates: mpsc::UnboundedSender<(Arc<ApprovalRequest>, Decision)>,
}

impl SlackApprover {
    /// Checks the token (`auth.test`, failing loudly if it is wrong) and
    /// starts the task that updates messages, on the current runtime.
    pub async fn connect(api: SlackApi, channel: impl Into<String>) -> Result<Self, SlackError> {
        let identity = api.auth_test().await?;
        let posted: Arc<Mutex<HashMap<String, PostedMessage>>> = Arc::default();
        let (updates, mut queue) = mpsc::unbounded_channel::<(Arc<ApprovalRequest>, Decision)>();
        let (updater_api, updater_posted) = (api.clone(), posted.clone());
        tokio::spawn(async move {
            while let Some((request, decision)) = queue.recv().await {
                let message = lock(&updater_posted).remove(&request.id);
                if let Some(message) = message {
                    // A failed update leaves the old buttons; a click on
                    // them is refused by the gate as `settled`.
                    let _ = updater_api
                        .update_message(
                            &message,
                            &outcome_text(&request, &decision),
                            &outcome_blocks(&request, &decision),
                        )
                        .await;
                }
            }
        });
        Ok(Self {
            api,
            channel: channel.into(),
            identity,
            posted,
            ballots: Mutex::new(None),
            updates,
        })
    }

    /// The Web API client it posts with.
    pub fn api(&self) -> &SlackApi {
        &self.api
    }

    /// Who the bot is (from `auth.test`).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Where votes go: what the interactivity endpoint casts into (`None`
    /// until a first request was delivered).
    pub fn ballots(&self) -> Option<Ballots> {
        lock(&self.ballots).clone()
    }

    /// The message posted for a request still open.
    pub fn message_of(&self, request_id: &str) -> Option<PostedMessage> {
        lock(&self.posted).get(request_id).cloned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Approver for SlackApprover {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError> {
        lock(&self.ballots).get_or_insert(ballots);
        let text = format!(
            "Approval requested: {} ({})",
            request.action, request.policy.name
        );
        let posted = self
            .api
            .post_message(&self.channel, &text, &approval_blocks(&request))
            .await
            .map_err(|e| match e {
                SlackError::Api { .. } | SlackError::Malformed { .. } => {
                    ApproverError::Refused(e.to_string())
                }
                _ => ApproverError::Unreachable(e.to_string()),
            })?;
        lock(&self.posted).insert(request.id.clone(), posted);
        Ok(())
    }

    fn settled(&self, request: &Arc<ApprovalRequest>, decision: &Decision) {
        // The updater may be gone with its runtime; the message then keeps
        // its buttons, and the gate refuses late clicks.
        let _ = self.updates.send((request.clone(), decision.clone()));
    }
}
