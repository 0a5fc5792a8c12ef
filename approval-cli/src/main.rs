//! `approval`: make audit keys and verify audit logs.
//!
//! ```text
//! approval keygen KEYFILE
//! approval keygen --signing NAME KEYFILE
//! approval verify LOG --key ID=KEYFILE [--key ID=KEYFILE ...]
//!                [--checkpoint FILE --trust KEYLINE [--trust KEYLINE ...]]
//! approval grants LOG --key ID=KEYFILE [--key ...]
//! approval revoke-grant ID --api URL --token-file TOKENFILE
//! approval prove LOG --request ID [--checkpoint FILE]
//! approval check-proof FILE --trust KEYLINE
//! approval consistency LOG --old FILE --new FILE --trust KEYLINE
//! approval feed LOG --out FEED [--format json|syslog [--hostname NAME]] [--follow [--poll-ms N]]
//! approval evidence LOG --out PACK.tar --key ID=KEYFILE [--key ...]
//!                [--checkpoint FILE --trust KEYLINE ...] [--policy FILE ...]
//!                [--from TIME] [--to TIME]
//! ```
//!
//! Exit status: 0 when the command succeeded (for `verify`: the log is
//! valid), 1 when a log fails verification, 2 for any other error (bad
//! arguments, unreadable files, a key file in the wrong form).

#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool prints its results"
)]

