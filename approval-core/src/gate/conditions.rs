//! Conditions: a policy's rules, which decide by a call's facts how many
//! approvals it needs, evaluated with Cedar.
//!
//! Each rule's `when` is a Cedar expression. The gate evaluates the rules
//! in order on the facts it records (action, actor, resource, recorded
//! arguments) and the first that holds sets the number of approvals; none
//! holding leaves the policy's own `required`. Because the facts are the
//! recorded ones, an auditor re-running the rules on a log's `requested`
//! records (`approval policy test`) gets the gate's answers.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Entities, EntityId, EntityTypeName, EntityUid, Expression, PolicyId,
    PolicySet, Request, RestrictedExpression,
};
use serde::{Deserialize, Serialize};

use approval_audit::{Actor, CanonicalJson};

/// One rule of a policy: when its Cedar condition holds of a call, the
/// call needs `required` approvals (`0`: none, and it runs at once,
/// recorded `exempted`).
///
/// The condition sees `context.action` (the function's path),
/// `context.args` (the recorded arguments: integers as Cedar longs,
/// other numbers as their text, nulls absent, redacted values as their
/// digests), `context.actor` (`id`, and `kind`, `model`, `on_behalf_of`
/// where known) and `context.resource` where given; also `principal`
/// (`Agent::"<actor id>"`), `action` (`Action::"<path>"`) and `resource`
/// (`Resource::"<resource>"`).
///
/// ```
/// use std::time::Duration;
/// use approval_core::Policy;
///
/// let payments = Policy::new("payment", ["slack"], Duration::from_secs(900))
///     .rule("context.args.amount_cents > 1000000", 2)
///     .rule("context.args.amount_cents < 10000", 0);
/// assert_eq!(payments.rules[0].required, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rule {
    /// The Cedar expression (the body of a `when { .. }` clause).
    pub when: String,
    /// Approvals needed, from different people, when it holds.
    pub required: u32,
}

impl Rule {
    /// A rule: calls for which `when` holds need `required` approvals.
    pub fn new(when: impl Into<String>, required: u32) -> Self {
        Self {
            when: when.into(),
            required,
        }
    }
}

/// A rule that is not a Cedar expression, or could not be evaluated on a
/// call's facts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule}: {cause}")]
#[non_exhaustive]
pub struct ConditionError {
    /// The rule's place in the policy's `rules`, from 0.
    pub rule: usize,
    /// Cedar's account of it. It can quote the call's facts, arguments
    /// included: the gate traces and returns only the rule's place.
    pub cause: String,
}

/// The facts of one call that a policy's rules decide by.
///
/// ```
/// use approval_core::{Actor, CanonicalJson, Facts};
///
/// let args = CanonicalJson::from_serialize(&serde_json::json!({ "amount_cents": 500 })).unwrap();
/// let agent = Actor::new("billing-agent");
/// let facts = Facts::new("payments::pay", &args).actor(&agent).resource("stripe");
/// # let _ = facts;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    action: &'a str,
    args: &'a CanonicalJson,
    actor: Option<&'a Actor>,
    resource: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// A call of `action` with the recorded `args`.
    pub fn new(action: &'a str, args: &'a CanonicalJson) -> Self {
        Self {
            action,
            args,
            actor: None,
            resource: None,
        }
    }

    /// Who asks (an `Option` too: a call may have no actor).
    #[must_use]
    pub fn actor(mut self, actor: impl Into<Option<&'a Actor>>) -> Self {
        self.actor = actor.into();
        self
    }

    /// The system acted on (an `Option` too: a call may name none).
    #[must_use]
    pub fn resource(mut self, resource: impl Into<Option<&'a str>>) -> Self {
        self.resource = resource.into();
        self
    }
}

/// A policy's rules, parsed once (when the gate is built).
///
/// ```
/// use std::time::Duration;
/// use approval_core::{CanonicalJson, Conditions, Facts, Policy};
///
/// let policy = Policy::new("payment", ["slack"], Duration::from_secs(900))
///     .rule("context.args.amount_cents > 1000000", 2);
/// let conditions = Conditions::new(&policy.rules)?;
/// let args = CanonicalJson::from_serialize(&serde_json::json!({ "amount_cents": 2000000 })).unwrap();
/// assert_eq!(conditions.applicable(&Facts::new("payments::pay", &args))?, Some(0));
/// # Ok::<(), approval_core::ConditionError>(())
/// ```
#[derive(Debug)]
pub struct Conditions {
    /// One `permit` per rule, its id the rule's place.
    set: PolicySet,
}

/// Deeper arguments than this are refused rather than walked.
const MAX_DEPTH: usize = 64;

