//! The approver every message channel is: one message per request, kept
//! true from the gate's view of it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use approval_core::{
    ApprovalRequest, Approver, ApproverError, Ballots, Clock, Decision, GateBallots, GrantView,
    Notice, RequestView, SystemClock,
};
use async_trait::async_trait;

use crate::store::{MessageStore, StoredMessage};

/// How many ended requests a [`MessageApprover`] keeps, to show late
/// clicks their outcome; the oldest go first.
pub const ENDED_KEPT: usize = 1024;

/// What a message shows.
#[derive(Debug)]
#[non_exhaustive]
pub enum MessageView<'a> {
    /// An open request as the gate holds it: its votes so far, who may
    /// still vote, its deadline. Render it with buttons.
    Open(&'a RequestView),
    /// A request that ended, and when this process heard so.
    Ended {
        /// The request.
        request: &'a ApprovalRequest,
        /// How it ended.
        decision: &'a Decision,
        /// When it ended, as this process saw it.
        at: SystemTime,
        /// The grant its approval made, while it can still cover a call:
        /// render it with a way to revoke it.
        grant: Option<&'a GrantView>,
    },
    /// A message a previous run of the process left, whose request this
    /// run does not hold: no buttons.
    Left {
        /// The request's id.
        request_id: &'a str,
        /// Whether the restart cancelled it (else it ended otherwise).
        cancelled: bool,
    },
}

/// One medium's wire format: post a request's message, and put a view on
/// it. The rest (which message is whose, when to update, retries, restart)
/// is [`MessageApprover`]'s.
///
/// ```
/// use approval_channel::{MessageChannel, MessageView};
/// use approval_core::{ApprovalRequest, ApproverError};
///
/// /// Prints each message; its "message" is the request id.
/// #[derive(Debug)]
/// struct Printer;
///
/// #[async_trait::async_trait]
/// impl MessageChannel for Printer {
///     type Message = String;
///
///     fn name(&self) -> &'static str {
///         "printer"
///     }
///
///     async fn post(&self, request: &ApprovalRequest) -> Result<String, ApproverError> {
///         println!("approve {}?", request.action);
///         Ok(request.id.clone())
///     }
///
///     async fn update(&self, id: &String, view: &MessageView<'_>) -> Result<(), ApproverError> {
///         match view {
///             MessageView::Open(status) => println!("{id}: {} votes", status.votes.len()),
///             MessageView::Ended { decision, .. } => println!("{id}: {}", decision.outcome()),
///             _ => println!("{id}: ended"),
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait MessageChannel: fmt::Debug + Send + Sync + 'static {
    /// Where a posted message is: what an update needs, and what the
    /// message store keeps.
    type Message: StoredMessage + Clone + fmt::Debug + Send + Sync + 'static;

    /// The channel's name, in traces.
    fn name(&self) -> &'static str;

    /// Posts `request`'s message, with its buttons, where its policy says.
    /// `ApproverError::Unreachable` when it may work later,
    /// `ApproverError::Refused` when it will not.
    async fn post(&self, request: &ApprovalRequest) -> Result<Self::Message, ApproverError>;

    /// Puts `view` on the message, for everyone.
    async fn update(
        &self,
        message: &Self::Message,
        view: &MessageView<'_>,
    ) -> Result<(), ApproverError>;

    /// Nudges who may still vote on an open request, once, at its
    /// policy's reminder time (`view` is [`MessageView::Open`]). By
    /// default the message is put again (it shows who may still vote); a
    /// medium that notifies people of new messages posts one instead.
    async fn remind(
        &self,
        message: &Self::Message,
        view: &MessageView<'_>,
    ) -> Result<(), ApproverError> {
        self.update(message, view).await
    }
}

