//! `PostgresSink`: the audit chain in PostgreSQL, one chain per writer
//! process, appends from one process sharing commits.

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use approval_core::{AuditError, AuditSink, ChainHead, ChainWriter, PendingRecord, Receipt};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use crate::connection::{Database, Lock, cause, take_lock};

use crate::schema::migrate;

/// The most records one commit carries.
const BATCH_MAX: usize = 4096;
/// How many times the writer yields to gather more appends into a commit.
const GATHER_ROUNDS: usize = 4;
/// How long one commit may take before its outcome counts as unknown
/// (then checked on a fresh connection, as after a lost one).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `connect` waits for another session to release the chain.
const TAKEN_WAIT: Duration = Duration::from_secs(5);

/// One caller's records and where their receipts go.
struct Batch {
    records: Vec<PendingRecord>,
    reply: oneshot::Sender<Result<Vec<Receipt>, AuditError>>,
}

/// An audit sink that stores the chain in PostgreSQL.
///
/// - **One chain per writer process**: the chain has a name (one per
///   process, such as `agent-host-1`), and a session-level advisory lock
///   on it keeps a second process from writing it: each chain is, in
///   AUDIT-FORMAT.md's terms, one log with one writer, stored as rows
///   (`audit_records`: chain, seq, ts, the line exactly as written) instead
///   of a file. `approval verify --postgres URL --chain NAME` reads it back.
/// - **Durable when `append` returns**: the records are committed.
/// - **Group commit**: appends from concurrent tasks that arrive together
///   are sealed in order and inserted in one statement, one commit.
/// - **Fails closed**: if the database cannot be reached, or a commit's
///   outcome is unknown, `append` fails with [`AuditError::Store`] and the
///   gated call does not run. The next append reconnects, takes the lock
///   again, and continues from the last committed record, so nothing
///   committed is lost and nothing is written twice.
///
/// ```no_run
/// use std::sync::Arc;
/// use approval_core::{ChainWriter, KeyId, WriterSecret};
/// use approval_postgres::{Database, PostgresSink};
///
/// # async fn open() -> Result<(), Box<dyn std::error::Error>> {
/// let writer = Arc::new(ChainWriter::new(KeyId::new("ops-2026")?, &WriterSecret::read_file("writer.key")?));
/// let db = Database::new("postgres://approval@db.internal/approval?sslmode=require")?;
/// let sink = PostgresSink::connect(&db, "agent-host-1", writer).await?;
/// # Ok(())
/// # }
/// ```
pub struct PostgresSink {
    database: Database,
    chain: String,
    writer: Arc<ChainWriter>,
    queue: mpsc::UnboundedSender<Batch>,
}

impl fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("PostgresSink")
            .field("database", &self.database)
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

fn store(what: &'static str) -> impl Fn(tokio_postgres::Error) -> AuditError {
    move |e| AuditError::Store {
        what,
        cause: cause(&e),
    }
}

/// Connects, spawning the connection's task on the current runtime.
async fn connect(database: &Database) -> Result<Client, AuditError> {
    let (client, connection) = database.open().await.map_err(|cause| AuditError::Store {
        what: "connect",
        cause,
    })?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; the
        // next query then fails, and the writer reconnects.
        if let Err(e) = connection.await {
            tracing::warn!(error = %cause(&e), "the audit sink's database connection failed");
        }
    });
    Ok(client)
}

/// The writer's connection: locked to the chain, and where the chain stands.
struct Writing {
    client: Client,
    /// Its session on the server, should it be abandoned.
    pid: i32,
    head: ChainHead,
}

/// Connects, takes the chain's lock (from `abandoned`, this writer's
/// earlier session, if the server still holds it for that one), and reads
/// where the chain stands.
async fn start_writing(
    database: &Database,
    chain: &str,
    writer: &ChainWriter,
    abandoned: Option<i32>,
) -> Result<Writing, AuditError> {
    let client = connect(database).await?;
    let (locked, pid) = take_lock(&client, Lock::Chain, chain, abandoned)
        .await
        .map_err(store("lock the chain"))?;
    if !locked {
        return Err(AuditError::ChainTaken {
            chain: chain.to_owned(),
        });
    }
    client
        .execute(
            "INSERT INTO audit_chains (name) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&chain],
        )
        .await
        .map_err(store("register the chain"))?;
    let head = match last_line(&client, chain).await? {
        Some(line) => writer.resume(line.as_bytes())?,
        None => ChainHead::genesis(),
    };
    Ok(Writing { client, pid, head })
}

