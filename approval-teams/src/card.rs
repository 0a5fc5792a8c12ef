//! The approval card: an Adaptive Card (version 1.5, `Action.Execute`) that
//! shows a request at a glance, the gate's facts apart from the agent's
//! own words, within the size Teams accepts (TEAMS.md §3).

use std::time::{SystemTime, UNIX_EPOCH};

use approval_core::hex::encode;
use approval_core::{ApprovalRequest, Decision, GrantView, RejectReason, Reviewer, Vote};
use serde_json::{Value, json};

use crate::markdown::{escape, literal};

/// The attachment content type of an Adaptive Card.
pub const CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// The card version: `Action.Execute` needs 1.4; Teams renders up to 1.5.
pub const VERSION: &str = "1.5";
/// The most a card may weigh, serialized: 28 KB, the smallest limit Teams
/// documents for cards (TEAMS.md §3); every card here stays under it.
pub const MAX_BYTES: usize = 28 * 1024;
/// The `verb` of the Approve action.
pub const APPROVE: &str = "approve";
/// The `verb` of the Deny action.
pub const DENY: &str = "deny";
/// The `verb` of the "Approve + N more" action: approve, granting as much
/// as the policy allows (on the card only when its policy allows grants).
pub const APPROVE_GRANT: &str = "approve_grant";
/// The `verb` of an approved request's "Revoke grant" action.
pub const REVOKE_GRANT: &str = "revoke_grant";
/// The id of the text input whose value comes with a Deny as its reason.
pub const COMMENT: &str = "comment";
/// The longest reason a reviewer can type.
pub const COMMENT_MAX: usize = 500;

/// How much of the agent's text a card shows; halved until the card fits.
#[derive(Clone, Copy)]
struct Limits {
    resource: usize,
    reason: usize,
    argument: usize,
    arguments: usize,
}

const FULL: Limits = Limits {
    resource: 500,
    reason: 1500,
    argument: 400,
    arguments: 12,
};

impl Limits {
    fn halved(self) -> Option<Self> {
        (self.argument > 16).then_some(Self {
            resource: self.resource / 2,
            reason: self.reason / 2,
            argument: self.argument / 2,
            arguments: self.arguments.max(2) / 2 + 1,
        })
    }
}

/// RFC 3339 in UTC, whole seconds: what the card's date functions read.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A time each reader sees in their own time zone (the card's `DATE` and
/// `TIME` functions), the UTC form as a fallback where they are unknown.
fn when(time: SystemTime) -> String {
    let at = rfc3339(time);
    // Times before 1970 cannot come from the gate; show them raw.
    if time.duration_since(UNIX_EPOCH).is_err() {
        return at;
    }
    format!("{{{{DATE({at}, SHORT)}}}} {{{{TIME({at})}}}}")
}

fn text(text: impl Into<String>) -> Value {
    json!({"type": "TextBlock", "text": text.into(), "wrap": true})
}

fn fact(title: &str, value: String) -> Value {
    json!({"title": title, "value": value})
}

/// How a reviewer is shown: the name Teams gave, the directory's person,
/// and the identity, all escaped.
pub(crate) fn reviewer(who: &Reviewer) -> String {
    let mut shown = match (&who.display, &who.person) {
        (Some(display), Some(person)) => format!("{} ({})", literal(display, 100), escape(person)),
        (Some(display), None) => literal(display, 100),
        (None, Some(person)) => escape(person),
        (None, None) => String::new(),
    };
    if shown.is_empty() {
        shown = literal(&who.id, 200);
    }
    shown
}

