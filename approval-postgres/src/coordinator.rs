//! `PostgresCoordinator`: the gate's [`Coordinator`] on the request
//! ledger, for gate processes and endpoint replicas sharing one database.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approval_core::{
    ApprovalRequest, Ballot, BallotOutcome, Ballots, Coordinator, CoordinatorError, Decision,
    Forwarded, RejectReason, Settlement,
};
use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::connection::Database;
use crate::ledger::{Ending, Ledger, LedgerError, Settlement as Ledgered};
use crate::wire::{ForwardingKey, Unopened, open_answer, open_ballot, seal_answer, seal_ballot};

/// How long a replica waits for the answer of the process a vote went to.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// How often a replica waiting for an answer reads it back, in case its
/// announcement was missed.
const ANSWER_RECHECK: Duration = Duration::from_millis(100);
/// How long a lost listening connection waits before listening again.
const RELISTEN_AFTER: Duration = Duration::from_millis(500);
/// The shortest lease: shorter ones would let a pause of a second (a slow
/// disk, a busy database) cancel the requests of a live process.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// The channel a forwarded vote whose seal does not hold is recorded as
/// refused in.
const FORWARDED_CHANNEL: &str = "forwarded";

fn coordination(what: &'static str) -> impl Fn(LedgerError) -> CoordinatorError {
    move |e| CoordinatorError {
        what,
        cause: e.to_string(),
    }
}

