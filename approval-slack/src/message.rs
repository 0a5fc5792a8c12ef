//! The approval message: Block Kit blocks that show a request at a glance,
//! the facts the gate derived apart from the text the agent wrote, within
//! Slack's limits (SLACK.md §2).

use std::time::{SystemTime, UNIX_EPOCH};

use approval_core::hex::encode;
use approval_core::{ApprovalRequest, Decision, GrantView, RejectReason, Vote, one_line};
use serde_json::{Value, json};

use crate::mrkdwn::{escape, literal};

/// Slack's limits this message keeps to (SLACK.md §2.1).
const HEADER_MAX: usize = 150;
const TEXT_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const FIELDS_MAX: usize = 10;

/// The `action_id`s of the vote buttons.
pub const APPROVE: &str = "approve";
/// See [`APPROVE`].
pub const DENY: &str = "deny";
/// See [`APPROVE`]: approve, granting as much as the policy allows (shown
/// only when its policy allows grants).
pub const APPROVE_GRANT: &str = "approve_grant";
/// The `action_id` of an approved request's "Revoke grant" button; its
/// value is the request id.
pub const REVOKE_GRANT: &str = "revoke_grant";

/// The value both buttons carry: the request id and the binding (hex) the
/// reviewer was shown, so a click is bound to exactly this call.
pub fn button_value(request: &ApprovalRequest) -> String {
    format!("{}:{}", request.id, encode(&request.binding))
}

