//! The Slack channel: posts one message per request to the channel its
//! policy maps to, and puts on it what [`MessageApprover`] asks: a line per
//! vote while more are needed, then the outcome in place of the buttons.

use std::collections::HashMap;
use std::path::PathBuf;

use approval_core::{ApprovalRequest, ApproverError, Vote};
use async_trait::async_trait;

use crate::api::{Identity, PostedMessage, SlackApi, SlackError};
use crate::message::{
    approval_blocks, escalation_block, outcome_blocks, outcome_text, progress_blocks, reminder,
    restart_blocks,
};
use approval_channel::{MessageApprover, MessageChannel, MessageView};

/// Posts approval requests to Slack (`chat.postMessage`) and keeps each
/// message true (`chat.update`): the shared [`MessageApprover`] over a
/// [`SlackChannel`]. Updates run on the gate's notice outbox, in order,
/// retried with backoff, never on the caller's path; call
/// [`Gate::shutdown`](approval_core::Gate::shutdown) (or
/// [`Gate::drain_notices`](approval_core::Gate::drain_notices)) before the
/// program exits so the last outcome reaches Slack.
///
/// Votes come back through the [interactivity endpoint](crate::interactivity)
/// or [Socket Mode](crate::socket_mode), as `slack:<user id>` ballots.
///
/// ```no_run
/// use std::sync::Arc;
/// use approval_slack::SlackChannel;
/// use approval_slack::api::{BotToken, SlackApi};
///
/// # async fn setup(builder: approval_core::GateBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// let api = SlackApi::new(BotToken::new("xoxb-…"));
/// let slack = SlackChannel::builder(api, "C0APPROVALS")
///     .policy_channel("prod-deploy", "C0RELEASES")
///     .message_store("/var/lib/agent/slack-messages")
///     .connect()
///     .await?;
/// let gate = builder.approver("slack", Arc::new(slack)).build()?;
/// # Ok(())
/// # }
/// ```
pub type SlackApprover = MessageApprover<SlackChannel>;

/// Slack's wire format for [`MessageApprover`]: where each request's
/// message goes, Block Kit, and the Web API calls.
#[derive(Debug)]
pub struct SlackChannel {
    api: SlackApi,
    channel: String,
    policy_channels: HashMap<String, String>,
    identity: Identity,
}

/// How to build a [`SlackApprover`]; from [`SlackChannel::builder`].
#[derive(Debug)]
#[must_use]
pub struct SlackApproverBuilder {
    api: SlackApi,
    channel: String,
    policy_channels: HashMap<String, String>,
    store: Option<PathBuf>,
}

impl SlackApproverBuilder {
    /// Posts requests under `policy` to `channel` instead of the default.
    pub fn policy_channel(mut self, policy: impl Into<String>, channel: impl Into<String>) -> Self {
        self.policy_channels.insert(policy.into(), channel.into());
        self
    }

    /// Keeps where each open request's message is in `dir` (one small file
    /// per request), so that after a restart
    /// [`Gate::recover`](approval_core::Gate::recover) can have their
    /// buttons taken down. Without it, a message a restart orphaned keeps
    /// its buttons (clicks on them are refused as `settled`). One directory
    /// per process.
    pub fn message_store(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store = Some(dir.into());
        self
    }

    /// Checks the token (`auth.test`, failing loudly if it is wrong) and
    /// opens the message store.
    pub async fn connect(self) -> Result<SlackApprover, SlackError> {
        let identity = self.api.auth_test().await?;
        let channel = SlackChannel {
            api: self.api,
            channel: self.channel,
            policy_channels: self.policy_channels,
            identity,
        };
        MessageApprover::open(channel, self.store.as_deref()).map_err(|e| {
            SlackError::MessageStore {
                cause: e.to_string(),
            }
        })
    }
}

impl SlackChannel {
    /// Starts building an approver that posts to `channel` (an id such as
    /// `C0APPROVALS`, or a user id for a direct message).
    pub fn builder(api: SlackApi, channel: impl Into<String>) -> SlackApproverBuilder {
        SlackApproverBuilder {
            api,
            channel: channel.into(),
            policy_channels: HashMap::new(),
            store: None,
        }
    }

    /// [`builder`](Self::builder)`(api, channel).connect()`.
    pub async fn connect(
        api: SlackApi,
        channel: impl Into<String>,
    ) -> Result<SlackApprover, SlackError> {
        Self::builder(api, channel).connect().await
    }

    /// The Web API client it posts with.
    pub fn api(&self) -> &SlackApi {
        &self.api
    }

    /// Who the bot is (from `auth.test`).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The channel requests under `policy` go to.
    pub fn channel_for(&self, policy: &str) -> &str {
        self.policy_channels.get(policy).unwrap_or(&self.channel)
    }
}

/// A Web API failure as the gate sees it: Slack's refusal will not change
/// by trying again; the network may.
fn approver_error(e: SlackError) -> ApproverError {
    match e {
        SlackError::Api { .. } | SlackError::Malformed { .. } => {
            ApproverError::Refused(e.to_string())
        }
        _ => ApproverError::Unreachable(e.to_string()),
    }
}

#[async_trait]
impl MessageChannel for SlackChannel {
    type Message = PostedMessage;

    fn name(&self) -> &'static str {
        "slack"
    }

    async fn post(&self, request: &ApprovalRequest) -> Result<PostedMessage, ApproverError> {
        let text = format!(
            "Approval requested: {} ({})",
            request.action, request.policy.name
        );
        let channel = self.channel_for(&request.policy.name);
        self.api
            .post_message(channel, &text, &approval_blocks(request))
            .await
            .map_err(approver_error)
    }

    async fn update(
        &self,
        message: &PostedMessage,
        view: &MessageView<'_>,
    ) -> Result<(), ApproverError> {
        let (text, blocks) = match view {
            MessageView::Open(status) => {
                let votes: Vec<(String, Vote)> = status
                    .votes
                    .iter()
                    .map(|v| (v.reviewer.id.clone(), v.vote))
                    .collect();
                let mut blocks = progress_blocks(&status.request, &votes, &status.may_vote);
                if status.escalated
                    && let Some(list) = blocks.as_array_mut()
                {
                    // Above the buttons, which stay last.
                    let at = list.len().saturating_sub(1);
                    list.insert(at, escalation_block(&status.request));
                }
                (
                    format!("Approval requested: {}", status.request.action),
                    blocks,
                )
            }
            MessageView::Ended {
                request,
                decision,
                grant,
                ..
            } => (
                outcome_text(request, decision),
                outcome_blocks(request, decision, *grant),
            ),
            MessageView::Left {
                request_id,
                cancelled,
            } => (
                if *cancelled {
                    format!("Request {request_id} cancelled by a restart")
                } else {
                    format!("Request {request_id} ended")
                },
                restart_blocks(request_id, *cancelled),
            ),
            // A view this version does not know: nothing to change.
            _ => return Ok(()),
        };
        self.api
            .update_message(message, &text, &blocks)
            .await
            .map_err(approver_error)
    }

    /// A new message in the request's channel: Slack notifies whom it
    /// mentions, which an edit would not.
    async fn remind(
        &self,
        message: &PostedMessage,
        view: &MessageView<'_>,
    ) -> Result<(), ApproverError> {
        let MessageView::Open(status) = view else {
            return Ok(());
        };
        let (text, blocks) = reminder(status);
        self.api
            .post_message(&message.channel, &text, &blocks)
            .await
            .map(drop)
            .map_err(approver_error)
    }
}
