//! The decision API's approver: keeps the requests delivered to it, the
//! votes cast through it and how each ended, for reviewers to read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use approval_core::{
    ApprovalRequest, Approver, ApproverError, AuditSink, Ballots, Decision, GateBallots, Keyring,
    Notice, Vote,
};
use async_trait::async_trait;

use axum::http::{HeaderMap, header};

use crate::chain_status::Audit;
use crate::session::Sessions;
use crate::tokens::ReviewerTokens;

/// How many settled requests the API keeps for its history.
const HISTORY: usize = 1000;

/// An approver whose reviewers decide through the [decision
/// API](crate::api::router): `deliver` puts the request on a board they
/// read and vote on, each with their own bearer token.
///
/// ```
/// use std::sync::Arc;
/// use approval_http::{ApiApprover, ReviewerTokens};
///
/// let tokens = ReviewerTokens::new()
///     .reviewer("alice", "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90")
///     .unwrap();
/// let approver = Arc::new(ApiApprover::new(tokens));
/// // builder.approver("api", approver.clone()); serve api::router(approver)
/// ```
#[derive(Debug)]
pub struct ApiApprover {
    pub(crate) tokens: ReviewerTokens,
    pub(crate) sessions: Sessions,
    pub(crate) audit: Option<Audit>,
    pub(crate) plain_http_cookies: bool,
    show_every_request: bool,
    board: Mutex<Board>,
    ballots: GateBallots,
}

#[derive(Debug, Default)]
struct Board {
    pending: BTreeMap<String, Entry>,
    settled: VecDeque<Entry>,
}

/// A request on the board.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) request: Arc<ApprovalRequest>,
    /// Votes counted, from any channel: (reviewer id, vote, comment).
    pub(crate) votes: Vec<(String, Vote, Option<String>)>,
    pub(crate) decision: Option<Decision>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ApiApprover {
    /// An approver whose reviewers are `tokens`.
    pub fn new(tokens: ReviewerTokens) -> Self {
        Self {
            tokens,
            sessions: Sessions::default(),
            audit: None,
            plain_http_cookies: false,
            show_every_request: false,
            board: Mutex::default(),
            ballots: GateBallots::default(),
        }
    }

    /// Shows, in the review console, whether the audit chain in `sink`
    /// verifies under `keyring`, and its head.
    #[must_use]
    pub fn audit(mut self, sink: Arc<dyn AuditSink>, keyring: Keyring) -> Self {
        self.audit = Some(Audit::new(sink, keyring));
        self
    }

    /// Sends the console's session cookie without `Secure`, so a browser
    /// keeps it over plain HTTP: for a console on a loopback address in
    /// development only (the quickstart's `--web`). Behind HTTPS, leave it.
    #[must_use]
    pub fn plain_http_cookies(mut self) -> Self {
        self.plain_http_cookies = true;
        self
    }

    /// Shows every request to every reviewer with a token, not only to
    /// those who may vote on it (see [`router`](crate::api::router)): for a
    /// board that on-call staff or auditors read. Votes are checked as ever.
    #[must_use]
    pub fn show_every_request(mut self) -> Self {
        self.show_every_request = true;
        self
    }

    /// Whether the reviewer whose channel identity is `identity` is shown
    /// an entry: only if they may vote on it, unless every request is
    /// shown. The gate's handle is taken once, for a whole list.
    pub(crate) fn shown_to<'a>(&self, identity: &'a str) -> impl Fn(&Entry) -> bool + 'a {
        let (every, ballots) = (self.show_every_request, self.ballots());
        move |entry| {
            every
                || ballots
                    .as_ref()
                    .is_some_and(|ballots| ballots.may_vote(&entry.request, identity))
        }
    }

    pub(crate) fn ballots(&self) -> Option<Ballots> {
        self.ballots.get()
    }

    /// Open requests, newest first (ids are time-sortable).
    pub(crate) fn pending(&self) -> Vec<Entry> {
        lock(&self.board).pending.values().rev().cloned().collect()
    }

    /// Settled requests, newest first.
    pub(crate) fn settled(&self) -> Vec<Entry> {
        lock(&self.board).settled.iter().rev().cloned().collect()
    }

    /// One request, open or settled.
    pub(crate) fn entry(&self, id: &str) -> Option<Entry> {
        let board = lock(&self.board);
        board
            .pending
            .get(id)
            .or_else(|| board.settled.iter().find(|e| e.request.id == id))
            .cloned()
    }
}

#[async_trait]
impl Approver for ApiApprover {
    fn attach(&self, ballots: Ballots) -> Result<(), ApproverError> {
        // One gate per approver: another gate's ballots are refused.
        self.ballots.attach(ballots)
    }

    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        _ballots: Ballots,
    ) -> Result<(), ApproverError> {
        let entry = Entry {
            request: request.clone(),
            votes: Vec::new(),
            decision: None,
        };
        lock(&self.board).pending.insert(request.id.clone(), entry);
        Ok(())
    }

    async fn notify(&self, notice: &Notice) -> Result<(), ApproverError> {
        match notice {
            Notice::Voted {
                request,
                reviewer,
                vote,
            } => {
                if let Some(entry) = lock(&self.board).pending.get_mut(&request.id) {
                    entry.votes.push((reviewer.id.clone(), *vote, None));
                }
            }
            Notice::Settled { request, decision } => self.settle(request, decision),
            _ => {}
        }
        Ok(())
    }
}

impl ApiApprover {
    /// The reviewer the request's bearer token names.
    pub(crate) fn bearer(&self, headers: &HeaderMap) -> Option<&str> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.tokens.authenticate(authorization)
    }

    fn settle(&self, request: &Arc<ApprovalRequest>, decision: &Decision) {
        let mut board = lock(&self.board);
        let mut entry = board.pending.remove(&request.id).unwrap_or_else(|| Entry {
            request: request.clone(),
            votes: Vec::new(),
            decision: None,
        });
        // The deciding votes come with the decision.
        let known = |entry: &Entry, id: &str| entry.votes.iter().any(|v| v.0 == id);
        match decision {
            Decision::Approved { reviewers } => {
                for reviewer in reviewers {
                    if !known(&entry, &reviewer.id) {
                        entry.votes.push((reviewer.id.clone(), Vote::Approve, None));
                    }
                }
            }
            Decision::Denied { reviewer, comment } => {
                entry
                    .votes
                    .push((reviewer.id.clone(), Vote::Deny, comment.clone()));
            }
            _ => {}
        }
        entry.decision = Some(decision.clone());
        board.settled.push_back(entry);
        if board.settled.len() > HISTORY {
            board.settled.pop_front();
        }
    }
}
