//! The verifier on good logs, on logs from another implementation, and on
//! logs tampered with in every way; each failure is checked for its reason
//! word and its position.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use ring::hmac;
use serde_json::{Value, json};

use super::*;
use crate::{
    Actor, CanonicalJson, ChainHead, ChainWriter, Event, ManualClock, Outcome, RejectReason,
    Reviewer, Vote, WriterSecret,
};

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/handwritten");
    std::fs::read(dir.join(name)).unwrap()
}

fn fixture_secret(name: &str) -> WriterSecret {
    WriterSecret::from_hex(std::str::from_utf8(&fixture(name)).unwrap()).unwrap()
}

fn id(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

fn handwritten_keyring() -> Keyring {
    Keyring::new()
        .with(id("hand-1"), fixture_secret("hand-1.key").record_key())
        .with(id("hand-2"), fixture_secret("hand-2.key").record_key())
}

fn run(log: &[u8], keyring: &Keyring) -> Result<Report, Failure> {
    // Small blocks and two threads, so block and chunk edges are exercised
    // even on small logs.
    match Verifier::new(keyring)
        .threads(2)
        .block_size(1024)
        .verify(log)
    {
        Ok(report) => Ok(report),
        Err(VerifyError::Invalid(failure)) => Err(failure),
        Err(e) => panic!("unexpected {e}"),
    }
}

fn fails(log: &[u8], keyring: &Keyring) -> (u64, Option<u64>, &'static str) {
    let failure = run(log, keyring).expect_err("log must fail");
    (failure.line, failure.seq, failure.reason.as_str())
}

/// A log written by this crate: every event type, user data with floats
/// and non-ASCII text, one mock approval.
fn rust_log() -> (Vec<u8>, WriterSecret) {
    let secret = WriterSecret::from_hex(&"ab".repeat(32)).unwrap();
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_795_513_267),
    ));
    let writer = ChainWriter::new(id("k1"), &secret).with_clock(clock.clone());
    let args =
        CanonicalJson::from_value(&json!({"table": "users", "rows": 1.5e-7, "who": "Zoë 🔑"}))
            .unwrap();
    let r = |s: &str| s.to_owned();
    let events = vec![
        Event::Requested {
            request_id: r("req-1"),
            action: r("crm::export"),
            policy: r("data-export"),
            policy_digest: [7; 32],
            binding: writer.binding("crm::export", &args),
            args,
            skipped: vec![r("progress")],
            actor: Actor::new("agent-7").on_behalf_of("alice"),
            resource: Some(r("warehouse/users")),
            reason: Some(r("monthly report")),
            deferred: false,
        },
        Event::RejectedVote {
            request_id: r("req-1"),
            reviewer: Some(Reviewer::new("slack:U1")),
            channel: r("slack"),
            why: RejectReason::SelfApproval,
        },
        Event::Reviewed {
            request_id: r("req-1"),
            reviewer: Reviewer::new("mock:ci"),
            vote: Vote::Approve,
            channel: r("mock"),
            comment: None,
        },
        Event::Approved {
            request_id: r("req-1"),
            policy: r("data-export"),
            reviewers: vec![Reviewer::new("mock:ci")],
        },
        Event::Executed {
            request_id: r("req-1"),
            outcome: Outcome::Error,
            error: Some(r("disk full")),
        },
        Event::Denied {
            request_id: r("req-2"),
            policy: r("keys"),
            reviewers: vec![Reviewer::new("slack:U2").person("bob")],
        },
        Event::Expired {
            request_id: r("req-3"),
            policy: r("keys"),
            timeout_ms: 60_000,
        },
        Event::Cancelled {
            request_id: r("req-4"),
            why: r("caller dropped"),
        },
    ];
    let mut head = ChainHead::genesis();
    let mut log = Vec::new();
    for event in events {
        clock.advance(Duration::from_millis(1234));
        writer
            .seal(&mut head, &[event.to_pending().unwrap()], &mut log)
            .unwrap();
    }
    (log, secret)
}

