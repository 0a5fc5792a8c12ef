//! The `approval` command as an operator and an auditor use it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use approval_audit::{
    AuditSink, ChainWriter, Event, JsonlFileSink, KeyId, Outcome, Reviewer, WriterSecret,
};

fn approval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_approval"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a log of `records` records sealed with the secret in `key_file`.
fn write_log(log: &Path, key_file: &Path, mock_approvals: usize) {
    let secret = WriterSecret::read_file(key_file).unwrap();
    let writer = Arc::new(ChainWriter::new(KeyId::new("ops-1").unwrap(), &secret));
    let sink = JsonlFileSink::open(log, writer).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for n in 0..3 {
            let request_id = format!("req-{n}");
            let reviewer = if n < mock_approvals {
                "mock:ci"
            } else {
                "slack:U1"
            };
            sink.append_event(Event::Approved {
                request_id: request_id.clone(),
                policy: "p".into(),
                reviewers: vec![Reviewer::new(reviewer)],
            })
            .await
            .unwrap();
            sink.append_event(Event::Executed {
                request_id,
                outcome: Outcome::Ok,
                error: None,
            })
            .await
            .unwrap();
        }
    });
}

/// Makes a key pair with `approval keygen`, writes a log with it, and
/// returns the log and the `--key` argument that verifies it.
fn keyed_log(dir: &Path, mock_approvals: usize) -> (std::path::PathBuf, String) {
    let key = dir.join("ops.key");
    let out = approval(&["keygen", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = dir.join("audit.jsonl");
    write_log(&log, &key, mock_approvals);
    (log, format!("ops-1={}.verify", key.display()))
}

#[test]
fn keygen_writes_a_private_secret_and_its_verification_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ops.key");
    let out = approval(&["keygen", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verify_key = dir.path().join("ops.key.verify");
    for file in [&key, &verify_key] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
        let content = std::fs::read_to_string(file).unwrap();
        assert_eq!(content.len(), 65);
        assert!(
            content[..64]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
    // The verification key is the derived record key, not the secret.
    let secret = WriterSecret::read_file(&key).unwrap();
    let derived = approval_audit::RecordKey::read_file(&verify_key).unwrap();
    assert!(secret.record_key() == derived);
    assert_ne!(
        std::fs::read(&key).unwrap(),
        std::fs::read(&verify_key).unwrap()
    );
    assert!(text(&out.stdout).contains("ops.key.verify"));
}

#[test]
fn keygen_refuses_to_overwrite_either_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ops.key");
    std::fs::write(&key, "keep me").unwrap();
    let out = approval(&["keygen", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "keep me");

    let other = dir.path().join("other.key");
    std::fs::write(dir.path().join("other.key.verify"), "keep me too").unwrap();
    let out = approval(&["keygen", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!other.exists(), "no half-made key pair");
}

#[test]
fn verify_prints_count_head_and_mock_approvals() {
    let dir = tempfile::tempdir().unwrap();
    let (log, key_arg) = keyed_log(dir.path(), 1);
    let out = approval(&["verify", log.to_str().unwrap(), "--key", &key_arg]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let last = std::fs::read_to_string(&log).unwrap();
    let head = last
        .lines()
        .last()
        .unwrap()
        .split("\"mac\":\"")
        .nth(1)
        .unwrap()[..64]
        .to_owned();
    assert!(
        stdout.contains(&format!("ok: 6 records, head {head}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("approvals resting on mock votes: 1"),
        "{stdout}"
    );
}

#[test]
fn verify_names_the_first_failing_record_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (log, key_arg) = keyed_log(dir.path(), 0);
    let tampered = std::fs::read_to_string(&log)
        .unwrap()
        .replacen("req-1", "req-9", 1);
    std::fs::write(&log, tampered).unwrap();
    let out = approval(&["verify", log.to_str().unwrap(), "--key", &key_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout).trim(),
        "FAILED at record seq 2 (line 3): bad_mac"
    );

    // A key under another id: unknown_key at the first record.
    let out = approval(&[
        "verify",
        log.to_str().unwrap(),
        "--key",
        &key_arg.replacen("ops-1=", "ops-2=", 1),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout).trim(),
        "FAILED at record seq 0 (line 1): unknown_key"
    );
}

#[test]
fn verify_refuses_malformed_key_files_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    std::fs::write(&log, "").unwrap();
    let bad_key = dir.path().join("bad.key");
    std::fs::write(&bad_key, "DEADBEEF\n").unwrap();
    let out = approval(&[
        "verify",
        log.to_str().unwrap(),
        "--key",
        &format!("k={}", bad_key.display()),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("64 lowercase hex digits") && stderr.contains("bad.key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("DEADBEEF"),
        "key material echoed: {stderr}"
    );

    let out = approval(&["verify", log.to_str().unwrap(), "--key", "no-equals-sign"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("ID=KEYFILE"));

    let out = approval(&["verify", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "a key is required");
}

#[test]
fn keygen_signing_writes_a_private_key_and_prints_its_public_key_line() {
    use approval_audit::checkpoint::{Checkpoint, SigningKey, VerifierKey, empty_root};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("log.signing");
    let out = approval(&[
        "keygen",
        "--signing",
        "example.com/approvals",
        key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    let public: VerifierKey = line.trim_end().parse().unwrap();
    assert_eq!(public.name(), "example.com/approvals");
    assert!(line.starts_with("example.com/approvals+"), "{line}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The file's key signs what the printed key verifies.
    let signing = SigningKey::read_file(&key).unwrap();
    let checkpoint = Checkpoint::new("example.com/approvals", 0, empty_root());
    let signed = checkpoint.sign(&signing).unwrap();
    assert_eq!(
        Checkpoint::open(signed.as_bytes(), &[public]).unwrap(),
        checkpoint
    );
    // Never overwritten; a name with a space is refused.
    let out = approval(&[
        "keygen",
        "--signing",
        "example.com/approvals",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    let other = dir.path().join("other");
    let out = approval(&["keygen", "--signing", "bad name", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("key name"),
        "{}",
        text(&out.stderr)
    );
    assert!(!other.exists());
}

/// A checkpoint of the first `n` records of `log`, signed with `key`.
fn checkpoint_of(log: &Path, n: usize, key: &approval_audit::checkpoint::SigningKey) -> String {
    use approval_audit::checkpoint::{Checkpoint, leaf_hash, root};
    let text = std::fs::read_to_string(log).unwrap();
    let leaves: Vec<_> = text.lines().map(|l| leaf_hash(l.as_bytes())).collect();
    Checkpoint::new(key.name(), n as u64, root(&leaves[..n]))
        .sign(key)
        .unwrap()
}

#[test]
fn verify_with_a_checkpoint_finds_a_log_cut_off_or_rewritten_and_names_each_failure() {
    use approval_audit::checkpoint::SigningKey;
    let dir = tempfile::tempdir().unwrap();
    let (log, key_arg) = keyed_log(dir.path(), 0);
    let signing_path = dir.path().join("log.signing");
    let out = approval(&[
        "keygen",
        "--signing",
        "example.com/approvals",
        signing_path.to_str().unwrap(),
    ]);
    let trusted = text(&out.stdout).trim_end().to_owned();
    let signing = SigningKey::read_file(&signing_path).unwrap();
    let checkpoint = dir.path().join("log.checkpoint");
    let run = |log: &Path, checkpoint: &Path, trust: &str| {
        approval(&[
            "verify",
            log.to_str().unwrap(),
            "--key",
            &key_arg,
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--trust",
            trust,
        ])
    };

    // Signed over the first 4 of 6 records.
    std::fs::write(&checkpoint, checkpoint_of(&log, 4, &signing)).unwrap();
    let out = run(&log, &checkpoint, &trusted);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("signs the first 4 records; 2 after them not yet covered"),
        "{}",
        text(&out.stdout)
    );

    // Cut off at a record boundary: the chain alone cannot tell.
    std::fs::write(&checkpoint, checkpoint_of(&log, 6, &signing)).unwrap();
    let full = std::fs::read_to_string(&log).unwrap();
    let cut = dir.path().join("cut.jsonl");
    std::fs::write(
        &cut,
        full.lines()
            .take(4)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = run(&cut, &checkpoint, &trusted);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("ok: 4 records")
            && text(&out.stdout).contains(
                "FAILED checkpoint: truncated: the log has 4 records; the checkpoint signs 6"
            ),
        "{}",
        text(&out.stdout)
    );

    // Rewritten by someone holding the MAC key: the chain verifies, the
    // checkpoint does not.
    let rewritten = dir.path().join("rewritten.jsonl");
    write_log(&rewritten, &dir.path().join("ops.key"), 2);
    let out = run(&rewritten, &checkpoint, &trusted);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("ok: 6 records")
            && text(&out.stdout).contains("FAILED checkpoint: rewritten"),
        "{}",
        text(&out.stdout)
    );

    // Each way the checkpoint itself fails has its own word.
    let other = SigningKey::generate("example.com/approvals").unwrap();
    let foreign_key = SigningKey::generate("example.com/other").unwrap();
    let cases: [(&str, Vec<u8>, String); 5] = [
        ("malformed", b"not a checkpoint".to_vec(), trusted.clone()),
        (
            "unsigned",
            approval_audit::checkpoint::Checkpoint::new("example.com/approvals", 1, [0; 32])
                .text()
                .into_bytes(),
            trusted.clone(),
        ),
        (
            "unknown_key",
            checkpoint_of(&log, 4, &other).into_bytes(),
            trusted.clone(),
        ),
        (
            "bad_signature",
            checkpoint_of(&log, 4, &signing)
                .replacen("\n4\n", "\n5\n", 1)
                .into_bytes(),
            trusted.clone(),
        ),
        (
            "wrong_origin",
            approval_audit::checkpoint::Checkpoint::new("example.com/elsewhere", 4, [0; 32])
                .sign(&foreign_key)
                .unwrap()
                .into_bytes(),
            foreign_key.verifier().to_string(),
        ),
    ];
    for (word, bytes, trust) in cases {
        std::fs::write(&checkpoint, bytes).unwrap();
        let out = run(&log, &checkpoint, &trust);
        assert_eq!(out.status.code(), Some(1), "{word}: {}", text(&out.stdout));
        assert!(
            text(&out.stdout).contains(&format!("FAILED checkpoint: {word}")),
            "{word}: {}",
            text(&out.stdout)
        );
    }
    let out = run(&log, &dir.path().join("absent"), &trusted);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAILED checkpoint: missing"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn prove_gives_an_auditor_one_request_and_check_proof_checks_it_alone() {
    use approval_audit::checkpoint::SigningKey;
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = keyed_log(dir.path(), 0);
    let signing = SigningKey::generate("example.com/approvals").unwrap();
    let trusted = signing.verifier().to_string();
    // The checkpoint covers the first 4 records: req-0 and req-1.
    std::fs::write(
        approval_audit::checkpoint::checkpoint_path(&log),
        checkpoint_of(&log, 4, &signing),
    )
    .unwrap();

    let out = approval(&["prove", log.to_str().unwrap(), "--request", "req-1"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let proof = dir.path().join("req-1.proof.json");
    std::fs::write(&proof, &out.stdout).unwrap();
    assert!(
        text(&out.stderr).contains("proved 2 records of request req-1"),
        "{}",
        text(&out.stderr)
    );

    // The auditor has the proof and the public key; nothing else.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("proof.json");
    std::fs::copy(&proof, &copy).unwrap();
    drop(dir);
    let out = approval(&["check-proof", copy.to_str().unwrap(), "--trust", &trusted]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "ok: these 2 records of request req-1 are in example.com/approvals (checkpoint of 4 records)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("seq 2: approved") && stdout.contains("seq 3: executed"),
        "{stdout}"
    );

    // Altered: a record's text, the request named, the key trusted.
    let original = std::fs::read_to_string(&copy).unwrap();
    let cases = [
        (
            original.replacen("slack:U1", "slack:U2", 1),
            "FAILED: record 2 is not in the log the checkpoint signs",
        ),
        (
            original.replace("\"request_id\": \"req-1\"", "\"request_id\": \"req-0\""),
            "FAILED: record 2: names another request",
        ),
    ];
    for (altered, expected) in cases {
        assert_ne!(altered, original);
        std::fs::write(&copy, altered).unwrap();
        let out = approval(&["check-proof", copy.to_str().unwrap(), "--trust", &trusted]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        assert!(
            text(&out.stdout).contains(expected),
            "{}",
            text(&out.stdout)
        );
    }
    std::fs::write(&copy, &original).unwrap();
    let stranger = SigningKey::generate("example.com/approvals")
        .unwrap()
        .verifier()
        .to_string();
    let out = approval(&["check-proof", copy.to_str().unwrap(), "--trust", &stranger]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAILED checkpoint: unknown_key"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn prove_refuses_what_the_checkpoint_does_not_cover() {
    use approval_audit::checkpoint::SigningKey;
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = keyed_log(dir.path(), 0);
    let signing = SigningKey::generate("example.com/approvals").unwrap();
    std::fs::write(
        approval_audit::checkpoint::checkpoint_path(&log),
        checkpoint_of(&log, 4, &signing),
    )
    .unwrap();
    let out = approval(&["prove", log.to_str().unwrap(), "--request", "req-2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout)
            .contains("no record of request req-2 is covered by the checkpoint (2 after it)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn consistency_shows_an_older_checkpoint_is_a_prefix_of_a_newer_one() {
    use approval_audit::checkpoint::SigningKey;
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = keyed_log(dir.path(), 0);
    let signing = SigningKey::generate("example.com/approvals").unwrap();
    let trusted = signing.verifier().to_string();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::write(&old, checkpoint_of(&log, 3, &signing)).unwrap();
    std::fs::write(&new, checkpoint_of(&log, 6, &signing)).unwrap();
    let run = |log: &Path, old: &Path, new: &Path| {
        approval(&[
            "consistency",
            log.to_str().unwrap(),
            "--old",
            old.to_str().unwrap(),
            "--new",
            new.to_str().unwrap(),
            "--trust",
            &trusted,
        ])
    };
    let out = run(&log, &old, &new);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains(
            "ok: the 3 records of the older checkpoint are the first of the 6 records of the newer"
        ),
        "{}",
        text(&out.stdout)
    );
    // The empty log is a prefix of every log.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, checkpoint_of(&log, 0, &signing)).unwrap();
    let out = run(&log, &empty, &new);
    assert!(out.status.success(), "{}", text(&out.stdout));
    // Swapped, or checked against a log rewritten after the older one.
    let out = run(&log, &new, &old);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout)
            .contains("FAILED: the older checkpoint signs more records (6) than the newer (3)"),
        "{}",
        text(&out.stdout)
    );
    let rewritten = dir.path().join("rewritten.jsonl");
    write_log(&rewritten, &dir.path().join("ops.key"), 3);
    std::fs::write(&new, checkpoint_of(&rewritten, 6, &signing)).unwrap();
    let out = run(&rewritten, &old, &new);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAILED: inconsistent"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn feed_copies_each_record_once_across_runs_a_torn_line_and_a_record_still_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = keyed_log(dir.path(), 3);
    let feed = dir.path().join("siem.jsonl");
    let run = || {
        approval(&[
            "feed",
            log.to_str().unwrap(),
            "--out",
            feed.to_str().unwrap(),
        ])
    };
    let out = run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&feed).unwrap(), std::fs::read(&log).unwrap());
    assert_eq!(std::fs::read_to_string(&feed).unwrap().lines().count(), 6);

    // Nothing new: nothing copied again.
    assert!(run().status.success());
    assert_eq!(std::fs::read(&feed).unwrap(), std::fs::read(&log).unwrap());

    // The log grows; a crash had left half a line in the feed; the writer
    // is mid-way through one more record.
    write_log(&log, &dir.path().join("ops.key"), 3);
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(&feed)
        .unwrap();
    std::io::Write::write_all(&mut torn, br#"{"v":1,"seq":6,"ts":"#).unwrap();
    let whole = std::fs::read(&log).unwrap();
    let mut writing = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut writing, br#"{"v":1,"seq":12"#).unwrap();
    let out = run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Each whole record once, in order; the unfinished one not yet.
    assert_eq!(std::fs::read(&feed).unwrap(), whole);
    assert_eq!(std::fs::read_to_string(&feed).unwrap().lines().count(), 12);
}

#[test]
fn a_syslog_feed_carries_each_record_once_and_keeps_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = keyed_log(dir.path(), 3);
    let feed = dir.path().join("siem.log");
    let run = |format: &str| {
        approval(&[
            "feed",
            log.to_str().unwrap(),
            "--out",
            feed.to_str().unwrap(),
            "--format",
            format,
            "--hostname",
            "gate-1",
        ])
    };
    let out = run("syslog");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let records = std::fs::read_to_string(&log).unwrap();
    let check = |records: &str| {
        let lines = std::fs::read_to_string(&feed).unwrap();
        assert_eq!(lines.lines().count(), records.lines().count());
        for (line, record) in lines.lines().zip(records.lines()) {
            let (header, carried) = line.split_at(line.find('{').unwrap());
            assert_eq!(carried, record);
            let value: serde_json::Value = serde_json::from_str(record).unwrap();
            assert_eq!(
                header,
                format!(
                    "<109>1 {} gate-1 approval - {} - ",
                    value["ts"].as_str().unwrap(),
                    value["event"].as_str().unwrap()
                )
            );
        }
    };
    check(&records);
    // Run again after the log grew: only the new records, once.
    write_log(&log, &dir.path().join("ops.key"), 3);
    assert!(run("syslog").status.success());
    check(&std::fs::read_to_string(&log).unwrap());
    // A syslog feed is not continued as JSON lines.
    let before = std::fs::read(&feed).unwrap();
    let out = approval(&[
        "feed",
        log.to_str().unwrap(),
        "--out",
        feed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("keep its --format"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&feed).unwrap(), before);
}

#[test]
fn feed_refuses_a_log_that_does_not_continue_it_and_leaves_the_feed_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = keyed_log(dir.path(), 3);
    let feed = dir.path().join("siem.jsonl");
    let feed_arg = feed.to_str().unwrap();
    assert!(
        approval(&["feed", log.to_str().unwrap(), "--out", feed_arg])
            .status
            .success()
    );
    let before = std::fs::read(&feed).unwrap();

    // Another log, with another key: its records differ from the feed's.
    let other_dir = tempfile::tempdir().unwrap();
    let (other, _) = keyed_log(other_dir.path(), 3);
    let out = approval(&["feed", other.to_str().unwrap(), "--out", feed_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not the feed's last line: not the log this feed follows"),
        "{}",
        text(&out.stderr)
    );
    // A log cut short (records removed at its end).
    let short = dir.path().join("short.jsonl");
    let lines: Vec<&str> = std::str::from_utf8(&before).unwrap().lines().collect();
    std::fs::write(&short, format!("{}\n", lines[..4].join("\n"))).unwrap();
    let out = approval(&["feed", short.to_str().unwrap(), "--out", feed_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ends before the feed's last record"),
        "{}",
        text(&out.stderr)
    );
    // A record dropped from the middle of what is new.
    let gapped = dir.path().join("gapped.jsonl");
    let mut grown = String::from_utf8(before.clone()).unwrap();
    write_log(&log, &dir.path().join("ops.key"), 3);
    let all = std::fs::read_to_string(&log).unwrap();
    let new: Vec<&str> = all.lines().skip(6).collect();
    grown.push_str(&format!("{}\n{}\n", new[0], new[2]));
    std::fs::write(&gapped, grown).unwrap();
    let out = approval(&["feed", gapped.to_str().unwrap(), "--out", feed_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("record 8 does not follow record 6"),
        "{}",
        text(&out.stderr)
    );
    // The refused logs wrote nothing, but for the record before the gap,
    // which does follow the feed: copied, once.
    let after = std::fs::read_to_string(&feed).unwrap();
    assert_eq!(after.lines().count(), 7);
    assert!(after.starts_with(std::str::from_utf8(&before).unwrap()));
}

#[test]
fn a_following_feed_copies_records_as_they_come_and_a_restart_repeats_none() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = keyed_log(dir.path(), 3);
    let feed = dir.path().join("siem.jsonl");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_approval"))
            .args([
                "feed",
                log.to_str().unwrap(),
                "--out",
                feed.to_str().unwrap(),
                "--follow",
                "--poll-ms",
                "20",
            ])
            .spawn()
            .unwrap()
    };
    let lines = || {
        std::fs::read_to_string(&feed)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let wait_for = |n: usize| {
        for _ in 0..500 {
            if lines() >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the feed has {} lines, not {n}", lines());
    };
    let mut follower = spawn();
    wait_for(6);
    write_log(&log, &dir.path().join("ops.key"), 3);
    wait_for(12);
    follower.kill().unwrap();
    follower.wait().unwrap();
    write_log(&log, &dir.path().join("ops.key"), 3);
    let mut follower = spawn();
    wait_for(18);
    std::thread::sleep(std::time::Duration::from_millis(100));
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert_eq!(std::fs::read(&feed).unwrap(), std::fs::read(&log).unwrap());
}

/// Two approvals above 10,000; none below 100 at stripe; one between.
const PAYMENTS: &str = r#"
[[policy]]
name = "payment"
routes = ["slack"]
timeout_ms = 600000
rules = [
  { when = "context.args.amount > 10000", required = 2 },
  { when = "context.args.amount < 100 && context.resource == \"stripe\"", required = 0 },
]
"#;

#[test]
fn policy_test_runs_cases_and_recorded_requests_against_a_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.toml");
    std::fs::write(&policies, PAYMENTS).unwrap();
    // A log a gate wrote: its `requested` record is a case; others are not.
    let log = dir.path().join("audit.log");
    let secret = WriterSecret::from_hex(&"41".repeat(32)).unwrap();
    let sink = JsonlFileSink::open(
        &log,
        Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &secret)),
    )
    .unwrap();
    let args =
        approval_audit::CanonicalJson::from_value(&serde_json::json!({ "amount": 20000 })).unwrap();
    let agent = approval_audit::Actor::new("billing-agent").on_behalf_of("dave");
    let asked = approval_audit::PendingRecord::requested(&approval_audit::Requested {
        request_id: "r1",
        action: "billing::pay",
        policy: "payment",
        policy_digest: &[7; 32],
        args: &args,
        skipped: &[],
        binding: &[8; 32],
        actor: &agent,
        resource: Some("stripe"),
        reason: None,
        deferred: false,
        rule: Some(0),
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        sink.append(vec![asked]).await.unwrap();
        sink.append_event(Event::Approved {
            request_id: "r1".into(),
            policy: "payment".into(),
            reviewers: vec![Reviewer::new("slack:U1"), Reviewer::new("slack:U2")],
        })
        .await
        .unwrap();
    });
    drop(sink);
    let run = |cases: &Path| {
        approval(&[
            "policy",
            "test",
            policies.to_str().unwrap(),
            cases.to_str().unwrap(),
        ])
    };
    let out = run(&log);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "line 1: payment: rule 0 applies: 2 approvals\n1 cases\n"
    );

    let cases = dir.path().join("cases.jsonl");
    let case = |amount: &str, resource: &str, expect: &str| {
        format!(
            r#"{{"policy":"payment","action":"billing::pay","args":{{"amount":{amount}}},"actor":{{"id":"billing-agent"}},"resource":"{resource}","expect":{expect}}}"#
        )
    };
    std::fs::write(
        &cases,
        [
            case("20000", "stripe", "2"),
            case("50", "stripe", "0"),
            // The same small amount elsewhere is not exempted.
            case("50", "paypal", "1"),
            case("\"20000\"", "stripe", "\"refused\""),
            String::new(),
        ]
        .join("\n"),
    )
    .unwrap();
    let out = run(&cases);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let printed = text(&out.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[0], "line 1: payment: rule 0 applies: 2 approvals");
    assert_eq!(lines[1], "line 2: payment: rule 1 applies: exempted");
    assert_eq!(lines[2], "line 3: payment: no rule applies: 1 approval");
    assert!(
        lines[3].starts_with("line 4: payment: refused: rule 0: "),
        "{printed}"
    );
    assert_eq!(lines[4], "4 cases, 4 as expected");

    // A case not as expected, and one for a policy the file lacks, fail it.
    std::fs::write(
        &cases,
        [
            case("20000", "stripe", "1"),
            r#"{"policy":"refund","action":"billing::refund","args":{}}"#.to_owned(),
        ]
        .join("\n"),
    )
    .unwrap();
    let out = run(&cases);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("line 1: payment: rule 0 applies: 2 approvals (NOT AS EXPECTED: 1)"),
        "{printed}"
    );
    assert!(
        printed.contains("line 2: refund: no such policy"),
        "{printed}"
    );
    assert!(
        printed.ends_with("2 cases, 2 not as expected\n"),
        "{printed}"
    );

    // A rule that is not Cedar is an error at its line, before any case.
    std::fs::write(&policies, PAYMENTS.replace("> 10000", "> ")).unwrap();
    let out = run(&cases);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(
        said.contains("policies.toml:7: policy payment rule 0"),
        "{said}"
    );
}

/// Appends to `log` a grant `id` of `uses` uses, by `agent-7` for dave,
/// pinning `table` to `users`; then `used` uses of it, the last of them
/// to `table`; then its revocation if `revoke`.
fn write_grant(log: &Path, key_file: &Path, grant: (&str, u32), used: &[&str], revoke: bool) {
    use approval_audit::{Actor, CanonicalJson, Granted, PendingRecord, Requested};

    let (id, uses) = grant;
    let secret = WriterSecret::read_file(key_file).unwrap();
    let writer = Arc::new(ChainWriter::new(KeyId::new("ops-1").unwrap(), &secret));
    let sink = JsonlFileSink::open(log, writer).unwrap();
    let actor = Actor::new("agent-7").on_behalf_of("dave");
    let digest = [7; 32];
    let pinned = CanonicalJson::parse(r#"{"table":"users"}"#).unwrap();
    let mut records = vec![
        PendingRecord::granted(&Granted {
            request_id: id,
            action: "crm::export",
            policy: "data-export",
            policy_digest: &digest,
            rule: None,
            actor: &actor,
            uses,
            expires_at: approval_audit::Clock::now(&approval_audit::SystemClock)
                + std::time::Duration::from_secs(3600),
            pinned: &pinned,
            reviewers: &[Reviewer::new("slack:U1").person("alice")],
        })
        .unwrap(),
    ];
    for (n, table) in used.iter().enumerate() {
        let args = CanonicalJson::parse(&format!(r#"{{"rows":{n},"table":"{table}"}}"#)).unwrap();
        let asked = Requested {
            request_id: &format!("{id}-use-{n}"),
            action: "crm::export",
            policy: "data-export",
            policy_digest: &digest,
            args: &args,
            skipped: &[],
            binding: &[0; 32],
            actor: &actor,
            resource: None,
            reason: None,
            deferred: false,
            rule: None,
        };
        let number = u32::try_from(n + 1).unwrap();
        records.push(PendingRecord::grant_used(&asked, id, number).unwrap());
    }
    if revoke {
        let revoked = Event::GrantRevoked {
            request_id: id.into(),
            reviewer: Some(Reviewer::new("slack:U2").person("bob")),
            channel: "slack".into(),
            why: "revoked by a reviewer".into(),
        };
        records.push(revoked.to_pending().unwrap());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(sink.append(records)).unwrap();
}

#[test]
fn grants_lists_each_grant_and_verify_checks_every_use_against_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let (log, key_arg) = keyed_log(dir.path(), 0);
    let key = dir.path().join("ops.key");
    write_grant(&log, &key, ("g1", 2), &["users", "users"], false);
    write_grant(&log, &key, ("g2", 3), &[], true);
    let out = approval(&["grants", log.to_str().unwrap(), "--key", &key_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines,
        [
            "g1 crm::export (data-export) for agent-7 acting for dave: 2 of 2 uses, spent",
            "g2 crm::export (data-export) for agent-7 acting for dave: 0 of 3 uses, revoked",
            "2 grants",
        ]
    );
    let out = approval(&["verify", log.to_str().unwrap(), "--key", &key_arg]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("grants: 2, and 2 uses each checked against its grant"),
        "{}",
        text(&out.stdout)
    );

    // A use of another table than the grant pins: the record and why.
    write_grant(&log, &key, ("g3", 2), &["users", "payments"], false);
    for command in ["verify", "grants"] {
        let out = approval(&[command, log.to_str().unwrap(), "--key", &key_arg]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let said = text(&out.stdout);
        assert!(
            said.contains("FAILED at record seq 13 (line 14): grant_mismatch"),
            "{command}: {said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_grant_revokes_through_the_decision_api_as_one_of_its_reviewers() {
    use std::time::Duration;

    use approval_core::{
        Actor, Ballot, Call, CanonicalJson, Directory, Gate, GrantTerms, MemorySink, Policy, Vote,
        with_actor,
    };
    use approval_http::{ApiApprover, ReviewerTokens, api};

    let (alice, carol) = ("alice-token-5e1d", "carol-token-77c0");
    let tokens = ReviewerTokens::new()
        .reviewer("alice", &ReviewerTokens::hash(alice))
        .unwrap()
        .reviewer("carol", &ReviewerTokens::hash(carol))
        .unwrap();
    let approver = Arc::new(ApiApprover::new(tokens));
    let secret = WriterSecret::generate().unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))));
    let gate = Gate::builder(sink.clone())
        .approver("api", approver.clone())
        .policy(
            Policy::new("data-export", ["api"], Duration::from_secs(60))
                .approvers(["alice"])
                .grants(2, Duration::from_secs(600), ["table"]),
        )
        .directory(
            Directory::new()
                .person("alice", ["api:alice"])
                .person("carol", ["api:carol"])
                .person("dave", ["email:dave@example.com"]),
        )
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/approval", listener.local_addr().unwrap());
    let app = axum::Router::new().nest("/approval", api::router(approver));
    tokio::spawn(approval_listener::Server::new().serve(listener, app, std::future::pending()));

    // Alice approves an export and grants two more.
    let call = Call::new(
        "crm::export",
        "data-export",
        CanonicalJson::from_serialize(&serde_json::json!({"table": "users"})).unwrap(),
    );
    let actor = Actor::new("agent-7").on_behalf_of("dave");
    let ticket = with_actor(actor, async { gate.submit(call).await })
        .await
        .unwrap();
    let request = ticket.request().clone();
    let granting = Ballot::new(&request, "api:alice", "api", Vote::Approve)
        .granting(GrantTerms::new(2, Duration::from_secs(600)));
    gate.cast(granting).await.unwrap();
    drop(ticket.decision().await.unwrap());
    assert_eq!(gate.grants().len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let token_file = |name: &str, token: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        path
    };
    let revoke = |file: std::path::PathBuf| {
        let (id, base) = (request.id.clone(), base.clone());
        tokio::process::Command::new(env!("CARGO_BIN_EXE_approval"))
            .args(["revoke-grant", &id, "--api", &base, "--token-file"])
            .arg(file)
            .output()
    };
    // Carol is no reviewer of this policy: not revoked, nothing recorded.
    let out = revoke(token_file("carol", carol)).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("not revoked"),
        "{}",
        text(&out.stdout)
    );
    // A token nobody has: refused by the API, exit 2.
    let out = revoke(token_file("nobody", "not-a-token")).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("(401)"), "{}", text(&out.stderr));
    assert_eq!(gate.grants().len(), 1);

    let out = revoke(token_file("alice", alice)).await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("revoked: grant {} (0 of 2 uses spent)", request.id)
    );
    assert!(gate.grants().is_empty());
    let log = text(&sink.bytes());
    let revoked: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["event"] == "grant_revoked")
        .unwrap();
    assert_eq!(
        (
            revoked["reviewer"]["id"].as_str(),
            revoked["channel"].as_str()
        ),
        (Some("api:alice"), Some("api"))
    );
}