/// Votes waiting for their answers, by vote id: told when it is announced.
type Waiting = Arc<Mutex<HashMap<i64, oneshot::Sender<()>>>>;

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
///   sealed with the [`ForwardingKey`] and stored, that process is woken
///   by `NOTIFY`, checks the seal, casts it (all the gate's checks,
///   recorded on its own chain) and its sealed answer comes back the same
///   way (a replica waits 5 seconds for it, then fails the vote: the
///   reviewer's retry is absorbed if the first did count); a vote for a
///   request no process waits on is refused, and recorded, by the replica;
/// - a deferred request is leased to its deadline and outlives its
///   process's run: at `Gate::recover` the next run holds the ones it
///   reopened, and the previous run's other open requests are cancelled.
///   A vote a replica forwards while the holder is down is withdrawn
///   after the wait (the reviewer is told to vote again), never counted
///   later behind their back.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use approval_postgres::{Database, ForwardingKey, PostgresCoordinator};
///
/// # async fn run(builder: approval_core::GateBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// let db = Database::new("postgres://approval@db.internal/approval?sslmode=require")?;
/// let key = ForwardingKey::read_file("/etc/approval/forwarding.key")?;
/// let coordinator =
///     PostgresCoordinator::connect(&db, "agent-host-1", Duration::from_secs(30), key).await?;
/// let gate = builder.coordinator(Arc::new(coordinator)).build()?;
/// gate.recover().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PostgresCoordinator {
    ledger: Arc<Ledger>,
    key: Arc<ForwardingKey>,
    lease: Duration,
    open: Arc<Mutex<HashSet<String>>>,
    waiting: Waiting,
    /// How many forwarded votes are being cast and answered.
    casting: Arc<watch::Sender<usize>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl PostgresCoordinator {
    /// Connects as process `process` (unique among live processes, the same
    /// across restarts; its audit chain's name serves), with leases of
    /// `lease` (at least [`MIN_LEASE`]) and the deployment's forwarding
    /// `key`, and starts renewing leases, cancelling lapsed ones and
    /// listening for answers, on the current runtime. The tasks stop, and
    /// their connections close, when the coordinator is dropped.
    pub async fn connect(
        database: &Database,
        process: &str,
        lease: Duration,
        key: ForwardingKey,
    ) -> Result<Self, LedgerError> {
        if lease < MIN_LEASE {
            return Err(LedgerError::LeaseTooShort(lease));
        }
        let ledger = Arc::new(Ledger::connect(database, process).await?);
        let open: Arc<Mutex<HashSet<String>>> = Arc::default();
        let waiting: Waiting = Arc::default();
        // Listening before any vote is forwarded (and before any task
        // holds the ledger: a failure here leaves nothing running).
        let first = ledger.listen_answers().await?;
        let keeper = tokio::spawn(keep_leases(ledger.clone(), open.clone(), lease));
        let answers = tokio::spawn(hear_answers(ledger.clone(), waiting.clone(), first));
        Ok(Self {
            ledger,
            key: Arc::new(key),
            lease,
            open,
            waiting,
            casting: Arc::new(watch::Sender::new(0)),
            tasks: Mutex::new(vec![keeper, answers]),
        })
    }

    /// The sealed answer to vote `id`: read back when announced, or every
    /// so often (an announcement is missed while a listening connection is
    /// replaced); `Ok(None)` if none will come (its request ended before
    /// the waiting process took it), `Err` after [`ANSWER_WAIT`].
    async fn await_answer(
        &self,
        id: i64,
        mut announced: oneshot::Receiver<()>,
    ) -> Result<Option<String>, CoordinatorError> {
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        loop {
            match self.ledger.answer_of(id).await {
                Ok((Some(answer), _)) => return Ok(Some(answer)),
                Ok((None, false)) => return Ok(None),
                // Taken and not answered yet, or the database is away:
                // ask again.
                Ok((None, true)) | Err(_) => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                // Not taken by now (its process is down or slow): withdrawn,
                // so the reviewer's "try again" is true and the vote never
                // counts behind their back later.
                let cause = match self.ledger.withdraw(id).await {
                    Ok(true) => format!(
                        "not taken within {} s, withdrawn: vote again",
                        ANSWER_WAIT.as_secs()
                    ),
                    Ok(false) => format!("no answer within {} s", ANSWER_WAIT.as_secs()),
                    Err(e) => format!("no answer within {} s ({e})", ANSWER_WAIT.as_secs()),
                };
                return Err(CoordinatorError {
                    what: "hear from the waiting process",
                    cause,
                });
            }
            let wait = (deadline - now).min(ANSWER_RECHECK);
            match tokio::time::timeout(wait, &mut announced).await {
                Ok(Ok(())) => announced = oneshot::channel().1,
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

    /// Waits until the votes forwarded here that are being cast have been
    /// answered (or `limit` has passed): call it before the process exits,
    /// so the replicas that took them hear how they went instead of
    /// reporting no answer. Returns whether all were answered.
    ///
    /// ```no_run
    /// # async fn end(coordinator: approval_postgres::PostgresCoordinator) {
    /// coordinator.flush(std::time::Duration::from_secs(5)).await;
    /// # }
    /// ```
    pub async fn flush(&self, limit: Duration) -> bool {
        let mut casting = self.casting.subscribe();
        matches!(
            tokio::time::timeout(limit, casting.wait_for(|n| *n == 0)).await,
            Ok(Ok(_))
        )
    }
}

/// Counts one forwarded vote as being cast, until dropped.
struct Casting(Arc<watch::Sender<usize>>);

impl Casting {
    fn start(count: &Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for Casting {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Drop for PostgresCoordinator {
    fn drop(&mut self) {
        // Their receivers go with them, and with those the connections
        // they listen on.
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
            if let Err(error) = ledger.renew(&ids, lease).await {
                tracing::warn!(%error, open = ids.len(), "could not renew the leases; trying again");
            }
        }
        match ledger.cancel_lapsed().await {
            Ok(ended) if !ended.is_empty() => {
                tracing::info!(requests = ?ended, "ended requests whose lease lapsed");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not end lapsed requests; trying again"),
        }
    }
}

/// Tells the vote waiting for each announced answer.
async fn hear_answers(
    ledger: Arc<Ledger>,
    waiting: Waiting,
    first: tokio::sync::mpsc::UnboundedReceiver<i64>,
) {
    let mut listening = Ok(first);
    loop {
        if let Ok(mut answered) = listening {
            while let Some(id) = answered.recv().await {
                // A waiter that gave up (its wait ran out) hears nothing.
                if let Some(waiter) = lock(&waiting).remove(&id)
                    && waiter.send(()).is_err()
                {
                    tracing::debug!(
                        vote = id,
                        "an answer came after its replica stopped waiting"
                    );
                }
            }
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
        listening = ledger.listen_answers().await;
    }
}

/// Casts the votes forwarded to this process, each on a task of its own
/// (one slow vote does not hold up the others), and answers each.
async fn cast_forwarded(
    ledger: Arc<Ledger>,
    key: Arc<ForwardingKey>,
    ballots: Ballots,
    casting: Arc<watch::Sender<usize>>,
) {
    loop {
        if let Ok(mut votes) = ledger.listen().await {
            while let Some(vote) = votes.recv().await {
                let (ledger, key, ballots) = (ledger.clone(), key.clone(), ballots.clone());
                let casting = Casting::start(&casting);
                tokio::spawn(async move {
                    let _casting = casting;
                    let outcome = match open_ballot(&key, &vote.request_id, &vote.ballot) {
                        Ok(ballot) => ballots
                            .cast_forwarded(ballot)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(Unopened::Forged) => {
                            // Not from a process with the key: never cast,
                            // counted and traced.
                            ballots.refuse(
                                &vote.request_id,
                                FORWARDED_CHANNEL,
                                RejectReason::BadSignature,
                            );
                            Ok(BallotOutcome::Rejected(RejectReason::BadSignature))
                        }
                        Err(Unopened::Unreadable) => Err("an unreadable forwarded vote".into()),
                    };
                    // Taken votes are answered; if this fails, the replica
                    // reports no answer after its wait.
                    if let Err(error) = ledger
                        .answer(vote.id, &seal_answer(&key, vote.id, &outcome))
                        .await
                    {
                        tracing::warn!(vote = vote.id, %error, "could not answer a forwarded vote");
                    }
                });
            }
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

#[async_trait]
impl Coordinator for PostgresCoordinator {
    fn attach(&self, ballots: Ballots) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let task = runtime.spawn(cast_forwarded(
                self.ledger.clone(),
                self.key.clone(),
                ballots,
                self.casting.clone(),
            ));
            lock(&self.tasks).push(task);
        }
    }

    async fn opened(
        &self,
        request: &ApprovalRequest,
        deferred: bool,
    ) -> Result<(), CoordinatorError> {
        let (id, policy, binding) = (&request.id, &request.policy.name, &request.binding);
        if deferred {
            // Leased to its deadline, not renewed: it outlives this run.
            // A lease more, so that a live owner's own timer (which records
            // `expired` on its chain) ends it rather than another process.
            let until = request
                .expires_at
                .checked_add(self.lease)
                .unwrap_or(request.expires_at);
            return self
                .ledger
                .open_deferred(id, policy, binding, until)
                .await
                .map_err(coordination("record the request"));
        }
        self.ledger
            .open(id, policy, binding, self.lease)
            .await
            .map_err(coordination("record the request"))?;
        lock(&self.open).insert(request.id.clone());
        Ok(())
    }

    async fn deferred(&self, request: &ApprovalRequest) -> Result<(), CoordinatorError> {
        // As `opened` leases a deferred request: to its deadline and a lease
        // more; no longer renewed by this run.
        let until = request
            .expires_at
            .checked_add(self.lease)
            .unwrap_or(request.expires_at);
        self.ledger
            .defer(&request.id, until)
            .await
            .map_err(coordination("defer the request"))?;
        lock(&self.open).remove(&request.id);
        Ok(())
    }

    async fn settle(
        &self,
        request: &ApprovalRequest,
        decision: &Decision,
    ) -> Result<Settlement, CoordinatorError> {
        let (ending, why) = match decision {
            Decision::Approved { .. } => (Ending::Approved, None),
            Decision::Denied { comment, .. } => (Ending::Denied, comment.as_deref()),
            Decision::Expired => (Ending::Expired, None),
            Decision::Cancelled { why } => (Ending::Cancelled, Some(why.as_str())),
            _ => (Ending::Cancelled, None),
        };
        let settled = self.ledger.settle(&request.id, ending, why).await;
        // Renewed while it may still be approved: an approval the ledger
        // did not take leaves the request open here (the next vote asks
        // again). Any other ending stands here regardless, and its row is
        // left to lapse.
        if settled.is_ok() || ending != Ending::Approved {
            lock(&self.open).remove(&request.id);
        }
        match settled.map_err(coordination("settle the request"))? {
            Ledgered::Settled => Ok(Settlement::Settled),
            Ledgered::Already { ending, by } => Ok(Settlement::Already {
                why: format!("{} by {by}", ending.as_str()),
            }),
        }
    }

    async fn forward(&self, ballot: &Ballot) -> Result<Forwarded, CoordinatorError> {
        let id = match self
            .ledger
            .forward(&ballot.request_id, &seal_ballot(&self.key, ballot))
            .await
        {
            Ok((id, _owner)) => id,
            Err(LedgerError::UnknownRequest(_)) => {
                return Ok(Forwarded::NotWaiting(RejectReason::UnknownRequest));
            }
            Err(LedgerError::Ended { .. }) => {
                return Ok(Forwarded::NotWaiting(RejectReason::Settled));
            }
            Err(e) => return Err(coordination("forward the vote")(e)),
        };
        let (waiter, announced) = oneshot::channel();
        lock(&self.waiting).insert(id, waiter);
        // The answer may have come before the waiter was there: read first.
        let answer = self.await_answer(id, announced).await;
        lock(&self.waiting).remove(&id);
        match answer? {
            Some(sealed) => open_answer(&self.key, id, &sealed),
            // Its request ended before the waiting process took it.
            None => Ok(Forwarded::NotWaiting(RejectReason::Settled)),
        }
    }

    async fn recovered(
        &self,
        reopened: &[Arc<ApprovalRequest>],
    ) -> Result<Vec<String>, CoordinatorError> {
        let kept: Vec<String> = reopened.iter().map(|r| r.id.clone()).collect();
        self.ledger
            .recover(&kept)
            .await
            .map_err(coordination("recover the previous run's requests"))
    }
}
