//! A request as JSON, for receivers and the decision API: the gate's facts
//! and the agent's own words in separate members, so a receiver can show
//! them apart. The types are the OpenAPI schema too.

use std::time::{SystemTime, UNIX_EPOCH};

use approval_core::hex::encode;
use approval_core::{ApprovalRequest, Decision};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub(crate) fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A request: what a vote must name (`request_id`, `binding`), what the
/// gate derived (`gate`), and what the agent wrote (`agent`, to be shown
/// as text).
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
/// # let waiting = tokio::spawn(async move { gate.approve(call).await });
/// # while mock.requests().is_empty() { tokio::task::yield_now().await; }
/// # let request = mock.requests()[0].clone();
/// # waiting.abort();
/// use approval_http::RequestDocument;
///
/// let document = serde_json::to_value(RequestDocument::of(&request)).unwrap();
/// assert_eq!(document["gate"]["action"], "crm::export");
/// assert_eq!(document["agent"]["args"]["table"], "users");
/// assert_eq!(document["binding"].as_str().unwrap().len(), 64);
/// # }
/// ```
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct RequestDocument {
    /// The request's id.
    pub request_id: String,
    /// The keyed binding digest a vote must name, 64 hex digits.
    pub binding: String,
    /// What the gate derived.
    pub gate: GateFacts,
    /// What the agent wrote: show it as text, apart from `gate`.
    pub agent: AgentText,
    /// Where votes go, when the webhook approver names a callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// What the gate derived about a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct GateFacts {
    /// The gated function's full path.
    pub action: String,
    /// The policy in force.
    pub policy: PolicyFacts,
    /// Who asks; `null` when no actor was in scope.
    pub actor: Option<ActorFacts>,
    /// When the request expires, in Unix seconds.
    pub expires_at: u64,
    /// Parameters left out of `args`.
    pub skipped: Vec<String>,
    /// How earlier requests for the same call ended, oldest first.
    pub earlier: Vec<EarlierDocument>,
}

/// A policy, as reviewers need it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct PolicyFacts {
    /// Its name.
    pub name: String,
    /// SHA-256 of its canonical JSON, hex.
    pub digest: String,
    /// How many approvals from different people it needs.
    pub required: u32,
    /// The people who may approve.
    pub approvers: Vec<String>,
    /// The groups whose members may approve.
    pub groups: Vec<String>,
}

/// Who asks.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct ActorFacts {
    /// The agent's or pipeline's id.
    pub id: String,
    /// `agent`, `pipeline`, `service` or `human`, where known.
    pub kind: Option<String>,
    /// The model driving an agent, where known.
    pub model: Option<String>,
    /// The person it acts for, where known.
    pub on_behalf_of: Option<String>,
}

/// What the agent wrote.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct AgentText {
    /// The system acted on.
    pub resource: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Each argument's value by name; a redacted one is
    /// `{"redacted": "<digest>"}`.
    #[schema(value_type = Object)]
    pub args: Value,
}

/// How a request ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct DecisionDocument {
    /// `approved`, `denied`, `expired` or `cancelled`.
    pub outcome: String,
    /// Who approved (`approved`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reviewers: Vec<String>,
    /// Who denied (`denied`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// The denier's comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// An earlier request for the same call, and how it ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct EarlierDocument {
    /// That request's id.
    pub request_id: String,
    /// How it ended.
    pub decision: DecisionDocument,
}

impl DecisionDocument {
    /// The document of `decision`.
    pub fn of(decision: &Decision) -> Self {
        let mut document = Self {
            outcome: "ended".into(),
            reviewers: Vec::new(),
            reviewer: None,
            comment: None,
            why: None,
        };
        match decision {
            Decision::Approved { reviewers } => {
                document.outcome = "approved".into();
                document.reviewers = reviewers.iter().map(|r| r.id.clone()).collect();
            }
            Decision::Denied { reviewer, comment } => {
                document.outcome = "denied".into();
                document.reviewer = Some(reviewer.id.clone());
                document.comment.clone_from(comment);
            }
            Decision::Expired => document.outcome = "expired".into(),
            Decision::Cancelled { why } => {
                document.outcome = "cancelled".into();
                document.why = Some(why.clone());
            }
            _ => {}
        }
        document
    }
}

impl RequestDocument {
    /// The document of `request`.
    pub fn of(request: &ApprovalRequest) -> Self {
        let policy = &request.policy;
        Self {
            request_id: request.id.clone(),
            binding: encode(&request.binding),
            gate: GateFacts {
                action: request.action.to_string(),
                policy: PolicyFacts {
                    name: policy.name.clone(),
                    digest: encode(&policy.digest()),
                    required: policy.required,
                    approvers: policy.approvers.clone(),
                    groups: policy.groups.clone(),
                },
                actor: request.actor.as_ref().map(|actor| ActorFacts {
                    id: actor.id.clone(),
                    kind: actor.kind.map(|k| k.as_str().to_owned()),
                    model: actor.model.clone(),
                    on_behalf_of: actor.on_behalf_of.clone(),
                }),
                expires_at: unix(request.expires_at),
                skipped: request.skipped.clone(),
                earlier: request
                    .earlier
                    .iter()
                    .map(|e| EarlierDocument {
                        request_id: e.request_id.clone(),
                        decision: DecisionDocument::of(&e.decision),
                    })
                    .collect(),
            },
            agent: AgentText {
                resource: request.resource.clone(),
                reason: request.reason.clone(),
                args: serde_json::from_str(request.args.as_str()).unwrap_or(Value::Null),
            },
            callback: None,
        }
    }
}
