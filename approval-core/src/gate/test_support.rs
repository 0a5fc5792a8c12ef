//! What the gate's tests share: a memory sink and reading it back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// The log at `path`, once the previous run's tasks let go of it (they
/// hold it a moment after its last record).
pub(super) async fn reopened(
    path: &std::path::Path,
    writer: Arc<ChainWriter>,
) -> Arc<crate::JsonlFileSink> {
    for _ in 0..200 {
        match crate::JsonlFileSink::open(path, writer.clone()) {
            Ok(sink) => return Arc::new(sink),
            Err(crate::AuditError::Locked { .. }) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
    panic!("the previous run never let go of {}", path.display());
}

/// Collects what `tracing` writes while it is in scope.
#[derive(Clone, Default)]
pub(super) struct Traces(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Traces {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Traces {
    pub(super) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    pub(super) fn install(&self) -> tracing::subscriber::DefaultGuard {
        let traces = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || traces.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}
