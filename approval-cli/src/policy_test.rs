//! `approval policy test FILE CASES`: a policy file's rules run on cases
//! (JSON lines with a call's facts; an audit log's `requested` records
//! are such cases), each checked against its `expect` where it has one.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use approval_core::{
    Actor, ActorKind, CanonicalJson, Conditions, Facts, NO_ACTOR, Policy, PolicyFile,
};
use serde_json::Value;

/// How a policy file decides one case.
#[derive(Debug, PartialEq, Eq)]
enum Decided {
    /// The approvals needed, and the rule that set them (if one did).
    Needs { rule: Option<usize>, required: u32 },
    /// A rule could not be evaluated: the gate refuses the call.
    Refused { rule: usize, cause: String },
}

impl Decided {
    fn describe(&self) -> String {
        match self {
            Self::Needs { rule, required } => {
                let which = rule.map_or_else(
                    || "no rule applies".to_owned(),
                    |at| format!("rule {at} applies"),
                );
                match required {
                    0 => format!("{which}: exempted"),
                    1 => format!("{which}: 1 approval"),
                    n => format!("{which}: {n} approvals"),
                }
            }
            Self::Refused { rule, cause } => format!("refused: rule {rule}: {cause}"),
        }
    }

    /// Whether it is what `expect` says: a number of approvals, or
    /// `"refused"`.
    fn meets(&self, expect: &Value) -> Result<bool, String> {
        match (expect, self) {
            (Value::String(word), _) if word == "refused" => {
                Ok(matches!(self, Self::Refused { .. }))
            }
            (Value::Number(n), _) => {
                let n = n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("`expect` {n} is not a number of approvals"))?;
                Ok(matches!(self, Self::Needs { required, .. } if *required == n))
            }
            (other, _) => Err(format!(
                "`expect` is {other}: say a number of approvals or \"refused\""
            )),
        }
    }
}

/// Runs the cases in `cases` against the policy file `file`; prints one
/// line per case and a summary. Exit status 1 when a case is not as
/// expected or names a policy the file lacks.
pub(crate) fn test(file: &Path, cases: &Path) -> Result<ExitCode, String> {
    let policies = PolicyFile::load(file).map_err(|e| e.to_string())?;
    let mut compiled = Vec::new();
    for policy in policies.policies() {
        let conditions = Conditions::new(&policy.rules)
            .map_err(|e| format!("{}: policy {}: {e}", file.display(), policy.name))?;
        compiled.push((policy, conditions));
    }
    let text = std::fs::read_to_string(cases).map_err(|e| format!("{}: {e}", cases.display()))?;
    let (mut total, mut failed, mut expected) = (0usize, 0usize, 0usize);
    let mut out = String::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let case: Value = serde_json::from_str(line)
            .map_err(|e| format!("{}: line {line_no}: not JSON: {e}", cases.display()))?;
        // An audit log's other records are not cases.
        if case
            .get("event")
            .and_then(Value::as_str)
            .is_some_and(|event| !matches!(event, "requested" | "would_require" | "exempted"))
        {
            continue;
        }
        let bad = |what: &str| format!("{}: line {line_no}: {what}", cases.display());
        let name = case["policy"].as_str().ok_or_else(|| bad("no `policy`"))?;
        total += 1;
        let Some((policy, conditions)) = compiled.iter().find(|(p, _)| p.name == name) else {
            failed += 1;
            writeln!(
                out,
                "line {line_no}: {name}: no such policy in {}",
                file.display()
            )
            .ok();
            continue;
        };
        let decided = decide(&case, policy, conditions).map_err(|e| bad(&e))?;
        let mut verdict = decided.describe();
        if let Some(expect) = case.get("expect") {
            expected += 1;
            if !decided.meets(expect).map_err(|e| bad(&e))? {
                failed += 1;
                write!(verdict, " (NOT AS EXPECTED: {expect})").ok();
            }
        }
        writeln!(out, "line {line_no}: {name}: {verdict}").ok();
    }
    let summary = if failed > 0 {
        format!("{total} cases, {failed} not as expected")
    } else if expected > 0 {
        format!("{total} cases, {expected} as expected")
    } else {
        format!("{total} cases")
    };
    println!("{out}{summary}");
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Decides one case as the gate would: the same facts, the same rules.
fn decide(case: &Value, policy: &Policy, conditions: &Conditions) -> Result<Decided, String> {
    let action = case["action"].as_str().ok_or("no `action`")?;
    let args = CanonicalJson::from_value(&case["args"]).map_err(|e| format!("`args`: {e}"))?;
    if !args.is_object() {
        return Err("`args` is not an object".into());
    }
    let actor = actor(&case["actor"])?;
    let facts = Facts::new(action, &args)
        .actor(actor.as_ref())
        .resource(case["resource"].as_str());
    Ok(match conditions.applicable(&facts) {
        Ok(rule) => Decided::Needs {
            rule,
            required: policy.required_under(rule),
        },
        Err(e) => Decided::Refused {
            rule: e.rule,
            cause: e.cause,
        },
    })
}

/// The actor as recorded; `None` for none (the record's `-`) or absent.
fn actor(recorded: &Value) -> Result<Option<Actor>, String> {
    if recorded.is_null() {
        return Ok(None);
    }
    let id = recorded["id"].as_str().ok_or("`actor` has no `id`")?;
    if id == NO_ACTOR {
        return Ok(None);
    }
    let mut actor = Actor::new(id);
    actor.kind = recorded["kind"].as_str().and_then(ActorKind::from_word);
    actor.model = recorded["model"].as_str().map(str::to_owned);
    actor.on_behalf_of = recorded["on_behalf_of"].as_str().map(str::to_owned);
    Ok(Some(actor))
}