/// Cuts plain text to `max` characters, an ellipsis marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The blocks of the message for `request` (for `chat.postMessage`'s
/// `blocks`): a header; the gate's facts
/// (action, policy and who may approve, agent, model, on whose behalf,
/// expiry, request id); then, marked as the agent's words and shown as
/// escaped literals, the resource, the reason and the arguments (redacted
/// ones as redacted); then Approve (with a confirm dialog), "Approve + N
/// more" where the policy allows grants, and Deny.
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use approval_core::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let writer = Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &WriterSecret::generate().unwrap()));
/// # let mock = Arc::new(MockApprover::silent("ci"));
/// # let gate = Gate::builder(Arc::new(MemorySink::new(writer))).approver("slack", mock.clone())
/// #     .policy(Policy::new("data-export", ["slack"], Duration::from_secs(60))).build().unwrap();
/// # let call = Call::new("crm::export", "data-export", CanonicalJson::from_serialize(&serde_json::json!({})).unwrap());
/// # let waiting = tokio::spawn(async move { gate.approve(call).await });
/// # while mock.requests().is_empty() { tokio::task::yield_now().await; }
/// # let request = mock.requests()[0].clone();
/// # waiting.abort();
/// // `request` is what the gate hands an approver's `deliver`.
/// let blocks = approval_slack::message::approval_blocks(&request);
/// assert_eq!(blocks[0]["text"]["text"], "Approval requested: data-export");
/// # }
/// ```
pub fn approval_blocks(request: &ApprovalRequest) -> Value {
    let policy = &request.policy;
    let mut who = policy
        .approvers
        .iter()
        .chain(&policy.groups)
        .map(|a| escape(a))
        .collect::<Vec<_>>()
        .join(", ");
    if who.is_empty() {
        who = "nobody named".into();
    }
    let actor = match &request.actor {
        Some(actor) => {
            let mut line = literal(&actor.id, 200);
            if let Some(kind) = actor.kind {
                line.push_str(&format!(" ({})", kind.as_str()));
            }
            if let Some(model) = &actor.model {
                line.push_str(&format!(", model {}", literal(model, 200)));
            }
            if let Some(person) = &actor.on_behalf_of {
                line.push_str(&format!(", for {}", literal(person, 200)));
            }
            line
        }
        None => "_no actor in scope_".to_owned(),
    };
    let expires = request
        .expires_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let facts = format!(
        "*Action:* {}\n*Policy:* {} · needs {} approval{} from: {who}\n*Agent:* {actor}\n*Expires:* <!date^{expires}^{{date_short_pretty}} {{time}}|{}>\n*Request:* `{}`",
        literal(&request.action, 400),
        escape(&policy.name),
        policy.required,
        if policy.required == 1 { "" } else { "s" },
        rfc3339(request.expires_at),
        escape(&request.id),
    );
    let mut facts = facts;
    for earlier in &request.earlier {
        let outcome = approval_channel::earlier_outcome(
            &earlier.decision,
            |r| reviewer(&r.id),
            |t| literal(t, 300),
        );
        facts.push_str(&format!(
            "\n*Earlier:* the same call was {outcome} (request `{}`)",
            escape(&earlier.request_id)
        ));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&format!("Approval requested: {}", policy.name), HEADER_MAX)}}),
        json!({"type": "section", "block_id": format!("{}:facts", request.id),
               "text": {"type": "mrkdwn", "text": cut(&facts, TEXT_MAX)}}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": "Below: the agent's own words and arguments, shown as written."}]}),
    ];
    let mut agent_text = Vec::new();
    if let Some(resource) = &request.resource {
        agent_text.push(format!("*Resource:* {}", literal(resource, 1000)));
    }
    if let Some(reason) = &request.reason {
        agent_text.push(format!("*Reason:* {}", literal(reason, 1500)));
    }
    if !agent_text.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&agent_text.join("\n"), TEXT_MAX)}}));
    }
    let fields = argument_fields(request);
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "block_id": format!("{}:args", request.id), "fields": fields}));
    }
    let value = button_value(request);
    let mut buttons = vec![
        json!({"type": "button", "action_id": APPROVE, "style": "primary", "value": value,
         "text": {"type": "plain_text", "text": "Approve"},
         "confirm": {
             "title": {"type": "plain_text", "text": "Approve this request?"},
             "text": {"type": "plain_text", "text": cut(&format!("This lets {} run once, with exactly these arguments.", request.action), 300)},
             "confirm": {"type": "plain_text", "text": "Approve"},
             "deny": {"type": "plain_text", "text": "Cancel"}}}),
    ];
    if let Some(grant) = &request.policy.grant {
        let pinned = if grant.pinned.is_empty() {
            String::new()
        } else {
            format!(" with the same {}", grant.pinned.join(", "))
        };
        buttons.push(json!({"type": "button", "action_id": APPROVE_GRANT, "value": value,
         "text": {"type": "plain_text", "text": cut(&format!("Approve + {} more", grant.max_uses), 75)},
         "confirm": {
             "title": {"type": "plain_text", "text": "Approve and grant more?"},
             "text": {"type": "plain_text", "text": cut(&format!(
                 "This lets {} run now, and up to {} more times within {}{pinned} for the same agent, without asking again. You can revoke the grant.",
                 request.action, grant.max_uses, humantime::format_duration(grant.max_within())), 300)},
             "confirm": {"type": "plain_text", "text": "Approve and grant"},
             "deny": {"type": "plain_text", "text": "Cancel"}}}));
    }
    buttons.push(
        json!({"type": "button", "action_id": DENY, "style": "danger", "value": value,
         "text": {"type": "plain_text", "text": "Deny"}}),
    );
    blocks.push(json!({
        "type": "actions",
        "block_id": format!("{}:vote", request.id),
        "elements": buttons,
    }));
    Value::Array(blocks)
}

/// The blocks that show a live grant under its approval's outcome: its
/// uses left and its end, and a button to revoke it.
fn grant_blocks(grant: &GrantView) -> [Value; 2] {
    let text = format!(
        ":ticket: *Grant:* {}, until <!date^{}^{{date_short_pretty}} {{time}}|{}>",
        approval_channel::grant_left(grant, |name| literal(name, 100)),
        grant
            .expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        rfc3339(grant.expires_at),
    );
    [
        json!({"type": "section", "block_id": format!("{}:grant", grant.id),
               "text": {"type": "mrkdwn", "text": cut(&text, TEXT_MAX)}}),
        json!({"type": "actions", "block_id": format!("{}:revoke", grant.id),
               "elements": [{"type": "button", "action_id": REVOKE_GRANT, "style": "danger", "value": grant.id,
                 "text": {"type": "plain_text", "text": "Revoke grant"},
                 "confirm": {
                     "title": {"type": "plain_text", "text": "Revoke this grant?"},
                     "text": {"type": "plain_text", "text": "Later calls will be asked for again."},
                     "confirm": {"type": "plain_text", "text": "Revoke"},
                     "deny": {"type": "plain_text", "text": "Cancel"}}}]}),
    ]
}