mod csv;
mod evidence;
mod feed;
mod policy_test;
mod population;
mod proofs;
mod report;
mod revoke;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use approval_audit::checkpoint::{
    Checkpoint, CheckpointError, Coverage, SigningKey, VerifierKey, check_log,
};
use approval_audit::{KeyId, Keyring, RecordKey, Verifier, VerifyError, WriterSecret};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "approval",
    version,
    about = "Make audit keys, verify audit logs, pack evidence and test policy files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new random writer secret to KEYFILE (mode 0600) and its
    /// verification key, for auditors, to KEYFILE.verify. With --signing,
    /// write an Ed25519 checkpoint signing key instead and print its public
    /// key line.
    Keygen {
        /// Make a checkpoint signing key named NAME (the log's origin, such
        /// as example.com/approvals/prod).
        #[arg(long, value_name = "NAME")]
        signing: Option<String>,
        /// Where to write the key; must not exist yet.
        keyfile: PathBuf,
    },
    /// Check an audit log's chain: canonical form, seq, links, keys, MACs.
    /// The log is a JSON Lines file, or a chain in PostgreSQL (--postgres
    /// URL --chain NAME), checked the same way.
    Verify {
        /// The JSON Lines log.
        #[arg(required_unless_present = "postgres", conflicts_with = "postgres")]
        log: Option<PathBuf>,
        /// Read the chain from the PostgreSQL database at URL
        /// (postgres://user@host/db; add ?sslmode=require for TLS, the
        /// server's certificate checked) instead of a file.
        #[arg(long, value_name = "URL", requires = "chain")]
        postgres: Option<String>,
        /// Check the database server's TLS certificate against the CA
        /// certificates in this PEM file only (libpq's sslrootcert).
        #[arg(long, value_name = "PEMFILE", requires = "postgres")]
        postgres_ca: Option<PathBuf>,
        /// The chain to read from PostgreSQL (its writer's name).
        #[arg(long, value_name = "NAME", requires = "postgres")]
        chain: Option<String>,
        /// A verification key as ID=KEYFILE; repeat for rotated keys.
        #[arg(long = "key", value_name = "ID=KEYFILE", required = true)]
        keys: Vec<String>,
        /// Threads for the per-record checks (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// A signed checkpoint of the log (LOG.checkpoint, or a copy kept
        /// elsewhere): finds a log cut off or rewritten.
        #[arg(
            long,
            value_name = "FILE",
            requires = "trust",
            conflicts_with = "postgres"
        )]
        checkpoint: Option<PathBuf>,
        /// A public key trusted to sign checkpoints, as
        /// NAME+ID+KEY (from `approval keygen --signing`); repeatable.
        #[arg(long, value_name = "KEYLINE", requires = "checkpoint")]
        trust: Vec<String>,
    },
    /// List the grants a verified audit log made (approvals that covered
    /// more calls like them) and what became of each: uses, revocation,
    /// expiry.
    Grants {
        /// The JSON Lines log.
        log: PathBuf,
        /// A verification key as ID=KEYFILE; repeat for rotated keys.
        #[arg(long = "key", value_name = "ID=KEYFILE", required = true)]
        keys: Vec<String>,
    },
    /// Revoke a live grant through the decision API of the process that
    /// holds it (`POST /grants/ID/revoke`), as the reviewer whose bearer
    /// token is in TOKENFILE: that process records `grant_revoked`.
    RevokeGrant {
        /// The grant's id (the id of the request whose approval made it).
        grant: String,
        /// The decision API's base URL, as mounted
        /// (http://127.0.0.1:8080/approval).
        #[arg(long, value_name = "URL")]
        api: String,
        /// A file holding the reviewer's token (kept off the command line,
        /// where other users of the machine could read it).
        #[arg(long, value_name = "TOKENFILE")]
        token_file: PathBuf,
    },
    /// Print one request's records with their inclusion proofs against the
    /// newest checkpoint, as one JSON document an auditor can check alone.
    Prove {
        /// The JSON Lines log.
        log: PathBuf,
        /// The request's id.
        #[arg(long, value_name = "ID")]
        request: String,
        /// The signed checkpoint (default: LOG.checkpoint).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Check a proof document from `approval prove` with the checkpoint
    /// signer's public key alone: no log, no secret.
    CheckProof {
        /// The proof document.
        file: PathBuf,
        /// A public key trusted to sign checkpoints; repeatable.
        #[arg(long, value_name = "KEYLINE", required = true)]
        trust: Vec<String>,
    },
    /// Check, from the log, that an older checkpoint's records are a prefix
    /// of a newer one's (RFC 6962 consistency).
    Consistency {
        /// The JSON Lines log.
        log: PathBuf,
        /// The older signed checkpoint.
        #[arg(long, value_name = "FILE")]
        old: PathBuf,
        /// The newer signed checkpoint.
        #[arg(long, value_name = "FILE")]
        new: PathBuf,
        /// A public key trusted to sign checkpoints; repeatable.
        #[arg(long, value_name = "KEYLINE", required = true)]
        trust: Vec<String>,
    },
    /// Copy the log's records, as JSON lines, to FEED for a SIEM to read:
    /// each record once, in order, across restarts (the feed's last line
    /// says where it stopped). Refuses (exit 1) a log that does not
    /// continue the feed. Order and links are checked, not MACs: run
    /// `verify` for those.
    Feed {
        /// The JSON Lines log.
        log: PathBuf,
        /// The feed file (created if missing; appended to).
        #[arg(long, value_name = "FEED")]
        out: PathBuf,
        /// Keep copying records as the log grows.
        #[arg(long)]
        follow: bool,
        /// How often to look for new records when following.
        #[arg(long, value_name = "MS", default_value_t = 1000, requires = "follow")]
        poll_ms: u64,
        /// `json`: each record's line as it is; `syslog`: an RFC 5424 line
        /// carrying it (facility log audit, the event word as message id).
        #[arg(long, value_name = "FORMAT", default_value = "json")]
        format: String,
        /// The HOSTNAME of syslog lines (default `-`).
        #[arg(long, value_name = "NAME")]
        hostname: Option<String>,
    },
    /// Pack what an auditor needs into one tar archive: the log (verified
    /// first), its checkpoint, the verification keys, the policy files, a
    /// population list of the period's requests, summaries (CSV, HTML),
    /// control mapping notes, and the commands that check it (CHECK.sh).
    Evidence {
        /// The JSON Lines log.
        log: PathBuf,
        /// The archive to write (a tar file; must not exist).
        #[arg(long, value_name = "PACK")]
        out: PathBuf,
        /// A verification key as ID=KEYFILE; repeat for rotated keys.
        #[arg(long = "key", value_name = "ID=KEYFILE", required = true)]
        keys: Vec<String>,
        /// The log's signed checkpoint, checked and packed.
        #[arg(long, value_name = "FILE", requires = "trust")]
        checkpoint: Option<PathBuf>,
        /// A public key trusted to sign checkpoints; repeatable.
        #[arg(long, value_name = "KEYLINE", requires = "checkpoint")]
        trust: Vec<String>,
        /// A policy file in force in the period; repeatable.
        #[arg(long = "policy", value_name = "FILE")]
        policies: Vec<PathBuf>,
        /// The period's start (RFC 3339, UTC: 2026-10-01T00:00:00Z); the
        /// requests asked for at or after it.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        from: Option<std::time::SystemTime>,
        /// The period's end: the requests asked for before it.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        to: Option<std::time::SystemTime>,
    },
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run cases against a policy file's rules: each line of CASES is a
    /// JSON object with `policy`, `action`, `args`, and `actor`,
    /// `resource` where given (an audit log's `requested` records are
    /// cases), and optionally `expect` (approvals needed, or "refused").
    /// Exit status 1 when a case is not as expected.
    Test {
        /// The policy file.
        file: PathBuf,
        /// The cases (JSON lines), or an audit log.
        cases: PathBuf,
    },
}

