//! `approval evidence`: the pack of a verified log checks with its own
//! commands, lists the period's requests for sampling with agent text
//! defused, and is refused for a log that fails.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use approval_audit::{
    Actor, AuditSink, CanonicalJson, ChainWriter, Event, JsonlFileSink, KeyId, ManualClock,
    Outcome, Reviewer, Vote, WriterSecret,
};
use approval_core::PolicyFile;

fn approval(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_approval"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const POLICIES: &str =
    "[[policy]]\nname = \"data-export\"\nroutes = [\"slack\"]\ntimeout_ms = 60000\n";

/// A log of three requests: one a day before the period (approved), two in
/// it (one approved and run, one denied, whose resource is hostile text).
fn write_log(dir: &Path) -> std::path::PathBuf {
    let secret = WriterSecret::generate().unwrap();
    secret
        .record_key()
        .write_new_file(dir.join("ops.verify"))
        .unwrap();
    let clock = Arc::new(ManualClock::new(
        humantime::parse_rfc3339("2026-11-30T12:00:00Z").unwrap(),
    ));
    let writer =
        Arc::new(ChainWriter::new(KeyId::new("ops-1").unwrap(), &secret).with_clock(clock.clone()));
    let log = dir.join("audit.jsonl");
    let sink = JsonlFileSink::open(&log, writer.clone()).unwrap();
    let policy = PolicyFile::parse(POLICIES, "p.toml").unwrap().policies()[0].digest();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for (n, resource, approve) in [
            (0, "warehouse/users", true),
            (1, "warehouse/orders", true),
            (2, "=HYPERLINK(\"http://evil\") <script>x</script>", false),
        ] {
            let request_id = format!("req-{n}");
            let args = CanonicalJson::from_serialize(&serde_json::json!({"n": n})).unwrap();
            let bob = Reviewer::new("slack:U2").person("bob");
            let events = [
                Event::Requested {
                    request_id: request_id.clone(),
                    action: "crm::export".into(),
                    policy: "data-export".into(),
                    policy_digest: policy,
                    binding: writer.binding("crm::export", &args),
                    args,
                    skipped: vec![],
                    actor: Actor::new("agent-7").on_behalf_of("alice"),
                    resource: Some(resource.into()),
                    reason: None,
                    deferred: false,
                },
                Event::Reviewed {
                    request_id: request_id.clone(),
                    reviewer: bob.clone(),
                    vote: if approve { Vote::Approve } else { Vote::Deny },
                    channel: "slack".into(),
                    comment: None,
                },
                if approve {
                    Event::Approved {
                        request_id: request_id.clone(),
                        policy: "data-export".into(),
                        reviewers: vec![bob.clone()],
                    }
                } else {
                    Event::Denied {
                        request_id: request_id.clone(),
                        policy: "data-export".into(),
                        reviewers: vec![bob.clone()],
                    }
                },
            ];
            for event in events {
                sink.append_event(event).await.unwrap();
            }
            if approve {
                sink.append_event(Event::Executed {
                    request_id,
                    outcome: Outcome::Ok,
                    error: None,
                })
                .await
                .unwrap();
            }
            clock.advance(Duration::from_secs(86_400));
        }
    });
    log
}

/// The rows of a CSV file whose every field is quoted (as the pack's are).
fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let mut fields = Vec::new();
            let mut chars = line.chars().peekable();
            while chars.next() == Some('"') {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') | None => break,
                        Some(c) => field.push(c),
                    }
                }
                fields.push(field);
                chars.next(); // the comma
            }
            fields
        })
        .collect()
}