/// The gate's facts: the action, the policy and who may approve, the agent
/// and for whom, the expiry, the request id.
fn gate_facts(request: &ApprovalRequest) -> Value {
    let policy = &request.policy;
    let mut who = policy
        .approvers
        .iter()
        .chain(&policy.groups)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if who.is_empty() {
        who = "nobody named".into();
    }
    let mut facts = vec![
        fact("Action", literal(&request.action, 300)),
        fact("Policy", escape(&policy.name)),
        fact(
            "Needs",
            literal(
                &format!(
                    "{} approval{} from: {who}",
                    policy.required,
                    if policy.required == 1 { "" } else { "s" }
                ),
                1000,
            ),
        ),
    ];
    match &request.actor {
        Some(actor) => {
            let mut agent = literal(&actor.id, 200);
            if let Some(kind) = actor.kind {
                agent.push_str(&format!(" ({})", escape(kind.as_str())));
            }
            facts.push(fact("Agent", agent));
            if let Some(model) = &actor.model {
                facts.push(fact("Model", literal(model, 200)));
            }
            if let Some(person) = &actor.on_behalf_of {
                facts.push(fact("On behalf of", literal(person, 200)));
            }
        }
        None => facts.push(fact("Agent", "no actor in scope".into())),
    }
    facts.push(fact("Expires", when(request.expires_at)));
    for earlier in &request.earlier {
        let outcome =
            approval_channel::earlier_outcome(&earlier.decision, reviewer, |t| literal(t, 300));
        facts.push(fact(
            "Earlier",
            format!(
                "the same call was {outcome} (request {})",
                escape(&earlier.request_id)
            ),
        ));
    }
    facts.push(fact("Request", escape(&request.id)));
    json!({"type": "FactSet", "facts": facts})
}

/// The agent's words: resource, reason, arguments (redacted ones as
/// redacted, at most `limits.arguments`, the last saying how many more).
fn agent_words(request: &ApprovalRequest, limits: Limits) -> Value {
    let mut items = vec![
        json!({"type": "TextBlock", "text": "The agent's own words and arguments, shown as written:",
                                "isSubtle": true, "size": "Small", "wrap": true}),
    ];
    let mut said = Vec::new();
    if let Some(resource) = &request.resource {
        said.push(fact("Resource", literal(resource, limits.resource)));
    }
    if let Some(reason) = &request.reason {
        said.push(fact("Reason", literal(reason, limits.reason)));
    }
    let args: serde_json::Map<String, Value> =
        serde_json::from_str(request.args.as_str()).unwrap_or_default();
    let total = args.len();
    for (shown, (name, value)) in args.iter().enumerate() {
        if shown + 1 == limits.arguments && total > limits.arguments {
            said.push(fact(
                "…",
                format!(
                    "and {} more arguments (all in the audit log)",
                    total - shown
                ),
            ));
            break;
        }
        let redacted = value
            .as_object()
            .is_some_and(|o| o.len() == 1 && o.contains_key("redacted"));
        let shown_value = if redacted {
            "_redacted (only its digest is recorded)_".to_owned()
        } else {
            literal(&value.to_string(), limits.argument)
        };
        said.push(fact(&literal(name, 60), shown_value));
    }
    if !request.skipped.is_empty() {
        said.push(fact(
            "Not recorded",
            literal(&request.skipped.join(", "), limits.argument),
        ));
    }
    if !said.is_empty() {
        items.push(json!({"type": "FactSet", "facts": said}));
    }
    json!({"type": "Container", "style": "emphasis", "items": items})
}

/// A line per vote counted so far, and who may still vote.
fn vote_lines(
    request: &ApprovalRequest,
    votes: &[(Reviewer, Vote)],
    may_vote: &[String],
) -> Option<Value> {
    if votes.is_empty() && may_vote.is_empty() {
        return None;
    }
    let mut approvals = 0;
    let mut lines: Vec<String> = votes
        .iter()
        .map(|(who, vote)| match vote {
            Vote::Approve => {
                approvals += 1;
                format!(
                    "✅ {} approved ({approvals} of {})",
                    reviewer(who),
                    request.policy.required
                )
            }
            Vote::Deny => format!("⛔ {} denied", reviewer(who)),
            other => format!("{} voted {}", reviewer(who), other.as_str()),
        })
        .collect();
    if !may_vote.is_empty() {
        let who: Vec<String> = may_vote.iter().map(|w| escape(w)).collect();
        lines.push(format!("⏳ Still to vote: {}", who.join(", ")));
    }
    Some(text(lines.join("\n\n")))
}