/// An RFC 3339 time in UTC (`2026-10-01T00:00:00Z`, or with a fraction).
fn parse_time(text: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339(text).map_err(|e| format!("{text:?}: {e} (say 2026-10-01T00:00:00Z)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen {
            signing: None,
            keyfile,
        } => keygen(&keyfile),
        Command::Keygen {
            signing: Some(name),
            keyfile,
        } => keygen_signing(&name, &keyfile),
        Command::Verify {
            log,
            postgres,
            postgres_ca,
            chain,
            keys,
            threads,
            checkpoint,
            trust,
        } => match (log, postgres, chain) {
            (_, Some(url), Some(chain)) => database(&url, postgres_ca.as_deref()).and_then(|db| {
                let reader = approval_postgres::ChainReader::connect(&db, &chain);
                verify(reader, &format!("postgres chain {chain}"), &keys, threads)
            }),
            (Some(log), _, _) => std::fs::File::open(&log)
                .map_err(|e| format!("{}: {e}", log.display()))
                .and_then(|file| verify(file, &log.display().to_string(), &keys, threads))
                .and_then(|code| match checkpoint {
                    Some(checkpoint) if code == ExitCode::SUCCESS => std::fs::File::open(&log)
                        .map_err(|e| format!("{}: {e}", log.display()))
                        .and_then(|file| {
                            check_checkpoint(file, &log.display().to_string(), &checkpoint, &trust)
                        }),
                    _ => Ok(code),
                }),
            _ => Err("name a log file, or --postgres URL --chain NAME".into()),
        },
        Command::Grants { log, keys } => std::fs::File::open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))
            .and_then(|file| list_grants(file, &log.display().to_string(), &keys)),
        Command::RevokeGrant {
            grant,
            api,
            token_file,
        } => revoke::revoke_grant(&grant, &api, &token_file),
        Command::Prove {
            log,
            request,
            checkpoint,
        } => proofs::prove(&log, &request, checkpoint.as_deref()),
        Command::CheckProof { file, trust } => proofs::check_proof(&file, &trust),
        Command::Consistency {
            log,
            old,
            new,
            trust,
        } => proofs::consistency(&log, &old, &new, &trust),
        Command::Feed {
            log,
            out,
            follow,
            poll_ms,
            format,
            hostname,
        } => feed::Format::parse(&format, hostname.as_deref()).and_then(|format| {
            feed::feed(
                &log,
                &out,
                &format,
                follow,
                std::time::Duration::from_millis(poll_ms),
            )
        }),
        Command::Evidence {
            log,
            out,
            keys,
            checkpoint,
            trust,
            policies,
            from,
            to,
        } => evidence::evidence(&evidence::Pack {
            log: &log,
            out: &out,
            keys: &keys,
            checkpoint: checkpoint.as_deref(),
            trust: &trust,
            policies: &policies,
            from,
            to,
        }),
        Command::Policy {
            command: PolicyCommand::Test { file, cases },
        } => policy_test::test(&file, &cases),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// The file beside a writer secret that holds its verification key.