#[test]
fn a_pack_checks_with_its_own_commands_and_lists_the_period_s_requests() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    std::fs::write(dir.path().join("policies.toml"), POLICIES).unwrap();
    let out = approval(
        dir.path(),
        &[
            "evidence",
            log.to_str().unwrap(),
            "--out",
            "pack.tar",
            "--key",
            "ops-1=ops.verify",
            "--policy",
            "policies.toml",
            "--from",
            "2026-12-01T00:00:00Z",
            "--to",
            "2026-12-03T00:00:00Z",
        ],
    );
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{printed}{}", text(&out.stderr));
    assert!(printed.contains("2 requests in the period"), "{printed}");
    assert!(
        printed.contains("tar xf pack.tar && cd evidence && sh CHECK.sh"),
        "{printed}"
    );

    // The auditor's side: unpack, run the printed commands.
    let unpacked = dir.path().join("auditor");
    std::fs::create_dir(&unpacked).unwrap();
    let tar = Command::new("tar")
        .args(["xf", dir.path().join("pack.tar").to_str().unwrap()])
        .current_dir(&unpacked)
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", text(&tar.stderr));
    let pack = unpacked.join("evidence");
    let bin = Path::new(env!("CARGO_BIN_EXE_approval")).parent().unwrap();
    #[allow(
        clippy::disallowed_methods,
        reason = "the auditor's own PATH, with the binary first"
    )]
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let check = |pack: &Path| {
        Command::new("sh")
            .arg("CHECK.sh")
            .current_dir(pack)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let checked = check(&pack);
    assert!(
        checked.status.success(),
        "{}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    assert!(
        text(&checked.stdout).contains("ok: 11 records"),
        "{}",
        text(&checked.stdout)
    );

    let population = csv_rows(&pack.join("population.csv"));
    assert_eq!(
        population.len(),
        3,
        "a header and the period's two requests"
    );
    assert_eq!(population[0][0], "request_id");
    assert_eq!(population[1][0], "req-1");
    assert_eq!(population[1][8], "approved");
    assert_eq!(population[1][10], "bob");
    assert_eq!(population[1][11], "ok");
    assert_eq!(population[2][0], "req-2");
    assert_eq!(population[2][8], "denied");
    assert!(
        population[2][7].starts_with("'=HYPERLINK"),
        "a formula is defused: {:?}",
        population[2]
    );
    let summary = csv_rows(&pack.join("summary-policies.csv"));
    assert_eq!(summary[1][..5], ["data-export", "2", "1", "1", "0"]);
    let reviewers = csv_rows(&pack.join("summary-reviewers.csv"));
    assert_eq!(reviewers[1], ["bob", "1", "1"]);
    let report = std::fs::read_to_string(pack.join("report.html")).unwrap();
    assert!(!report.contains("<script>x"), "agent text is escaped");
    assert!(report.contains("&lt;script&gt;x"));
    // The policy file's digest is the one the records carry.
    let digests = csv_rows(&pack.join("policies/digests.csv"));
    let recorded: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        digests[1],
        [
            "policies.toml",
            "data-export",
            recorded["policy_digest"].as_str().unwrap()
        ]
    );

    // A pack altered after it was made fails its own check.
    std::fs::write(pack.join("population.csv"), "\"request_id\"\n").unwrap();
    let altered = check(&pack);
    assert!(!altered.status.success());
    assert!(
        text(&altered.stdout).contains("population.csv: FAILED"),
        "{}",
        text(&altered.stdout)
    );
}

#[test]
fn a_log_that_fails_verification_is_not_packed() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    let original = std::fs::read_to_string(&log).unwrap();
    std::fs::write(
        &log,
        original.replacen("warehouse/orders", "warehouse/payroll", 1),
    )
    .unwrap();
    let args = [
        "evidence",
        log.to_str().unwrap(),
        "--out",
        "pack.tar",
        "--key",
        "ops-1=ops.verify",
    ];
    let out = approval(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("FAILED at"),
        "{}",
        text(&out.stdout)
    );
    assert!(!dir.path().join("pack.tar").exists());

    // Nor is an archive overwritten.
    std::fs::write(&log, original).unwrap();
    std::fs::write(dir.path().join("pack.tar"), "keep").unwrap();
    let out = approval(dir.path(), &args);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pack.tar")).unwrap(),
        "keep"
    );
}
