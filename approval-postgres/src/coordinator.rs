//! `PostgresCoordinator`: the gate's [`Coordinator`] on the request
//! ledger, for gate processes and endpoint replicas sharing one database.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approval_core::hex::{decode32, encode};
use approval_core::{
    ApprovalRequest, Ballot, BallotOutcome, Ballots, Coordinator, CoordinatorError, Decision,
    RejectReason, Settlement, Vote,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::ledger::{Ending, Ledger, LedgerError, Settlement as Ledgered};

/// How long a replica waits for the answer of the process a vote went to.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// The answer for a vote its request ended without.
const SETTLED_ANSWER: &str = r#"{"outcome":"rejected","why":"settled"}"#;
/// How often a replica waiting for an answer reads it back, in case its
/// announcement was missed.
const ANSWER_RECHECK: Duration = Duration::from_millis(100);
/// How long a lost listening connection waits before listening again.
const RELISTEN_AFTER: Duration = Duration::from_millis(500);

/// A ballot as it travels between processes.
#[derive(Serialize, Deserialize)]
struct WireBallot {
    request_id: String,
    binding: String,
    identity: String,
    channel: String,
    vote: String,
    comment: Option<String>,
    display: Option<String>,
}

/// The waiting process's answer, as it travels back.
#[derive(Serialize, Deserialize)]
struct WireAnswer {
    /// `counted`, `absorbed`, `rejected` or `error`.
    outcome: String,
    /// Whether the vote settled the request (`counted`).
    #[serde(default)]
    settled: bool,
    /// The reason (`rejected`) or the failure (`error`).
    #[serde(default)]
    why: Option<String>,
}

fn encode_ballot(ballot: &Ballot) -> String {
    serde_json::to_string(&WireBallot {
        request_id: ballot.request_id.clone(),
        binding: encode(&ballot.binding),
        identity: ballot.identity.clone(),
        channel: ballot.channel.clone(),
        vote: ballot.vote.as_str().to_owned(),
        comment: ballot.comment.clone(),
        display: ballot.display.clone(),
    })
    .unwrap_or_default()
}

fn decode_ballot(text: &str) -> Option<Ballot> {
    let wire: WireBallot = serde_json::from_str(text).ok()?;
    let vote = match wire.vote.as_str() {
        "approve" => Vote::Approve,
        "deny" => Vote::Deny,
        _ => return None,
    };
    let mut ballot = Ballot::from_parts(
        wire.request_id,
        decode32(&wire.binding)?,
        wire.identity,
        wire.channel,
        vote,
    );
    ballot.comment = wire.comment;
    ballot.display = wire.display;
    Some(ballot)
}

fn encode_answer(outcome: &Result<BallotOutcome, approval_core::ApprovalError>) -> String {
    let answer = match outcome {
        Ok(BallotOutcome::Counted { decision }) => WireAnswer {
            outcome: "counted".into(),
            settled: decision.is_some(),
            why: None,
        },
        Ok(BallotOutcome::Rejected(reason)) => WireAnswer {
            outcome: "rejected".into(),
            settled: false,
            why: Some(reason.as_str().into()),
        },
        Ok(_) => WireAnswer {
            outcome: "absorbed".into(),
            settled: false,
            why: None,
        },
        Err(e) => WireAnswer {
            outcome: "error".into(),
            settled: false,
            why: Some(e.to_string()),
        },
    };
    serde_json::to_string(&answer).unwrap_or_default()
}

fn decode_answer(text: &str) -> Result<BallotOutcome, CoordinatorError> {
    let refused = |cause: String| CoordinatorError {
        what: "count the vote in the waiting process",
        cause,
    };
    let answer: WireAnswer =
        serde_json::from_str(text).map_err(|e| refused(format!("unreadable answer: {e}")))?;
    match answer.outcome.as_str() {
        // The replica learns that it settled, not how: it does not wait.
        "counted" => Ok(BallotOutcome::Counted { decision: None }),
        "absorbed" => Ok(BallotOutcome::Absorbed),
        "rejected" => answer
            .why
            .as_deref()
            .and_then(RejectReason::parse)
            .map(BallotOutcome::Rejected)
            .ok_or_else(|| refused("a refusal without a reason".into())),
        _ => Err(refused(answer.why.unwrap_or_default())),
    }
}

fn coordination(what: &'static str) -> impl Fn(LedgerError) -> CoordinatorError {
    move |e| CoordinatorError {
        what,
        cause: e.to_string(),
    }
}

/// Votes waiting for their answers, by vote id.
type Waiting = Arc<Mutex<HashMap<i64, oneshot::Sender<String>>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The gate's [`Coordinator`] on PostgreSQL, for gate processes and
/// endpoint replicas sharing one database (the request ledger, see
/// [`ledger`](crate::ledger)):
///
/// - each request is recorded with the process that waits on it and a
///   lease, renewed every third of the lease while it waits; any process
///   cancels requests whose lease lapsed (their process died);
/// - a decision stands only if this process's conditional update settles
///   the request (one settlement per request, whatever races);
/// - a vote cast on a replica for a request another process waits on is
///   stored, that process is woken by `NOTIFY`, casts it (all the gate's
///   checks, recorded on its own chain) and its answer comes back the same
///   way (a replica waits 5 seconds for it, then fails the vote: the
///   reviewer's retry is absorbed if the first did count);
/// - at `Gate::recover`, the previous run's open requests are cancelled.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use approval_postgres::{PostgresCoordinator, PostgresSink};
///
/// # async fn run(builder: approval_core::GateBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// let url = "postgres://approval@db.internal/approval";
/// let coordinator = PostgresCoordinator::connect(url, "agent-host-1", Duration::from_secs(30)).await?;
/// let gate = builder.coordinator(Arc::new(coordinator)).build()?;
/// gate.recover().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PostgresCoordinator {
    ledger: Arc<Ledger>,
    lease: Duration,
    open: Arc<Mutex<HashSet<String>>>,
    waiting: Waiting,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl PostgresCoordinator {
    /// Connects as process `process` (unique among live processes, the same
    /// across restarts; its audit chain's name serves), with leases of
    /// `lease`, and starts renewing leases, cancelling lapsed ones and
    /// listening for answers, on the current runtime.
    pub async fn connect(url: &str, process: &str, lease: Duration) -> Result<Self, LedgerError> {
        let ledger = Arc::new(Ledger::connect(url, process).await?);
        let open: Arc<Mutex<HashSet<String>>> = Arc::default();
        let waiting: Waiting = Arc::default();
        let keeper = tokio::spawn(keep_leases(ledger.clone(), open.clone(), lease));
        // Listening before any vote is forwarded.
        let first = ledger.listen_answers().await?;
        let answers = tokio::spawn(hear_answers(ledger.clone(), waiting.clone(), first));
        Ok(Self {
            ledger,
            lease,
            open,
            waiting,
            tasks: Mutex::new(vec![keeper, answers]),
        })
    }

    /// The answer to vote `id`: announced, or (should an announcement be
    /// missed while a listening connection is replaced) read back every
    /// so often; a refusal as `settled` if the request ended without it;
    /// `None` after [`ANSWER_WAIT`].
    async fn await_answer(
        &self,
        id: i64,
        mut announced: oneshot::Receiver<String>,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        loop {
            match self.ledger.answer_of(id).await {
                Ok((Some(answer), _)) => return Some(answer),
                // Ended without answering this vote, well past the
                // moment it settled (its process settled it on another
                // vote, then went): a late vote.
                Ok((None, false)) => return Some(SETTLED_ANSWER.to_owned()),
                _ => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            let wait = (deadline - now).min(ANSWER_RECHECK);
            match tokio::time::timeout(wait, &mut announced).await {
                Ok(Ok(answer)) => return Some(answer),
                // The listener went away: reading back is all there is.
                Ok(Err(_)) => tokio::time::sleep(wait).await,
                Err(_) => {}
            }
        }
    }

    /// The ledger it works on.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

impl Drop for PostgresCoordinator {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// Renews this process's leases, and cancels lapsed ones of any process.
async fn keep_leases(ledger: Arc<Ledger>, open: Arc<Mutex<HashSet<String>>>, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ids: Vec<String> = lock(&open).iter().cloned().collect();
        if !ids.is_empty() {
            // A failed renewal is retried next tick; a lease that lapses
            // meanwhile is cancelled, and this process's late decision is
            // refused by the ledger (fail closed).
            let _ = ledger.renew(&ids, lease).await;
        }
        let _ = ledger.cancel_lapsed().await;
    }
}

/// Hands each announced answer to the vote waiting for it.
async fn hear_answers(
    ledger: Arc<Ledger>,
    waiting: Waiting,
    first: tokio::sync::mpsc::UnboundedReceiver<(i64, String)>,
) {
    let mut listening = Ok(first);
    loop {
        if let Ok(mut answers) = listening {
            while let Some((id, answer)) = answers.recv().await {
                if let Some(waiter) = lock(&waiting).remove(&id) {
                    let _ = waiter.send(answer);
                }
            }
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
        listening = ledger.listen_answers().await;
    }
}

/// Casts the votes forwarded to this process and answers each.
async fn cast_forwarded(ledger: Arc<Ledger>, ballots: Ballots) {
    loop {
        if let Ok(mut votes) = ledger.listen().await {
            while let Some(vote) = votes.recv().await {
                let outcome = match decode_ballot(&vote.ballot) {
                    Some(ballot) => ballots.cast_forwarded(ballot).await,
                    None => Ok(BallotOutcome::Rejected(RejectReason::UnknownRequest)),
                };
                // Unanswered, it is read again when listening resumes.
                let _ = ledger.answer(vote.id, &encode_answer(&outcome)).await;
            }
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

#[async_trait]
impl Coordinator for PostgresCoordinator {
    fn attach(&self, ballots: Ballots) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let task = runtime.spawn(cast_forwarded(self.ledger.clone(), ballots));
            lock(&self.tasks).push(task);
        }
    }

    async fn opened(&self, request: &ApprovalRequest) -> Result<(), CoordinatorError> {
        self.ledger
            .open(
                &request.id,
                &request.policy.name,
                &request.binding,
                self.lease,
            )
            .await
            .map_err(coordination("record the request"))?;
        lock(&self.open).insert(request.id.clone());
        Ok(())
    }

    async fn settle(
        &self,
        request: &ApprovalRequest,
        decision: &Decision,
    ) -> Result<Settlement, CoordinatorError> {
        // No longer renewed, whatever happens: if this fails, the lease
        // lapses and the request is cancelled.
        lock(&self.open).remove(&request.id);
        let (ending, why) = match decision {
            Decision::Approved { .. } => (Ending::Approved, None),
            Decision::Denied { comment, .. } => (Ending::Denied, comment.as_deref()),
            Decision::Expired => (Ending::Expired, None),
            Decision::Cancelled { why } => (Ending::Cancelled, Some(why.as_str())),
            _ => (Ending::Cancelled, None),
        };
        match self
            .ledger
            .settle(&request.id, ending, why)
            .await
            .map_err(coordination("settle the request"))?
        {
            Ledgered::Settled => Ok(Settlement::Settled),
            Ledgered::Already { ending, by } => Ok(Settlement::Already {
                why: format!("{} by {by}", ending.as_str()),
            }),
        }
    }

    async fn forward(&self, ballot: &Ballot) -> Result<BallotOutcome, CoordinatorError> {
        let (id, _owner) = match self
            .ledger
            .forward(&ballot.request_id, &encode_ballot(ballot))
            .await
        {
            Ok(forwarded) => forwarded,
            // Told as a refusal the gate would give, so the channel shows it.
            Err(LedgerError::UnknownRequest(_)) => {
                return Ok(BallotOutcome::Rejected(RejectReason::UnknownRequest));
            }
            Err(LedgerError::Ended { .. }) => {
                return Ok(BallotOutcome::Rejected(RejectReason::Settled));
            }
            Err(e) => return Err(coordination("forward the vote")(e)),
        };
        let (waiter, answered) = oneshot::channel();
        lock(&self.waiting).insert(id, waiter);
        // The answer may have come before the waiter was there.
        let answer = self.await_answer(id, answered).await;
        lock(&self.waiting).remove(&id);
        match answer {
            Some(answer) => decode_answer(&answer),
            None => Err(CoordinatorError {
                what: "hear from the waiting process",
                cause: format!("no answer within {} s", ANSWER_WAIT.as_secs()),
            }),
        }
    }

    async fn recovered(&self) -> Result<Vec<String>, CoordinatorError> {
        self.ledger
            .cancel_own()
            .await
            .map_err(coordination("close the previous run's requests"))
    }
}