fn verification_key_path(keyfile: &Path) -> PathBuf {
    let mut name = keyfile.as_os_str().to_owned();
    name.push(".verify");
    PathBuf::from(name)
}

fn keygen(keyfile: &Path) -> Result<ExitCode, String> {
    let verify_path = verification_key_path(keyfile);
    if verify_path.exists() {
        return Err(format!(
            "key file {} already exists; refusing to overwrite it",
            verify_path.display()
        ));
    }
    let secret = WriterSecret::generate().map_err(|e| e.to_string())?;
    secret.write_new_file(keyfile).map_err(|e| e.to_string())?;
    secret
        .record_key()
        .write_new_file(&verify_path)
        .map_err(|e| e.to_string())?;
    println!(
        "writer secret:    {} (mode 0600; only the writing process may read it)",
        keyfile.display()
    );
    println!(
        "verification key: {} (for auditors: approval verify LOG --key ID={})",
        verify_path.display(),
        verify_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn keygen_signing(name: &str, keyfile: &Path) -> Result<ExitCode, String> {
    let key = SigningKey::generate(name).map_err(|e| e.to_string())?;
    key.write_new_file(keyfile).map_err(|e| e.to_string())?;
    // The public key line alone on stdout, for scripts; the rest on stderr.
    println!("{}", key.verifier());
    eprintln!(
        "signing key: {} (mode 0600; only the writing process may read it)",
        keyfile.display()
    );
    eprintln!("public key above: give it to auditors (approval verify ... --trust KEY)");
    Ok(ExitCode::SUCCESS)
}

/// The public keys given with `--trust`.
fn trusted_keys(lines: &[String]) -> Result<Vec<VerifierKey>, String> {
    lines
        .iter()
        .map(|line| {
            line.parse::<VerifierKey>()
                .map_err(|e| format!("--trust {line:?}: {e}"))
        })
        .collect()
}

/// The word a `FAILED checkpoint:` line gives for each way a checkpoint is
/// not accepted.
fn checkpoint_word(error: &CheckpointError) -> &'static str {
    match error {
        CheckpointError::Malformed(_) => "malformed",
        CheckpointError::Unsigned => "unsigned",
        CheckpointError::UnknownKey { .. } => "unknown_key",
        CheckpointError::BadSignature { .. } => "bad_signature",
        CheckpointError::WrongOrigin { .. } => "wrong_origin",
        _ => "invalid",
    }
}

/// Checks the log `log` reads (`name` in messages) against the signed
/// checkpoint in `file`, trusting `trust`. Every way it can fail is its
/// own word on the `FAILED` line, exit 1.
fn check_checkpoint(
    log: impl std::io::Read,
    name: &str,
    file: &Path,
    trust: &[String],
) -> Result<ExitCode, String> {
    let trusted = trusted_keys(trust)?;
    let failed = |word: &str, detail: String| {
        println!("FAILED checkpoint: {word}: {detail}");
        Ok(ExitCode::from(1))
    };
    let signed = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return failed("missing", format!("{} does not exist", file.display()));
        }
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    let checkpoint = match Checkpoint::open(&signed, &trusted) {
        Ok(checkpoint) => checkpoint,
        Err(e) => return failed(checkpoint_word(&e), e.to_string()),
    };
    match check_log(log, &checkpoint).map_err(|e| format!("{name}: {e}"))? {
        Coverage::Consistent { covered, beyond } => {
            println!(
                "checkpoint ok: {} signs the first {covered} records; {beyond} after them not yet covered",
                checkpoint.origin
            );
            Ok(ExitCode::SUCCESS)
        }
        Coverage::Truncated { records, signed } => failed(
            "truncated",
            format!("the log has {records} records; the checkpoint signs {signed}"),
        ),
        Coverage::Rewritten { signed } => failed(
            "rewritten",
            format!("the first {signed} records are not the ones the checkpoint signs"),
        ),
        other => Err(format!("unexpected result {other:?}")),
    }
}

