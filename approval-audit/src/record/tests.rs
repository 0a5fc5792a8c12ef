use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::*;
use crate::{ChainHead, ChainWriter, ManualClock, WriterSecret};

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/handwritten");
    std::fs::read(dir.join(name)).unwrap()
}

fn secret(name: &str) -> WriterSecret {
    WriterSecret::from_hex(std::str::from_utf8(&fixture(name)).unwrap()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    crate::chain::hex(bytes)
}

/// The Rust writer, given the events of `tests/data/handwritten/make_log.py`,
/// must produce that script's log byte for byte: two implementations of
/// AUDIT-FORMAT.md agreeing on floats, non-ASCII text, escapes, redaction
/// digests, bindings and key rotation.
#[test]
fn writer_matches_an_independent_implementation_byte_for_byte() {
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH));
    let first = secret("hand-1.key");
    let writer = ChainWriter::new(KeyId::new("hand-1").unwrap(), &first).with_clock(clock.clone());
    writer.add_key(KeyId::new("hand-2").unwrap(), &secret("hand-2.key"));

    let token = CanonicalJson::from_serialize("s3cr3t").unwrap();
    let token_digest = hex(&writer.digest(token.as_str().as_bytes()));
    let note = "Zoë\tMüller \u{7} 東京 🔑 \"quoted\" back\\slash";
    let args = json!({
        "table": "kunden_östliche_region", "limit": 2500, "ratio": 0.1, "threshold": -3.25,
        "huge": 1e21, "tiny": 1.5e300, "note": note, "big_id": 9_007_199_254_740_993u64,
        "token": {"redacted": token_digest},
    });
    let mut binding_args = args.clone();
    binding_args["token"] = json!("s3cr3t");
    let binding_args = CanonicalJson::from_value(&binding_args).unwrap();
    let request = "01JDQ7Z8K0000000000000000A".to_owned();
    let mock = Reviewer::new("mock:ci").display("CI");
    let events = [
        Event::Requested {
            request_id: request.clone(),
            action: "crm::export".into(),
            policy: "data-export".into(),
            policy_digest: ring_sha256(br#"{"name":"data-export"}"#),
            args: CanonicalJson::from_value(&args).unwrap(),
            skipped: vec!["progress".into()],
            binding: writer.binding("crm::export", &binding_args),
            actor: Actor::new("agent-7")
                .kind(ActorKind::Agent)
                .model("gpt-5")
                .on_behalf_of("zoë@example.com"),
            resource: Some("warehouse/kunden".into()),
            reason: Some("Quartalsbericht für Zoë".into()),
            deferred: false,
        },
        Event::Reviewed {
            request_id: request.clone(),
            reviewer: mock.clone(),
            vote: Vote::Approve,
            channel: "mock".into(),
            comment: Some("ok 👍".into()),
        },
        Event::Approved {
            request_id: request.clone(),
            policy: "data-export".into(),
            reviewers: vec![mock],
        },
        Event::Executed {
            request_id: request,
            outcome: Outcome::Ok,
            error: None,
        },
        Event::KeyRotated {
            next_key_id: KeyId::new("hand-2").unwrap(),
        },
        Event::Cancelled {
            request_id: "01JDQ7Z8K0000000000000000B".into(),
            why: "shutdown".into(),
        },
    ];
    let mut head = ChainHead::genesis();
    let mut log = Vec::new();
    for (seq, event) in (0u64..).zip(&events) {
        let at = Duration::from_millis(1_795_513_260_000 + seq * 1000 + seq * 7);
        clock.set(UNIX_EPOCH + at);
        writer
            .seal(&mut head, &[event.to_pending().unwrap()], &mut log)
            .unwrap();
    }
    let expected = fixture("handwritten.jsonl");
    for (ours, theirs) in log
        .split(|&b| b == b'\n')
        .zip(expected.split(|&b| b == b'\n'))
    {
        assert_eq!(
            String::from_utf8_lossy(ours),
            String::from_utf8_lossy(theirs)
        );
    }
    assert_eq!(log, expected);
    assert_eq!(writer.active_key_id().as_str(), "hand-2");
}

fn ring_sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

#[test]
fn optional_members_are_left_out_not_written_as_null() {
    let pending = Event::RejectedVote {
        request_id: "r".into(),
        reviewer: None,
        channel: "slack".into(),
        why: RejectReason::NotEligible,
    }
    .to_pending()
    .unwrap();
    let mut out = Vec::new();
    pending.write_with(&[], &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"channel":"slack","request_id":"r","why":"not_eligible"}"#
    );
}

#[test]
fn record_integers_beyond_2_pow_53_are_refused() {
    let event = Event::Expired {
        request_id: "r".into(),
        policy: "p".into(),
        timeout_ms: 1 << 53,
    };
    assert_eq!(
        event.to_pending().unwrap_err(),
        CanonicalError::IntegerOutOfRange
    );
}

#[test]
fn requested_args_must_be_an_object() {
    let event = Event::Requested {
        request_id: "r".into(),
        action: "a".into(),
        policy: "p".into(),
        policy_digest: [0; 32],
        args: CanonicalJson::from_value(&json!([1])).unwrap(),
        skipped: vec![],
        binding: [0; 32],
        actor: Actor::new("x"),
        resource: None,
        reason: None,
        deferred: false,
    };
    assert!(event.to_pending().is_err());
}
