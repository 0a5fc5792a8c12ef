//! The Teams approver: posts one card per request to the conversation its
//! policy maps to, shows votes as they come, and replaces the card with the
//! outcome once the request ends (TEAMS.md §2).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use approval_core::{
    ApprovalRequest, Approver, ApproverError, Ballots, Clock, Decision, GateBallots, Notice,
    Reviewer, SystemClock, Vote,
};
use async_trait::async_trait;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use approval_channel::{MessageStore, StoredMessage};

use crate::card::{approval_card, attachment, outcome_card, progress_card, restart_card};
use crate::connector::{Connector, TeamsError};

/// How many ended requests' outcomes are kept to answer late clicks with.
const ENDED_KEPT: usize = 1024;

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

/// The card store, if the approver keeps one.
type Store = Option<Arc<MessageStore<PostedCard>>>;

/// One request this approver has a card for.
#[derive(Debug)]
struct Entry {
    request: Arc<ApprovalRequest>,
    posted: Option<PostedCard>,
    votes: Vec<(Reviewer, Vote)>,
    /// Who may still vote, as the gate said at the last vote.
    may_vote: Vec<String>,
    /// The outcome card, once the request ended: built once, for the
    /// clicker's answer, the update and any late click.
    outcome: Option<Arc<Value>>,
}

impl Entry {
    fn card(&self) -> Arc<Value> {
        match &self.outcome {
            Some(card) => card.clone(),
            None => Arc::new(progress_card(&self.request, &self.votes, &self.may_vote)),
        }
    }

    /// Adds a counted vote unless it is shown already (the endpoint and the
    /// gate's notice both report a Teams click); whether it was new.
    fn add_vote(&mut self, reviewer: &Reviewer, vote: Vote) -> bool {
        if self
            .votes
            .iter()
            .any(|(r, v)| r.id == reviewer.id && *v == vote)
        {
            return false;
        }
        self.votes.push((reviewer.clone(), vote));
        true
    }
}

/// The requests this approver has cards for, and which ended, oldest
/// first.
#[derive(Debug, Default)]
struct Requests {
    entries: HashMap<String, Entry>,
    ended: VecDeque<String>,
}

impl Requests {
    fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.entries.get_mut(id)
    }
}

/// What the updater task does, in the order asked.
enum Work {
    /// Put the request's card as it stands now.
    Update(String),
    /// Take down the actions of cards a previous run left: those in the
    /// list were cancelled by this restart.
    Restarted(Arc<approval_core::Recovery>),
    /// Say when everything asked before is done.
    Flush(oneshot::Sender<()>),
}

/// Posts approval requests to Teams as Adaptive Cards and keeps each card
/// true: a line per vote while more are needed, then the outcome in place
/// of the actions (PUT on the activity, for everyone). Updates run on a
/// task of the approver's own, in order, so the gate never waits on Teams
/// for them.
///
/// Clicks come back through the [messaging endpoint](crate::endpoint), as
/// `teams:<Entra object id>` ballots.
///
/// ```no_run
/// use std::sync::Arc;
/// use approval_teams::connector::{BotCredentials, Connector};
/// use approval_teams::{Target, TeamsApprover};
///
/// # async fn setup(builder: approval_core::GateBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// let tenant = "3f3d1cea-7a18-41af-872b-cfbbd5140984";
/// let service = "https://smba.trafficmanager.net/teams/";
/// let connector = Connector::new(BotCredentials::new("571c643a-…", "secret", tenant));
/// let teams = TeamsApprover::builder(connector, Target::channel(service, "19:LydF…@thread.tacv2", tenant))
///     .policy_target("prod-deploy", Target::chat(service, "29:1aK9…", tenant))
///     .connect()
///     .await?;
/// let gate = builder.approver("teams", Arc::new(teams)).build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TeamsApprover {
    connector: Arc<Connector>,
    target: Target,
    policy_targets: HashMap<String, Target>,
    requests: Arc<Mutex<Requests>>,
    store: Store,
    chats: tokio::sync::Mutex<HashMap<String, String>>,
    ballots: GateBallots,
    work: mpsc::UnboundedSender<Work>,
}

