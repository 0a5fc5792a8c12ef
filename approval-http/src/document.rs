//! A request as JSON, for receivers and the decision API: the gate's facts
//! and the agent's own words in separate members, so a receiver can show
//! them apart.

use std::time::{SystemTime, UNIX_EPOCH};

use approval_core::{ApprovalRequest, Decision};
use serde_json::{Value, json};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Who decided, or why it ended, as JSON.
pub(crate) fn decision_document(decision: &Decision) -> Value {
    match decision {
        Decision::Approved { reviewers } => json!({
            "outcome": "approved",
            "reviewers": reviewers.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        }),
        Decision::Denied { reviewer, comment } => json!({
            "outcome": "denied", "reviewer": reviewer.id, "comment": comment,
        }),
        Decision::Expired => json!({"outcome": "expired"}),
        Decision::Cancelled { why } => json!({"outcome": "cancelled", "why": why}),
        _ => json!({"outcome": "ended"}),
    }
}

/// The JSON document of `request`:
///
/// - `request_id`, and `binding` (64 hex digits): what a vote must name;
/// - `gate`: what the gate derived — `action`, `policy` (`name`,
///   `required` approvals, `approvers`, `groups`), `actor` (`id`, `kind`,
///   `model`, `on_behalf_of`; `null` if none was in scope), `expires_at`
///   (Unix seconds), `skipped` parameters, and `earlier` decisions on the
///   same call;
/// - `agent`: what the agent wrote, to be shown as text — `resource`,
///   `reason`, and `args` (each argument's value; a redacted one is
///   `{"redacted": "<digest>"}`).
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use approval_core::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let writer = Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &WriterSecret::generate().unwrap()));
/// # let mock = Arc::new(MockApprover::silent("ci"));
/// # let gate = Gate::builder(Arc::new(MemorySink::new(writer))).approver("http", mock.clone())
/// #     .policy(Policy::new("data-export", ["http"], Duration::from_secs(60))).build().unwrap();
/// # let call = Call::new("crm::export", "data-export", CanonicalJson::from_serialize(&serde_json::json!({"table": "users"})).unwrap());
/// # let waiting = tokio::spawn(async move { let _ = gate.approve(call).await; });
/// # while mock.requests().is_empty() { tokio::task::yield_now().await; }
/// # let request = mock.requests()[0].clone();
/// # waiting.abort();
/// let document = approval_http::request_document(&request);
/// assert_eq!(document["gate"]["action"], "crm::export");
/// assert_eq!(document["agent"]["args"]["table"], "users");
/// assert_eq!(document["binding"].as_str().unwrap().len(), 64);
/// # }
/// ```
pub fn request_document(request: &ApprovalRequest) -> Value {
    let policy = &request.policy;
    let actor = request.actor.as_ref().map(|actor| {
        json!({
            "id": actor.id,
            "kind": actor.kind.map(|k| k.as_str()),
            "model": actor.model,
            "on_behalf_of": actor.on_behalf_of,
        })
    });
    let args: Value = serde_json::from_str(request.args.as_str()).unwrap_or(Value::Null);
    let earlier: Vec<Value> = request
        .earlier
        .iter()
        .map(|e| json!({"request_id": e.request_id, "decision": decision_document(&e.decision)}))
        .collect();
    json!({
        "request_id": request.id,
        "binding": hex(&request.binding),
        "gate": {
            "action": request.action,
            "policy": {
                "name": policy.name,
                "digest": hex(&request.policy_digest),
                "required": policy.required,
                "approvers": policy.approvers,
                "groups": policy.groups,
            },
            "actor": actor,
            "expires_at": unix(request.expires_at),
            "skipped": request.skipped,
            "earlier": earlier,
        },
        "agent": {
            "resource": request.resource,
            "reason": request.reason,
            "args": args,
        },
    })
}
