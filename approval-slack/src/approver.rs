//! The Slack approver: posts one message per request to the channel its
//! policy maps to, shows votes as they come, and replaces the message with
//! the outcome once the request ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use approval_core::{
    ApprovalRequest, Approver, ApproverError, Ballots, Decision, GateBallots, Notice, RejectReason,
    Vote,
};
use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::api::{Identity, PostedMessage, SlackApi, SlackError};
use crate::message::{
    approval_blocks, outcome_blocks, outcome_text, progress_blocks, refusal_text, restart_blocks,
};
use approval_channel::MessageStore;

/// Posts approval requests to Slack (`chat.postMessage`) and keeps each
/// message true: a line per vote while more are needed, then the outcome
/// in place of the buttons (`chat.update`). Updates run on a task of the
/// approver's own, in order, so the gate never waits on Slack for them.
///
/// Votes come back through the [interactivity endpoint](crate::interactivity)
/// or [Socket Mode](crate::socket_mode), as `slack:<user id>` ballots.
///
/// ```no_run
/// use std::sync::Arc;
/// use approval_slack::SlackApprover;
/// use approval_slack::api::{BotToken, SlackApi};
///
/// # async fn setup(builder: approval_core::GateBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// let api = SlackApi::new(BotToken::new("xoxb-…"));
/// let slack = SlackApprover::builder(api, "C0APPROVALS")
///     .policy_channel("prod-deploy", "C0RELEASES")
///     .message_store("/var/lib/agent/slack-messages")
///     .connect()
///     .await?;
/// let gate = builder.approver("slack", Arc::new(slack)).build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SlackApprover {
    api: SlackApi,
    channel: String,
    policy_channels: HashMap<String, String>,
    identity: Identity,
    open: Arc<Mutex<HashMap<String, Open>>>,
    store: Option<Arc<MessageStore<PostedMessage>>>,
    ballots: GateBallots,
    work: mpsc::UnboundedSender<Work>,
}

/// A request still open, and its message.
#[derive(Debug)]
struct Open {
    request: Arc<ApprovalRequest>,
    message: PostedMessage,
    votes: Vec<(String, Vote)>,
    /// Who may still vote, as the gate said at the last vote.
    may_vote: Vec<String>,
}

/// What the updater task does, in the order asked.
enum Work {
    /// Show the votes counted so far on this request's message.
    Progress(String),
    /// Replace the message with the outcome.
    Settled(Arc<ApprovalRequest>, Decision),
    /// Take down the buttons of requests a previous run left: those in the
    /// list were cancelled by this restart.
    Restarted(Arc<approval_core::Recovery>),
    /// Say when everything asked before is done.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// How to build a [`SlackApprover`]; from [`SlackApprover::builder`].
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

    /// Checks the token (`auth.test`, failing loudly if it is wrong),
    /// opens the message store, and starts the task that updates messages,
    /// on the current runtime.
    pub async fn connect(self) -> Result<SlackApprover, SlackError> {
        let identity = self.api.auth_test().await?;
        let store = match &self.store {
            Some(dir) => Some(Arc::new(MessageStore::open(dir).map_err(|e| {
                SlackError::MessageStore {
                    cause: e.to_string(),
                }
            })?)),
            None => None,
        };
        let open = Arc::default();
        let (work, queue) = mpsc::unbounded_channel();
        tokio::spawn(update_messages(
            self.api.clone(),
            Arc::clone(&open),
            store.clone(),
            queue,
        ));
        Ok(SlackApprover {
            api: self.api,
            channel: self.channel,
            policy_channels: self.policy_channels,
            identity,
            open,
            store,
            ballots: GateBallots::default(),
            work,
        })
    }
}