/// How to build a [`TeamsApprover`]; from [`TeamsApprover::builder`].
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
    /// # use approval_teams::{Target, TeamsApprover, connector::{BotCredentials, Connector}};
    /// # async fn run() -> Result<(), approval_teams::connector::TeamsError> {
    /// # let connector = Connector::new(BotCredentials::new("app", "secret", "tenant"));
    /// # let target = Target::conversation("https://smba.trafficmanager.net/teams/", "19:…");
    /// let teams = TeamsApprover::builder(connector, target)
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
    /// is wrong), opens the card store, and starts the task that updates
    /// cards, on the current runtime.
    pub async fn connect(self) -> Result<TeamsApprover, TeamsError> {
        self.connector.token().await?;
        let store = match &self.store {
            Some(dir) => Some(Arc::new(MessageStore::open(dir).map_err(|e| {
                TeamsError::MessageStore {
                    cause: e.to_string(),
                }
            })?)),
            None => None,
        };
        let connector = Arc::new(self.connector);
        let requests = Arc::default();
        let (work, queue) = mpsc::unbounded_channel();
        tokio::spawn(update_cards(
            Arc::clone(&connector),
            Arc::clone(&requests),
            store.clone(),
            queue,
        ));
        Ok(TeamsApprover {
            connector,
            target: self.target,
            policy_targets: self.policy_targets,
            requests,
            store,
            chats: tokio::sync::Mutex::default(),
            ballots: GateBallots::default(),
            work,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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

impl TeamsApprover {
    /// Starts building an approver that posts to `target`.
    pub fn builder(connector: Connector, target: Target) -> TeamsApproverBuilder {
        TeamsApproverBuilder {
            connector,
            target,
            policy_targets: HashMap::new(),
            store: None,
        }
    }

    /// Where votes go: what the messaging endpoint casts into (`None`
    /// until the approver is registered in a built gate).
    pub fn ballots(&self) -> Option<Ballots> {
        self.ballots.get()
    }

    /// The Bot Connector client it posts with.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Where the card of a request this approver posted is.
    pub fn card_of(&self, request_id: &str) -> Option<PostedCard> {
        lock(&self.requests)
            .get(request_id)
            .and_then(|e| e.posted.clone())
    }

    /// The card of a request as it stands now (open with its votes, or
    /// ended), if this approver posted it: what a clicker is answered with.
    pub fn current_card(&self, request_id: &str) -> Option<Arc<Value>> {
        lock(&self.requests).get(request_id).map(Entry::card)
    }

    /// The current card of `request_id` for the clicker `identity`
    /// (`teams:<object id>`), only if they may vote on it: what Teams'
    /// `refresh` verb is answered with. `None` alike for a request this bot
    /// does not hold and one the clicker may not see.
    pub(crate) fn card_for(&self, request_id: &str, identity: &str) -> Option<Arc<Value>> {
        let ballots = self.ballots()?;
        let (request, card) = {
            let requests = lock(&self.requests);
            let entry = requests.get(request_id)?;
            (entry.request.clone(), entry.card())
        };
        ballots.may_vote(&request, identity).then_some(card)
    }

    /// Shows the votes the gate counted on `view`'s request (the endpoint,
    /// right after a click, before the gate's notice comes), and has the
    /// card updated; returns the card.
    pub(crate) fn show_votes(&self, view: &approval_core::RequestView) -> Option<Arc<Value>> {
        let card = {
            let mut requests = lock(&self.requests);
            let entry = requests.get_mut(&view.request.id)?;
            for vote in &view.votes {
                entry.add_vote(&vote.reviewer, vote.vote);
            }
            entry.may_vote.clone_from(&view.may_vote);
            entry.card()
        };
        self.update(&view.request.id);
        Some(card)
    }

    /// Marks a request ended (once: the endpoint that recorded the deciding
    /// vote, or the gate's `settled`, whichever comes first), has its card
    /// updated for everyone, and returns the outcome card.
    pub(crate) fn ended(&self, request_id: &str, decision: &Decision) -> Option<Arc<Value>> {
        let card = {
            let mut requests = lock(&self.requests);
            let entry = requests.get_mut(request_id)?;
            if let Some(card) = &entry.outcome {
                return Some(card.clone());
            }
            let card = Arc::new(outcome_card(&entry.request, decision, SystemClock.now()));
            entry.outcome = Some(card.clone());
            // Outcomes are kept to answer late clicks; the oldest go.
            requests.ended.push_back(request_id.to_owned());
            if requests.ended.len() > ENDED_KEPT
                && let Some(oldest) = requests.ended.pop_front()
            {
                requests.entries.remove(&oldest);
            }
            card
        };
        self.update(request_id);
        Some(card)
    }

    /// The target requests under `policy` go to.
    pub fn target_for(&self, policy: &str) -> &Target {
        self.policy_targets.get(policy).unwrap_or(&self.target)
    }

    /// Waits until the cards of requests already ended are updated (or
    /// `limit` has passed): call it before the program exits, so the last
    /// outcome reaches Teams. Returns whether the updates were done.
    pub async fn flush(&self, limit: std::time::Duration) -> bool {
        let (done, finished) = oneshot::channel();
        if self.work.send(Work::Flush(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(limit, finished).await, Ok(Ok(())))
    }

    /// Posts `card` where `target` says; returns where it went.
    async fn post(
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

    fn update(&self, request_id: &str) {
        // The updater may be gone with its runtime; the card then keeps its
        // actions, and the gate refuses late clicks.
        if self.work.send(Work::Update(request_id.to_owned())).is_err() {
            tracing::warn!(
                request_id,
                "the Teams card updater is gone; the card keeps its buttons"
            );
        }
    }
}

/// The updater task: one PUT at a time, in the order asked. A failed
/// update leaves the old card (late clicks are refused by the gate), and
/// its store entry, so the next restart still takes it down.
async fn update_cards(
    connector: Arc<Connector>,
    requests: Arc<Mutex<Requests>>,
    store: Store,
    mut queue: mpsc::UnboundedReceiver<Work>,
) {
    while let Some(work) = queue.recv().await {
        match work {
            Work::Update(id) => {
                let update = lock(&requests).get(&id).and_then(|entry| {
                    let posted = entry.posted.clone()?;
                    Some((posted, entry.card(), entry.outcome.is_some()))
                });
                let Some((posted, card, ended)) = update else {
                    continue;
                };
                let summary = if ended {
                    "Approval request ended"
                } else {
                    "Approval requested"
                };
                if put_card(&connector, &posted, Value::clone(&card), summary, &id).await
                    && ended
                    && let Some(store) = &store
                {
                    store.forget(&id);
                }
            }
            Work::Restarted(recovery) => {
                let Some(store) = &store else { continue };
                let held = |id: &str| lock(&requests).get(id).is_some();
                let connector = &connector;
                store
                    .take_down_left(&recovery, held, async |id, posted, was_cancelled| {
                        let card = restart_card(&id, was_cancelled);
                        put_card(connector, &posted, card, "Approval request ended", &id).await
                    })
                    .await;
            }
            Work::Flush(done) => {
                if done.send(()).is_err() {
                    tracing::trace!("a flush's caller stopped waiting");
                }
            }
        }
    }
}

/// Replaces the card at `posted` with `card` for everyone; whether Teams
/// took it (a failure is traced).
async fn put_card(
    connector: &Connector,
    posted: &PostedCard,
    card: Value,
    summary: &str,
    request_id: &str,
) -> bool {
    let mut activity = message(card, summary);
    activity["id"] = Value::String(posted.activity_id.clone());
    let path = format!(
        "/v3/conversations/{}/activities/{}",
        segment(&posted.conversation_id),
        segment(&posted.activity_id)
    );
    match connector
        .call(Method::PUT, &posted.service_url, &path, &activity)
        .await
    {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(request_id, %error, "updating the Teams card failed");
            false
        }
    }
}

#[async_trait]
impl Approver for TeamsApprover {
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
        let id = request.id.clone();
        // Known before it is posted, so votes from other routes meanwhile
        // are kept and shown.
        lock(&self.requests).entries.insert(
            id.clone(),
            Entry {
                request: request.clone(),
                posted: None,
                votes: Vec::new(),
                may_vote: Vec::new(),
                outcome: None,
            },
        );
        let summary = format!("Approval requested: {}", request.action);
        let target = self.target_for(&request.policy.name);
        match self.post(target, approval_card(&request), &summary).await {
            Ok(posted) => {
                if let Some(store) = &self.store
                    && let Err(e) = store.remember(&id, &posted)
                {
                    // Posted but not remembered: the call fails closed, and
                    // the cancellation the gate then announces replaces the
                    // card (the entry below knows where it is).
                    if let Some(entry) = lock(&self.requests).get_mut(&id) {
                        entry.posted = Some(posted);
                    }
                    return Err(ApproverError::Refused(format!("card store: {e}")));
                }
                let changed = {
                    let mut requests = lock(&self.requests);
                    requests.get_mut(&id).is_some_and(|entry| {
                        entry.posted = Some(posted);
                        !entry.votes.is_empty() || entry.outcome.is_some()
                    })
                };
                if changed {
                    self.update(&id);
                }
                Ok(())
            }
            Err(e) => {
                lock(&self.requests).entries.remove(&id);
                Err(match e {
                    TeamsError::Unavailable { .. } => ApproverError::Unreachable(e.to_string()),
                    _ => ApproverError::Refused(e.to_string()),
                })
            }
        }
    }

    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        match notice {
            // A vote that does not settle the request yet, from any
            // channel: its line goes on the card.
            Notice::Voted {
                request,
                reviewer,
                vote,
            } => {
                // Who may still vote, from the gate (not a copy of ours).
                let may_vote = self
                    .ballots()
                    .and_then(|b| b.status(&request.id))
                    .map(|view| view.may_vote)
                    .unwrap_or_default();
                let changed = match lock(&self.requests).get_mut(&request.id) {
                    Some(entry) => {
                        let changed = entry.add_vote(reviewer, *vote) || entry.may_vote != may_vote;
                        entry.may_vote = may_vote;
                        changed
                    }
                    None => return Ok(()),
                };
                if changed {
                    self.update(&request.id);
                }
            }
            Notice::Settled { request, decision } => {
                self.ended(&request.id, decision);
            }
            Notice::Recovered(recovery) => {
                // The updater ends only with this approver.
                self.work
                    .send(Work::Restarted(recovery.clone()))
                    .map_err(|_| {
                        ApproverError::Unreachable("the card updater has stopped".into())
                    })?;
            }
            _ => {}
        }
        Ok(())
    }
}