fn card(body: Vec<Value>, actions: Vec<Value>) -> Value {
    let mut card = json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": VERSION,
        "body": body,
    });
    if !actions.is_empty() {
        card["actions"] = Value::Array(actions);
    }
    card
}

fn header(request: &ApprovalRequest) -> Value {
    json!({"type": "TextBlock", "text": format!("Approval requested: {}", literal(&request.policy.name, 100)),
           "weight": "Bolder", "size": "Medium", "wrap": true})
}

fn open_card(
    request: &ApprovalRequest,
    votes: &[(Reviewer, Vote)],
    may_vote: &[String],
    limits: Limits,
) -> Value {
    let data = json!({"request_id": request.id, "binding": encode(&request.binding)});
    let mut body = vec![
        header(request),
        gate_facts(request),
        agent_words(request, limits),
    ];
    body.extend(vote_lines(request, votes, may_vote));
    body.push(json!({
        "type": "Input.Text", "id": COMMENT, "isMultiline": true, "maxLength": COMMENT_MAX,
        "label": "Reason, if you deny (optional; the agent gets it back)",
        "placeholder": "Why?"
    }));
    let mut actions = vec![action("Approve", APPROVE, &data)];
    if let Some(grant) = &request.policy.grant {
        let title = format!("Approve + {} more", grant.max_uses);
        actions.push(action(&title, APPROVE_GRANT, &data));
    }
    actions.push(action("Deny", DENY, &data));
    card(body, actions)
}

/// An `Action.Execute` with an `Action.Submit` fallback for clients
/// without it (TEAMS.md §3): the same data, the verb inside it.
fn action(title: &str, verb: &str, data: &Value) -> Value {
    let mut submitted = data.clone();
    submitted["verb"] = json!(verb);
    json!({"type": "Action.Execute", "title": title, "verb": verb, "data": data,
           "fallback": {"type": "Action.Submit", "title": title, "data": submitted}})
}

/// The line a live grant adds under its approval's outcome: its uses
/// left, which arguments must repeat, and when it ends.
fn grant_line(grant: &GrantView) -> Value {
    text(format!(
        "🎟 **Grant:** {}, until {}",
        approval_channel::grant_left(grant, |name| literal(name, 100)),
        rfc3339(grant.expires_at)
    ))
}

/// The largest card within [`MAX_BYTES`]: built with the agent's text at
/// full length, then cut harder until it fits.
fn fitted(build: impl Fn(Limits) -> Value) -> Value {
    let mut limits = FULL;
    loop {
        let card = build(limits);
        let fits = serde_json::to_vec(&card).map_or(0, |b| b.len()) <= MAX_BYTES;
        match limits.halved() {
            Some(smaller) if !fits => limits = smaller,
            _ => return card,
        }
    }
}

/// The card posted for `request`: a header; the gate's facts (action,
/// policy, approvals needed and who may give them, agent, model, on whose
/// behalf, expiry, request id); then, set apart and escaped, the agent's
/// resource, reason and arguments (redacted ones as redacted); a reason
/// box; Approve and Deny (`Action.Execute`, carrying the request id and
/// binding digest).
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use approval_core::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let writer = Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &WriterSecret::generate().unwrap()));
/// # let mock = Arc::new(MockApprover::silent("ci"));
/// # let gate = Gate::builder(Arc::new(MemorySink::new(writer))).approver("teams", mock.clone())
/// #     .policy(Policy::new("data-export", ["teams"], Duration::from_secs(60))).build().unwrap();
/// # let call = Call::new("crm::export", "data-export", CanonicalJson::from_serialize(&serde_json::json!({})).unwrap());
/// # let waiting = tokio::spawn(async move { gate.approve(call).await });
/// # while mock.requests().is_empty() { tokio::task::yield_now().await; }
/// # let request = mock.requests()[0].clone();
/// # waiting.abort();
/// // `request` is what the gate hands an approver's `deliver`.
/// let card = approval_teams::card::approval_card(&request);
/// assert_eq!(card["version"], "1.5");
/// assert_eq!(card["actions"][0]["verb"], "approve");
/// # }
/// ```
pub fn approval_card(request: &ApprovalRequest) -> Value {
    progress_card(request, &[], &[])
}

