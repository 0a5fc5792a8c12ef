//! The schema, as numbered migrations embedded in the crate: each runs
//! once, in order, in its own transaction, under an advisory lock so that
//! processes starting together do not race.

use tokio_postgres::Client;

/// The advisory lock every migrator takes (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x6170_7072_6f76_616c; // "approval"

/// The migrations, in order: `(version, what it does, SQL)`.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "audit chains and their records",
        r"
CREATE TABLE audit_chains (
    name       text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- One row per record: the line exactly as AUDIT-FORMAT.md defines it
-- (without its newline), at its place in its chain. (No foreign key to
-- audit_chains: its per-row check would cost more than the insert; the
-- writer registers its chain before writing.)
CREATE TABLE audit_records (
    chain text        NOT NULL,
    seq   bigint      NOT NULL CHECK (seq >= 0),
    ts    timestamptz NOT NULL,
    line  text        NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_records_by_time ON audit_records (chain, ts);
-- Records are evidence: never changed, never removed through SQL. (The
-- chain's MACs show it anyway; this stops accidents.)
CREATE FUNCTION audit_records_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only';
END
$$;
CREATE TRIGGER audit_records_append_only
    BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
",
    ),
    (
        2,
        "requests across processes: owner, lease, one settlement; forwarded votes",
        r"
-- Each request a gate process waits on: who waits (its process name), until
-- when its lease runs, and how it ended. A request settles once: only an
-- open row changes, and a settled one never does again.
CREATE TABLE approval_requests (
    id          text PRIMARY KEY,
    owner       text NOT NULL,
    policy      text NOT NULL,
    binding     bytea NOT NULL,
    opened_at   timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL,
    state       text NOT NULL DEFAULT 'open'
                CHECK (state IN ('open', 'approved', 'denied', 'expired', 'cancelled')),
    settled_by  text,
    settled_at  timestamptz,
    why         text,
    CHECK ((state = 'open') = (settled_at IS NULL))
);
CREATE INDEX approval_requests_open_leases ON approval_requests (lease_until) WHERE state = 'open';
CREATE INDEX approval_requests_open_owners ON approval_requests (owner) WHERE state = 'open';
CREATE FUNCTION approval_requests_settle_once() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 'open' THEN
        RAISE EXCEPTION 'request % is already %', OLD.id, OLD.state;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER approval_requests_settle_once
    BEFORE UPDATE ON approval_requests
    FOR EACH ROW EXECUTE FUNCTION approval_requests_settle_once();
-- A vote taken by a replica for a request another process waits on, until
-- that process answers it.
CREATE TABLE approval_votes (
    id          bigserial PRIMARY KEY,
    request_id  text NOT NULL REFERENCES approval_requests (id),
    received_by text NOT NULL,
    ballot      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    answer      text,
    answered_at timestamptz
);
CREATE INDEX approval_votes_unanswered ON approval_votes (request_id) WHERE answer IS NULL;
",
    ),
    (
        3,
        "forwarded votes are taken once by the waiting process",
        r"
-- Set when the waiting process reads a vote (in the statement that reads
-- it): a vote is cast once, and one taken is answered, so a replica knows
-- whether an answer may still come after the request ended.
ALTER TABLE approval_votes ADD COLUMN taken_at timestamptz;
CREATE INDEX approval_votes_untaken ON approval_votes (request_id) WHERE taken_at IS NULL;
-- Votes are no longer looked up by a missing answer: the index only cost
-- writes.
DROP INDEX approval_votes_unanswered;
",
    ),
    (
        4,
        "deferred requests outlive their process's run",
        r"
-- A deferred request has no caller waiting: its lease runs to its deadline
-- (never renewed), a restart of its process keeps it, and it expires, not
-- cancels, when that passes.
ALTER TABLE approval_requests ADD COLUMN deferred boolean NOT NULL DEFAULT false;
-- The run of the owner process that holds the request (random per run):
-- votes forwarded while the owner was down are taken only once the next
-- run has reopened the request, never by a run that does not know it.
ALTER TABLE approval_requests ADD COLUMN run text;
",
    ),
];

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database said no.
    #[error("migrating the schema failed: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The database holds a newer schema than this build knows.
    #[error("the database's schema is version {found}, newer than this build's {known}")]
    Newer {
        /// The version found.
        found: i32,
        /// The newest version this build has.
        known: i32,
    },
}

/// Brings the schema up to date; returns its version.
pub async fn migrate(client: &mut Client) -> Result<i32, SchemaError> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS approval_migrations (
                 version     integer PRIMARY KEY,
                 description text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let current: i32 = transaction
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM approval_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(SchemaError::Newer {
            found: current,
            known,
        });
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        transaction.batch_execute(sql).await?;
        transaction
            .execute(
                "INSERT INTO approval_migrations (version, description) VALUES ($1, $2)",
                &[version, description],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(known)
}