/// The approver of a [`MessageChannel`]: posts one message per request,
/// updates it from the gate's view of the request on every notice, shows
/// the outcome in place of the buttons, and after a restart takes down
/// the buttons of the messages a previous run left (with a
/// [`MessageStore`]). A failed update is returned to the gate, whose
/// outbox retries it with backoff and traces each failure; a message whose
/// update never got through keeps its store entry, so the next restart
/// still takes it down. One approver serves one gate.
///
/// ```
/// # use approval_channel::{MessageApprover, MessageChannel, MessageView};
/// # use approval_core::{ApprovalRequest, ApproverError};
/// # #[derive(Debug)]
/// # struct Printer;
/// # #[async_trait::async_trait]
/// # impl MessageChannel for Printer {
/// #     type Message = String;
/// #     fn name(&self) -> &'static str { "printer" }
/// #     async fn post(&self, r: &ApprovalRequest) -> Result<String, ApproverError> { Ok(r.id.clone()) }
/// #     async fn update(&self, _: &String, _: &MessageView<'_>) -> Result<(), ApproverError> { Ok(()) }
/// # }
/// use std::{sync::Arc, time::Duration};
/// use approval_core::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let printer = MessageApprover::new(Printer).message_store(approval_channel::MessageStore::open(dir.path())?);
/// # let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
/// let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
///     .approver("printer", Arc::new(printer))
///     .policy(Policy::new("export", ["printer"], Duration::from_secs(60)).approvers(["printer:alice"]))
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MessageApprover<C: MessageChannel> {
    channel: C,
    store: Option<MessageStore<C::Message>>,
    messages: Mutex<Messages<C::Message>>,
    ballots: GateBallots,
}

/// The requests this approver has messages for; ended ones oldest first.
#[derive(Debug)]
struct Messages<M> {
    entries: HashMap<String, Entry<M>>,
    ended: VecDeque<String>,
}

impl<M> Default for Messages<M> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            ended: VecDeque::new(),
        }
    }
}

#[derive(Debug)]
struct Entry<M> {
    request: Arc<ApprovalRequest>,
    /// `None` while it is being posted.
    message: Option<M>,
    ended: Option<Ended>,
}

#[derive(Debug)]
struct Ended {
    decision: Arc<Decision>,
    at: SystemTime,
    /// Whether the message shows it (its store entry is then forgotten).
    shown: bool,
}

/// The update to make: a message and the request as it now stands.
enum Shown {
    Open(RequestView),
    Ended(
        Arc<ApprovalRequest>,
        Arc<Decision>,
        SystemTime,
        Option<GrantView>,
    ),
}