fn lines(log: &[u8]) -> Vec<Vec<u8>> {
    log.split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn a_log_from_another_implementation_verifies() {
    let report = run(&fixture("handwritten.jsonl"), &handwritten_keyring()).unwrap();
    assert_eq!(report.records, 6);
    let head = String::from_utf8(fixture("handwritten.head")).unwrap();
    assert_eq!(report.head_hex(), head.trim_end());
    assert_eq!(report.mock_approvals, 1);
}

#[test]
fn a_log_from_this_crate_verifies_and_counts_mock_approvals() {
    let (log, secret) = rust_log();
    let keyring = Keyring::new().with(id("k1"), secret.record_key());
    let report = run(&log, &keyring).unwrap();
    assert_eq!(report.records, 8);
    assert_eq!(report.mock_approvals, 1);
    // Same answer on one thread and in one big block.
    let single = Verifier::new(&keyring).threads(1).verify(&log[..]).unwrap();
    assert_eq!(single, report);
}

#[test]
fn an_empty_log_has_no_records_and_no_head() {
    let report = run(b"", &Keyring::new()).unwrap();
    assert_eq!(
        (report.records, report.head, report.head_hex().as_str()),
        (0, None, "none")
    );
}

#[test]
fn an_edited_value_is_a_bad_mac_at_its_record() {
    let log = fixture("handwritten.jsonl");
    let edited =
        String::from_utf8(log)
            .unwrap()
            .replacen("\"outcome\":\"ok\"", "\"outcome\":\"no\"", 1);
    assert_eq!(
        fails(edited.as_bytes(), &handwritten_keyring()),
        (4, Some(3), "bad_mac")
    );
}

#[test]
fn deleting_inserting_duplicating_and_swapping_records_break_the_sequence() {
    let (log, secret) = rust_log();
    let keyring = Keyring::new().with(id("k1"), secret.record_key());
    let l = lines(&log);

    let deleted: Vec<u8> = [&l[..3], &l[4..]].concat().concat();
    assert_eq!(fails(&deleted, &keyring), (4, Some(4), "seq_gap"));

    let duplicated: Vec<u8> = [&l[..4], &l[3..]].concat().concat();
    assert_eq!(fails(&duplicated, &keyring), (5, Some(3), "seq_gap"));

    let mut swapped = l.clone();
    swapped.swap(2, 3);
    assert_eq!(fails(&swapped.concat(), &keyring), (3, Some(3), "seq_gap"));

    // A record from another log with the right seq: the link breaks.
    let (other, _) = {
        let secret2 = WriterSecret::from_hex(&"cd".repeat(32)).unwrap();
        let writer = ChainWriter::new(id("k1"), &secret2);
        let mut head = ChainHead::genesis();
        let mut out = Vec::new();
        for _ in 0..3 {
            let e = Event::Cancelled {
                request_id: "x".into(),
                why: "y".into(),
            };
            writer
                .seal(&mut head, &[e.to_pending().unwrap()], &mut out)
                .unwrap();
        }
        (out, secret2)
    };
    let mut inserted = l.clone();
    inserted[2] = lines(&other)[2].clone();
    assert_eq!(
        fails(&inserted.concat(), &keyring),
        (3, Some(2), "broken_link")
    );
}

#[test]
fn a_truncated_last_line_is_malformed_at_that_line() {
    let (log, secret) = rust_log();
    let keyring = Keyring::new().with(id("k1"), secret.record_key());
    let cut = &log[..log.len() - 40];
    assert_eq!(fails(cut, &keyring), (8, None, "malformed"));
    // Only the final newline missing: still no complete line.
    assert_eq!(
        fails(&log[..log.len() - 1], &keyring),
        (8, None, "malformed")
    );
    // Cut at a line boundary, the chain alone cannot tell: it reports the
    // head it saw, for comparison with one kept elsewhere.
    let l = lines(&log);
    let report = run(&l[..5].concat(), &keyring).unwrap();
    assert_eq!(report.records, 5);
    assert_ne!(report.head, run(&log, &keyring).unwrap().head);
}

#[test]
fn duplicate_members_and_equivalent_non_canonical_lines_are_not_canonical() {
    let (log, secret) = rust_log();
    let keyring = Keyring::new().with(id("k1"), secret.record_key());
    let text = String::from_utf8(log).unwrap();
    let cases = [
        text.replacen(
            "\"event\":\"rejected_vote\"",
            "\"event\":\"rejected_vote\",\"event\":\"rejected_vote\"",
            1,
        ),
        text.replacen("\"channel\":\"slack\"", "\"channel\": \"slack\"", 1),
        text.replacen("\"channel\":\"slack\"", "\"channel\":\"\\u0073lack\"", 1),
        text.replacen("\"seq\":1,", "\"seq\":1.0,", 1),
        text.replacen(
            "{\"channel\":\"slack\"",
            "{\"why\":\"x\",\"channel\":\"slack\"",
            1,
        ),
    ];
    for case in cases {
        assert_eq!(
            fails(case.as_bytes(), &keyring),
            (2, None, "not_canonical"),
            "{case}"
        );
    }
}

#[test]
fn missing_or_wrong_keys_fail_at_the_first_record() {
    let (log, secret) = rust_log();
    assert_eq!(fails(&log, &Keyring::new()), (1, Some(0), "unknown_key"));
    let other = WriterSecret::from_hex(&"cd".repeat(32)).unwrap();
    assert_eq!(
        fails(&log, &Keyring::new().with(id("k2"), secret.record_key())),
        (1, Some(0), "unknown_key")
    );
    assert_eq!(
        fails(&log, &Keyring::new().with(id("k1"), other.record_key())),
        (1, Some(0), "bad_mac")
    );
    // The writer secret itself is not the verification key.
    let wrong = RecordKey::from_hex(&"ab".repeat(32)).unwrap();
    assert_eq!(
        fails(&log, &Keyring::new().with(id("k1"), wrong)),
        (1, Some(0), "bad_mac")
    );
}

#[test]
fn after_a_rotation_only_the_next_key_is_accepted() {
    let keyring = handwritten_keyring();
    let log = fixture("handwritten.jsonl");
    // Without the new key, the first record after the rotation is unknown.
    let old_only = Keyring::new().with(id("hand-1"), fixture_secret("hand-1.key").record_key());
    assert_eq!(fails(&log, &old_only), (6, Some(5), "unknown_key"));

    // A tail forged with the retired key: MAC and link are right, the key
    // is not the one current at that seq.
    let writer = ChainWriter::new(id("hand-1"), &fixture_secret("hand-1.key"));
    let l = lines(&log);
    let mut forged = l[..5].concat();
    // Continue from record 4 (the rotation) as if it had not rotated.
    let mut head = ChainHead::forged(5, head_after(&l[4]), id("hand-1"));
    let e = Event::Cancelled {
        request_id: "x".into(),
        why: "forged".into(),
    };
    writer
        .seal(&mut head, &[e.to_pending().unwrap()], &mut forged)
        .unwrap();
    assert_eq!(fails(&forged, &keyring), (6, Some(5), "wrong_key"));
    assert!(run(&log, &keyring).is_ok());
}

fn head_after(line: &[u8]) -> [u8; 32] {
    crate::chain::parse_line(&line[..line.len() - 1])
        .unwrap()
        .mac
}

#[test]
fn the_first_record_must_start_the_chain() {
    let (log, secret) = rust_log();
    let keyring = Keyring::new().with(id("k1"), secret.record_key());
    let l = lines(&log);
    assert_eq!(fails(&l[1..].concat(), &keyring), (1, Some(1), "seq_gap"));
}

#[test]
fn version_other_than_1_and_missing_chain_members_are_malformed() {
    let (log, secret) = rust_log();
    let keyring = Keyring::new().with(id("k1"), secret.record_key());
    let text = String::from_utf8(log).unwrap();
    for case in [
        text.replacen(",\"v\":1}", ",\"v\":2}", 1),
        text.replacen(",\"ts\":\"", ",\"tt\":\"", 1),
        text.replacen("\"seq\":0,", "\"seq\":-1,", 1),
        text.replacen("\"seq\":0,", "\"seq\":\"0\",", 1),
        text.replacen("\"prev\":\"0000", "\"prev\":\"000", 1),
    ] {
        assert_eq!(
            fails(case.as_bytes(), &keyring),
            (1, None, "malformed"),
            "{case}"
        );
    }
}

/// An independent verifier written from AUDIT-FORMAT.md with a generic JSON
/// parser and a generic JCS implementation: the oracle for the bit flips.
fn oracle(log: &[u8], keys: &HashMap<&str, [u8; 32]>) -> Result<u64, (u64, &'static str)> {
    let mut parts: Vec<&[u8]> = log.split(|&b| b == b'\n').collect();
    let torn = parts.pop().filter(|last| !last.is_empty());
    let (mut expected_seq, mut prev, mut current): (u64, String, Option<String>) =
        (0, "0".repeat(64), None);
    for (i, line) in (1u64..).zip(&parts) {
        let Ok(Value::Object(mut record)) = serde_json::from_slice::<Value>(line) else {
            return Err((i, "malformed"));
        };
        if serde_jcs::to_vec(&Value::Object(record.clone())).unwrap() != *line {
            return Err((i, "not_canonical"));
        }
        let hex64 = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .filter(|s| {
                    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                })
                .map(str::to_owned)
        };
        let s = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(1), Some(seq), Some(_), Some(event), Some(key_id), Some(p), Some(mac)) = (
            record.get("v").and_then(Value::as_u64),
            record.get("seq").and_then(Value::as_u64),
            s("ts"),
            s("event"),
            s("key_id"),
            hex64(record.get("prev")),
            hex64(record.get("mac")),
        ) else {
            return Err((i, "malformed"));
        };
        let next = s("next_key_id");
        if event == "key_rotated" && next.is_none() {
            return Err((i, "malformed"));
        }
        if seq != expected_seq {
            return Err((i, "seq_gap"));
        }
        if p != prev {
            return Err((i, "broken_link"));
        }
        let Some(key) = keys.get(key_id.as_str()) else {
            return Err((i, "unknown_key"));
        };
        if current.as_ref().is_some_and(|c| *c != key_id) {
            return Err((i, "wrong_key"));
        }
        record.remove("mac");
        let body = serde_jcs::to_vec(&Value::Object(record)).unwrap();
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), &body);
        if crate::chain::hex(tag.as_ref()) != mac {
            return Err((i, "bad_mac"));
        }
        current = Some(if event == "key_rotated" {
            next.unwrap()
        } else {
            key_id
        });
        expected_seq += 1;
        prev = mac;
    }
    if torn.is_some() {
        return Err((expected_seq + 1, "malformed"));
    }
    Ok(expected_seq)
}