/// Verifies the log `source` reads (`name` in messages).
/// The database `--postgres` names, trusting `--postgres-ca` if given.
fn database(
    url: &str,
    ca: Option<&std::path::Path>,
) -> Result<approval_postgres::Database, String> {
    let db = approval_postgres::Database::new(url).map_err(|e| e.to_string())?;
    match ca {
        Some(ca) => db.trusting(ca).map_err(|e| e.to_string()),
        None => Ok(db),
    }
}

/// The keyring of `--key ID=KEYFILE` arguments.
fn keyring(keys: &[String]) -> Result<Keyring, String> {
    let mut keyring = Keyring::new();
    for spec in keys {
        let (id, path) = spec
            .split_once('=')
            .ok_or_else(|| format!("--key takes ID=KEYFILE, got {spec:?}"))?;
        let id = KeyId::new(id).map_err(|e| format!("--key {spec:?}: {e}"))?;
        keyring.insert(id, RecordKey::read_file(path).map_err(|e| e.to_string())?);
    }
    Ok(keyring)
}

/// Prints each grant of a log that verifies, one line each.
fn list_grants(
    source: impl std::io::Read,
    name: &str,
    keys: &[String],
) -> Result<ExitCode, String> {
    let keyring = keyring(keys)?;
    let grants = match Verifier::new(&keyring).verify_with_grants(source) {
        Ok((_, grants)) => grants,
        Err(error) => return verify_failed(error, name),
    };
    let now = approval_audit::Clock::now(&approval_audit::SystemClock);
    for grant in &grants {
        let state = if grant.revoked {
            "revoked".to_owned()
        } else if grant.last_use >= grant.uses {
            "spent".to_owned()
        } else if now >= grant.expires_at {
            format!(
                "expired at {}",
                humantime::format_rfc3339_seconds(grant.expires_at)
            )
        } else {
            format!(
                "live until {}",
                humantime::format_rfc3339_seconds(grant.expires_at)
            )
        };
        let actor = match &grant.on_behalf_of {
            Some(person) => format!("{} acting for {person}", grant.actor_id),
            None => grant.actor_id.clone(),
        };
        println!(
            "{} {} ({}) for {actor}: {} of {} uses, {state}",
            grant.id, grant.action, grant.policy, grant.last_use, grant.uses
        );
    }
    println!("{} grants", grants.len());
    Ok(ExitCode::SUCCESS)
}

fn verify(
    source: impl std::io::Read,
    name: &str,
    keys: &[String],
    threads: Option<usize>,
) -> Result<ExitCode, String> {
    let keyring = keyring(keys)?;
    let mut verifier = Verifier::new(&keyring);
    if let Some(threads) = threads {
        verifier = verifier.threads(threads);
    }
    match verifier.verify(source) {
        Ok(report) => {
            println!("ok: {} records, head {}", report.records, report.head_hex());
            println!(
                "approvals resting on mock votes: {}{}",
                report.mock_approvals,
                if report.mock_approvals > 0 {
                    " (votes of the mock approver, for tests; a production log should have none)"
                } else {
                    ""
                }
            );
            if report.grants > 0 {
                println!(
                    "grants: {}, and {} uses each checked against its grant",
                    report.grants, report.grant_uses
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => verify_failed(error, name),
    }
}

/// What a command says when the log `name` does not verify: the failing
/// record (exit 1), or why it could not be read (an error, exit 2).
fn verify_failed(error: VerifyError, name: &str) -> Result<ExitCode, String> {
    match error {
        failed @ (VerifyError::Invalid(_) | VerifyError::Grant(_)) => {
            println!("FAILED at {failed}");
            Ok(ExitCode::from(1))
        }
        VerifyError::Io(e) => Err(format!("{name}: {e}")),
        e => Err(e.to_string()),
    }
}
