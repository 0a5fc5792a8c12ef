//! The Teams channel: posts one Adaptive Card per request to the
//! conversation its policy maps to, and puts on it what [`MessageApprover`]
//! asks: a line per vote while more are needed, then the outcome in place
//! of the actions (TEAMS.md §2).

use std::collections::HashMap;
use std::path::PathBuf;

use approval_core::{ApprovalRequest, ApproverError};
use async_trait::async_trait;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::{Value, json};

use approval_channel::{MessageApprover, MessageChannel, MessageView, StoredMessage};

use crate::card::{
    approval_card, attachment, escalation_line, outcome_card, progress_card, reminder_card,
    restart_card,
};
use crate::connector::{Connector, TeamsError};

/// Where a request's card goes: a conversation on a Bot Connector service
/// URL (TEAMS.md §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    service_url: String,
    place: Place,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// An existing conversation: a chat, or a channel thread.
    Conversation(String),
    /// A new thread in a channel for each request.
    Channel { channel: String, tenant: String },
    /// A 1:1 chat with a user (their `29:` id), created on first use.
    Chat { user: String, tenant: String },
}

impl Target {
    /// Each request starts a new thread in channel `channel_id`
    /// (`19:…@thread.tacv2`) of tenant `tenant_id`; the app must be
    /// installed in its team.
    ///
    /// ```
    /// use approval_teams::Target;
    ///
    /// let target = Target::channel(
    ///     "https://smba.trafficmanager.net/teams/",
    ///     "19:LydF…@thread.tacv2",
    ///     "3f3d1cea-7a18-41af-872b-cfbbd5140984",
    /// );
    /// ```
    pub fn channel(
        service_url: impl Into<String>,
        channel_id: impl Into<String>,
        tenant_id: impl Into<String>,
    ) -> Self {
        Self {
            service_url: service_url.into(),
            place: Place::Channel {
                channel: channel_id.into(),
                tenant: tenant_id.into(),
            },
        }
    }

    /// Cards go to a 1:1 chat with the user whose id for this bot is
    /// `user_id` (`29:…`), in tenant `tenant_id`; the chat is created (or
    /// found: Teams answers with the same one) on first use.
    pub fn chat(
        service_url: impl Into<String>,
        user_id: impl Into<String>,
        tenant_id: impl Into<String>,
    ) -> Self {
        Self {
            service_url: service_url.into(),
            place: Place::Chat {
                user: user_id.into(),
                tenant: tenant_id.into(),
            },
        }
    }

    /// Cards go to an existing conversation, as an inbound activity names
    /// it (`conversation.id`): a chat, or a channel thread.
    pub fn conversation(
        service_url: impl Into<String>,
        conversation_id: impl Into<String>,
    ) -> Self {
        Self {
            service_url: service_url.into(),
            place: Place::Conversation(conversation_id.into()),
        }
    }
}

/// Where a card was posted: what a later update (PUT) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedCard {
    /// The service URL the conversation lives on.
    pub service_url: String,
    /// The conversation id (for a channel thread, with `;messageid=`).
    pub conversation_id: String,
    /// The card's activity id.
    pub activity_id: String,
}

impl StoredMessage for PostedCard {
    fn fields(&self) -> Vec<&str> {
        vec![&self.service_url, &self.conversation_id, &self.activity_id]
    }

    fn from_fields(fields: &[&str]) -> Option<Self> {
        match fields {
            [service_url, conversation_id, activity_id] => Some(Self {
                service_url: (*service_url).to_owned(),
                conversation_id: (*conversation_id).to_owned(),
                activity_id: (*activity_id).to_owned(),
            }),
            _ => None,
        }
    }
}

/// Posts approval requests to Teams as Adaptive Cards and keeps each card
/// true (PUT on the activity, for everyone): the shared
/// [`MessageApprover`] over a [`TeamsChannel`]. Updates run on the gate's
/// notice outbox, in order, retried with backoff, never on the caller's
/// path; call [`Gate::shutdown`](approval_core::Gate::shutdown) before the
/// program exits so the last outcome reaches Teams.
///
/// Clicks come back through the [messaging endpoint](crate::endpoint), as
/// `teams:<Entra object id>` ballots.
///
/// ```no_run
/// use std::sync::Arc;
/// use approval_teams::connector::{BotCredentials, Connector};
/// use approval_teams::{Target, TeamsChannel};
///
/// # async fn setup(builder: approval_core::GateBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// let tenant = "3f3d1cea-7a18-41af-872b-cfbbd5140984";
/// let service = "https://smba.trafficmanager.net/teams/";
/// let connector = Connector::new(BotCredentials::new("571c643a-…", "secret", tenant));
/// let teams = TeamsChannel::builder(connector, Target::channel(service, "19:LydF…@thread.tacv2", tenant))
///     .policy_target("prod-deploy", Target::chat(service, "29:1aK9…", tenant))
///     .connect()
///     .await?;
/// let gate = builder.approver("teams", Arc::new(teams)).build()?;
/// # Ok(())
/// # }
/// ```
pub type TeamsApprover = MessageApprover<TeamsChannel>;

