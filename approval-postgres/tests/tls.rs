//! TLS to the database, against a throwaway cluster whose certificate a
//! throwaway CA issued: `sslmode=require` connects over TLS only, and only
//! to a server whose certificate the trusted roots vouch for.

use std::sync::Arc;

use approval_core::{
    AuditError, AuditSink, ChainWriter, Event, KeyId, Keyring, WriterSecret, verify,
};
use approval_postgres::{ChainReader, Database, DatabaseError, PostgresSink};

mod cluster;

use cluster::Cluster;

fn secret() -> WriterSecret {
    WriterSecret::from_hex(&"33".repeat(32)).unwrap()
}

fn writer() -> Arc<ChainWriter> {
    Arc::new(ChainWriter::new(KeyId::new("tls").unwrap(), &secret()))
}

fn event() -> Event {
    Event::Cancelled {
        request_id: "req-tls".into(),
        why: "a record to carry".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_connects_over_tls_to_a_server_its_ca_vouches_for() {
    let (cluster, ca) = Cluster::start_with_tls();
    let url = format!("{}?sslmode=require", cluster.url());
    let db = Database::new(&url).unwrap().trusting(&ca).unwrap();
    assert!(db.uses_tls());
    let sink = PostgresSink::connect(&db, "host-tls", writer())
        .await
        .unwrap();
    sink.append_event(event()).await.unwrap();
    // The server sees the sink's session as TLS.
    let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let encrypted: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE s.ssl AND a.backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "no TLS session on the server");
    // Read back over TLS too, and verified.
    let keyring = Keyring::new().with(KeyId::new("tls").unwrap(), secret().record_key());
    let report = verify(ChainReader::connect(&db, "host-tls"), &keyring).unwrap();
    assert_eq!(report.records, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_no_trusted_root_vouches_for_is_refused() {
    let (cluster, _ca) = Cluster::start_with_tls();
    // The web PKI's roots know nothing of the throwaway CA.
    let db = Database::new(&format!("{}?sslmode=require", cluster.url())).unwrap();
    match PostgresSink::connect(&db, "host-tls", writer()).await {
        Err(AuditError::Store { what, cause }) => {
            assert_eq!(what, "connect");
            assert!(cause.contains("certificate"), "{cause}");
        }
        other => panic!("expected the certificate to be refused, got {other:?}"),
    }
    // Nor does a CA file that holds no certificate mean anything.
    let empty = tempfile::NamedTempFile::new().unwrap();
    match db.trusting(empty.path()) {
        Err(DatabaseError::Certificates { cause, .. }) => {
            assert_eq!(cause, "no certificate in it");
        }
        other => panic!("expected an unusable CA file, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_server_without_tls_fails_closed() {
    let cluster = Cluster::start();
    let db = Database::new(&format!("{}?sslmode=require", cluster.url())).unwrap();
    match PostgresSink::connect(&db, "host-plain", writer()).await {
        Err(AuditError::Store { what, cause }) => {
            assert_eq!(what, "connect");
            assert!(cause.contains("TLS") || cause.contains("SSL"), "{cause}");
        }
        other => panic!("expected no connection without TLS, got {other:?}"),
    }
    // The default (no sslmode) connects as before, without TLS.
    let plain = Database::new(&cluster.url()).unwrap();
    assert!(!plain.uses_tls());
    PostgresSink::connect(&plain, "host-plain", writer())
        .await
        .unwrap();
}