impl SlackApprover {
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
    pub async fn connect(api: SlackApi, channel: impl Into<String>) -> Result<Self, SlackError> {
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

    /// Where votes go: what the interactivity endpoint casts into (`None`
    /// until the approver is registered in a built gate).
    pub fn ballots(&self) -> Option<Ballots> {
        self.ballots.get()
    }

    /// The message posted for a request still open.
    pub fn message_of(&self, request_id: &str) -> Option<PostedMessage> {
        lock(&self.open).get(request_id).map(|o| o.message.clone())
    }

    /// Waits until the messages of requests already ended are updated (or
    /// `limit` has passed): call it before the program exits, so the last
    /// outcome reaches Slack. Returns whether the updates were done.
    ///
    /// ```no_run
    /// # async fn end(slack: approval_slack::SlackApprover) {
    /// slack.flush(std::time::Duration::from_secs(10)).await;
    /// # }
    /// ```
    pub async fn flush(&self, limit: std::time::Duration) -> bool {
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.work.send(Work::Flush(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(limit, finished).await, Ok(Ok(())))
    }

    /// The channel requests under `policy` go to.
    pub fn channel_for(&self, policy: &str) -> &str {
        self.policy_channels.get(policy).unwrap_or(&self.channel)
    }

    /// Tells `user`, privately, why their vote was refused: in the
    /// request's channel, or `fallback` when this approver has no message
    /// for it. Runs on its own task, after Slack's acknowledgement.
    pub(crate) fn refused(
        &self,
        request_id: &str,
        fallback: Option<&str>,
        user: &str,
        why: RejectReason,
    ) {
        let channel = self
            .message_of(request_id)
            .map(|m| m.channel)
            .or_else(|| fallback.map(str::to_owned));
        let Some(channel) = channel else { return };
        let (api, user) = (self.api.clone(), user.to_owned());
        tokio::spawn(async move {
            // If it cannot be shown, the refusal is still in the audit log.
            if let Err(error) = api
                .post_ephemeral(&channel, &user, &refusal_text(why))
                .await
            {
                tracing::warn!(%error, "telling a reviewer why their vote was refused failed");
            }
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The updater task: one Slack call at a time, in the order asked. A
/// failed update leaves the old message (late clicks are refused by the
/// gate), and its store entry, so the next restart still takes it down.
async fn update_messages(
    api: SlackApi,
    open: Arc<Mutex<HashMap<String, Open>>>,
    store: Option<Arc<MessageStore<PostedMessage>>>,
    mut queue: mpsc::UnboundedReceiver<Work>,
) {
    while let Some(work) = queue.recv().await {
        match work {
            Work::Progress(id) => {
                let progress = lock(&open).get(&id).map(|o| {
                    let text = format!("Approval requested: {}", o.request.action);
                    (
                        o.message.clone(),
                        text,
                        progress_blocks(&o.request, &o.votes, &o.may_vote),
                    )
                });
                if let Some((message, text, blocks)) = progress
                    && let Err(error) = api.update_message(&message, &text, &blocks).await
                {
                    tracing::warn!(request_id = %id, %error, "updating the Slack message failed");
                }
            }
            Work::Settled(request, decision) => {
                let message = lock(&open).remove(&request.id).map(|o| o.message);
                let Some(message) = message else { continue };
                let text = outcome_text(&request, &decision);
                let blocks = outcome_blocks(&request, &decision);
                if api.update_message(&message, &text, &blocks).await.is_ok()
                    && let Some(store) = &store
                {
                    store.forget(&request.id);
                }
            }
            Work::Flush(done) => {
                if done.send(()).is_err() {
                    tracing::trace!("a flush's caller stopped waiting");
                }
            }
            Work::Restarted(recovery) => {
                let Some(store) = &store else { continue };
                let held = |id: &str| lock(&open).contains_key(id);
                let api = &api;
                store
                    .take_down_left(&recovery, held, async |id, message, was_cancelled| {
                        let text = if was_cancelled {
                            format!("Request {id} cancelled by a restart")
                        } else {
                            format!("Request {id} ended")
                        };
                        let blocks = restart_blocks(&id, was_cancelled);
                        match api.update_message(&message, &text, &blocks).await {
                            Ok(_) => true,
                            Err(error) => {
                                tracing::warn!(request_id = %id, %error, "taking down a Slack message failed");
                                false
                            }
                        }
                    })
                    .await;
            }
        }
    }
}

#[async_trait]
impl Approver for SlackApprover {
    fn attach(&self, ballots: Ballots) -> Result<(), ApproverError> {
        // One gate per approver: another gate's ballots are refused.
        self.ballots.attach(ballots)
    }

    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError> {
        self.ballots.attach(ballots)?;
        let text = format!(
            "Approval requested: {} ({})",
            request.action, request.policy.name
        );
        let channel = self.channel_for(&request.policy.name);
        let posted = self
            .api
            .post_message(channel, &text, &approval_blocks(&request))
            .await
            .map_err(|e| match e {
                SlackError::Api { .. } | SlackError::Malformed { .. } => {
                    ApproverError::Refused(e.to_string())
                }
                _ => ApproverError::Unreachable(e.to_string()),
            })?;
        let id = request.id.clone();
        lock(&self.open).insert(
            id.clone(),
            Open {
                request,
                message: posted.clone(),
                votes: Vec::new(),
                may_vote: Vec::new(),
            },
        );
        if let Some(store) = &self.store {
            // Posted but not remembered: the call fails closed, and the
            // cancellation the gate then announces replaces the message.
            store
                .remember(&id, &posted)
                .map_err(|e| ApproverError::Refused(format!("message store: {e}")))?;
        }
        Ok(())
    }

    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        let work = match notice {
            // A vote that does not settle the request yet, from any
            // channel: its line goes on the message.
            Notice::Voted {
                request,
                reviewer,
                vote,
            } => {
                // Who may still vote, from the gate (not a copy of ours).
                let ballots = self.ballots.get();
                let may_vote = ballots
                    .and_then(|b| b.status(&request.id))
                    .map(|view| view.may_vote)
                    .unwrap_or_default();
                match lock(&self.open).get_mut(&request.id) {
                    Some(open) => {
                        open.votes.push((reviewer.id.clone(), *vote));
                        open.may_vote = may_vote;
                        Work::Progress(request.id.clone())
                    }
                    None => return Ok(()),
                }
            }
            Notice::Settled { request, decision } => {
                Work::Settled(request.clone(), Decision::clone(decision))
            }
            Notice::Recovered(recovery) => Work::Restarted(recovery.clone()),
            _ => return Ok(()),
        };
        // The updater ends only with this approver.
        self.work
            .send(work)
            .map_err(|_| ApproverError::Unreachable("the message updater has stopped".into()))
    }
}
