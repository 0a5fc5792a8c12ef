//! Several processes, one database (a throwaway cluster): gate processes
//! are real child processes (`examples/gate_process.rs`), endpoint replicas
//! are gates in this test process with coordinators of their own. Votes
//! cast on a replica that is not waiting reach the process that is; two
//! replicas deciding at the same moment settle a request once; a gate
//! process killed mid-wait leaves its request cancelled (by its restart,
//! or by another process when its lease lapses), never approved; every
//! chain verifies afterwards.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    Ballot, BallotOutcome, ChainWriter, Directory, Gate, KeyId, Keyring, MockApprover, Policy,
    RejectReason, Vote, WriterSecret, verify,
};
use approval_postgres::{ChainReader, ForwardingKey, PostgresCoordinator, PostgresSink};

mod cluster;

use cluster::Cluster;

/// `cargo test` builds the package's examples beside the test binaries.
fn example(name: &str) -> PathBuf {
    let test = std::env::current_exe().unwrap();
    let target = test.parent().and_then(|deps| deps.parent()).unwrap();
    let path = target.join("examples").join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// A gate process waiting on one request.
struct GateProcess {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    request_id: String,
    binding: [u8; 32],
}

impl GateProcess {
    fn start(cluster: &Cluster, dir: &std::path::Path, name: &str, lease_seconds: u64) -> Self {
        let mut child = Command::new(example("gate_process"))
            .current_dir(dir)
            .args([cluster.url(), name.to_owned(), lease_seconds.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break; // The test stopped reading.
                }
            }
        });
        let mut process = Self {
            child,
            lines,
            request_id: String::new(),
            binding: [0; 32],
        };
        let waiting = process.line_starting("waiting ");
        let mut parts = waiting.split(' ').skip(1);
        process.request_id = parts.next().unwrap().to_owned();
        process.binding = approval_core::hex::decode32(parts.next().unwrap()).unwrap();
        process
    }

    /// The next line starting with `prefix` (at most 30 s).
    fn line_starting(&mut self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no line starting {prefix:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    fn ballot(&self, who: &str) -> Ballot {
        Ballot::from_parts(
            &self.request_id,
            self.binding,
            format!("api:{who}"),
            "api",
            Vote::Approve,
        )
    }

    fn exits_with(mut self, line: &str) {
        let said = self.line_starting(line.split(':').next().unwrap());
        assert!(said.starts_with(line), "{said}");
        assert!(self.child.wait().unwrap().success());
    }
}

/// The deployment's forwarding key, in `dir` where the gate processes
/// read it; made on first use.
fn forwarding_key(dir: &std::path::Path) -> ForwardingKey {
    let keys = dir.join("approval-postgres-example");
    std::fs::create_dir_all(&keys).unwrap();
    let path = keys.join("forwarding.key");
    if !path.exists() {
        WriterSecret::generate()
            .unwrap()
            .write_new_file(&path)
            .unwrap();
    }
    ForwardingKey::read_file(&path).unwrap()
}

/// An endpoint replica: a gate in this process, its own chain and
/// coordinator (with the key of the processes in `dir`), the same policy
/// and reviewers.
async fn replica(cluster: &Cluster, dir: &std::path::Path, name: &str) -> Gate {
    let writer = Arc::new(ChainWriter::new(
        KeyId::new("dev").unwrap(),
        &WriterSecret::generate().unwrap(),
    ));
    let sink = PostgresSink::connect(&cluster.database(), name, writer)
        .await
        .unwrap();
    let coordinator = PostgresCoordinator::connect(
        &cluster.database(),
        name,
        Duration::from_secs(1),
        forwarding_key(dir),
    )
    .await
    .unwrap();
    Gate::builder(Arc::new(sink))
        .approver("replicas", Arc::new(MockApprover::silent("endpoint")))
        .policy(
            Policy::new("data-export", ["replicas"], Duration::from_secs(600))
                .approvers(["alice", "bob"]),
        )
        .directory(
            Directory::new()
                .person("alice", ["api:alice"])
                .person("bob", ["api:bob"]),
        )
        .coordinator(Arc::new(coordinator))
        .build()
        .unwrap()
}

/// Checks the chain `name` with the key its process keeps in `dir`.
fn verify_chain(cluster: &Cluster, dir: &std::path::Path, name: &str) -> u64 {
    let secret = WriterSecret::read_file(
        dir.join("approval-postgres-example")
            .join(format!("{name}.key")),
    )
    .unwrap();
    let keyring = Keyring::new().with(KeyId::new("dev").unwrap(), secret.record_key());
    let reader = ChainReader::connect(&cluster.database(), name);
    verify(reader, &keyring).unwrap().records
}

async fn database(cluster: &Cluster) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_reach_the_waiting_process_and_simultaneous_deciders_settle_once() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = (
        replica(&cluster, dir.path(), "replica-b").await,
        replica(&cluster, dir.path(), "replica-c").await,
    );
    let first = GateProcess::start(&cluster, dir.path(), "gate-1", 30);
    let second = GateProcess::start(&cluster, dir.path(), "gate-2", 30);
    let db = database(&cluster).await;

    // A vote written straight into the table by someone without the
    // deployment's key: refused as forged, never cast, and never recorded
    // (an unauthenticated refusal writes nothing durable); gate-1 waits on.
    let forged = format!(
        r#"{{"request_id":"{}","binding":"{}","identity":"api:alice","channel":"api","vote":"approve","comment":null,"display":null}}"#,
        first.request_id,
        approval_core::hex::encode(&first.binding)
    );
    let vote: i64 = db
        .query_one(
            "INSERT INTO approval_votes (request_id, received_by, ballot)
             VALUES ($1, 'intruder', $2) RETURNING id",
            &[&first.request_id, &forged],
        )
        .await
        .unwrap()
        .get(0);
    db.execute(
        "SELECT pg_notify('approval_votes', $1)",
        &[&format!("gate-1 {vote}")],
    )
    .await
    .unwrap();
    let mut answer: Option<String> = None;
    for _ in 0..400 {
        answer = db
            .query_one("SELECT answer FROM approval_votes WHERE id = $1", &[&vote])
            .await
            .unwrap()
            .get(0);
        if answer.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let answer = answer.expect("the forged vote answered");
    assert!(answer.contains(r#""why":"bad_signature""#), "{answer}");

    // A vote on replica b, which waits on nothing: gate-1 resumes.
    let outcome = b.cast(first.ballot("alice")).await.unwrap();
    assert_eq!(outcome, BallotOutcome::Counted { decision: None });
    first.exits_with("approved");

    // Two reviewers, two replicas, the same moment: one settles it.
    let (on_b, on_c) = tokio::join!(b.cast(second.ballot("alice")), c.cast(second.ballot("bob")));
    let outcomes = [on_b.unwrap(), on_c.unwrap()];
    let counted = outcomes
        .iter()
        .filter(|o| matches!(o, BallotOutcome::Counted { .. }))
        .count();
    assert_eq!(counted, 1, "{outcomes:?}");
    assert!(
        outcomes.contains(&BallotOutcome::Rejected(RejectReason::Settled)),
        "{outcomes:?}"
    );
    second.exits_with("approved");

    let rows = db
        .query(
            "SELECT id, state, settled_by FROM approval_requests ORDER BY opened_at",
            &[],
        )
        .await
        .unwrap();
    let states: Vec<(String, String)> = rows.iter().map(|r| (r.get(1), r.get(2))).collect();
    assert_eq!(
        states,
        [
            ("approved".into(), "gate-1".into()),
            ("approved".into(), "gate-2".into())
        ]
    );
    // The losing vote is refused as late exactly once: by gate-2 if it
    // took the vote before the request settled, else by the replica.
    let late = r#"%"event":"rejected_vote"%"why":"settled"%"#;
    let refusals = db
        .query(
            "SELECT chain FROM audit_records WHERE line LIKE $1",
            &[&late],
        )
        .await
        .unwrap();
    assert_eq!(refusals.len(), 1);
    let on_gate_2 = usize::from(refusals[0].get::<_, String>(0) == "gate-2");
    // Each gate's chain holds its own story, and verifies: requested,
    // reviewed, approved, executed (the forged vote left no record).
    assert_eq!(verify_chain(&cluster, dir.path(), "gate-1"), 4);
    assert_eq!(
        verify_chain(&cluster, dir.path(), "gate-2"),
        4 + on_gate_2 as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_process_killed_mid_wait_is_cancelled_never_approved() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let b = replica(&cluster, dir.path(), "replica-b").await;

    // Killed, and its lease (1 s) lapses: another process cancels it.
    let mut lapsing = GateProcess::start(&cluster, dir.path(), "gate-lapse", 1);
    lapsing.child.kill().unwrap();
    lapsing.child.wait().unwrap();
    let db = database(&cluster).await;
    let mut state = String::new();
    for _ in 0..200 {
        state = db
            .query_one(
                "SELECT state FROM approval_requests WHERE id = $1",
                &[&lapsing.request_id],
            )
            .await
            .unwrap()
            .get(0);
        if state != "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(state, "cancelled");
    let late = b.cast(lapsing.ballot("alice")).await.unwrap();
    assert_eq!(late, BallotOutcome::Rejected(RejectReason::Settled));

    // Killed and restarted at once (its lease long): its restart closes
    // it, and leaves another live process's request alone.
    let mut restarting = GateProcess::start(&cluster, dir.path(), "gate-restart", 60);
    let live = GateProcess::start(&cluster, dir.path(), "gate-live", 60);
    restarting.child.kill().unwrap();
    restarting.child.wait().unwrap();
    let again = GateProcess::start(&cluster, dir.path(), "gate-restart", 60);
    let refused = b.cast(restarting.ballot("alice")).await.unwrap();
    assert_eq!(refused, BallotOutcome::Rejected(RejectReason::Settled));
    let still = b.cast(live.ballot("bob")).await.unwrap();
    assert_eq!(still, BallotOutcome::Counted { decision: None });
    live.exits_with("approved");
    let killed: String = db
        .query_one(
            "SELECT why FROM approval_requests WHERE id = $1",
            &[&restarting.request_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, "the waiting process restarted");
    // The restarted process's new request is its own, and open.
    assert_eq!(
        b.cast(again.ballot("alice")).await.unwrap(),
        BallotOutcome::Counted { decision: None }
    );
    again.exits_with("approved");
    // The killed run's request is closed in its chain too, which verifies.
    let records = verify_chain(&cluster, dir.path(), "gate-restart");
    // First run: requested. Second: cancelled (recovery), requested,
    // reviewed, approved, executed.
    assert_eq!(records, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_mid_wait_fails_votes_closed_then_the_call_resumes() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let b = replica(&cluster, dir.path(), "replica-b").await;
    let waiting = GateProcess::start(&cluster, dir.path(), "gate-1", 30);
    cluster.stop("immediate");
    // Down: the vote fails closed, with the cause.
    match b.cast(waiting.ballot("alice")).await {
        Err(approval_core::ApprovalError::Coordination(e)) => {
            assert_eq!(e.what, "forward the vote");
        }
        other => panic!("expected the vote to fail closed, got {other:?}"),
    }
    cluster.restart();
    // Back: every connection is replaced as it is next used, and the same
    // vote goes through.
    let mut outcome = None;
    let mut unanswered = false;
    for _ in 0..200 {
        match b.cast(waiting.ballot("alice")).await {
            Ok(o) => {
                outcome = Some(o);
                break;
            }
            // Stored, but gate-1 had not listened again within the wait:
            // it may still count it, and then the retry is a repeat.
            Err(approval_core::ApprovalError::Coordination(e))
                if e.what == "hear from the waiting process" =>
            {
                unanswered = true;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let outcome = outcome.expect("the vote went through once the database was back");
    let repeat = [
        BallotOutcome::Absorbed,
        BallotOutcome::Rejected(RejectReason::Settled),
    ];
    assert!(
        outcome == BallotOutcome::Counted { decision: None }
            || (unanswered && repeat.contains(&outcome)),
        "{outcome:?} (an earlier attempt unanswered: {unanswered})"
    );
    waiting.exits_with("approved");
    // requested, reviewed, approved, executed; and a repeat that came after
    // the approval refused as late.
    let db = database(&cluster).await;
    let late: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_records
              WHERE chain = 'gate-1' AND line LIKE '%\"event\":\"rejected_vote\"%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        verify_chain(&cluster, dir.path(), "gate-1"),
        4 + u64::try_from(late).unwrap()
    );
}
