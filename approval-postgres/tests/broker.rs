//! The PostgreSQL credential broker against a real server (a throwaway
//! cluster that checks passwords): an approved export's body gets a role
//! that reads its one table and nothing else, PostgreSQL itself refuses
//! the rest, and the role is gone when the body ends. Hostile table names
//! and roles the broker did not mint are refused.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use approval_core::{
    ApprovalError, CanonicalJson, ChainWriter, Credential, CredentialBroker, CredentialHandle,
    Gate, KeyId, MemorySink, MockApprover, Policy, WriterSecret, requires_approval,
};
use approval_postgres::{Database, PostgresBroker, RoleTemplate, TablePrivilege};
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;

mod cluster;

use cluster::Cluster;

/// What the body saw, for the test to check once it ended.
#[derive(Debug)]
struct Seen {
    role: String,
    password: String,
    users: i64,
    payroll: Option<SqlState>,
    insert: Option<SqlState>,
    wrong_password: bool,
    valid_until_set: bool,
}

/// The database URL the body connects to (as its minted role).
static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[requires_approval(policy = "export", credential = login)]
async fn export(table: String, login: Credential) -> Result<Seen, ApprovalError> {
    let database = Database::new(URL.get().unwrap()).unwrap();
    let scoped = database.as_login(&login).connect().await.unwrap();
    let users: i64 = scoped
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    let code = |r: Result<u64, tokio_postgres::Error>| r.err().and_then(|e| e.code().cloned());
    let payroll = code(scoped.execute("SELECT * FROM payroll", &[]).await);
    let insert = code(
        scoped
            .execute("INSERT INTO users VALUES (9, 'mallory@example.com')", &[])
            .await,
    );
    let wrong = Credential::new(
        login.handle().id.clone(),
        login.handle().scope.clone(),
        SystemTime::UNIX_EPOCH,
    )
    .with_login(login.login().unwrap())
    .with_secret("password", "not-the-password");
    let wrong_password = database.as_login(&wrong).connect().await.is_err();
    let admin = database.connect().await.unwrap();
    let valid_until_set: bool = admin
        .query_one(
            "SELECT rolvaliduntil IS NOT NULL AND rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&login.login().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    Ok(Seen {
        role: login.login().unwrap().to_owned(),
        password: login.secret("password").unwrap().to_owned(),
        users,
        payroll,
        insert,
        wrong_password,
        valid_until_set,
    })
}

async fn seed(cluster: &Cluster) -> tokio_postgres::Client {
    let admin = cluster.database().connect().await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE users (id int, email text);
             INSERT INTO users VALUES (1, 'a@example.com'), (2, 'b@example.com'), (3, 'c@example.com');
             CREATE TABLE payroll (id int, salary int);
             INSERT INTO payroll VALUES (1, 100000);
             CREATE SCHEMA hr;
             CREATE TABLE hr.reviews (id int, note text);",
        )
        .await
        .unwrap();
    admin
}

fn gate(cluster: &Cluster) -> (Gate, Arc<MemorySink>, Arc<PostgresBroker>) {
    let secret = WriterSecret::from_hex(&"61".repeat(32)).unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))));
    let broker = Arc::new(
        PostgresBroker::new(cluster.database()).template(
            "read-table",
            RoleTemplate::new()
                .grant([TablePrivilege::Select], "table")
                .in_schemas(["public"]),
        ),
    );
    let gate = Gate::builder(sink.clone())
        .approver("mock", Arc::new(MockApprover::approve_all("ci")))
        .broker("warehouse", broker.clone())
        .policy(
            Policy::new("export", ["mock"], Duration::from_secs(60))
                .approvers(["mock:ci"])
                .credential("warehouse", "read-table", Duration::from_secs(600)),
        )
        .build()
        .unwrap();
    (gate, sink, broker)
}