#[test]
fn every_single_bit_flip_fails_where_and_why_an_independent_verifier_says() {
    let hand = (fixture("handwritten.jsonl"), handwritten_keyring(), {
        let mut k = HashMap::new();
        k.insert("hand-1", derive(&fixture("hand-1.key")));
        k.insert("hand-2", derive(&fixture("hand-2.key")));
        k
    });
    let (log, secret) = rust_log();
    let ours = (log, Keyring::new().with(id("k1"), secret.record_key()), {
        let mut k = HashMap::new();
        k.insert("k1", derive(format!("{}\n", "ab".repeat(32)).as_bytes()));
        k
    });
    for (log, keyring, raw_keys) in [hand, ours] {
        assert_eq!(
            oracle(&log, &raw_keys),
            Ok(run(&log, &keyring).unwrap().records)
        );
        let mut flipped = log.clone();
        for byte in 0..log.len() {
            for bit in 0..8 {
                flipped[byte] ^= 1 << bit;
                let expected = oracle(&flipped, &raw_keys).expect_err("a flip must fail");
                let got = match Verifier::new(&keyring).threads(1).verify(&flipped[..]) {
                    Err(VerifyError::Invalid(failure)) => failure,
                    other => panic!("byte {byte} bit {bit}: {other:?}"),
                };
                assert_eq!(
                    (got.line, got.reason.as_str()),
                    expected,
                    "byte {byte} bit {bit}: {}",
                    String::from_utf8_lossy(&flipped)
                );
                // The failing line is the one holding the flipped byte (a
                // flip of a newline fails the line it ended).
                let line_of_byte = 1 + log[..byte].iter().filter(|&&b| b == b'\n').count() as u64;
                assert_eq!(got.line, line_of_byte, "byte {byte} bit {bit}");
                flipped[byte] ^= 1 << bit;
            }
        }
    }
}

/// The record key from key-file text, computed with ring directly.
fn derive(secret_file: &[u8]) -> [u8; 32] {
    let text = std::str::from_utf8(secret_file).unwrap().trim_end();
    let secret: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &secret),
        b"approval-audit/v1/record",
    );
    tag.as_ref().try_into().unwrap()
}