/// The card while votes come in: as posted, with a line per vote counted
/// so far and who may still vote (`may_vote`, as the gate says) above the
/// reason box; the actions stay.
pub fn progress_card(
    request: &ApprovalRequest,
    votes: &[(Reviewer, Vote)],
    may_vote: &[String],
) -> Value {
    fitted(|limits| open_card(request, votes, may_vote, limits))
}

/// The card that replaces the request's once it has ended (`at`): the
/// header and the gate's facts as before, the agent's words gone, and in
/// place of the actions who decided, when, and why.
pub fn outcome_card(
    request: &ApprovalRequest,
    decision: &Decision,
    at: SystemTime,
    grant: Option<&GrantView>,
) -> Value {
    let outcome = match decision {
        Decision::Approved { reviewers } => format!(
            "✅ **Approved** by {}, {}",
            reviewers
                .iter()
                .map(reviewer)
                .collect::<Vec<_>>()
                .join(", "),
            when(at)
        ),
        Decision::Denied {
            reviewer: who,
            comment,
        } => format!(
            "⛔ **Denied** by {}, {}{}",
            reviewer(who),
            when(at),
            comment
                .as_ref()
                .map(|c| format!(": {}", literal(c, 1000)))
                .unwrap_or_default()
        ),
        Decision::Expired => format!("⌛ **Expired**: nobody decided in time ({}).", when(at)),
        Decision::Cancelled { why } => format!("➖ **Cancelled**: {}", literal(why, 500)),
        _ => "**Ended**".to_owned(),
    };
    let mut body = vec![header(request), gate_facts(request), text(outcome)];
    let mut actions = Vec::new();
    if let Some(grant) = grant {
        body.push(grant_line(grant));
        let data = json!({"request_id": grant.id});
        actions.push(action("Revoke grant", REVOKE_GRANT, &data));
    }
    card(body, actions)
}

/// The card that replaces the card of a request a restart ended: the
/// process that waited for it is gone, so its actions go too.
///
/// ```
/// let card = approval_teams::card::restart_card("01J8Y5", true);
/// assert!(card["actions"].is_null());
/// assert!(card.to_string().contains("Cancelled"));
/// ```
pub fn restart_card(request_id: &str, cancelled: bool) -> Value {
    let what = if cancelled {
        "➖ **Cancelled**: the process waiting for this request restarted before anyone decided; it will not run."
    } else {
        "➖ **Ended** before the process restarted; the audit log holds its outcome."
    };
    card(
        vec![
            text(what),
            text(format!("Request: {}", literal(request_id, 100))),
        ],
        Vec::new(),
    )
}

/// The line an escalated request's card carries: whom it went to as well.
pub fn escalation_line(request: &ApprovalRequest) -> Value {
    let added: Vec<String> = request
        .policy
        .escalation_targets()
        .map(|name| escape(name))
        .collect();
    text(format!("⏫ Escalated: also {}", added.join(", ")))
}

/// The reminder posted in reply to a request's card when its policy's time
/// comes and it is still open: how many approvals it still needs, and who
/// may still give them. No actions: the card above has them.
pub fn reminder_card(view: &approval_core::RequestView) -> Value {
    let request = &view.request;
    let needed = view.approvals_needed();
    let who = if view.may_vote.is_empty() {
        "nobody left".to_owned()
    } else {
        view.may_vote
            .iter()
            .map(|w| escape(w))
            .collect::<Vec<_>>()
            .join(", ")
    };
    card(
        vec![
            text(format!(
                "🔔 **Reminder**: {} still needs {needed} approval{}.",
                literal(&request.action, 300),
                if needed == 1 { "" } else { "s" }
            )),
            text(format!("Still to vote: {who}")),
            text(format!("Request: {}", literal(&request.id, 100))),
        ],
        Vec::new(),
    )
}

