//! What a verified interaction payload does (SLACK.md §3.2, §3.3), the
//! same whether it came over HTTP or Socket Mode: a click becomes a ballot
//! the gate checks and records before Slack hears back.

use approval_core::{ApprovalError, Ballot, BallotOutcome, Vote};
use serde_json::{Value, json};

use crate::SlackApprover;
use crate::message::{APPROVE, APPROVE_GRANT, DENY, REVOKE_GRANT, refusal_text};

/// The modal's `callback_id`, and its input's block and action ids.
const DENY_MODAL: &str = "deny_reason";
const REASON_BLOCK: &str = "reason_block";
const REASON_INPUT: &str = "reason_input";

/// What to answer Slack.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply {
    /// Acknowledge; with a body for a modal that should show an error.
    Ack(Option<Value>),
    /// Not a payload this approver understands (HTTP 400).
    Malformed,
    /// The vote could not be recorded: Slack's user sees an error.
    Unavailable,
}

/// Handles one payload whose origin was already checked (a signature, or
/// the Socket Mode connection).
pub(crate) async fn handle(approver: &SlackApprover, payload: &Value) -> Reply {
    match payload["type"].as_str() {
        Some("block_actions") => block_actions(approver, payload).await,
        Some("view_submission") => view_submission(approver, payload).await,
        Some(_) => Reply::Ack(None),
        None => Reply::Malformed,
    }
}

/// `request_id:binding hex` as a button or modal carries it.
fn parse_value(value: &str) -> Option<(String, [u8; 32])> {
    let (id, hex) = value.split_once(':')?;
    Some((id.to_owned(), approval_core::hex::decode32(hex)?))
}

/// What a click asks for besides its vote.
#[derive(Default)]
struct Extras {
    comment: Option<String>,
    /// An "Approve + N more" click: the most its request's policy allows.
    grant: bool,
}

/// Casts a vote; `Err` carries the answer when it was not counted.
async fn cast(
    approver: &SlackApprover,
    user: &str,
    value: &str,
    vote: Vote,
    extras: Extras,
) -> Result<BallotOutcome, Reply> {
    let (Some((request_id, binding)), Some(ballots)) = (parse_value(value), approver.ballots())
    else {
        return Err(Reply::Malformed);
    };
    let mut ballot =
        Ballot::from_parts(&request_id, binding, format!("slack:{user}"), "slack", vote);
    ballot.comment = extras.comment;
    if extras.grant {
        // The button offers the policy's caps; the gate reads them.
        ballot = ballot.granting_widest();
    }
    ballots.cast(ballot).await.map_err(|_| Reply::Unavailable)
}

async fn block_actions(approver: &SlackApprover, payload: &Value) -> Reply {
    let (Some(user), Some(action)) = (payload["user"]["id"].as_str(), payload["actions"].get(0))
    else {
        return Reply::Malformed;
    };
    let value = action["value"].as_str().unwrap_or_default();
    let channel = payload["container"]["channel_id"]
        .as_str()
        .or(payload["channel"]["id"].as_str());
    match action["action_id"].as_str() {
        Some(action @ (APPROVE | APPROVE_GRANT)) => {
            let extras = Extras {
                grant: action == APPROVE_GRANT,
                ..Extras::default()
            };
            match cast(approver, user, value, Vote::Approve, extras).await {
                Ok(BallotOutcome::Rejected(why)) => {
                    let request_id = value.split(':').next().unwrap_or_default();
                    refused(approver, request_id, channel, user, &refusal_text(why));
                    Reply::Ack(None)
                }
                Ok(_) => Reply::Ack(None),
                Err(reply) => reply,
            }
        }
        Some(REVOKE_GRANT) => {
            let Some(ballots) = approver.ballots() else {
                return Reply::Unavailable;
            };
            match ballots
                .revoke_grant(value, &format!("slack:{user}"), "slack")
                .await
            {
                // The message loses its button when the gate says so.
                Ok(_) => Reply::Ack(None),
                Err(ApprovalError::RevokeRefused { why, .. }) => {
                    let text = format!(
                        "The grant was not revoked: only a reviewer its policy names may revoke it, through its channels ({}).",
                        why.as_str()
                    );
                    refused(approver, value, channel, user, &text);
                    Reply::Ack(None)
                }
                Err(ApprovalError::UnknownGrant { .. }) => {
                    let text = "This grant has already ended: spent, expired or revoked.";
                    refused(approver, value, channel, user, text);
                    Reply::Ack(None)
                }
                Err(_) => Reply::Unavailable,
            }
        }
        Some(DENY) => {
            let Some(trigger) = payload["trigger_id"].as_str() else {
                return Reply::Malformed;
            };
            // The trigger lasts three seconds: opened before the ack.
            let opened = approver
                .channel()
                .api()
                .call(
                    "views.open",
                    &json!({"trigger_id": trigger, "view": deny_modal(value)}),
                )
                .await;
            match opened {
                Ok(_) => Reply::Ack(None),
                // No modal, no way to deny here: Slack's user sees an error
                // and can click again.
                Err(_) => Reply::Unavailable,
            }
        }
        _ => Reply::Ack(None),
    }
}

/// Tells `user`, privately, why what they clicked was refused: in the
/// request's channel, or `fallback` when this approver has no message for
/// it. Runs on its own task, after Slack's acknowledgement.
fn refused(
    approver: &SlackApprover,
    request_id: &str,
    fallback: Option<&str>,
    user: &str,
    text: &str,
) {
    let channel = approver
        .message_of(request_id)
        .map(|m| m.channel)
        .or_else(|| fallback.map(str::to_owned));
    let Some(channel) = channel else { return };
    let (api, user, text) = (
        approver.channel().api().clone(),
        user.to_owned(),
        text.to_owned(),
    );
    tokio::spawn(async move {
        // If it cannot be shown, the refusal is still in the audit log.
        if let Err(error) = api.post_ephemeral(&channel, &user, &text).await {
            tracing::warn!(%error, "telling a reviewer why their vote was refused failed");
        }
    });
}

/// The modal that asks a denier for an optional reason.
fn deny_modal(value: &str) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_MODAL,
        "private_metadata": value,
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": REASON_BLOCK, "optional": true,
            "label": {"type": "plain_text", "text": "Reason (the agent gets it back)"},
            "element": {"type": "plain_text_input", "action_id": REASON_INPUT, "multiline": true}
        }]
    })
}

async fn view_submission(approver: &SlackApprover, payload: &Value) -> Reply {
    let view = &payload["view"];
    if view["callback_id"].as_str() != Some(DENY_MODAL) {
        return Reply::Ack(None);
    }
    let (Some(user), Some(value)) = (
        payload["user"]["id"].as_str(),
        view["private_metadata"].as_str(),
    ) else {
        return Reply::Malformed;
    };
    let reason = view["state"]["values"][REASON_BLOCK][REASON_INPUT]["value"]
        .as_str()
        .filter(|r| !r.trim().is_empty())
        .map(str::to_owned);
    let extras = Extras {
        comment: reason,
        ..Extras::default()
    };
    match cast(approver, user, value, Vote::Deny, extras).await {
        // Refused: the modal stays open and says why (SLACK.md §3.4).
        Ok(BallotOutcome::Rejected(why)) => Reply::Ack(Some(json!({
            "response_action": "errors",
            "errors": {REASON_BLOCK: refusal_text(why)}
        }))),
        Ok(_) => Reply::Ack(None),
        Err(reply) => reply,
    }
}
