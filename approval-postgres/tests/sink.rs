//! `PostgresSink` against a real PostgreSQL (a throwaway cluster per test):
//! concurrent appends committed in order, the chain resumed after a
//! restart of the writer, one writer per chain, the database restarted
//! mid-run, append-only records, and reads back that verify.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    AuditError, AuditSink, ChainWriter, Event, KeyId, Keyring, WriterSecret, verify,
};
use approval_postgres::{ChainReader, Database, DatabaseError, PostgresSink};

mod cluster;

use cluster::Cluster;

fn secret() -> WriterSecret {
    WriterSecret::from_hex(&"5a".repeat(32)).unwrap()
}

fn writer() -> Arc<ChainWriter> {
    Arc::new(ChainWriter::new(KeyId::new("k1").unwrap(), &secret()))
}

fn keyring() -> Keyring {
    Keyring::new().with(KeyId::new("k1").unwrap(), secret().record_key())
}

fn event(n: usize) -> Event {
    Event::Cancelled {
        request_id: format!("req-{n}"),
        why: "test".into(),
    }
}

fn read(mut reader: impl Read) -> String {
    let mut out = String::new();
    reader.read_to_string(&mut out).unwrap();
    out
}

/// A client for looking at the database directly.
async fn client(cluster: &Cluster) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_committed_in_chain_order_and_verify() {
    let cluster = Cluster::start();
    let sink = Arc::new(
        PostgresSink::connect(&cluster.database(), "host-a", writer())
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for task in 0..64 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20 {
                let receipt = sink.append_event(event(task * 100 + i)).await.unwrap();
                seqs.push(receipt.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        // Each task's records are in its own order.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (0..1280).collect::<Vec<u64>>());
    // The chain read back verifies, as a file export of it would.
    let log = read(sink.read_back().unwrap());
    assert_eq!(log.lines().count(), 1280);
    let report = verify(log.as_bytes(), &keyring()).unwrap();
    assert_eq!(report.records, 1280);
    // So does a reader that only has the URL and the chain's name.
    let exported = read(ChainReader::connect(&cluster.database(), "host-a"));
    assert_eq!(exported, log);
    // Every record stored once, and appends that came together shared
    // commits (each row's `xmin` is the transaction that inserted it; the
    // append benchmark measures how much that gains).
    let db = client(&cluster).await;
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT xmin::text)
               FROM audit_records WHERE chain = 'host-a'",
            &[],
        )
        .await
        .unwrap();
    let (rows, commits): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(rows, 1280);
    assert!(commits <= 640, "{commits} commits for 1280 records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_has_one_writer_and_a_new_one_resumes_where_it_ended() {
    let cluster = Cluster::start();
    let first = PostgresSink::connect(&cluster.database(), "host-a", writer())
        .await
        .unwrap();
    for i in 0..3 {
        first.append_event(event(i)).await.unwrap();
    }
    // A second process may not write the same chain...
    match PostgresSink::connect(&cluster.database(), "host-a", writer()).await {
        Err(AuditError::ChainTaken { chain }) => assert_eq!(chain, "host-a"),
        other => panic!("expected the chain to be taken, got {other:?}"),
    }
    // ... but may write its own, beside it.
    let other = PostgresSink::connect(&cluster.database(), "host-b", writer())
        .await
        .unwrap();
    assert_eq!(other.append_event(event(9)).await.unwrap().seq, 0);

    // The first writer goes; the next one continues its chain.
    drop(first);
    let mut resumed = None;
    for _ in 0..100 {
        match PostgresSink::connect(&cluster.database(), "host-a", writer()).await {
            Ok(sink) => {
                resumed = Some(sink);
                break;
            }
            // The server frees the lock when it sees the session end.
            Err(AuditError::ChainTaken { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let resumed = resumed.expect("the lock was freed");
    assert_eq!(resumed.append_event(event(3)).await.unwrap().seq, 3);
    let report = verify(read(resumed.read_back().unwrap()).as_bytes(), &keyring()).unwrap();
    assert_eq!(report.records, 4);
    // A writer without the chain's key may not continue it.
    let stranger = Arc::new(ChainWriter::new(
        KeyId::new("k2").unwrap(),
        &WriterSecret::generate().unwrap(),
    ));
    drop(resumed);
    let mut refused = None;
    for _ in 0..100 {
        match PostgresSink::connect(&cluster.database(), "host-a", stranger.clone()).await {
            Err(AuditError::ChainTaken { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => {
                refused = Some(other);
                break;
            }
        }
    }
    match refused {
        Some(Err(AuditError::UnknownWriterKey { key_id })) => assert_eq!(key_id.as_str(), "k1"),
        other => panic!("expected the chain's key to be required, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_closed_while_the_database_is_down_and_resume_after_without_loss_or_duplicates()
 {
    let cluster = Cluster::start();
    let sink = PostgresSink::connect(&cluster.database(), "host-a", writer())
        .await
        .unwrap();
    for i in 0..5 {
        sink.append_event(event(i)).await.unwrap();
    }
    cluster.stop("immediate");
    // Down: a clear, typed error; nothing pretends to be stored.
    match sink.append_event(event(5)).await {
        Err(AuditError::Store { what, .. }) => assert!(what == "append" || what == "connect"),
        other => panic!("expected a store error, got {other:?}"),
    }
    match sink.append_event(event(6)).await {
        Err(AuditError::Store { what, .. }) => assert_eq!(what, "connect"),
        other => panic!("expected a store error, got {other:?}"),
    }
    cluster.restart();
    // Back: the sink reconnects, takes its chain again, and continues.
    let mut receipt = None;
    for _ in 0..200 {
        match sink.append_event(event(7)).await {
            Ok(r) => {
                receipt = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    assert_eq!(receipt.expect("reconnected").seq, 5);
    let log = read(sink.read_back().unwrap());
    let report = verify(log.as_bytes(), &keyring()).unwrap();
    assert_eq!(report.records, 6);
    assert!(log.contains("req-7") && !log.contains("req-5") && !log.contains("req-6"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_append_only_and_recent_reads_start_within_the_window() {
    let cluster = Cluster::start();
    let sink = PostgresSink::connect(&cluster.database(), "host-a", writer())
        .await
        .unwrap();
    for i in 0..3 {
        sink.append_event(event(i)).await.unwrap();
    }
    let db = client(&cluster).await;
    for sql in [
        "UPDATE audit_records SET line = 'x' WHERE seq = 1",
        "DELETE FROM audit_records WHERE seq = 2",
    ] {
        let refused = db.execute(sql, &[]).await.unwrap_err();
        let message = refused.as_db_error().unwrap().message().to_owned();
        assert!(message.contains("append-only"), "{message}");
    }
    // The schema's version is recorded; a second connect migrates nothing.
    let version: i32 = db
        .query_one("SELECT max(version) FROM approval_migrations", &[])
        .await
        .unwrap()
        .get(0);
    let newest = approval_postgres::schema::MIGRATIONS.last().unwrap().0;
    assert_eq!(version, newest);
    let recent = read(sink.read_recent(Duration::from_secs(3600)).unwrap());
    assert_eq!(recent.lines().count(), 3);
    // A schema newer than this build is refused.
    db.execute(
        "INSERT INTO approval_migrations (version, description) VALUES (99, 'future')",
        &[],
    )
    .await
    .unwrap();
    match PostgresSink::connect(&cluster.database(), "host-c", writer()).await {
        Err(AuditError::Store { what, cause }) => {
            assert_eq!(what, "migrate the schema");
            assert!(cause.contains("version 99"), "{cause}");
        }
        other => panic!("expected the newer schema to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_connection_string_or_an_unreachable_server_is_a_typed_error() {
    let unreachable = Database::new("postgres://u:hunter2@127.0.0.1:1/db").unwrap();
    assert!(!format!("{unreachable:?}").contains("hunter2"));
    match PostgresSink::connect(&unreachable, "c", writer()).await {
        Err(e @ AuditError::Store { .. }) => {
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    match Database::new("postgres://u:hunter2@[not a url") {
        Err(e @ DatabaseError::ConnectionString(_)) => {
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        other => panic!("expected a connection string error, got {other:?}"),
    }
}
