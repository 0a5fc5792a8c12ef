//! The request ledger: what several gate processes and endpoint replicas
//! on one database agree on. Each open request names the process waiting
//! for it and a lease that process renews; a request settles exactly once,
//! by a conditional update the database arbitrates (the first of two
//! simultaneous deciders wins, the other is told how it ended); votes a
//! replica takes for a request another process waits on are stored and
//! that process is woken by `NOTIFY`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

use tokio::sync::{Mutex, mpsc};
use tokio_postgres::{AsyncMessage, Client};

use crate::connection::{Database, Lock, Stream, take_lock};

/// The channel forwarded votes are announced on; the payload is
/// `<owner> <vote id>`, and each process keeps its own.
const VOTES_CHANNEL: &str = "approval_votes";
/// The channel answers to forwarded votes are announced on; the payload is
/// the vote's id (the answer itself is read from its row: a payload is
/// limited to 8,000 bytes, an answer is not).
const ANSWERS_CHANNEL: &str = "approval_answers";
/// How long one exchange with the database may take before the call fails
/// and the connection is replaced (a host that vanished answers nothing).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `connect` waits for a previous run's session to release the
/// process name (a killed process's session ends when the server notices).
const NAME_WAIT: Duration = Duration::from_secs(5);

/// How a request ended, as the ledger stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Approved by its reviewers.
    Approved,
    /// Denied by a reviewer.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// Cancelled: the caller gave up, its process went away, or its lease
    /// lapsed.
    Cancelled,
}

