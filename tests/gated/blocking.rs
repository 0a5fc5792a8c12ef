//! A plain `fn` blocks until the decision: outside any runtime, in a
//! multi-thread runtime, and (refused, never deadlocked) in a
//! current-thread runtime.

use std::cell::Cell;

use approval_core::{ApprovalError, requires_approval};

use crate::shapes::{events, gate};

thread_local! {
    /// A blocking body runs on its caller's thread: count per thread, so
    /// tests running side by side do not see each other's bodies.
    static SYNC_RAN: Cell<usize> = const { Cell::new(0) };
}

fn ran() -> usize {
    SYNC_RAN.with(Cell::get)
}

#[requires_approval(policy = "p")]
fn rotate_key(name: &str) -> Result<String, ApprovalError> {
    SYNC_RAN.with(|r| r.set(r.get() + 1));
    if name.is_empty() {
        return Ok("default".into());
    }
    Ok(format!("rotated {name}"))
}

#[test]
fn outside_any_runtime_it_waits_on_its_own() {
    let (yes, sink) = gate(true);
    assert_eq!(yes.sync_scope(|| rotate_key("k1")).unwrap(), "rotated k1");
    let names: Vec<_> = events(&sink)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["requested", "reviewed", "approved", "executed"]);

    let before = ran();
    let (no, _) = gate(false);
    let err = no.sync_scope(|| rotate_key("k2")).unwrap_err();
    assert!(matches!(err, ApprovalError::Denied { .. }), "{err}");
    assert_eq!(ran(), before, "a denied body ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_multi_thread_runtime_it_waits_in_place() {
    let (yes, _) = gate(true);
    assert_eq!(yes.sync_scope(|| rotate_key("")).unwrap(), "default");
}

#[tokio::test]
async fn in_a_current_thread_runtime_it_refuses_instead_of_deadlocking() {
    let before = ran();
    let (yes, sink) = gate(true);
    let err = yes.sync_scope(|| rotate_key("k3")).unwrap_err();
    assert!(matches!(err, ApprovalError::WouldBlockRuntime), "{err}");
    assert_eq!(ran(), before);
    assert!(sink.is_empty(), "nothing was requested");
}

/// Approves through the mock and keeps each `Settled` notice.
#[derive(Debug)]
struct Listening {
    mock: approval_core::MockApprover,
    heard: std::sync::Mutex<Vec<approval_core::Decision>>,
}

#[async_trait::async_trait]
impl approval_core::Approver for Listening {
    async fn deliver(
        &self,
        request: std::sync::Arc<approval_core::ApprovalRequest>,
        ballots: approval_core::Ballots,
    ) -> Result<(), approval_core::ApproverError> {
        self.mock.deliver(request, ballots).await
    }

    async fn notify(
        &self,
        notice: &approval_core::Notice,
    ) -> Result<(), approval_core::ApproverError> {
        if let approval_core::Notice::Settled { decision, .. } = notice {
            self.heard
                .lock()
                .unwrap()
                .push(approval_core::Decision::clone(decision));
        }
        Ok(())
    }
}

#[test]
fn outside_any_runtime_approvers_still_hear_the_outcome() {
    // The call runs on a runtime of its own that ends when it returns: the
    // notice must not depend on a task spawned there (the gate, built
    // outside any runtime, runs its outboxes on a thread of its own).
    use std::sync::Arc;
    use std::time::Duration;
    let (_, sink) = gate(true);
    let listening = Arc::new(Listening {
        mock: approval_core::MockApprover::approve_all("ci"),
        heard: std::sync::Mutex::default(),
    });
    let gate = approval_core::Gate::builder(sink)
        .approver("mock", listening.clone())
        .policy(
            approval_core::Policy::new("p", ["mock"], Duration::from_secs(30))
                .approvers(["mock:ci"]),
        )
        .build()
        .unwrap();
    gate.sync_scope(|| rotate_key("k4")).unwrap();
    // The notice runs on the gate's own thread; shutdown waits for it.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(gate.shutdown())
        .unwrap();
    let heard = listening.heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(
        matches!(heard[0], approval_core::Decision::Approved { .. }),
        "{heard:?}"
    );
}
