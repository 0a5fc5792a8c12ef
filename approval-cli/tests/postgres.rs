//! `approval verify --postgres`: a chain read straight from PostgreSQL (a
//! throwaway cluster) verifies with the same result as a file export of it,
//! and a tampered row is found at the same place.

use std::process::Command;
use std::sync::Arc;

use approval_audit::{AuditSink, ChainWriter, Event, KeyId, WriterSecret};
use approval_postgres::{Database, PostgresSink};

#[path = "../../approval-postgres/tests/cluster/mod.rs"]
mod cluster;

/// Chain `agent-host-1` in `db`, `records` records long, sealed with a key
/// `approval keygen` made in `dir`; the sink, and the `--key` argument
/// that verifies it.
async fn chain(db: &Database, dir: &std::path::Path, records: usize) -> (PostgresSink, String) {
    let key = dir.join("ops.key");
    let (made, out) = approval(&["keygen", key.to_str().unwrap()]);
    assert!(made, "{out}");
    let secret = WriterSecret::read_file(&key).unwrap();
    let writer = Arc::new(ChainWriter::new(KeyId::new("ops-1").unwrap(), &secret));
    let sink = PostgresSink::connect(db, "agent-host-1", writer)
        .await
        .unwrap();
    for n in 0..records {
        sink.append_event(Event::Cancelled {
            request_id: format!("req-{n}"),
            why: "shutdown".into(),
        })
        .await
        .unwrap();
    }
    (sink, format!("ops-1={}.verify", key.display()))
}

fn approval(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_approval"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_in_postgres_verifies_like_its_export() {
    let cluster = cluster::Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (sink, key_arg) = chain(&cluster.database(), dir.path(), 25).await;
    let export = dir.path().join("export.jsonl");
    let mut lines = String::new();
    std::io::Read::read_to_string(&mut sink.read_back().unwrap(), &mut lines).unwrap();
    std::fs::write(&export, &lines).unwrap();
    let url = cluster.url();

    let from_file = approval(&["verify", export.to_str().unwrap(), "--key", &key_arg]);
    let from_db = approval(&[
        "verify",
        "--postgres",
        &url,
        "--chain",
        "agent-host-1",
        "--key",
        &key_arg,
    ]);
    assert!(from_db.0, "{}", from_db.1);
    assert_eq!(from_db, from_file);
    assert!(
        from_db.1.starts_with("ok: 25 records, head "),
        "{}",
        from_db.1
    );

    // A row changed behind the trigger's back (as the table's owner could)
    // is found, at the same record as in the file.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "ALTER TABLE audit_records DISABLE TRIGGER audit_records_append_only;
             UPDATE audit_records SET line = replace(line, 'req-7', 'req-8') WHERE seq = 7;",
        )
        .await
        .unwrap();
    let tampered = approval(&[
        "verify",
        "--postgres",
        &url,
        "--chain",
        "agent-host-1",
        "--key",
        &key_arg,
    ]);
    assert!(!tampered.0);
    assert!(tampered.1.contains("FAILED at"), "{}", tampered.1);
    std::fs::write(&export, lines.replace("req-7\"", "req-8\"")).unwrap();
    let tampered_file = approval(&["verify", export.to_str().unwrap(), "--key", &key_arg]);
    assert_eq!(tampered, tampered_file);

    // An unknown chain (a typo) is an error, not an empty valid log; a
    // wrong URL too.
    let (ok, out) = approval(&[
        "verify",
        "--postgres",
        &url,
        "--chain",
        "nobody",
        "--key",
        &key_arg,
    ]);
    assert!(!ok && out.contains(r#"no chain named "nobody""#), "{out}");
    let (ok, out) = approval(&[
        "verify",
        "--postgres",
        "postgres://postgres@127.0.0.1:1/x",
        "--chain",
        "c",
        "--key",
        &key_arg,
    ]);
    assert!(!ok && out.contains("connect"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_is_read_over_tls_when_the_url_requires_it() {
    let (cluster, ca) = cluster::Cluster::start_with_tls();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}?sslmode=require", cluster.url());
    let db = Database::new(&url).unwrap().trusting(&ca).unwrap();
    let (_sink, key_arg) = chain(&db, dir.path(), 3).await;
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--postgres", &url, "--chain", "agent-host-1"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--key", &key_arg]);
        approval(&args)
    };
    let (ok, out) = verify(&["--postgres-ca", ca.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.starts_with("ok: 3 records, head "), "{out}");
    // Without the deployment's CA, the server's certificate is refused.
    let (ok, out) = verify(&[]);
    assert!(!ok);
    assert!(out.contains("certificate"), "{out}");
}