async fn last_line(client: &Client, chain: &str) -> Result<Option<String>, AuditError> {
    Ok(client
        .query_opt(
            "SELECT line FROM audit_records WHERE chain = $1 ORDER BY seq DESC LIMIT 1",
            &[&chain],
        )
        .await
        .map_err(store("read the chain's tail"))?
        .map(|row| row.get(0)))
}

impl PostgresSink {
    /// Connects to `database`, brings the schema up to date, takes the
    /// chain `chain` (failing with [`AuditError::ChainTaken`] if another
    /// process still writes it after a few seconds), and resumes it from
    /// its last record; `writer` must hold the key that record was sealed
    /// with.
    pub async fn connect(
        database: &Database,
        chain: &str,
        writer: Arc<ChainWriter>,
    ) -> Result<Self, AuditError> {
        let database = database.clone();
        if chain.is_empty() {
            return Err(AuditError::Store {
                what: "name the chain",
                cause: "the chain name is empty".into(),
            });
        }
        {
            let mut client = connect(&database).await?;
            migrate(&mut client).await.map_err(|e| AuditError::Store {
                what: "migrate the schema",
                cause: e.to_string(),
            })?;
        }
        // A restarted process's previous session may hold the lock until
        // the server notices it is gone: wait a little for it.
        let deadline = tokio::time::Instant::now() + TAKEN_WAIT;
        let writing = loop {
            match start_writing(&database, chain, &writer, None).await {
                Err(AuditError::ChainTaken { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                started => break started?,
            }
        };
        let (queue, batches) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(
            database.clone(),
            chain.to_owned(),
            Arc::clone(&writer),
            Some(writing),
            batches,
        ));
        Ok(Self {
            database,
            chain: chain.to_owned(),
            writer,
            queue,
        })
    }

    /// The chain's name.
    pub fn chain(&self) -> &str {
        &self.chain
    }
}

/// The writer task: takes every batch waiting, seals them in order, and
/// stores them with one statement (one commit).
async fn write_batches(
    database: Database,
    chain: String,
    writer: Arc<ChainWriter>,
    mut writing: Option<Writing>,
    mut batches: mpsc::UnboundedReceiver<Batch>,
) {
    // This writer's last session, if it gave it up: the server may still
    // hold the chain's lock for it.
    let mut abandoned: Option<i32> = None;
    while let Some(first) = batches.recv().await {
        let mut group = vec![first];
        let mut records = group[0].records.len();
        // Appenders woken by the last commit are still coming back with
        // their next records: yield to them while they keep arriving (a
        // few rounds at most), so they share this commit.
        for _ in 0..GATHER_ROUNDS {
            let before = group.len();
            while records < BATCH_MAX {
                match batches.try_recv() {
                    Ok(batch) => {
                        records += batch.records.len();
                        group.push(batch);
                    }
                    Err(_) => break,
                }
            }
            if records >= BATCH_MAX || (group.len() == before && before > 1) {
                break;
            }
            tokio::task::yield_now().await;
        }
        // A lost connection is replaced first; until that works, every
        // append fails.
        let mut current = match writing.take() {
            Some(w) if !w.client.is_closed() => w,
            lost => {
                if let Some(lost) = lost {
                    abandoned = Some(lost.pid);
                }
                match start_writing(&database, &chain, &writer, abandoned).await {
                    Ok(w) => {
                        abandoned = None;
                        w
                    }
                    Err(e) => {
                        for batch in group {
                            answer(batch.reply, Err(clone_error(&e)));
                        }
                        continue;
                    }
                }
            }
        };
        let usable = commit_group(&database, &chain, &writer, &mut current, group).await;
        if usable && !current.client.is_closed() {
            writing = Some(current);
        } else {
            abandoned = Some(current.pid);
        }
    }
}

/// Answers a caller; one that stopped waiting needs no answer.
fn answer(
    reply: oneshot::Sender<Result<Vec<Receipt>, AuditError>>,
    result: Result<Vec<Receipt>, AuditError>,
) {
    if reply.send(result).is_err() {
        tracing::trace!("an audit append's caller stopped waiting before its answer");
    }
}

/// `AuditError` is not `Clone`; the store's errors are what gets repeated.
fn clone_error(e: &AuditError) -> AuditError {
    match e {
        AuditError::ChainTaken { chain } => AuditError::ChainTaken {
            chain: chain.clone(),
        },
        AuditError::Store { what, cause } => AuditError::Store {
            what,
            cause: cause.clone(),
        },
        other => AuditError::Store {
            what: "resume the chain",
            cause: other.to_string(),
        },
    }
}

/// The `ts` member of a sealed line.
fn ts_of(line: &str) -> Option<std::time::SystemTime> {
    #[derive(serde::Deserialize)]
    struct Ts<'a> {
        ts: &'a str,
    }
    let ts = serde_json::from_str::<Ts<'_>>(line).ok()?.ts;
    humantime::parse_rfc3339(ts).ok()
}