impl Conditions {
    /// Parses each rule's condition; an error names the first rule that is
    /// not a single Cedar expression.
    pub fn new(rules: &[Rule]) -> Result<Self, ConditionError> {
        let mut set = PolicySet::new();
        for (at, rule) in rules.iter().enumerate() {
            let error = |cause: String| ConditionError { rule: at, cause };
            // Parsed alone first, so a condition cannot close its clause
            // and add scope or clauses of its own.
            Expression::from_str(&rule.when).map_err(|e| error(e.to_string()))?;
            let text = format!(
                "permit(principal, action, resource) when {{ {} }};",
                rule.when
            );
            let policy = cedar_policy::Policy::parse(Some(PolicyId::new(at.to_string())), text)
                .map_err(|e| error(e.to_string()))?;
            set.add(policy).map_err(|e| error(e.to_string()))?;
        }
        Ok(Self { set })
    }

    /// The first rule that holds of `facts`, by its place; `None` when no
    /// rule does. A rule that cannot be evaluated (a missing member, a
    /// type mismatch, an overflow) before any earlier one held is an
    /// error: the gate refuses the call rather than guess.
    pub fn applicable(&self, facts: &Facts<'_>) -> Result<Option<usize>, ConditionError> {
        if self.set.is_empty() {
            return Ok(None);
        }
        let whole = |cause: String| ConditionError { rule: 0, cause };
        let request = request(facts).map_err(whole)?;
        let response = Authorizer::new().is_authorized(&request, &self.set, &Entities::empty());
        let place = |id: &PolicyId| id.to_string().parse::<usize>().unwrap_or(usize::MAX);
        let held = response.diagnostics().reason().map(place).min();
        let failed = response
            .diagnostics()
            .errors()
            .map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                (place(e.policy_id()), e.inner().to_string())
            })
            .min_by_key(|(at, _)| *at);
        match (held, failed) {
            (held, Some((at, cause))) if held.is_none_or(|held| at < held) => {
                Err(ConditionError { rule: at, cause })
            }
            (held, _) => Ok(held),
        }
    }
}

/// The Cedar request for `facts`.
fn request(facts: &Facts<'_>) -> Result<Request, String> {
    let uid = |kind: &str, id: &str| -> Result<EntityUid, String> {
        let kind = EntityTypeName::from_str(kind).map_err(|e| e.to_string())?;
        Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
    };
    let args: serde_json::Value =
        serde_json::from_str(facts.args.as_str()).map_err(|e| e.to_string())?;
    let mut context = vec![
        ("action".to_owned(), text(facts.action)),
        ("args".to_owned(), value(&args, 0)?.unwrap_or_else(empty)),
    ];
    if let Some(actor) = facts.actor {
        let mut members = vec![("id".to_owned(), text(&actor.id))];
        if let Some(kind) = actor.kind {
            members.push(("kind".to_owned(), text(kind.as_str())));
        }
        for (name, known) in [
            ("model", &actor.model),
            ("on_behalf_of", &actor.on_behalf_of),
        ] {
            if let Some(known) = known {
                members.push((name.to_owned(), text(known)));
            }
        }
        context.push((
            "actor".to_owned(),
            RestrictedExpression::new_record(members).map_err(|e| e.to_string())?,
        ));
    }
    if let Some(resource) = facts.resource {
        context.push(("resource".to_owned(), text(resource)));
    }
    let context = Context::from_pairs(context).map_err(|e| e.to_string())?;
    Request::new(
        uid("Agent", facts.actor.map_or("", |a| a.id.as_str()))?,
        uid("Action", facts.action)?,
        uid("Resource", facts.resource.unwrap_or(""))?,
        context,
        None,
    )
    .map_err(|e| e.to_string())
}