/// Teams' wire format for [`MessageApprover`]: where each request's card
/// goes, the cards, and the Bot Connector calls.
#[derive(Debug)]
pub struct TeamsChannel {
    connector: Connector,
    target: Target,
    policy_targets: HashMap<String, Target>,
    chats: tokio::sync::Mutex<HashMap<String, String>>,
}

/// How to build a [`TeamsApprover`]; from [`TeamsChannel::builder`].
#[derive(Debug)]
#[must_use]
pub struct TeamsApproverBuilder {
    connector: Connector,
    target: Target,
    policy_targets: HashMap<String, Target>,
    store: Option<PathBuf>,
}

impl TeamsApproverBuilder {
    /// Posts requests under `policy` to `target` instead of the default.
    pub fn policy_target(mut self, policy: impl Into<String>, target: Target) -> Self {
        self.policy_targets.insert(policy.into(), target);
        self
    }

    /// Keeps where each open request's card is in `dir` (one small file
    /// per request), so that after a restart
    /// [`Gate::recover`](approval_core::Gate::recover) can have their
    /// actions taken down. Without it, a card a restart orphaned keeps its
    /// buttons (clicks on them are refused as `settled`). One directory
    /// per process.
    ///
    /// ```no_run
    /// # use approval_teams::{Target, TeamsChannel, connector::{BotCredentials, Connector}};
    /// # async fn run() -> Result<(), approval_teams::connector::TeamsError> {
    /// # let connector = Connector::new(BotCredentials::new("app", "secret", "tenant"));
    /// # let target = Target::conversation("https://smba.trafficmanager.net/teams/", "19:…");
    /// let teams = TeamsChannel::builder(connector, target)
    ///     .message_store("/var/lib/agent/teams-cards")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn message_store(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store = Some(dir.into());
        self
    }

    /// Fetches a bot token (failing loudly if the app id, secret or tenant
    /// is wrong) and opens the card store.
    pub async fn connect(self) -> Result<TeamsApprover, TeamsError> {
        self.connector.token().await?;
        let channel = TeamsChannel {
            connector: self.connector,
            target: self.target,
            policy_targets: self.policy_targets,
            chats: tokio::sync::Mutex::default(),
        };
        MessageApprover::open(channel, self.store.as_deref()).map_err(|e| {
            TeamsError::MessageStore {
                cause: e.to_string(),
            }
        })
    }
}

/// The card a view shows.
pub(crate) fn card_of(view: &MessageView<'_>) -> Option<Value> {
    Some(match view {
        MessageView::Open(status) => {
            let votes: Vec<_> = status
                .votes
                .iter()
                .map(|v| (v.reviewer.clone(), v.vote))
                .collect();
            let mut card = progress_card(&status.request, &votes, &status.may_vote);
            if status.escalated
                && let Some(body) = card["body"].as_array_mut()
            {
                body.push(escalation_line(&status.request));
            }
            card
        }
        MessageView::Ended {
            request,
            decision,
            at,
            grant,
            ..
        } => outcome_card(request, decision, *at, *grant),
        MessageView::Left {
            request_id,
            cancelled,
        } => restart_card(request_id, *cancelled),
        _ => return None,
    })
}

/// A path segment, percent-encoded (`19:…@thread.tacv2;messageid=…` holds
/// `: @ ; =`).
fn segment(id: &str) -> String {
    utf8_percent_encode(id, NON_ALPHANUMERIC).to_string()
}

/// The message activity that carries `card`.
fn message(card: Value, summary: &str) -> Value {
    json!({"type": "message", "summary": summary, "attachments": [attachment(card)]})
}

fn field(answer: &Value, name: &str) -> Result<String, TeamsError> {
    answer[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| TeamsError::Malformed {
            cause: format!("the connector's answer has no `{name}`"),
        })
}

impl TeamsChannel {
    /// Starts building an approver that posts to `target`.
    pub fn builder(connector: Connector, target: Target) -> TeamsApproverBuilder {
        TeamsApproverBuilder {
            connector,
            target,
            policy_targets: HashMap::new(),
            store: None,
        }
    }

    /// The Bot Connector client it posts with.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The target requests under `policy` go to.
    pub fn target_for(&self, policy: &str) -> &Target {
        self.policy_targets.get(policy).unwrap_or(&self.target)
    }

