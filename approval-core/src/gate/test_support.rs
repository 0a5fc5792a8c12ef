//! What the gate's tests share: a memory sink and reading it back.

use std::sync::Arc;

use serde_json::Value;

use crate::{ChainWriter, KeyId, MemorySink, WriterSecret};

/// A memory sink under a test key (`byte` repeated).
pub(super) fn sink_keyed(byte: &str) -> Arc<MemorySink> {
    let secret = WriterSecret::from_hex(&byte.repeat(32)).unwrap();
    Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))))
}

/// Every record written, parsed.
pub(super) fn records(sink: &MemorySink) -> Vec<Value> {
    String::from_utf8(sink.bytes())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Each record's `event`.
pub(super) fn events(sink: &MemorySink) -> Vec<String> {
    records(sink)
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect()
}