fn records(sink: &MemorySink) -> Vec<Value> {
    String::from_utf8(sink.bytes())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn minted_roles(admin: &tokio_postgres::Client) -> Vec<String> {
    admin
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'approval\\_%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn an_approved_export_reads_its_one_table_with_a_role_that_is_dropped_after() {
    let cluster = Cluster::start_with_passwords();
    URL.set(cluster.url()).unwrap();
    let admin = seed(&cluster).await;
    let (gate, sink, _broker) = gate(&cluster);

    let seen = gate.scope(export("users".into())).await.unwrap();
    assert_eq!(seen.users, 3, "the approved table reads");
    assert_eq!(seen.payroll, Some(SqlState::INSUFFICIENT_PRIVILEGE));
    assert_eq!(seen.insert, Some(SqlState::INSUFFICIENT_PRIVILEGE));
    assert!(seen.wrong_password, "the role logs in by its password only");
    assert!(seen.valid_until_set);

    // Gone once the body ended: no role, no login with its password.
    assert!(minted_roles(&admin).await.is_empty());
    let mut config: tokio_postgres::Config = cluster.url().parse().unwrap();
    config.user(&seen.role).password(&seen.password);
    let Err(refused) = config.connect(tokio_postgres::NoTls).await else {
        panic!("the dropped role logged in");
    };
    assert_eq!(
        refused.code(),
        Some(&SqlState::INVALID_PASSWORD),
        "{refused}"
    );

    let all = records(&sink);
    let events: Vec<_> = all.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "requested",
            "reviewed",
            "approved",
            "credential_minted",
            "credential_revoked",
            "executed"
        ]
    );
    assert_eq!(all[3]["credential_id"], seen.role.as_str());
    assert_eq!(
        all[3]["scope"],
        json!({
            "grants": [{"privileges": ["SELECT"], "schema": "public", "table": "users"}],
            "role": seen.role,
        })
    );
    let log = String::from_utf8(sink.bytes()).unwrap();
    assert!(!log.contains(&seen.password), "no password on record");
}

#[tokio::test]
async fn hostile_table_names_and_roles_it_did_not_mint_are_refused() {
    let cluster = Cluster::start_with_passwords();
    let admin = seed(&cluster).await;
    let (gate, sink, broker) = gate(&cluster);
    let call = |table: &str| {
        let args = CanonicalJson::from_serialize(&json!({ "table": table })).unwrap();
        let gate = gate.clone();
        async move {
            let confirmed = gate
                .approve(
                    approval_core::Call::new("t::export", "export", args.clone())
                        .takes_credential(),
                )
                .await
                .unwrap()
                .confirm_args(&args)
                .await
                .unwrap();
            confirmed
                .execute_with_credential(|_login| async { Ok::<_, ApprovalError>(()) })
                .await
                .unwrap_err()
        }
    };
    for (table, why) in [
        // Not a name: refused by the catalogue lookup either way.
        ("users; DROP TABLE payroll", "\"users; DROP TABLE payroll\""),
        ("no_such_table", "no table"),
        ("pg_catalog.pg_authid", "schema pg_catalog"),
        ("hr.reviews", "schema hr"),
    ] {
        let err = call(table).await;
        let ApprovalError::Credential { broker, source } = &err else {
            panic!("{table}: {err}");
        };
        assert_eq!(broker, "warehouse");
        assert!(
            matches!(source, approval_core::BrokerError::Scope { .. }),
            "{table}: {source:?}"
        );
        assert!(source.to_string().contains(why), "{table}: {source}");
    }
    let payroll: i64 = admin
        .query_one("SELECT count(*) FROM payroll", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(payroll, 1, "nothing ran");
    assert!(minted_roles(&admin).await.is_empty(), "no role was left");
    let cancelled = records(&sink)
        .iter()
        .filter(|r| r["event"] == "cancelled")
        .count();
    assert_eq!(cancelled, 4);

    // A role the broker did not mint is never dropped, whatever the
    // handle (from a log someone altered, say) claims.
    admin
        .batch_execute("CREATE ROLE approval_forged LOGIN; CREATE ROLE dba LOGIN")
        .await
        .unwrap();
    for id in ["approval_forged", "dba"] {
        let handle = CredentialHandle::new(
            "01J00000000000000000000001",
            "warehouse",
            id,
            CanonicalJson::parse("{}").unwrap(),
            SystemTime::UNIX_EPOCH,
        );
        let err = broker.revoke(&handle).await.unwrap_err();
        assert!(err.to_string().contains("left alone"), "{err}");
    }
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('approval_forged', 'dba')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 2);
}