/// What a reviewer whose vote was refused is told, in words.
///
/// ```
/// use approval_core::RejectReason;
/// use approval_teams::card::refusal_text;
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
            "this request is not one this approver is waiting on (the card is stale)"
        }
        other => other.as_str(),
    };
    format!("Your vote was not counted: {why}. The refusal is in the audit log.")
}

/// A card as a message attachment.
pub fn attachment(card: Value) -> Value {
    json!({"contentType": CONTENT_TYPE, "content": card})
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
            .approver("teams", mock.clone())
            .policy(
                Policy::new("data-export", ["teams"], Duration::from_secs(600))
                    .required(2)
                    .approvers(["alice"])
                    .groups(["security"]),
            )
            .directory(
                Directory::new()
                    .person("alice", ["teams:29:alice"])
                    .person("carol", ["carol@contoso.com"])
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
            .model("**gpt** [x](y)")
            .on_behalf_of("carol@contoso.com");
        // Submitted and left open: the request as every approver got it.
        let ticket = with_actor(actor, gate.submit(call)).await.unwrap();
        let request = ticket.request().clone();
        ticket.detach();
        request
    }

    fn facts(card: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut stack = vec![card];
        while let Some(v) = stack.pop() {
            if let Some(facts) = v["facts"].as_array() {
                for f in facts {
                    out.push((
                        f["title"].as_str().unwrap().to_owned(),
                        f["value"].as_str().unwrap().to_owned(),
                    ));
                }
            }
            for key in ["body", "items"] {
                if let Some(items) = v[key].as_array() {
                    stack.extend(items);
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn the_card_shows_the_gate_facts_apart_from_the_escaped_agent_words() {
        let request = request(
            json!({"table": "orders", "token": {"redacted": "ab12"}, "note": "**Approved** by security"}),
            "warehouse/<at>boss</at>",
            "quarterly\n- Policy: none",
        )
        .await;
        let card = approval_card(&request);
        assert_eq!(card["version"], "1.5");
        assert_eq!(card["type"], "AdaptiveCard");
        let facts = facts(&card);
        let get = |title: &str| {
            facts
                .iter()
                .find(|(t, _)| t == title)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {title} in {facts:?}"))
        };
        assert_eq!(get("Action"), r"crm::export\_table");
        assert_eq!(get("Policy"), r"data\-export");
        assert_eq!(get("Needs"), "2 approvals from: alice, security");
        assert_eq!(get("Agent"), r"agent\-7 (agent)");
        assert_eq!(get("Model"), r"\*\*gpt\*\* \[x\]\(y\)");
        assert_eq!(get("On behalf of"), r"carol@contoso\.com");
        assert_eq!(get("Request"), request.id);
        assert!(get("Expires").starts_with("{{DATE("), "{}", get("Expires"));
        assert_eq!(get("Resource"), r"warehouse/\<at\>boss\</at\>");
        assert_eq!(get("Reason"), r"quarterly ↵ \- Policy: none");
        assert_eq!(get("token"), "_redacted (only its digest is recorded)_");
        assert_eq!(get("note"), r#""\*\*Approved\*\* by security""#);
        // The agent's words sit in their own container, after the facts.
        assert_eq!(card["body"][1]["type"], "FactSet");
        assert_eq!(card["body"][2]["type"], "Container");
        // Approve and Deny carry the request and its binding; a reason box.
        let binding = encode(&request.binding);
        for (i, verb) in [APPROVE, DENY].into_iter().enumerate() {
            let action = &card["actions"][i];
            assert_eq!(action["type"], "Action.Execute");
            assert_eq!(action["verb"], verb);
            assert_eq!(action["data"]["request_id"], request.id.as_str());
            assert_eq!(action["data"]["binding"], binding.as_str());
        }
        let input = card["body"].as_array().unwrap().last().unwrap();
        assert_eq!(input["type"], "Input.Text");
        assert_eq!(input["id"], COMMENT);
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
    async fn agent_text_never_starts_a_line_of_the_card() {
        let fake = |brk: &str| format!("ok{brk}**Approved** by security");
        let request = request(
            json!({"table": fake("\n")}),
            &fake("\u{2028}"),
            &format!("{}{}", fake("\r\n"), fake("\u{85}")),
        )
        .await;
        for card in [
            approval_card(&request),
            outcome_card(
                &request,
                &Decision::Cancelled {
                    why: fake("\u{2029}"),
                },
                SystemTime::UNIX_EPOCH,
                None,
            ),
        ] {
            let lines = lines(&card);
            let faked: Vec<_> = lines
                .iter()
                .filter(|line| {
                    line.trim_start_matches(['\\', '*', '_', ' '])
                        .starts_with("Approved")
                })
                .collect();
            assert!(faked.is_empty(), "{faked:?}");
            assert!(lines.iter().any(|line| line.contains("ok ↵ ")), "{lines:?}");
        }
    }

    #[tokio::test]
    async fn hostile_input_stays_within_the_size_limit() {
        let long = "\\*{\u{1}🙂".repeat(4000);
        let args: serde_json::Map<String, Value> = (0..30)
            .map(|i| (format!("arg{i:02}_{long}"), Value::String(long.clone())))
            .collect();
        let request = request(Value::Object(args), &long, &long).await;
        let card = approval_card(&request);
        let bytes = serde_json::to_vec(&card).unwrap().len();
        assert!(bytes <= MAX_BYTES, "{bytes} bytes");
        let facts = facts(&card);
        let more = facts.iter().find(|(t, _)| t == "…").expect("a 'more' line");
        assert!(more.1.starts_with("and "), "{more:?}");
        // Cut values end with an ellipsis, never a lone backslash.
        for (_, value) in &facts {
            assert!(!value.trim_end_matches('…').ends_with(r"\\\"));
        }
        // Votes and the outcome fit as well.
        let reviewer = Reviewer::new(format!("teams:{long}"));
        let votes = vec![(reviewer.clone(), Vote::Approve)];
        let progress = serde_json::to_vec(&progress_card(&request, &votes, &[])).unwrap();
        assert!(progress.len() <= MAX_BYTES);
        let denied = Decision::Denied {
            reviewer,
            comment: Some(long.clone()),
        };
        let outcome = serde_json::to_vec(&outcome_card(&request, &denied, UNIX_EPOCH, None));
        assert!(outcome.unwrap().len() <= MAX_BYTES);
    }

    #[tokio::test]
    async fn votes_show_on_the_card_and_the_outcome_replaces_the_actions() {
        let request = request(json!({}), "r", "why").await;
        let mut alice = Reviewer::new("teams:6f1c");
        alice.display = Some("Alice *Admin*".into());
        alice.person = Some("alice".into());
        let card = progress_card(&request, &[(alice.clone(), Vote::Approve)], &[]);
        let shown = card.to_string();
        assert!(
            shown.contains(r"Alice \\*Admin\\* (alice) approved (1 of 2)"),
            "{shown}"
        );
        assert_eq!(card["actions"].as_array().unwrap().len(), 2);

        let denied = Decision::Denied {
            reviewer: alice,
            comment: Some("not **now**".into()),
        };
        let outcome = outcome_card(&request, &denied, UNIX_EPOCH + Duration::from_secs(1), None);
        assert!(outcome.get("actions").is_none());
        let last = outcome["body"].as_array().unwrap().last().unwrap();
        assert_eq!(
            last["text"],
            r"⛔ **Denied** by Alice \*Admin\* (alice), {{DATE(1970-01-01T00:00:01Z, SHORT)}} {{TIME(1970-01-01T00:00:01Z)}}: not \*\*now\*\*"
        );
        // The agent's words are gone from the outcome.
        assert!(!outcome.to_string().contains("why"));
    }
}