/// A reviewer as Slack shows them: a mention for a Slack identity
/// (`slack:U123` → `<@U123>`, only for a well-formed user id), else the
/// identity as a literal.
fn reviewer(id: &str) -> String {
    mention(id).unwrap_or_else(|| literal(id, 200))
}

/// A mention of a Slack identity (`slack:U123` → `<@U123>`), only for a
/// well-formed user id.
fn mention(id: &str) -> Option<String> {
    let user = id.strip_prefix("slack:")?;
    (!user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
    .then(|| format!("<@{user}>"))
}

/// The blocks that replace the message once the request has ended: the
/// header and the gate's facts as before, the agent's words gone, and in
/// place of the buttons who decided and why; with the approval's `grant`
/// while it is live, its uses left and a button to revoke it.
pub fn outcome_blocks(
    request: &ApprovalRequest,
    decision: &Decision,
    grant: Option<&GrantView>,
) -> Value {
    let outcome = match decision {
        Decision::Approved { reviewers } => format!(
            ":white_check_mark: *Approved* by {}",
            reviewers
                .iter()
                .map(|r| reviewer(&r.id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Decision::Denied {
            reviewer: who,
            comment,
        } => format!(
            ":no_entry: *Denied* by {}{}",
            reviewer(&who.id),
            comment
                .as_ref()
                .map(|c| format!(": {}", literal(c, 1000)))
                .unwrap_or_default()
        ),
        Decision::Expired => ":hourglass: *Expired*: nobody decided in time.".to_owned(),
        Decision::Cancelled { why } => {
            format!(":heavy_minus_sign: *Cancelled*: {}", escape(&one_line(why)))
        }
        _ => "*Ended*".to_owned(),
    };
    let mut blocks: Vec<Value> = approval_blocks(request)
        .as_array()
        .map(|b| b.iter().take(2).cloned().collect())
        .unwrap_or_default();
    blocks.push(
        json!({"type": "section", "block_id": format!("{}:outcome", request.id),
                       "text": {"type": "mrkdwn", "text": cut(&outcome, TEXT_MAX)}}),
    );
    blocks.extend(grant.map(grant_blocks).into_iter().flatten());
    Value::Array(blocks)
}

/// The message while votes come in (a policy needing more than one
/// approval): the request as posted, the buttons still live, and one line
/// per vote counted so far above them.
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use approval_core::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let writer = Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &WriterSecret::generate().unwrap()));
/// # let mock = Arc::new(MockApprover::silent("ci"));
/// # let gate = Gate::builder(Arc::new(MemorySink::new(writer))).approver("slack", mock.clone())
/// #     .policy(Policy::new("data-export", ["slack"], Duration::from_secs(60)).required(2)).build().unwrap();
/// # let call = Call::new("crm::export", "data-export", CanonicalJson::from_serialize(&serde_json::json!({})).unwrap());
/// # let waiting = tokio::spawn(async move { gate.approve(call).await });
/// # while mock.requests().is_empty() { tokio::task::yield_now().await; }
/// # let request = mock.requests()[0].clone();
/// # waiting.abort();
/// use approval_core::Vote;
/// use approval_slack::message::progress_blocks;
///
/// let votes = [("slack:U0ALICE".into(), Vote::Approve)];
/// let blocks = progress_blocks(&request, &votes, &["bob".into()]);
/// assert!(blocks.to_string().contains("<@U0ALICE> approved (1 of 2)"));
/// assert!(blocks.to_string().contains("Still to vote: bob"));
/// # }
/// ```
pub fn progress_blocks(
    request: &ApprovalRequest,
    votes: &[(String, Vote)],
    may_vote: &[String],
) -> Value {
    let mut blocks = match approval_blocks(request) {
        Value::Array(blocks) => blocks,
        _ => Vec::new(),
    };
    let mut approvals = 0;
    let mut lines: Vec<String> = votes
        .iter()
        .map(|(who, vote)| match vote {
            Vote::Approve => {
                approvals += 1;
                format!(
                    ":white_check_mark: {} approved ({approvals} of {})",
                    reviewer(who),
                    request.policy.required
                )
            }
            Vote::Deny => format!(":no_entry: {} denied", reviewer(who)),
            other => format!("{} voted {}", reviewer(who), other.as_str()),
        })
        .collect();
    if !may_vote.is_empty() {
        let who: Vec<String> = may_vote.iter().map(|w| escape(w)).collect();
        lines.push(format!(
            ":hourglass_flowing_sand: Still to vote: {}",
            who.join(", ")
        ));
    }
    if !lines.is_empty() {
        // Just above the buttons, which stay last.
        let at = blocks.len().saturating_sub(1);
        blocks.insert(
            at,
            json!({"type": "context", "block_id": format!("{}:votes", request.id),
                   "elements": [{"type": "mrkdwn", "text": cut(&lines.join("\n"), TEXT_MAX)}]}),
        );
    }
    Value::Array(blocks)
}

/// What a reviewer whose vote was refused is told, privately
/// (`chat.postEphemeral`), in words.
///
/// ```
/// use approval_core::RejectReason;
/// use approval_slack::message::refusal_text;
///
/// assert!(refusal_text(RejectReason::SelfApproval).contains("on your behalf"));
/// ```
pub fn refusal_text(reason: RejectReason) -> String {
    let why = match reason {
        RejectReason::NotEligible => "you are not among the reviewers this request's policy names",
        RejectReason::SelfApproval => "you cannot decide a request made by you or on your behalf",
        RejectReason::Settled => "this request is already settled",
        RejectReason::AlreadyVoted => "you already voted on this request; your first vote stands",
        RejectReason::GrantRefused => "this request's policy does not allow that grant",
        RejectReason::UnknownRequest | RejectReason::WrongBinding => {
            "this request is not one this approver is waiting on (its buttons are stale)"
        }
        other => other.as_str(),
    };
    format!("Your vote was not counted: {why}. The refusal is in the audit log.")
}

/// The blocks that replace the message of a request a restart ended: the
/// process that waited for it is gone, so its buttons go too.
pub fn restart_blocks(request_id: &str, cancelled: bool) -> Value {
    let what = if cancelled {
        "*Cancelled*: the process waiting for this request restarted before anyone decided; it will not run."
    } else {
        "*Ended* before the process restarted; the audit log holds its outcome."
    };
    json!([{"type": "section", "block_id": format!("{request_id}:outcome"),
            "text": {"type": "mrkdwn", "text": format!(":heavy_minus_sign: {what}\n*Request:* `{}`", escape(request_id))}}])
}

/// The notification text of the outcome (chat.update's `text`).
pub fn outcome_text(request: &ApprovalRequest, decision: &Decision) -> String {
    let word = match decision {
        Decision::Approved { .. } => "approved",
        Decision::Denied { .. } => "denied",
        Decision::Expired => "expired",
        _ => "cancelled",
    };
    cut(&format!("Request {} {word}", request.id), 4000)
}

/// One field per argument (name, then its value as an escaped literal;
/// redacted ones as redacted), at most ten, the last saying how many more.
fn argument_fields(request: &ApprovalRequest) -> Vec<Value> {
    let args: serde_json::Map<String, Value> =
        serde_json::from_str(request.args.as_str()).unwrap_or_default();
    let mut shown: Vec<String> = args
        .iter()
        .map(|(name, value)| {
            let redacted = value
                .as_object()
                .is_some_and(|o| o.len() == 1 && o.contains_key("redacted"));
            let text = if redacted {
                "_redacted (only its digest is recorded)_".to_owned()
            } else {
                literal(&value.to_string(), FIELD_MAX - 200)
            };
            cut(&format!("*{}*\n{text}", escape(name)), FIELD_MAX)
        })
        .collect();
    if shown.len() > FIELDS_MAX {
        let more = shown.len() - (FIELDS_MAX - 1);
        shown.truncate(FIELDS_MAX - 1);
        shown.push(format!(
            "_… and {more} more arguments (all in the audit log)_"
        ));
    }
    shown
        .into_iter()
        .map(|text| json!({"type": "mrkdwn", "text": text}))
        .collect()
}

/// The line an escalated request's message carries: whom it went to as
/// well.
pub fn escalation_block(request: &ApprovalRequest) -> Value {
    let added: Vec<String> = request
        .policy
        .escalation_targets()
        .map(|name| escape(name))
        .collect();
    let line = format!(":arrow_double_up: Escalated: also {}", added.join(", "));
    json!({"type": "context", "block_id": format!("{}:escalated", request.id),
           "elements": [{"type": "mrkdwn", "text": cut(&line, TEXT_MAX)}]})
}

/// The reminder posted in a request's channel when its policy's time
/// comes and it is still open: what it is, how many approvals it still
/// needs, and who may still give them (with a mention where they are a
/// Slack user), as a new message so that Slack notifies them.
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use approval_core::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let writer = Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &WriterSecret::generate().unwrap()));
/// # let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
/// #     .approver("slack", Arc::new(MockApprover::silent("ci")))
/// #     .policy(Policy::new("data-export", ["slack"], Duration::from_secs(600)).approvers(["slack:U0ALICE"]))
/// #     .build().unwrap();
/// # let args = CanonicalJson::from_serialize(&serde_json::json!({})).unwrap();
/// # let ticket = gate.submit(Call::new("crm::export_table", "data-export", args)).await.unwrap();
/// let view = gate.status(ticket.request_id()).unwrap();
/// let (text, blocks) = approval_slack::message::reminder(&view);
/// assert_eq!(text, "Reminder: crm::export_table still needs your vote");
/// assert!(blocks.to_string().contains("Still to vote: <@U0ALICE>"), "{blocks}");
/// # }
/// ```
pub fn reminder(view: &approval_core::RequestView) -> (String, Value) {
    let request = &view.request;
    let needed = view.approvals_needed();
    let who = if view.may_vote.is_empty() {
        "nobody left".to_owned()
    } else {
        view.may_vote
            .iter()
            .map(|w| mention(w).unwrap_or_else(|| escape(w)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let line = format!(
        ":bell: *Reminder:* {} (request `{}`) still needs {needed} approval{}. Still to vote: {who}",
        literal(&request.action, 400),
        escape(&request.id),
        if needed == 1 { "" } else { "s" },
    );
    let text = format!("Reminder: {} still needs your vote", request.action);
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": cut(&line, 3000)}}]);
    (text, blocks)
}

/// RFC 3339 in UTC, seconds: the fallback text of Slack's date token.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use approval_core::{
        Actor, ActorKind, Call, CanonicalJson, ChainWriter, Directory, Gate, KeyId, MemorySink,
        MockApprover, Policy, WriterSecret, with_actor,
    };

    use super::*;

    /// A real request, as the gate hands it to approvers.
    async fn request(args: Value, resource: &str, reason: &str) -> Arc<ApprovalRequest> {
        let writer = Arc::new(ChainWriter::new(
            KeyId::new("k").unwrap(),
            &WriterSecret::generate().unwrap(),
        ));
        let mock = Arc::new(MockApprover::silent("ci"));
        let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
            .approver("slack", mock.clone())
            .policy(
                Policy::new("data-export", ["slack"], Duration::from_secs(600))
                    .required(2)
                    .approvers(["slack:U0ALICE"])
                    .groups(["security"]),
            )
            .directory(
                Directory::new()
                    .person("alice", ["slack:U0ALICE"])
                    .person("dave", ["dave@example.com"])
                    .group("security", ["bob"]),
            )
            .build()
            .unwrap();
        let call = Call::new(
            "crm::export_table",
            "data-export",
            CanonicalJson::from_serialize(&args).unwrap(),
        )
        .resource(resource)
        .reason(reason);
        let actor = Actor::new("agent-7")
            .kind(ActorKind::Agent)
            .model("gpt-5")
            .on_behalf_of("dave@example.com");
        // Submitted and left open: the request as every approver got it.
        let ticket = with_actor(actor, gate.submit(call)).await.unwrap();
        let request = ticket.request().clone();
        ticket.detach();
        request
    }

    /// Every text in the blocks, with the limit that applies to it.
    fn check_limits(blocks: &Value) {
        let blocks = blocks.as_array().unwrap();
        assert!(blocks.len() <= 50);
        for block in blocks {
            match block["type"].as_str().unwrap() {
                "header" => assert!(block["text"]["text"].as_str().unwrap().chars().count() <= 150),
                "section" => {
                    if let Some(text) = block["text"]["text"].as_str() {
                        assert!((1..=3000).contains(&text.chars().count()));
                    }
                    if let Some(fields) = block["fields"].as_array() {
                        assert!(fields.len() <= 10);
                        for field in fields {
                            assert!(field["text"].as_str().unwrap().chars().count() <= 2000);
                        }
                    }
                    if let Some(id) = block["block_id"].as_str() {
                        assert!(id.len() <= 255);
                    }
                }
                "actions" => {
                    for button in block["elements"].as_array().unwrap() {
                        assert!(button["value"].as_str().unwrap().len() <= 2000);
                        assert!(button["text"]["text"].as_str().unwrap().chars().count() <= 75);
                        if let Some(confirm) = button.get("confirm") {
                            assert!(
                                confirm["title"]["text"].as_str().unwrap().chars().count() <= 100
                            );
                            assert!(
                                confirm["text"]["text"].as_str().unwrap().chars().count() <= 300
                            );
                        }
                    }
                }
                "context" => {}
                other => panic!("unexpected block {other}"),
            }
        }
    }

    #[tokio::test]
    async fn the_message_shows_the_facts_apart_from_the_agent_s_words() {
        let request = request(
            serde_json::json!({"table": "users", "limit": 5000, "token": {"redacted": "ab12"}}),
            "warehouse/users",
            "quarterly report",
        )
        .await;
        let blocks = approval_blocks(&request);
        check_limits(&blocks);
        let text = blocks.to_string();
        assert_eq!(blocks[0]["text"]["text"], "Approval requested: data-export");
        let facts = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(facts.contains("*Action:* `crm::export_table`"), "{facts}");
        assert!(
            facts.contains("needs 2 approvals from: slack:U0ALICE, security"),
            "{facts}"
        );
        assert!(
            facts.contains("`agent-7` (agent), model `gpt-5`, for `dave@example.com`"),
            "{facts}"
        );
        assert!(
            facts.contains(&format!("*Request:* `{}`", request.id)),
            "{facts}"
        );
        assert!(facts.contains("<!date^"), "{facts}");
        assert!(text.contains("*Resource:* `warehouse/users`"), "{text}");
        assert!(text.contains("*Reason:* `quarterly report`"), "{text}");
        assert!(
            text.contains("_redacted (only its digest is recorded)_"),
            "{text}"
        );
        let buttons = blocks.as_array().unwrap().last().unwrap()["elements"].clone();
        assert_eq!(buttons[0]["action_id"], APPROVE);
        assert_eq!(buttons[0]["style"], "primary");
        assert!(buttons[0].get("confirm").is_some());
        assert_eq!(buttons[1]["action_id"], DENY);
        assert_eq!(buttons[1]["style"], "danger");
        assert_eq!(buttons[0]["value"], button_value(&request));
        assert!(button_value(&request).ends_with(&encode(&request.binding)));
    }

    /// Every line of every string in `value`, split at each line break a
    /// renderer may honour.
    fn lines(value: &Value) -> Vec<String> {
        match value {
            Value::String(text) => text
                .split(approval_core::LINE_BREAKS)
                .map(str::to_owned)
                .collect(),
            Value::Array(items) => items.iter().flat_map(lines).collect(),
            Value::Object(members) => members.values().flat_map(lines).collect(),
            _ => Vec::new(),
        }
    }

    #[tokio::test]
    async fn agent_text_never_starts_a_line_of_the_message() {
        let fake = |brk: &str| format!("ok{brk}*Approved* by <@U0BOSS>");
        let request = request(
            serde_json::json!({"table": fake("\n")}),
            &fake("\u{2028}"),
            &format!("{}{}", fake("\r\n"), fake("\u{85}")),
        )
        .await;
        for blocks in [
            approval_blocks(&request),
            progress_blocks(&request, &[("slack:U0ALICE".into(), Vote::Approve)], &[]),
            outcome_blocks(&request, &Decision::Cancelled { why: fake("\n") }, None),
        ] {
            let lines = lines(&blocks);
            let faked: Vec<_> = lines
                .iter()
                .filter(|line| {
                    line.trim_start_matches(['`', '*', '_', ' '])
                        .starts_with("Approved")
                })
                .collect();
            assert!(faked.is_empty(), "{faked:?}");
            assert!(
                lines.iter().any(|line| line.contains("ok ↵ *Approved* by")),
                "{lines:?}"
            );
        }
    }

    #[tokio::test]
    async fn hostile_and_huge_agent_text_stays_inert_and_within_limits() {
        let mut args = serde_json::Map::new();
        for i in 0..30 {
            args.insert(
                format!("arg{i:02}"),
                Value::String(format!("<!channel> {}", "x".repeat(5000))),
            );
        }
        let request = request(
            Value::Object(args),
            "<https://evil.example|your bank> <@U0BOSS>",
            &format!("`break out` *bold* <!here> {}", "&".repeat(10_000)),
        )
        .await;
        let blocks = approval_blocks(&request);
        check_limits(&blocks);
        let text = blocks.to_string();
        for live in ["<!channel>", "<!here>", "<@U0BOSS>", "<https://evil"] {
            assert!(!text.contains(live), "{live} is live");
        }
        let fields = blocks
            .as_array()
            .unwrap()
            .iter()
            .find_map(|b| b["fields"].as_array())
            .unwrap();
        assert_eq!(fields.len(), 10);
        assert!(
            fields[9]["text"]
                .as_str()
                .unwrap()
                .contains("and 21 more arguments")
        );
    }

    #[tokio::test]
    async fn the_outcome_names_who_decided_and_keeps_their_words_inert() {
        use approval_core::Reviewer;
        let request = request(serde_json::json!({}), "r", "why").await;
        let denied = Decision::Denied {
            reviewer: Reviewer::new("slack:U0BOB"),
            comment: Some("<!channel> not now `x`".into()),
        };
        let blocks = outcome_blocks(&request, &denied, None);
        check_limits(&blocks);
        let text = blocks.to_string();
        assert!(
            text.contains("*Denied* by <@U0BOB>: `&lt;!channel&gt; not now"),
            "{text}"
        );
        assert!(!text.contains("\"actions\""), "buttons remain: {text}");
        // Only a well-formed Slack user id becomes a mention.
        let approved = Decision::Approved {
            reviewers: vec![
                Reviewer::new("slack:U0A|<!here>"),
                Reviewer::new("teams:abc"),
            ],
        };
        let text = outcome_blocks(&request, &approved, None).to_string();
        assert!(
            !text.contains("<!here>") && !text.contains("<@U0A"),
            "{text}"
        );
        assert!(text.contains("`teams:abc`"), "{text}");
        assert_eq!(
            outcome_text(&request, &Decision::Expired),
            format!("Request {} expired", request.id)
        );
    }
}
