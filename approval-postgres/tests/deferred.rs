//! A deferred request across processes on one database (a throwaway
//! cluster): the gate process that holds it goes down; a reviewer's vote on
//! an endpoint replica meanwhile is refused and withdrawn (never counted
//! later behind their back); the holder's next run reopens the request
//! from its PostgreSQL chain, the reviewer's vote on the replica then
//! reaches it, and the call runs exactly once; the ledger agrees, and both
//! chains verify.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use approval_core::{
    Actor, ApprovalError, Ballot, BallotOutcome, Call, CanonicalJson, ChainWriter, Directory, Gate,
    KeyId, Keyring, MockApprover, Policy, Vote, WriterSecret, verify, with_actor,
};
use approval_postgres::{ChainReader, ForwardingKey, PostgresCoordinator, PostgresSink};

mod cluster;

use cluster::Cluster;

const KEY: [u8; 32] = [0x5a; 32];

/// A gate process named `name` on the cluster: its chain (under `secret`)
/// and coordinator in the database, the policy and reviewers every
/// process shares.
async fn process(cluster: &Cluster, name: &str, secret: &WriterSecret) -> Gate {
    let policy =
        Policy::new("data-export", ["replicas"], Duration::from_secs(600)).approvers(["alice"]);
    process_with(cluster, name, secret, policy).await
}

/// As [`process`], under `policy`.
async fn process_with(
    cluster: &Cluster,
    name: &str,
    secret: &WriterSecret,
    policy: Policy,
) -> Gate {
    let writer = Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), secret));
    let sink = PostgresSink::connect(&cluster.database(), name, writer)
        .await
        .unwrap();
    let coordinator = PostgresCoordinator::connect(
        &cluster.database(),
        name,
        Duration::from_secs(1),
        ForwardingKey::from_bytes(&KEY),
    )
    .await
    .unwrap();
    Gate::builder(Arc::new(sink))
        .approver("replicas", Arc::new(MockApprover::silent("endpoint")))
        .policy(policy)
        .directory(Directory::new().person("alice", ["api:alice"]))
        .coordinator(Arc::new(coordinator))
        .build()
        .unwrap()
}

fn call() -> Call {
    let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "users"})).unwrap();
    Call::new("crm::export", "data-export", args)
}

/// The deferred export, as the macro's expansion runs it: `Pending`, or the
/// body once approved.
async fn export(gate: &Gate, runs: &Arc<AtomicU32>) -> Result<u32, ApprovalError> {
    let runs = runs.clone();
    with_actor(Actor::new("agent-7"), async {
        gate.approve_deferred(call())
            .await?
            .confirm_args(&call().args)
            .await?
            .execute(async move { Ok::<_, ApprovalError>(runs.fetch_add(1, Ordering::SeqCst) + 1) })
            .await
    })
    .await
}

