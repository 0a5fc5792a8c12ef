//! A writer process killed (SIGKILL) at arbitrary points, many times over
//! one log: every record whose append returned is there, and the chain
//! verifies after each reopen.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use approval_core::{ChainWriter, JsonlFileSink, KeyId, Keyring, WriterSecret, verify};

const KEY_HEX: &str = "7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c";

/// Seq to MAC of every line of the log.
fn lines_by_seq(log: &[u8]) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for line in log.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let text = std::str::from_utf8(line).unwrap();
        let seq = text.split("\"seq\":").nth(1).unwrap();
        let seq: u64 = seq[..seq.find(|c: char| !c.is_ascii_digit()).unwrap()]
            .parse()
            .unwrap();
        let mac = text.split("\"mac\":\"").nth(1).unwrap()[..64].to_owned();
        out.insert(seq, mac);
    }
    out
}

#[test]
fn killed_writers_lose_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let secret = WriterSecret::from_hex(KEY_HEX).unwrap();
    let keyring = Keyring::new().with(KeyId::new("crash").unwrap(), secret.record_key());
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    let mut torn_recoveries = 0;

    for round in 0u64..30 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_approval-test-writer"))
            .arg(&log)
            .arg(KEY_HEX)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert_eq!(first, "open\n", "round {round}");
        // Kill at a different point each round: 1 to 40 ms into the run.
        std::thread::sleep(Duration::from_micros(1000 + (round * 7919) % 39_000));
        child.kill().unwrap();
        child.wait().unwrap();
        for line in stdout.lines() {
            let line = line.unwrap();
            let mut words = line.split(' ');
            assert_eq!(words.next(), Some("ack"), "{line}");
            let seq = words.next().unwrap().parse().unwrap();
            acknowledged.insert(seq, words.next().unwrap().to_owned());
        }

        // Reopening recovers a torn tail, then the whole chain verifies.
        let before = std::fs::read(&log).unwrap();
        torn_recoveries += usize::from(!before.ends_with(b"\n") && !before.is_empty());
        let writer = Arc::new(ChainWriter::new(KeyId::new("crash").unwrap(), &secret));
        drop(JsonlFileSink::open(&log, writer).unwrap());
        let after = std::fs::read(&log).unwrap();
        let report = verify(&after[..], &keyring).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let stored = lines_by_seq(&after);
        for (seq, mac) in &acknowledged {
            assert_eq!(
                stored.get(seq),
                Some(mac),
                "round {round}: acknowledged record {seq} lost"
            );
        }
        assert!(report.records >= acknowledged.len() as u64);
    }
    assert!(
        acknowledged.len() > 100,
        "the writer acknowledged only {} records",
        acknowledged.len()
    );
    // Not asserted (it depends on timing), but shown: how often a kill tore
    // a line.
    eprintln!(
        "{} acknowledged records, {torn_recoveries} torn tails recovered",
        acknowledged.len()
    );
}
