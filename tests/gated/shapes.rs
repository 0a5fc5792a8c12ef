use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use approval_core::{
    ApprovalError, ChainWriter, Gate, KeyId, MemorySink, MockApprover, Policy, WriterSecret,
    requires_approval,
};
use serde::Serialize;

thread_local! {
    /// Bodies run on the test's own thread (a current-thread runtime), so
    /// a thread-local counts one test's bodies only.
    static RAN: Cell<usize> = const { Cell::new(0) };
}

fn ran() -> usize {
    RAN.with(Cell::get)
}

fn note_run() {
    RAN.with(|r| r.set(r.get() + 1));
}

pub(crate) fn gate(approve: bool) -> (Gate, Arc<MemorySink>) {
    let secret = WriterSecret::from_hex(&"21".repeat(32)).unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("m").unwrap(),
        &secret,
    ))));
    let mock = if approve {
        MockApprover::approve_all("ci")
    } else {
        MockApprover::deny_all("ci", "no")
    };
    let gate = Gate::builder(sink.clone())
        .approver("mock", Arc::new(mock))
        .policy(Policy::new("p", ["mock"], Duration::from_secs(30)).approvers(["mock:ci"]))
        .build()
        .unwrap();
    (gate, sink)
}

pub(crate) fn events(sink: &MemorySink) -> Vec<serde_json::Value> {
    String::from_utf8(sink.bytes())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[requires_approval(policy = "p", resource = format!("t/{table}"), reason = "nightly", skip(progress), redact(token))]
async fn free_async(
    table: &str,
    rows: u64,
    ratio: f64,
    token: &str,
    progress: Arc<AtomicUsize>,
) -> Result<u64, ApprovalError> {
    let _ = progress;
    note_run();
    Ok(rows)
}

struct Service {
    calls: usize,
}

#[derive(Serialize)]
struct Target {
    id: u32,
}

impl Service {
    #[requires_approval(policy = "p")]
    async fn by_ref(&self, target: Target) -> Result<u32, ApprovalError> {
        note_run();
        Ok(target.id + u32::try_from(self.calls).unwrap())
    }

    #[requires_approval(policy = "p")]
    async fn by_mut(&mut self, n: usize) -> Result<usize, ApprovalError> {
        note_run();
        self.calls += n;
        Ok(self.calls)
    }

    #[requires_approval(policy = "p")]
    async fn by_value(self) -> Result<usize, ApprovalError> {
        note_run();
        Ok(self.calls)
    }
}

trait Rotate {
    fn rotate(
        &self,
        key: String,
    ) -> impl std::future::Future<Output = Result<String, ApprovalError>> + Send;
}

impl Rotate for Service {
    #[requires_approval(policy = "p")]
    async fn rotate(&self, key: String) -> Result<String, ApprovalError> {
        note_run();
        Ok(key)
    }
}

#[async_trait::async_trait]
trait Grant {
    async fn grant(&self, user: String, role: &str) -> Result<String, ApprovalError>;
}

#[async_trait::async_trait]
impl Grant for Service {
    /// Arrives rewritten by `#[async_trait]`: gated inside its future.
    #[requires_approval(policy = "p", resource = format!("iam/{user}"))]
    async fn grant(&self, user: String, role: &str) -> Result<String, ApprovalError> {
        note_run();
        Ok(format!("{user} is {role} ({})", self.calls))
    }
}

/// Generic, with `impl Trait`, lifetimes and a `where` clause.
#[requires_approval(policy = "p")]
async fn generic<'a, T>(
    label: &'a str,
    items: Vec<T>,
    extra: impl Serialize + Send,
) -> Result<&'a str, ApprovalError>
where
    T: Serialize + Send,
{
    let _ = (items, extra);
    note_run();
    Ok(label)
}

#[derive(Debug, thiserror::Error)]
enum MyError {
    #[error("approval: {0}")]
    Approval(#[from] ApprovalError),
}

#[requires_approval(policy = "p")]
async fn own_error(n: i32) -> Result<i32, MyError> {
    note_run();
    Ok(n)
}

/// Runs `f` under an approving and under a denying gate; checks the body ran
/// exactly once, and not at all when denied.
async fn check<F, Fut, T>(f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let before = ran();
    let (yes, _) = gate(true);
    yes.scope(f()).await.expect("approved");
    assert_eq!(ran(), before + 1);
    let (no, sink) = gate(false);
    let err = no.scope(f()).await.err().expect("denied");
    assert!(err.contains("denied by mock:ci: no"), "{err}");
    assert_eq!(ran(), before + 1, "a denied body ran");
    let names: Vec<_> = events(&sink)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["requested", "reviewed", "denied"]);
}