impl Ending {
    /// The word the ledger stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    fn parse(state: &str) -> Option<Self> {
        Some(match state {
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// What a settle attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// This call settled it.
    Settled,
    /// It had already ended, this way, by `by`: nothing changed.
    Already {
        /// How it ended.
        ending: Ending,
        /// The process that settled it.
        by: String,
    },
}

/// A vote another replica took for a request this process waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedVote {
    /// The vote's row.
    pub id: i64,
    /// The request voted on.
    pub request_id: String,
    /// The ballot as the replica stored it (its own encoding).
    pub ballot: String,
    /// The replica that took it.
    pub received_by: String,
}

/// Why the ledger could not do what was asked: the call it serves fails
/// closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The database failed or could not be reached.
    #[error("request ledger: {what} failed: {cause}")]
    Store {
        /// What was being done.
        what: &'static str,
        /// The database's or the client's words.
        cause: String,
    },
    /// The request is not in the ledger.
    #[error("request {0} is not in the ledger")]
    UnknownRequest(String),
    /// The request has ended; a vote on it cannot be forwarded.
    #[error("request {id} is already {}", ending.as_str())]
    Ended {
        /// The request.
        id: String,
        /// How it ended.
        ending: Ending,
    },
    /// Another live process holds this process name: two processes under
    /// one name would settle and cancel each other's requests.
    #[error("process name {0:?} is held by another live process")]
    NameTaken(String),
    /// A lease shorter than the coordinator's
    /// [`MIN_LEASE`](crate::MIN_LEASE).
    #[error("a lease of {0:?} is too short: at least one second")]
    LeaseTooShort(Duration),
    /// The database did not answer in time; the connection is replaced.
    #[error("request ledger: {0} timed out")]
    TimedOut(&'static str),
}

fn store(what: &'static str) -> impl Fn(tokio_postgres::Error) -> LedgerError {
    move |e| LedgerError::Store {
        what,
        cause: crate::connection::cause(&e),
    }
}

/// One process's view of the ledger: its name, and a connection that is
/// replaced when lost (the call that finds it lost fails; the next one
/// reconnects).
///
/// ```no_run
/// use std::time::Duration;
/// use approval_postgres::ledger::{Ending, Ledger, Settlement};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use approval_postgres::Database;
///
/// let db = Database::new("postgres://approval@db.internal/approval")?;
/// let ledger = Ledger::connect(&db, "agent-host-1").await?;
/// ledger.open("01JD…", "data-export", &[0; 32], Duration::from_secs(30)).await?;
/// if ledger.settle("01JD…", Ending::Approved, None).await? == Settlement::Settled {
///     // Only now may the call run.
/// }
/// # Ok(())
/// # }
/// ```
pub struct Ledger {
    database: Database,
    process: String,
    /// This run of the process (random): which of its requests it holds.
    run: String,
    session: Mutex<Session>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("Ledger")
            .field("database", &self.database)
            .field("process", &self.process)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

async fn connect(
    database: &Database,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, Stream>,
    ),
    LedgerError,
> {
    database.open().await.map_err(|cause| LedgerError::Store {
        what: "connect",
        cause,
    })
}

/// A connection listening on `channel`, and the payloads announced there.
async fn listen_on(
    database: &Database,
    channel: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<String>), LedgerError> {
    let (client, mut connection) = connect(database).await?;
    let (notified, notifications) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        loop {
            // Ends with the connection, or when nobody listens any more
            // (dropping the connection closes it).
            let message = tokio::select! {
                biased;
                () = notified.closed() => return,
                message = futures_util::StreamExt::next(&mut messages) => message,
            };
            match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if notified.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    bounded("listen", client.batch_execute(&format!("LISTEN {channel}")))
        .await?
        .map_err(store("listen"))?;
    Ok((client, notifications))
}

/// The next of `incoming`, or `None` when it ends or once nobody takes
/// from `outgoing` any more (checked first).
async fn next_while_wanted<T, U>(
    incoming: &mut mpsc::UnboundedReceiver<T>,
    outgoing: &mpsc::UnboundedSender<U>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = outgoing.closed() => None,
        item = incoming.recv() => item,
    }
}

/// `exchange`, failing as [`LedgerError::TimedOut`] past the bound.
async fn bounded<T>(
    what: &'static str,
    exchange: impl Future<Output = T>,
) -> Result<T, LedgerError> {
    tokio::time::timeout(QUERY_TIMEOUT, exchange)
        .await
        .map_err(|_| LedgerError::TimedOut(what))
}

/// Locks `process`'s name for the session of `client` (taking it from
/// `abandoned`, this ledger's earlier session, if the server still holds
/// it for that one); returns the session's backend pid.
async fn lock_name(
    client: &Client,
    process: &str,
    abandoned: Option<i32>,
) -> Result<i32, LedgerError> {
    let (locked, pid) = bounded(
        "lock the process name",
        take_lock(client, Lock::Process, process, abandoned),
    )
    .await?
    .map_err(store("lock the process name"))?;
    if locked {
        Ok(pid)
    } else {
        Err(LedgerError::NameTaken(process.to_owned()))
    }
}

/// The ledger's connection and its session's pid, and the session it
/// last gave up on (the server may still hold the name's lock for it).
#[derive(Default)]
struct Session {
    current: Option<(Client, i32)>,
    abandoned: Option<i32>,
}

impl Ledger {
    /// Connects as process `process` (a name unique among live processes,
    /// the same across its restarts: its audit chain's name does), bringing
    /// the schema up to date. The name is locked for as long as this
    /// ledger lives ([`LedgerError::NameTaken`] if another live process
    /// holds it: a restart waits a few seconds for its previous run's
    /// session to end).
    pub async fn connect(database: &Database, process: &str) -> Result<Self, LedgerError> {
        let (mut client, connection) = connect(database).await?;
        tokio::spawn(connection);
        crate::schema::migrate(&mut client)
            .await
            .map_err(|e| LedgerError::Store {
                what: "migrate the schema",
                cause: e.to_string(),
            })?;
        let deadline = tokio::time::Instant::now() + NAME_WAIT;
        let pid = loop {
            match lock_name(&client, process, None).await {
                Err(LedgerError::NameTaken(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                locked => break locked?,
            }
        };
        let mut run = [0u8; 16];
        SystemRandom::new()
            .fill(&mut run)
            .map_err(|_| LedgerError::Store {
                what: "draw a run id",
                cause: "the system's random source failed".into(),
            })?;
        Ok(Self {
            database: database.clone(),
            process: process.to_owned(),
            run: run.iter().map(|b| format!("{b:02x}")).collect(),
            session: Mutex::new(Session {
                current: Some((client, pid)),
                abandoned: None,
            }),
        })
    }

    /// This process's name.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// Runs `f` on the connection (`what` names it in errors), replacing
    /// a lost one first (and locking the process name on the new one); a
    /// call that takes too long fails and drops the connection.
    async fn with_client<T>(
        &self,
        what: &'static str,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut guard = self.session.lock().await;
        let session = &mut *guard;
        let (client, pid) = match session.current.take() {
            Some((client, pid)) if !client.is_closed() => session.current.insert((client, pid)),
            lost => {
                if let Some((_, pid)) = lost {
                    session.abandoned = Some(pid);
                }
                let (client, connection) = connect(&self.database).await?;
                tokio::spawn(connection);
                let pid = lock_name(&client, &self.process, session.abandoned).await?;
                session.abandoned = None;
                session.current.insert((client, pid))
            }
        };
        let pid = *pid;
        let result = tokio::time::timeout(QUERY_TIMEOUT, f(client)).await;
        let result = match result {
            Ok(result) if !client.is_closed() => return result,
            Ok(result) => result,
            Err(_) => Err(LedgerError::TimedOut(what)),
        };
        // Given up: the next call connects again.
        session.current = None;
        session.abandoned = Some(pid);
        result
    }

    /// Records that this process waits on request `id` (under `policy`,
    /// bound to `binding`), leased for `lease`.
    pub async fn open(
        &self,
        id: &str,
        policy: &str,
        binding: &[u8; 32],
        lease: Duration,
    ) -> Result<(), LedgerError> {
        self.insert_request(
            id,
            policy,
            binding,
            "now() + make_interval(secs => $5::float8)",
            lease.as_secs_f64(),
            false,
        )
        .await
    }

    /// Records that this process holds deferred request `id` until
    /// `deadline`: nobody waits on it, so its lease is the deadline
    /// (never renewed), a restart of this process keeps it
    /// ([`recover`](Self::recover)), and it expires when that passes.
    pub async fn open_deferred(
        &self,
        id: &str,
        policy: &str,
        binding: &[u8; 32],
        deadline: SystemTime,
    ) -> Result<(), LedgerError> {
        // A deadline before 1970 is already past.
        let at = deadline.duration_since(UNIX_EPOCH).unwrap_or_default();
        let sql = "to_timestamp($5::float8)";
        self.insert_request(id, policy, binding, sql, at.as_secs_f64(), true)
            .await
    }

    /// Makes this process's open request `id` deferred, held until
    /// `deadline` (never renewed), as [`open_deferred`](Self::open_deferred)
    /// would have; [`LedgerError::UnknownRequest`] if it is not open here.
    pub async fn defer(&self, id: &str, deadline: SystemTime) -> Result<(), LedgerError> {
        let at = deadline.duration_since(UNIX_EPOCH).unwrap_or_default();
        let what = "defer the request";
        let changed = self
            .with_client(what, async |client| {
                client
                    .execute(
                        "UPDATE approval_requests
                            SET deferred = true, lease_until = to_timestamp($3::float8)
                          WHERE id = $1 AND owner = $2 AND state = 'open'",
                        &[&id, &self.process, &at.as_secs_f64()],
                    )
                    .await
                    .map_err(store(what))
            })
            .await?;
        if changed == 0 {
            return Err(LedgerError::UnknownRequest(id.to_owned()));
        }
        Ok(())
    }

    /// Inserts an open request with `lease_until` given by `until` (SQL
    /// with `$5`, a number of seconds).
    async fn insert_request(
        &self,
        id: &str,
        policy: &str,
        binding: &[u8; 32],
        until: &str,
        seconds: f64,
        deferred: bool,
    ) -> Result<(), LedgerError> {
        let (process, run) = (&self.process, &self.run);
        let sql = format!(
            "INSERT INTO approval_requests (id, owner, policy, binding, lease_until, deferred, run)
             VALUES ($1, $2, $3, $4, {until}, $6, $7)"
        );
        self.with_client("open the request", async |client| {
            client
                .execute(
                    &sql,
                    &[
                        &id,
                        process,
                        &policy,
                        &binding.as_slice(),
                        &seconds,
                        &deferred,
                        run,
                    ],
                )
                .await
                .map(drop)
                .map_err(store("open the request"))
        })
        .await
    }

    /// Extends the leases of the open requests `ids` of this process to
    /// `lease` from now; returns how many.
    pub async fn renew(&self, ids: &[String], lease: Duration) -> Result<u64, LedgerError> {
        let process = &self.process;
        let seconds = lease.as_secs_f64();
        self.with_client("renew the leases", async |client| {
            client
                .execute(
                    "UPDATE approval_requests
                        SET lease_until = now() + make_interval(secs => $2::float8)
                      WHERE owner = $1 AND state = 'open' AND id = ANY($3)",
                    &[process, &seconds, &ids],
                )
                .await
                .map_err(store("renew the leases"))
        })
        .await
    }

    /// Settles request `id` as `ending` (with `why`), if it is still open:
    /// the database lets exactly one of any number of simultaneous
    /// attempts through; the others learn how it ended. Asking again for
    /// what this process already settled (its first answer was lost with
    /// the connection) is [`Settlement::Settled`] too.
    pub async fn settle(
        &self,
        id: &str,
        ending: Ending,
        why: Option<&str>,
    ) -> Result<Settlement, LedgerError> {
        let process = &self.process;
        self.with_client("settle the request", async |client| {
            let settled = client
                .query_opt(
                    "UPDATE approval_requests
                        SET state = $2, settled_by = $3, settled_at = now(), why = $4
                      WHERE id = $1 AND state = 'open'
                  RETURNING id",
                    &[&id, &ending.as_str(), process, &why],
                )
                .await
                .map_err(store("settle the request"))?;
            if settled.is_some() {
                return Ok(Settlement::Settled);
            }
            let row = client
                .query_opt(
                    "SELECT state, settled_by FROM approval_requests WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(store("read the request"))?
                .ok_or_else(|| LedgerError::UnknownRequest(id.to_owned()))?;
            let state: String = row.get(0);
            let found = Ending::parse(&state).unwrap_or(Ending::Cancelled);
            let by = row.get::<_, Option<String>>(1).unwrap_or_default();
            if found == ending && by == *process {
                return Ok(Settlement::Settled);
            }
            Ok(Settlement::Already { ending: found, by })
        })
        .await
    }

    /// Ends every open request whose lease has lapsed, whoever owns it:
    /// cancelled (its process is gone), or expired for a deferred one
    /// (its deadline passed); returns their ids.
    pub async fn cancel_lapsed(&self) -> Result<Vec<String>, LedgerError> {
        let process = &self.process;
        let what = "end lapsed requests";
        self.with_client(what, async |client| {
            let rows = client
                .query(
                    "UPDATE approval_requests
                        SET state = CASE WHEN deferred THEN 'expired' ELSE 'cancelled' END,
                            settled_by = $1, settled_at = now(),
                            why = CASE WHEN deferred THEN 'its deadline passed'
                                       ELSE 'the waiting process stopped renewing its lease' END
                      WHERE state = 'open' AND lease_until < now()
                  RETURNING id",
                    &[process],
                )
                .await
                .map_err(store(what))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .await
    }

    /// Cancels the open requests of this process's previous run (after a
    /// restart: nobody waits on them any more); never another process's.
    pub async fn cancel_own(&self) -> Result<Vec<String>, LedgerError> {
        self.recover(&[]).await
    }

    /// After a restart: this run holds the previous run's open requests
    /// `kept` (deferred ones it reopened), and the votes forwarded for them
    /// meanwhile are announced again for [`listen`](Self::listen) to take;
    /// every other open request of this process is cancelled (nobody waits
    /// on it any more), never another process's. Returns the cancelled
    /// ids. One transaction: a vote forwarded meanwhile either is
    /// announced here or finds the request held by this run.
    pub async fn recover(&self, kept: &[String]) -> Result<Vec<String>, LedgerError> {
        let (process, run) = (&self.process, &self.run);
        let what = "recover this process's requests";
        self.with_client(what, async |client| {
            let transaction = client.transaction().await.map_err(store(what))?;
            transaction
                .execute(
                    "UPDATE approval_requests SET run = $2
                      WHERE owner = $1 AND state = 'open' AND id = ANY($3)",
                    &[process, run, &kept],
                )
                .await
                .map_err(store(what))?;
            let cancelled = transaction
                .query(
                    "UPDATE approval_requests
                        SET state = 'cancelled', settled_by = $1, settled_at = now(),
                            why = 'the waiting process restarted'
                      WHERE owner = $1 AND state = 'open' AND NOT (id = ANY($2))
                        AND run IS DISTINCT FROM $3
                  RETURNING id",
                    &[process, &kept, run],
                )
                .await
                .map_err(store(what))?;
            transaction
                .execute(
                    "SELECT pg_notify($1, $2 || ' ' || v.id)
                       FROM approval_votes v
                      WHERE v.request_id = ANY($3) AND v.taken_at IS NULL",
                    &[&VOTES_CHANNEL, process, &kept],
                )
                .await
                .map_err(store(what))?;
            transaction.commit().await.map_err(store(what))?;
            Ok(cancelled.iter().map(|r| r.get(0)).collect())
        })
        .await
    }

    /// Stores a vote this replica took for request `request_id` (its
    /// `ballot`, encoded by the caller) and wakes the process that waits on
    /// it, in one transaction; returns the vote's id and that process.
    pub async fn forward(
        &self,
        request_id: &str,
        ballot: &str,
    ) -> Result<(i64, String), LedgerError> {
        let process = &self.process;
        self.with_client("forward the vote", async |client| {
            let transaction = client
                .transaction()
                .await
                .map_err(store("forward the vote"))?;
            // The row stays locked until the vote is in: the request
            // cannot settle in between.
            let row = transaction
                .query_opt(
                    "SELECT owner, state FROM approval_requests WHERE id = $1 FOR SHARE",
                    &[&request_id],
                )
                .await
                .map_err(store("forward the vote"))?
                .ok_or_else(|| LedgerError::UnknownRequest(request_id.to_owned()))?;
            let (owner, state): (String, String) = (row.get(0), row.get(1));
            if state != "open" {
                return Err(LedgerError::Ended {
                    id: request_id.to_owned(),
                    ending: Ending::parse(&state).unwrap_or(Ending::Cancelled),
                });
            }
            let id: i64 = transaction
                .query_one(
                    "INSERT INTO approval_votes (request_id, received_by, ballot)
                     VALUES ($1, $2, $3) RETURNING id",
                    &[&request_id, process, &ballot],
                )
                .await
                .map_err(store("forward the vote"))?
                .get(0);
            transaction
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[&VOTES_CHANNEL, &format!("{owner} {id}")],
                )
                .await
                .map_err(store("forward the vote"))?;
            transaction
                .commit()
                .await
                .map_err(store("forward the vote"))?;
            Ok((id, owner))
        })
        .await
    }

    /// Records this process's answer to a forwarded vote (the caller's
    /// encoding) and announces it to the replica that took the vote; a
    /// vote is answered once (a second answer changes nothing).
    pub async fn answer(&self, vote_id: i64, answer: &str) -> Result<(), LedgerError> {
        self.with_client("answer the vote", async |client| {
            client
                .execute(
                    "WITH answered AS (
                         UPDATE approval_votes SET answer = $2, answered_at = now()
                          WHERE id = $1 AND answer IS NULL RETURNING id
                     )
                     SELECT pg_notify($3, id::text) FROM answered",
                    &[&vote_id, &answer, &ANSWERS_CHANNEL],
                )
                .await
                .map(drop)
                .map_err(store("answer the vote"))
        })
        .await
    }

    /// Withdraws vote `vote_id` if the waiting process has not taken it:
    /// it can then never be cast (a replica that gave up waiting tells its
    /// reviewer so). Whether it was withdrawn; `false` if it was taken
    /// already (its answer may still come).
    pub async fn withdraw(&self, vote_id: i64) -> Result<bool, LedgerError> {
        self.with_client("withdraw the vote", async |client| {
            let withdrawn = client
                .query_opt(
                    "UPDATE approval_votes SET taken_at = now()
                      WHERE id = $1 AND taken_at IS NULL
                  RETURNING id",
                    &[&vote_id],
                )
                .await
                .map_err(store("withdraw the vote"))?;
            Ok(withdrawn.is_some())
        })
        .await
    }

    /// The answer to vote `vote_id`, if there is one yet, and whether one
    /// may still come: while the vote is taken by the waiting process (it
    /// answers every vote it takes), or its request is still open (it may
    /// yet take it). A vote left untaken when its request ended never will
    /// be: this marks it taken (by the caller), so the waiting process
    /// cannot take it after all.
    pub async fn answer_of(&self, vote_id: i64) -> Result<(Option<String>, bool), LedgerError> {
        self.with_client("read the answer", async |client| {
            let row = client
                .query_opt(
                    "SELECT v.answer, v.taken_at IS NOT NULL OR r.state = 'open'
                       FROM approval_votes v JOIN approval_requests r ON r.id = v.request_id
                      WHERE v.id = $1",
                    &[&vote_id],
                )
                .await
                .map_err(store("read the answer"))?;
            let Some(row) = row else {
                return Ok((None, false));
            };
            let (answer, may_come): (Option<String>, bool) = (row.get(0), row.get(1));
            if answer.is_some() || may_come {
                return Ok((answer, may_come));
            }
            // Untaken on an ended request: the database says who has it.
            // Marking it taken here means the waiting process, which may
            // have read the request as open a moment ago, cannot take it
            // now (its update finds it taken); if it took it first, it
            // answers.
            let claimed = client
                .query_opt(
                    "UPDATE approval_votes v SET taken_at = now()
                      WHERE v.id = $1 AND v.taken_at IS NULL
                        AND NOT EXISTS (SELECT 1 FROM approval_requests r
                                         WHERE r.id = v.request_id AND r.state = 'open')
                  RETURNING v.id",
                    &[&vote_id],
                )
                .await
                .map_err(store("read the answer"))?;
            Ok((None, claimed.is_none()))
        })
        .await
    }

    /// Listens for answers to forwarded votes, on a connection of its own:
    /// the id of each vote as its answer is announced (read it with
    /// [`answer_of`](Self::answer_of)). The stream ends when the connection
    /// is lost.
    pub async fn listen_answers(&self) -> Result<mpsc::UnboundedReceiver<i64>, LedgerError> {
        let (client, mut payloads) = listen_on(&self.database, ANSWERS_CHANNEL).await?;
        let (answers, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Holds the connection open while answers are wanted.
            let _client = client;
            while let Some(payload) = next_while_wanted(&mut payloads, &answers).await {
                if let Ok(id) = payload.parse::<i64>()
                    && answers.send(id).is_err()
                {
                    return;
                }
            }
        });
        Ok(received)
    }

    /// Listens for votes forwarded to this process, on a connection of its
    /// own: first those already waiting (forwarded while it was not
    /// listening), then each as its `NOTIFY` arrives. Each vote is taken
    /// once (marked in its row, in the query that reads it), so a vote
    /// never reaches the caller twice, even across listening again; the
    /// caller answers every vote it gets. The stream ends when the
    /// connection is lost; listen again to resume (nothing is missed:
    /// untaken votes are read first).
    pub async fn listen(&self) -> Result<mpsc::UnboundedReceiver<ForwardedVote>, LedgerError> {
        let (client, mut notifications) = listen_on(&self.database, VOTES_CHANNEL).await?;
        // Marking a vote taken need not wait for the disk: WAL is flushed
        // in order, so if anything of the vote's cast became durable (its
        // records, its answer), so did the mark; a mark a database crash
        // lost means the vote is taken again, and cast again, which the
        // gate absorbs. (One fsync fewer on every forwarded vote's path.)
        bounded(
            "listen",
            client.batch_execute("SET synchronous_commit = off"),
        )
        .await?
        .map_err(store("listen"))?;
        let (votes, received) = mpsc::unbounded_channel();
        // Only on open requests: a vote left untaken when its request
        // ended is a late one (see `answer_of`).
        let take = "UPDATE approval_votes v SET taken_at = now()
                      FROM approval_requests r
                     WHERE r.id = v.request_id AND r.owner = $1 AND r.state = 'open'
                       AND r.run = $3
                       AND v.taken_at IS NULL AND ($2::int8[] IS NULL OR v.id = ANY($2))
                 RETURNING v.id, v.request_id, v.ballot, v.received_by";
        let to_vote = |row: &tokio_postgres::Row| ForwardedVote {
            id: row.get(0),
            request_id: row.get(1),
            ballot: row.get(2),
            received_by: row.get(3),
        };
        // Votes waiting from before: every untaken one on an open request.
        let all: Option<Vec<i64>> = None;
        let mut waiting = bounded(
            "read waiting votes",
            client.query(take, &[&self.process, &all, &self.run]),
        )
        .await?
        .map_err(store("read waiting votes"))?
        .iter()
        .map(to_vote)
        .collect::<Vec<_>>();
        waiting.sort_by_key(|vote| vote.id);
        for vote in waiting {
            // Cannot fail: the receiver is still here, not yet returned.
            if votes.send(vote).is_err() {
                tracing::debug!(
                    "a waiting forwarded vote was not handed over: the receiver is gone"
                );
            }
        }
        let (process, run) = (self.process.clone(), self.run.clone());
        tokio::spawn(async move {
            // Once nobody listens, no vote is taken.
            while let Some(payload) = next_while_wanted(&mut notifications, &votes).await {
                let mut ids = Vec::new();
                let mut note = |payload: &str| {
                    if let Some((owner, id)) = payload.rsplit_once(' ')
                        && owner == process
                        && let Ok(id) = id.parse::<i64>()
                    {
                        ids.push(id);
                    }
                };
                note(&payload);
                // Others that came meanwhile share the query.
                while let Ok(more) = notifications.try_recv() {
                    note(&more);
                }
                if ids.is_empty() {
                    continue;
                }
                // A connection that stops answering ends the stream (the
                // caller listens again; untaken votes are read first).
                let ids = Some(ids);
                let Ok(Ok(rows)) =
                    bounded("take votes", client.query(take, &[&process, &ids, &run])).await
                else {
                    return;
                };
                let mut taken: Vec<_> = rows.iter().map(to_vote).collect();
                taken.sort_by_key(|vote| vote.id);
                for vote in taken {
                    if votes.send(vote).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(received)
    }
}