    /// Posts `card` where `target` says; returns where it went.
    async fn post_card(
        &self,
        target: &Target,
        card: Value,
        summary: &str,
    ) -> Result<PostedCard, TeamsError> {
        let service_url = target.service_url.clone();
        let activity = message(card, summary);
        let conversation_id = match &target.place {
            Place::Conversation(id) => id.clone(),
            Place::Channel { channel, tenant } => {
                // A new thread: the card is the thread's root (TEAMS.md §2.1).
                let parameters = json!({
                    "isGroup": true,
                    "activity": activity,
                    "channelData": {"channel": {"id": channel}, "tenant": {"id": tenant}},
                    "tenantId": tenant,
                });
                let answer = self
                    .connector
                    .call(Method::POST, &service_url, "/v3/conversations", &parameters)
                    .await?;
                return Ok(PostedCard {
                    service_url,
                    conversation_id: field(&answer, "id")?,
                    activity_id: field(&answer, "activityId")?,
                });
            }
            Place::Chat { user, tenant } => self.chat_with(&service_url, user, tenant).await?,
        };
        let answer = self
            .connector
            .call(
                Method::POST,
                &service_url,
                &format!("/v3/conversations/{}/activities", segment(&conversation_id)),
                &activity,
            )
            .await?;
        Ok(PostedCard {
            service_url,
            conversation_id,
            activity_id: field(&answer, "id")?,
        })
    }

    /// The 1:1 chat with `user`: created once, then remembered.
    async fn chat_with(
        &self,
        service_url: &str,
        user: &str,
        tenant: &str,
    ) -> Result<String, TeamsError> {
        let mut chats = self.chats.lock().await;
        if let Some(id) = chats.get(user) {
            return Ok(id.clone());
        }
        let parameters = json!({
            "isGroup": false,
            "bot": {"id": format!("28:{}", self.connector.app_id())},
            "members": [{"id": user}],
            "tenantId": tenant,
            "channelData": {"tenant": {"id": tenant}},
        });
        let answer = self
            .connector
            .call(Method::POST, service_url, "/v3/conversations", &parameters)
            .await?;
        let id = field(&answer, "id")?;
        chats.insert(user.to_owned(), id.clone());
        Ok(id)
    }
}

#[async_trait]
impl MessageChannel for TeamsChannel {
    type Message = PostedCard;

    fn name(&self) -> &'static str {
        "teams"
    }

    async fn post(&self, request: &ApprovalRequest) -> Result<PostedCard, ApproverError> {
        let summary = format!("Approval requested: {}", request.action);
        let target = self.target_for(&request.policy.name);
        self.post_card(target, approval_card(request), &summary)
            .await
            .map_err(approver_error)
    }

    async fn update(
        &self,
        posted: &PostedCard,
        view: &MessageView<'_>,
    ) -> Result<(), ApproverError> {
        let Some(card) = card_of(view) else {
            return Ok(());
        };
        let summary = match view {
            MessageView::Open(_) => "Approval requested",
            _ => "Approval request ended",
        };
        put_card(&self.connector, posted, card, summary)
            .await
            .map_err(approver_error)
    }

    /// A reply to the request's card (TEAMS.md §2, reply in thread): Teams
    /// notifies of a new message, not of an edit.
    async fn remind(
        &self,
        posted: &PostedCard,
        view: &MessageView<'_>,
    ) -> Result<(), ApproverError> {
        let MessageView::Open(status) = view else {
            return Ok(());
        };
        let path = format!(
            "/v3/conversations/{}/activities/{}",
            segment(&posted.conversation_id),
            segment(&posted.activity_id)
        );
        let activity = message(reminder_card(status), "Approval still needed");
        self.connector
            .call(Method::POST, &posted.service_url, &path, &activity)
            .await
            .map(drop)
            .map_err(approver_error)
    }
}

/// Replaces the card at `posted` with `card` for everyone.
async fn put_card(
    connector: &Connector,
    posted: &PostedCard,
    card: Value,
    summary: &str,
) -> Result<(), TeamsError> {
    let mut activity = message(card, summary);
    activity["id"] = Value::String(posted.activity_id.clone());
    let path = format!(
        "/v3/conversations/{}/activities/{}",
        segment(&posted.conversation_id),
        segment(&posted.activity_id)
    );
    connector
        .call(Method::PUT, &posted.service_url, &path, &activity)
        .await
        .map(drop)
}

/// A connector failure as the gate sees it: only an unavailable service
/// may work later.
fn approver_error(e: TeamsError) -> ApproverError {
    match e {
        TeamsError::Unavailable { .. } => ApproverError::Unreachable(e.to_string()),
        _ => ApproverError::Refused(e.to_string()),
    }
}