/// Seals `group` and commits it on `current`, answering every batch;
/// returns whether `current` may be used for the next group.
async fn commit_group(
    database: &Database,
    chain: &str,
    writer: &ChainWriter,
    current: &mut Writing,
    group: Vec<Batch>,
) -> bool {
    let mut head = current.head.clone();
    let mut sealed = Vec::with_capacity(group.len());
    let mut bytes = Vec::new();
    for batch in group {
        let start = bytes.len();
        match writer.seal(&mut head, &batch.records, &mut bytes) {
            Ok(receipts) => sealed.push((batch.reply, receipts, start..bytes.len())),
            // Not sealed: the others go on without it.
            Err(e) => answer(batch.reply, Err(e)),
        }
    }
    if sealed.is_empty() {
        return true;
    }
    let mut seqs = Vec::new();
    let mut times = Vec::new();
    let mut lines = Vec::new();
    let mut receipts_total = 0;
    // Sealed lines are canonical JSON (UTF-8), one per receipt.
    let text = std::str::from_utf8(&bytes).unwrap_or_default();
    for (_, receipts, range) in &sealed {
        receipts_total += receipts.len();
        let Some(sealed_lines) = text.get(range.clone()) else {
            continue;
        };
        for (receipt, line) in receipts.iter().zip(sealed_lines.lines()) {
            seqs.push(i64::try_from(receipt.seq).unwrap_or(i64::MAX));
            // The writer's own `ts`: always RFC 3339 in UTC.
            times.push(ts_of(line).unwrap_or(std::time::UNIX_EPOCH));
            lines.push(line);
        }
    }
    // Never store a group that does not match its receipts.
    if lines.len() != receipts_total {
        for (reply, _, _) in sealed {
            answer(
                reply,
                Err(AuditError::Store {
                    what: "append",
                    cause: "sealed lines do not match their receipts".into(),
                }),
            );
        }
        return true;
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&chain, &seqs, &times, &lines];
    let inserting = current.client.execute(
        "INSERT INTO audit_records (chain, seq, ts, line)
         SELECT $1, s, t, l FROM unnest($2::bigint[], $3::timestamptz[], $4::text[]) AS r(s, t, l)",
        &params,
    );
    let (outcome, usable) = match tokio::time::timeout(COMMIT_TIMEOUT, inserting).await {
        Ok(Ok(_)) => (Ok(()), true),
        Ok(Err(e)) if e.as_db_error().is_some() => (Err(store("append")(e)), true),
        // The connection went, or hangs: the commit may or may not have
        // happened. Unless a fresh connection says, the old one is not
        // used again.
        lost => {
            let why = match lost {
                Ok(Err(e)) => cause(&e),
                _ => format!("no answer within {} s", COMMIT_TIMEOUT.as_secs()),
            };
            let last = lines.last().copied().unwrap_or_default();
            let confirmed = confirm(database, chain, writer, current, last, why).await;
            let usable = confirmed.is_ok();
            (confirmed, usable)
        }
    };
    match outcome {
        Ok(()) => {
            // After a confirmed reconnect the head is already the tail's.
            current.head = head;
            for (reply, receipts, _) in sealed {
                answer(reply, Ok(receipts));
            }
        }
        Err(e) => {
            for (reply, _, _) in sealed {
                answer(reply, Err(clone_error(&e)));
            }
        }
    }
    usable
}

/// After a connection lost mid-commit: reconnects (taking the chain's lock
/// again) and reads the chain's tail. The group was committed if the tail
/// is its last line; otherwise it is reported failed. Either way the
/// writer continues from the tail. Without a connection the outcome is
/// unknown: reported failed, and the next append reconnects and resumes
/// from whatever was committed.
async fn confirm(
    database: &Database,
    chain: &str,
    writer: &ChainWriter,
    current: &mut Writing,
    last: &str,
    lost: String,
) -> Result<(), AuditError> {
    let failed = AuditError::Store {
        what: "append",
        cause: lost,
    };
    let Ok(fresh) = start_writing(database, chain, writer, Some(current.pid)).await else {
        return Err(failed);
    };
    let landed = last_line(&fresh.client, chain)
        .await
        .ok()
        .flatten()
        .as_deref()
        == Some(last);
    *current = fresh;
    if landed { Ok(()) } else { Err(failed) }
}