fn text(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn empty() -> RestrictedExpression {
    RestrictedExpression::new_set([])
}

/// A JSON value as a Cedar value, built directly (not through Cedar's JSON
/// form, whose `__entity` and `__extn` members would let argument text
/// name entities or extension values). `None` for a null, which Cedar
/// cannot hold: its member is left out.
fn value(v: &serde_json::Value, depth: usize) -> Result<Option<RestrictedExpression>, String> {
    use serde_json::Value;
    if depth > MAX_DEPTH {
        return Err(format!("arguments nested deeper than {MAX_DEPTH}"));
    }
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        // Cedar's numbers are 64-bit integers; any other number is kept
        // as its text, so comparing it as a number is an error (and the
        // call refused), never a wrong answer.
        Value::Number(n) => n.as_i64().map_or_else(
            || RestrictedExpression::new_string(n.to_string()),
            RestrictedExpression::new_long,
        ),
        Value::String(s) => text(s),
        Value::Array(items) => {
            let mut set = Vec::with_capacity(items.len());
            for item in items {
                set.extend(value(item, depth + 1)?);
            }
            RestrictedExpression::new_set(set)
        }
        Value::Object(members) => {
            let mut record = Vec::with_capacity(members.len());
            for (name, member) in members {
                if let Some(member) = value(member, depth + 1)? {
                    record.push((name.clone(), member));
                }
            }
            RestrictedExpression::new_record(record).map_err(|e| e.to_string())?
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approval_audit::ActorKind;

    fn args(v: serde_json::Value) -> CanonicalJson {
        CanonicalJson::from_serialize(&v).unwrap()
    }

    fn payments() -> Conditions {
        Conditions::new(&[
            Rule::new("context.args.amount > 10000", 2),
            Rule::new("context.args.amount < 100", 0),
        ])
        .unwrap()
    }

    #[test]
    fn the_first_rule_that_holds_applies() {
        let rules = payments();
        let decide = |amount: i64| {
            let args = args(serde_json::json!({ "amount": amount }));
            rules.applicable(&Facts::new("pay", &args)).unwrap()
        };
        assert_eq!(decide(20_000), Some(0));
        assert_eq!(decide(5), Some(1));
        assert_eq!(decide(500), None);
        let both = Conditions::new(&[Rule::new("true", 3), Rule::new("true", 0)]).unwrap();
        let a = args(serde_json::json!({}));
        assert_eq!(both.applicable(&Facts::new("pay", &a)).unwrap(), Some(0));
    }

    #[test]
    fn numbers_cedar_cannot_hold_are_refused_not_misread() {
        let rules = payments();
        for hostile in [
            serde_json::json!({ "amount": u64::MAX }),
            serde_json::json!({ "amount": 20000.5 }),
            serde_json::json!({ "amount": "20000" }),
            serde_json::json!({ "amount": null }),
            serde_json::json!({}),
        ] {
            let a = args(hostile.clone());
            let err = rules.applicable(&Facts::new("pay", &a)).unwrap_err();
            assert_eq!(err.rule, 0, "{hostile}: {err}");
        }
    }

    #[test]
    fn an_earlier_rule_that_holds_stands_when_a_later_one_fails() {
        let rules = Conditions::new(&[
            Rule::new("context.action == \"pay\"", 2),
            Rule::new("context.args.missing > 1", 0),
        ])
        .unwrap();
        let a = args(serde_json::json!({}));
        assert_eq!(rules.applicable(&Facts::new("pay", &a)).unwrap(), Some(0));
        let err = rules.applicable(&Facts::new("refund", &a)).unwrap_err();
        assert_eq!(err.rule, 1);
        assert!(err.cause.contains("missing"), "{err}");
    }

    #[test]
    fn actor_resource_and_entities_are_facts() {
        let mut agent = Actor::new("billing-agent").on_behalf_of("alice");
        agent.kind = Some(ActorKind::Agent);
        agent.model = Some("claude-x".into());
        let rules = Conditions::new(&[
            Rule::new(
                "principal == Agent::\"billing-agent\" && resource == Resource::\"stripe\" \
                 && context.actor.on_behalf_of == \"alice\" && context.actor.kind == \"agent\" \
                 && context.actor.model like \"claude*\" && context.resource == \"stripe\"",
                2,
            ),
            Rule::new("context has resource", 3),
        ])
        .unwrap();
        let a = args(serde_json::json!({}));
        let facts = Facts::new("pay", &a).actor(&agent).resource("stripe");
        assert_eq!(rules.applicable(&facts).unwrap(), Some(0));
        let elsewhere = Facts::new("pay", &a).actor(&agent).resource("paypal");
        assert_eq!(rules.applicable(&elsewhere).unwrap(), Some(1));
        assert_eq!(rules.applicable(&Facts::new("pay", &a)).unwrap(), None);
    }

    #[test]
    fn argument_text_cannot_name_entities_or_extensions() {
        let rules =
            Conditions::new(&[Rule::new("context.args.to == Agent::\"admin\"", 0)]).unwrap();
        let a =
            args(serde_json::json!({ "to": { "__entity": { "type": "Agent", "id": "admin" } } }));
        assert_eq!(rules.applicable(&Facts::new("pay", &a)).unwrap(), None);
    }

    #[test]
    fn a_condition_is_one_expression() {
        for bad in [
            "context.args.amount >",
            "true }; permit(principal, action, resource) when { true",
            "true } unless { false",
        ] {
            let err = Conditions::new(&[Rule::new(bad, 2)]).unwrap_err();
            assert_eq!(err.rule, 0, "{bad}");
        }
        let err = Conditions::new(&[Rule::new("true", 1), Rule::new("(", 1)]).unwrap_err();
        assert_eq!(err.rule, 1);
    }

    #[test]
    fn deep_arguments_are_refused() {
        let mut deep = serde_json::json!(1);
        for _ in 0..100 {
            deep = serde_json::json!([deep]);
        }
        let rules = Conditions::new(&[Rule::new("true", 2)]).unwrap();
        let a = args(serde_json::json!({ "x": deep }));
        let err = rules.applicable(&Facts::new("pay", &a)).unwrap_err();
        assert!(err.cause.contains("deeper"), "{err}");
    }
}