impl Shown {
    fn view(&self) -> MessageView<'_> {
        match self {
            Self::Open(view) => MessageView::Open(view),
            Self::Ended(request, decision, at, grant) => MessageView::Ended {
                request,
                decision,
                at: *at,
                grant: grant.as_ref(),
            },
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C: MessageChannel> MessageApprover<C> {
    /// The approver of `channel`, keeping its messages in memory only: a
    /// message a restart orphans keeps its buttons (clicks on them are
    /// refused as `settled`).
    pub fn new(channel: C) -> Self {
        Self {
            channel,
            store: None,
            messages: Mutex::default(),
            ballots: GateBallots::default(),
        }
    }

    /// The approver of `channel`, with its message store in `dir` if one
    /// is given (see [`message_store`](Self::message_store)).
    pub fn open(channel: C, dir: Option<&Path>) -> std::io::Result<Self> {
        let approver = Self::new(channel);
        Ok(match dir {
            Some(dir) => approver.message_store(MessageStore::open(dir)?),
            None => approver,
        })
    }

    /// Keeps where each open request's message is in `store`, so that
    /// after a restart [`Gate::recover`](approval_core::Gate::recover) has
    /// their buttons taken down. One store per process and channel.
    #[must_use]
    pub fn message_store(mut self, store: MessageStore<C::Message>) -> Self {
        self.store = Some(store);
        self
    }

    /// The channel.
    pub fn channel(&self) -> &C {
        &self.channel
    }

    /// Where votes go (`None` until the approver is registered in a built
    /// gate).
    pub fn ballots(&self) -> Option<Ballots> {
        self.ballots.get()
    }

    /// The message posted for a request this approver holds.
    pub fn message_of(&self, request_id: &str) -> Option<C::Message> {
        lock(&self.messages)
            .entries
            .get(request_id)
            .and_then(|e| e.message.clone())
    }

    /// Renders what `request_id`'s message shows now (open, from the
    /// gate's view; or ended), if this approver posted it: what a channel
    /// answers a click with.
    pub fn render<R>(
        &self,
        request_id: &str,
        render: impl FnOnce(&MessageView<'_>) -> R,
    ) -> Option<R> {
        let shown = self.current(request_id)?;
        Some(render(&shown.view()))
    }

    /// [`render`](Self::render), only for `identity` if it may vote on the
    /// request (an unknown request and another's alike give `None`).
    pub fn render_for<R>(
        &self,
        request_id: &str,
        identity: &str,
        render: impl FnOnce(&MessageView<'_>) -> R,
    ) -> Option<R> {
        let ballots = self.ballots()?;
        let request = lock(&self.messages)
            .entries
            .get(request_id)?
            .request
            .clone();
        if !ballots.may_vote(&request, identity) {
            return None;
        }
        self.render(request_id, render)
    }

    /// The request as it stands: ended once this approver or the gate says
    /// so (the time it first heard is kept, so the message does not
    /// change), else open from the gate's view.
    fn current(&self, request_id: &str) -> Option<Shown> {
        let ballots = self.ballots();
        let status = ballots.as_ref().and_then(|b| b.status(request_id));
        let mut messages = lock(&self.messages);
        if let Some(decision) = status.as_ref().and_then(|s| s.decision.clone()) {
            mark_ended(&mut messages, request_id, || Arc::new(decision));
        }
        let entry = messages.entries.get(request_id)?;
        match (&entry.ended, status) {
            (Some(ended), _) => {
                let grant = match (&*ended.decision, &ballots) {
                    (Decision::Approved { .. }, Some(ballots)) => {
                        ballots.grants().into_iter().find(|g| g.id == request_id)
                    }
                    _ => None,
                };
                Some(Shown::Ended(
                    entry.request.clone(),
                    ended.decision.clone(),
                    ended.at,
                    grant,
                ))
            }
            (None, Some(status)) => Some(Shown::Open(status)),
            (None, None) => None,
        }
    }

    /// Puts the request as it stands on its message (once it is posted).
    async fn show(&self, request_id: &str) -> Result<(), ApproverError> {
        let Some(message) = self.message_of(request_id) else {
            // Still being posted: `deliver` shows what happened meanwhile.
            return Ok(());
        };
        let Some(shown) = self.current(request_id) else {
            return Ok(());
        };
        if let Err(error) = self.channel.update(&message, &shown.view()).await {
            tracing::warn!(request_id, channel = self.channel.name(), %error, "updating the message failed");
            return Err(error);
        }
        if let Shown::Ended(..) = shown {
            let mut messages = lock(&self.messages);
            if let Some(ended) = messages
                .entries
                .get_mut(request_id)
                .and_then(|e| e.ended.as_mut())
            {
                ended.shown = true;
            }
            drop(messages);
            if let Some(store) = &self.store {
                store.forget(request_id);
            }
        }
        Ok(())
    }

    /// Reminds who may still vote on `request_id`, if it is still open.
    async fn remind(&self, request_id: &str) -> Result<(), ApproverError> {
        let (Some(message), Some(shown @ Shown::Open(_))) =
            (self.message_of(request_id), self.current(request_id))
        else {
            return Ok(());
        };
        if let Err(error) = self.channel.remind(&message, &shown.view()).await {
            tracing::warn!(request_id, channel = self.channel.name(), %error, "reminding the reviewers failed");
            return Err(error);
        }
        Ok(())
    }

    /// Whether `request_id`'s message already shows its outcome.
    fn shows_outcome(&self, request_id: &str) -> bool {
        lock(&self.messages)
            .entries
            .get(request_id)
            .is_some_and(|e| e.ended.as_ref().is_some_and(|ended| ended.shown))
    }

    async fn take_down_left(&self, recovery: &approval_core::Recovery) {
        let Some(store) = &self.store else { return };
        let held = |id: &str| lock(&self.messages).entries.contains_key(id);
        store
            .take_down_left(recovery, held, async |id, message, cancelled| {
                let view = MessageView::Left {
                    request_id: &id,
                    cancelled,
                };
                match self.channel.update(&message, &view).await {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::warn!(request_id = %id, channel = self.channel.name(), %error, "taking down a message a restart left failed");
                        false
                    }
                }
            })
            .await;
    }
}

/// Marks `request_id` ended (by `decision`, made only if it is not ended
/// yet) as this process first heard, and keeps it among the ended; the
/// oldest beyond [`ENDED_KEPT`] go (their store entries stay if their
/// outcome never got through).
fn mark_ended<M>(
    messages: &mut Messages<M>,
    request_id: &str,
    decision: impl FnOnce() -> Arc<Decision>,
) {
    let Some(entry) = messages.entries.get_mut(request_id) else {
        return;
    };
    if entry.ended.is_some() {
        return;
    }
    entry.ended = Some(Ended {
        decision: decision(),
        at: SystemClock.now(),
        shown: false,
    });
    messages.ended.push_back(request_id.to_owned());
    while messages.ended.len() > ENDED_KEPT {
        if let Some(oldest) = messages.ended.pop_front() {
            messages.entries.remove(&oldest);
        }
    }
}

#[async_trait]
impl<C: MessageChannel> Approver for MessageApprover<C> {
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
        // Known before it is posted: what happens meanwhile is shown after.
        lock(&self.messages).entries.insert(
            id.clone(),
            Entry {
                request: request.clone(),
                message: None,
                ended: None,
            },
        );
        let message = match self.channel.post(&request).await {
            Ok(message) => message,
            Err(error) => {
                lock(&self.messages).entries.remove(&id);
                return Err(error);
            }
        };
        let remembered = self
            .store
            .as_ref()
            .map_or(Ok(()), |store| store.remember(&id, &message));
        if let Some(entry) = lock(&self.messages).entries.get_mut(&id) {
            entry.message = Some(message);
        }
        if let Err(e) = remembered {
            // Posted but not remembered: the call fails closed, and the
            // cancellation the gate then announces replaces the message.
            return Err(ApproverError::Refused(format!("message store: {e}")));
        }
        let meanwhile = self
            .current(&id)
            .is_some_and(|shown| !matches!(&shown, Shown::Open(view) if view.votes.is_empty()));
        if meanwhile && let Err(error) = self.show(&id).await {
            // Posted; the next notice (or restart) puts it right.
            tracing::warn!(request_id = %id, %error, "the message does not show what happened while it was posted");
        }
        Ok(())
    }

    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        match notice {
            // A vote that does not settle it yet, from any channel.
            Notice::Voted { request, .. } => self.show(&request.id).await,
            Notice::Settled { request, decision } => {
                mark_ended(&mut lock(&self.messages), &request.id, || decision.clone());
                if self.shows_outcome(&request.id) {
                    return Ok(());
                }
                self.show(&request.id).await
            }
            Notice::Recovered(recovery) => {
                self.take_down_left(recovery).await;
                Ok(())
            }
            Notice::Reminder { request } => self.remind(&request.id).await,
            // More may vote now: the message says who.
            Notice::Escalated { request, .. } => self.show(&request.id).await,
            // The outcome shows the grant's uses left, or that it ended.
            Notice::GrantUsed { request, .. } | Notice::GrantRevoked { request, .. } => {
                self.show(&request.id).await
            }
            _ => Ok(()),
        }
    }
}