#[async_trait]
impl AuditSink for PostgresSink {
    async fn append(&self, records: Vec<PendingRecord>) -> Result<Vec<Receipt>, AuditError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, receipts) = oneshot::channel();
        self.queue
            .send(Batch { records, reply })
            .map_err(|_| AuditError::Closed)?;
        receipts.await.map_err(|_| AuditError::Closed)?
    }

    fn read_back(&self) -> Result<Box<dyn Read + Send>, AuditError> {
        Ok(Box::new(ChainReader::open(
            self.database.clone(),
            self.chain.clone(),
            None,
        )))
    }

    fn read_recent(&self, window: Duration) -> Result<Box<dyn Read + Send>, AuditError> {
        Ok(Box::new(ChainReader::open(
            self.database.clone(),
            self.chain.clone(),
            Some(window),
        )))
    }

    fn chain_writer(&self) -> &Arc<ChainWriter> {
        &self.writer
    }

    fn sole_writer(&self) -> bool {
        // The chain's lock: no other process writes it.
        true
    }
}

/// A chain's lines as JSON Lines, streamed from the database by a thread of
/// its own (so that it can be read from synchronous code, inside or outside
/// a runtime).
pub struct ChainReader {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: io::Cursor<Vec<u8>>,
}

impl fmt::Debug for ChainReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainReader").finish_non_exhaustive()
    }
}

impl ChainReader {
    /// Reads chain `chain` from `database`, in `seq` order; with `window`, only the records within it of the last one
    /// (by `ts`).
    fn open(database: Database, chain: String, window: Option<Duration>) -> Self {
        let (send, chunks) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    pass(&send, Err(e));
                    return;
                }
            };
            runtime.block_on(stream_lines(database, chain, window, send));
        });
        Self {
            chunks,
            current: io::Cursor::new(Vec::new()),
        }
    }

    /// Reads chain `chain` from `database`, in `seq` order: what
    /// `approval verify --postgres` checks. Errors come as the reader's.
    pub fn connect(database: &Database, chain: &str) -> Self {
        Self::open(database.clone(), chain.to_owned(), None)
    }
}

async fn stream_lines(
    database: Database,
    chain: String,
    window: Option<Duration>,
    send: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
) {
    use futures_util::{StreamExt, pin_mut};
    let fail = |what: &str, e: &dyn fmt::Display| io::Error::other(format!("{what}: {e}"));
    let client = match connect(&database).await {
        Ok(client) => client,
        Err(e) => {
            pass(&send, Err(fail("connect", &e)));
            return;
        }
    };
    // A name with a typo must not read as an empty, valid log.
    match client
        .query_opt("SELECT 1 FROM audit_chains WHERE name = $1", &[&chain])
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => {
            pass(
                &send,
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no chain named {chain:?} in this database"),
                )),
            );
            return;
        }
        Err(e) => {
            pass(&send, Err(fail("read the chain", &cause(&e))));
            return;
        }
    }
    let seconds = window.map_or(-1.0, |w| w.as_secs_f64());
    let rows = client
        .query_raw(
            "SELECT line FROM audit_records WHERE chain = $1
               AND ($2::float8 < 0 OR ts >= (SELECT max(ts) FROM audit_records WHERE chain = $1)
                                            - make_interval(secs => $2::float8))
             ORDER BY seq",
            [
                &chain as &(dyn tokio_postgres::types::ToSql + Sync),
                &seconds,
            ],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            pass(&send, Err(fail("read the chain", &cause(&e))));
            return;
        }
    };
    pin_mut!(rows);
    let mut chunk = Vec::with_capacity(64 * 1024);
    while let Some(row) = rows.next().await {
        match row {
            Ok(row) => {
                chunk.extend_from_slice(row.get::<_, &str>(0).as_bytes());
                chunk.push(b'\n');
                if chunk.len() >= 64 * 1024 && send.send(Ok(std::mem::take(&mut chunk))).is_err() {
                    return;
                }
            }
            Err(e) => {
                pass(&send, Err(fail("read the chain", &cause(&e))));
                return;
            }
        }
    }
    if !chunk.is_empty() {
        pass(&send, Ok(chunk));
    }
}

/// Hands the reader its next chunk, or the error it reads instead; a
/// reader dropped before the end wants neither.
fn pass(send: &std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>, chunk: io::Result<Vec<u8>>) {
    if send.send(chunk).is_err() {
        tracing::debug!("the chain's reader was dropped before the end");
    }
}

impl Read for ChainReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(out)?;
            if n > 0 || out.is_empty() {
                return Ok(n);
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => self.current = io::Cursor::new(chunk),
                Ok(Err(e)) => return Err(e),
                // The thread is done: the end.
                Err(_) => return Ok(0),
            }
        }
    }
}