async fn ledger_row(cluster: &Cluster, id: &str) -> (String, Option<String>) {
    let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT state, settled_by FROM approval_requests WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn events_of(cluster: &Cluster, chain: &str, secret: &WriterSecret, id: &str) -> Vec<String> {
    let mut log = Vec::new();
    ChainReader::connect(&cluster.database(), chain)
        .read_to_end(&mut log)
        .unwrap();
    let keyring = Keyring::new().with(KeyId::new("k").unwrap(), secret.record_key());
    verify(&log[..], &keyring).unwrap();
    String::from_utf8(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["request_id"] == id)
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_request_survives_its_process_and_a_replica_s_vote_after_the_restart_runs_it_once()
 {
    let cluster = Cluster::start();
    let (a_secret, b_secret) = (
        WriterSecret::generate().unwrap(),
        WriterSecret::generate().unwrap(),
    );
    let runs = Arc::new(AtomicU32::new(0));
    let replica = process(&cluster, "replica-b", &b_secret).await;

    // First run of host-a: the agent's call is deferred, then host-a stops.
    let (id, request) = {
        let a = process(&cluster, "host-a", &a_secret).await;
        a.recover().await.unwrap();
        let id = match export(&a, &runs).await {
            Err(ApprovalError::Pending { request_id, .. }) => request_id,
            other => panic!("not pending: {other:?}"),
        };
        let request = a.status(&id).unwrap().request;
        a.shutdown().await.unwrap();
        (id, request)
    };
    assert_eq!(
        ledger_row(&cluster, &id).await.0,
        "open",
        "a deferred request outlives its run"
    );

    // Alice approves on the replica while host-a is down: nobody takes the
    // vote in time, so it is withdrawn and she is told to vote again.
    let vote = || Ballot::new(&request, "api:alice", "replicas", Vote::Approve);
    match replica.cast(vote()).await {
        Err(ApprovalError::Coordination(e)) => {
            assert_eq!(e.what, "hear from the waiting process", "{e}");
            assert!(e.cause.contains("withdrawn"), "{e}");
        }
        other => panic!("expected no answer from the stopped process, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // host-a's next run reopens it from its chain; the withdrawn vote does
    // not count.
    let a = process(&cluster, "host-a", &a_secret).await;
    let recovery = a.recover().await.unwrap();
    assert_eq!(recovery.reopened, std::slice::from_ref(&id));
    assert!(recovery.cancelled.is_empty(), "{recovery:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.status(&id).unwrap().is_open(), "a withdrawn vote counted");
    // Her vote again, on the replica: it reaches host-a, which counts it.
    let outcome = replica.cast(vote()).await.unwrap();
    assert!(
        matches!(outcome, BallotOutcome::Counted { .. }),
        "{outcome:?}"
    );
    assert!(!a.status(&id).unwrap().is_open(), "counted, and it settled");
    assert_eq!(export(&a, &runs).await.unwrap(), 1);
    match export(&a, &runs).await {
        // The same call again is refused: that approval was used.
        Err(ApprovalError::AlreadyUsed { request_id }) => assert_eq!(request_id, id),
        other => panic!("a replayed deferred call ran again: {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        ledger_row(&cluster, &id).await,
        ("approved".to_owned(), Some("host-a".to_owned()))
    );
    a.shutdown().await.unwrap();
    drop(a);

    // host-a's chain tells the story; the replica recorded nothing of it.
    assert_eq!(
        events_of(&cluster, "host-a", &a_secret, &id),
        ["requested", "reviewed", "approved", "executed"]
    );
    assert!(events_of(&cluster, "replica-b", &b_secret, &id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_request_of_the_previous_run_is_cancelled_and_a_deferred_one_kept() {
    let cluster = Cluster::start();
    let secret = WriterSecret::generate().unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let (deferred, blocking) = {
        let a = process(&cluster, "host-a", &secret).await;
        let deferred = match export(&a, &runs).await {
            Err(ApprovalError::Pending { request_id, .. }) => request_id,
            other => panic!("not pending: {other:?}"),
        };
        let ticket = with_actor(Actor::new("agent-7"), a.submit(call()))
            .await
            .unwrap();
        // Left open, as a process that dies mid-wait leaves it.
        let blocking = ticket.detach();
        (deferred, blocking)
    };
    let a = process(&cluster, "host-a", &secret).await;
    let recovery = a.recover().await.unwrap();
    assert_eq!(recovery.reopened, std::slice::from_ref(&deferred));
    assert_eq!(recovery.cancelled, std::slice::from_ref(&blocking));
    assert_eq!(ledger_row(&cluster, &deferred).await.0, "open");
    assert_eq!(ledger_row(&cluster, &blocking).await.0, "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_queued_outside_attended_hours_is_deferred_in_the_ledger_and_kept_by_the_restart()
{
    use approval_core::{AttendedHours, Clock, Unreachable};
    let cluster = Cluster::start();
    let secret = WriterSecret::generate().unwrap();
    // One minute a day, six hours from now: not now.
    let now = approval_core::SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let from = (now % 86_400 / 60 + 360) % 1440;
    let hhmm = |m: u64| format!("{:02}:{:02}", m / 60, m % 60);
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let policy = || {
        Policy::new("data-export", ["replicas"], Duration::from_secs(600))
            .approvers(["alice"])
            .attended(AttendedHours::new(days, &hhmm(from), &hhmm(from + 1), "+00:00").unwrap())
            .when_unreachable(Unreachable::Queue)
    };
    let id = {
        let a = process_with(&cluster, "host-a", &secret, policy()).await;
        a.recover().await.unwrap();
        // A blocking call: queued, so the caller is told to come back.
        let queued = with_actor(Actor::new("agent-7"), a.submit(call()))
            .await
            .err()
            .unwrap();
        let ApprovalError::Pending { request_id, .. } = queued else {
            panic!("not queued: {queued:?}");
        };
        a.shutdown().await.unwrap();
        request_id
    };
    // The ledger holds it deferred, leased to its deadline: it outlives
    // the run that asked.
    let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT state, deferred, lease_until > now() + interval '500 seconds'
               FROM approval_requests WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (state, deferred, leased): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((state.as_str(), deferred, leased), ("open", true, true));

    // The next run reopens it from its chain, and the ledger keeps it.
    let a = process_with(&cluster, "host-a", &secret, policy()).await;
    let recovery = a.recover().await.unwrap();
    assert_eq!(recovery.reopened, std::slice::from_ref(&id));
    assert_eq!(ledger_row(&cluster, &id).await.0, "open");
    a.shutdown().await.unwrap();
    drop(a);
    assert_eq!(
        events_of(&cluster, "host-a", &secret, &id),
        ["requested", "queued"]
    );
}