// The tests share RAN, so they run in one test, one shape after another.
#[tokio::test]
async fn every_shape_runs_when_approved_and_never_when_denied() {
    check(|| async {
        free_async("users", 5, 0.5, "s3cr3t", Arc::new(AtomicUsize::new(0)))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    check(|| async {
        Service { calls: 1 }
            .by_ref(Target { id: 4 })
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    check(|| async {
        Service { calls: 1 }
            .by_mut(2)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    check(|| async {
        Service { calls: 3 }
            .by_value()
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    check(|| async {
        Service { calls: 0 }
            .rotate("k".into())
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    check(|| async {
        generic("l", vec![1u8], ("x", 2))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    check(|| async { own_error(3).await.map_err(|e| e.to_string()) }).await;
    check(|| async {
        Service { calls: 2 }
            .grant("erin".into(), "admin")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
}

#[tokio::test]
async fn the_request_carries_action_args_redaction_skips_resource_and_reason() {
    let (gate, sink) = gate(true);
    let rows = gate
        .scope(free_async(
            "users",
            5,
            0.25,
            "s3cr3t",
            Arc::new(AtomicUsize::new(0)),
        ))
        .await
        .unwrap();
    assert_eq!(rows, 5);
    let requested = &events(&sink)[0];
    assert_eq!(requested["action"], "gated::shapes::free_async");
    assert_eq!(requested["resource"], "t/users");
    assert_eq!(requested["reason"], "nightly");
    assert_eq!(requested["skipped"], serde_json::json!(["progress"]));
    let args = &requested["args"];
    assert_eq!(args["table"], "users");
    assert_eq!(args["rows"], 5);
    assert_eq!(args["ratio"], 0.25);
    let digest = args["token"]["redacted"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(
        !sink.bytes().windows(6).any(|w| w == b"s3cr3t"),
        "a redacted value reached the log"
    );
}

#[tokio::test]
async fn without_a_gate_the_call_fails_closed() {
    let err = own_error(1).await.unwrap_err();
    assert!(
        matches!(err, MyError::Approval(ApprovalError::NoGate)),
        "{err}"
    );
}

#[tokio::test]
async fn a_named_gate_is_used() {
    let (gate, sink) = gate(true);
    // `gate` is a parameter here; it cannot be recorded, so it is skipped.
    #[requires_approval(policy = "p", gate = gate, skip(gate))]
    async fn named_skipped(gate: &Gate, n: u8) -> Result<u8, ApprovalError> {
        let _ = gate;
        Ok(n)
    }
    assert_eq!(named_skipped(&gate, 9).await.unwrap(), 9);
    assert_eq!(events(&sink).len(), 4);
}

#[derive(Serialize)]
struct Window {
    from: u32,
    to: u32,
}

/// Pattern parameters stay in the signature; their bindings are recorded.
#[requires_approval(policy = "p", skip(scratch))]
async fn patterns(
    (table, rows): (String, u64),
    Window { from, to }: Window,
    _: u8,
    [scratch, ..]: [u8; 2],
) -> Result<u64, ApprovalError> {
    note_run();
    let _ = scratch;
    Ok(rows + u64::from(to - from) + table.len() as u64)
}

#[tokio::test]
async fn pattern_parameters_are_gated_and_recorded_by_their_bindings() {
    let (yes, sink) = gate(true);
    let value = yes
        .scope(patterns(
            ("users".into(), 5),
            Window { from: 1, to: 4 },
            0,
            [7, 8],
        ))
        .await
        .unwrap();
    assert_eq!(value, 5 + 3 + 5);
    let args = &events(&sink)[0]["args"];
    assert_eq!(
        args,
        &serde_json::json!({
            "(table, rows)": {"table": "users", "rows": 5},
            "Window { from, to }": {"from": 1, "to": 4},
        })
    );
    assert_eq!(events(&sink)[0]["skipped"], serde_json::json!(["scratch"]));
    let (no, _) = gate(false);
    let before = ran();
    assert!(
        no.scope(patterns(
            ("t".into(), 1),
            Window { from: 0, to: 0 },
            0,
            [0, 0]
        ))
        .await
        .is_err()
    );
    assert_eq!(ran(), before);
}
