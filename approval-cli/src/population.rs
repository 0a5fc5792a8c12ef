//! The requests a log holds, one row each, for sampling and summaries.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Value;

use crate::csv::row;

/// One request, as its records tell it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Request {
    pub(crate) id: String,
    pub(crate) requested_at: String,
    pub(crate) action: String,
    pub(crate) policy: String,
    pub(crate) policy_digest: String,
    pub(crate) actor: String,
    pub(crate) on_behalf_of: String,
    pub(crate) resource: String,
    /// `approved`, `denied`, `expired`, `cancelled`, `shadow` (run under a
    /// policy in shadow mode), or `open`.
    pub(crate) outcome: String,
    pub(crate) decided_at: String,
    /// Who settled it (people, else channel identities).
    pub(crate) reviewers: Vec<String>,
    /// Each accepted vote: (reviewer, vote).
    pub(crate) votes: Vec<(String, String)>,
    /// How the body ended, if it ran.
    pub(crate) executed: String,
    pub(crate) credential: String,
}

/// The requests asked for in a period, in log order.
pub(crate) struct Population {
    requests: Vec<Request>,
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// A reviewer object's person, else its id.
fn who(reviewer: &Value) -> String {
    reviewer["person"]
        .as_str()
        .or_else(|| reviewer["id"].as_str())
        .unwrap_or_default()
        .to_owned()
}

impl Population {
    /// Reads the log's records (already verified); a request is in the
    /// period if it was asked for at or after `from` and before `to`.
    pub(crate) fn read(
        log: &[u8],
        from: Option<SystemTime>,
        to: Option<SystemTime>,
    ) -> Result<Self, String> {
        let mut requests: Vec<Request> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for (n, line) in log.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let record: Value = serde_json::from_slice(line)
                .map_err(|e| format!("line {}: not a record: {e}", n + 1))?;
            let (Some(event), Some(id)) = (record["event"].as_str(), record["request_id"].as_str())
            else {
                continue;
            };
            if matches!(event, "requested" | "would_require" | "exempted") {
                let asked = approval_audit::clock::parse_ts(text(&record["ts"]).as_bytes())
                    .ok_or_else(|| format!("line {}: unreadable ts", n + 1))?;
                if from.is_some_and(|from| asked < from) || to.is_some_and(|to| asked >= to) {
                    continue;
                }
                index.insert(id.to_owned(), requests.len());
                requests.push(Request {
                    id: id.to_owned(),
                    requested_at: text(&record["ts"]),
                    action: text(&record["action"]),
                    policy: text(&record["policy"]),
                    policy_digest: text(&record["policy_digest"]),
                    actor: text(&record["actor"]["id"]),
                    on_behalf_of: text(&record["actor"]["on_behalf_of"]),
                    resource: text(&record["resource"]),
                    outcome: match event {
                        "would_require" => "shadow",
                        "exempted" => "exempted",
                        _ => "open",
                    }
                    .into(),
                    ..Request::default()
                });
                continue;
            }
            let Some(request) = index.get(id).map(|&i| &mut requests[i]) else {
                continue; // Asked for outside the period.
            };
            match event {
                "reviewed" => request
                    .votes
                    .push((who(&record["reviewer"]), text(&record["vote"]))),
                "approved" | "denied" | "expired" | "cancelled" if request.outcome == "open" => {
                    request.outcome = event.to_owned();
                    request.decided_at = text(&record["ts"]);
                    if let Some(reviewers) = record["reviewers"].as_array() {
                        request.reviewers = reviewers.iter().map(who).collect();
                    }
                }
                "executed" => request.executed = text(&record["outcome"]),
                "credential_minted" => request.credential = text(&record["credential_id"]),
                _ => {}
            }
        }
        Ok(Self { requests })
    }

    pub(crate) fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// `population.csv`: one row per request.
    pub(crate) fn csv(&self) -> String {
        let mut out = String::new();
        row(
            &mut out,
            &[
                "request_id",
                "requested_at",
                "action",
                "policy",
                "policy_digest",
                "actor",
                "on_behalf_of",
                "resource",
                "outcome",
                "decided_at",
                "reviewers",
                "executed",
                "credential_id",
            ],
        );
        for r in &self.requests {
            row(
                &mut out,
                &[
                    &r.id,
                    &r.requested_at,
                    &r.action,
                    &r.policy,
                    &r.policy_digest,
                    &r.actor,
                    &r.on_behalf_of,
                    &r.resource,
                    &r.outcome,
                    &r.decided_at,
                    &r.reviewers.join("; "),
                    &r.executed,
                    &r.credential,
                ],
            );
        }
        out
    }

    /// Per policy: how its requests ended and how their bodies ran.
    pub(crate) fn by_policy(&self) -> Vec<(String, [usize; COLUMNS.len()])> {
        let mut counts: BTreeMap<&str, [usize; COLUMNS.len()]> = BTreeMap::new();
        for r in &self.requests {
            let c = counts.entry(&r.policy).or_default();
            c[0] += 1;
            for (i, word) in COLUMNS.iter().enumerate().skip(1) {
                let (kind, value) = word.split_once(':').unwrap_or(("outcome", word));
                let field = if kind == "executed" {
                    &r.executed
                } else {
                    &r.outcome
                };
                if field == value {
                    c[i] += 1;
                }
            }
        }
        counts
            .into_iter()
            .map(|(policy, c)| (policy.to_owned(), c))
            .collect()
    }

    /// `summary-policies.csv`.
    pub(crate) fn by_policy_csv(&self) -> String {
        let mut out = String::new();
        let headings: Vec<String> = COLUMNS.iter().map(|c| heading(c)).collect();
        let mut header = vec!["policy"];
        header.extend(headings.iter().map(String::as_str));
        row(&mut out, &header);
        for (policy, counts) in self.by_policy() {
            let numbers: Vec<String> = counts.iter().map(ToString::to_string).collect();
            let mut fields = vec![policy.as_str()];
            fields.extend(numbers.iter().map(String::as_str));
            row(&mut out, &fields);
        }
        out
    }

    /// Per reviewer: approving and denying votes accepted.
    pub(crate) fn by_reviewer(&self) -> Vec<(String, usize, usize)> {
        let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (who, vote) in self.requests.iter().flat_map(|r| &r.votes) {
            let c = counts.entry(who).or_default();
            match vote.as_str() {
                "approve" => c.0 += 1,
                _ => c.1 += 1,
            }
        }
        counts
            .into_iter()
            .map(|(who, (approve, deny))| (who.to_owned(), approve, deny))
            .collect()
    }

    /// `summary-reviewers.csv`.
    pub(crate) fn by_reviewer_csv(&self) -> String {
        let mut out = String::new();
        row(&mut out, &["reviewer", "approve_votes", "deny_votes"]);
        for (who, approve, deny) in self.by_reviewer() {
            row(&mut out, &[&who, &approve.to_string(), &deny.to_string()]);
        }
        out
    }
}

/// The per-policy columns: the count of requests, then outcomes, then how
/// bodies ran (`executed:WORD`).
pub(crate) const COLUMNS: [&str; 12] = [
    "requests",
    "approved",
    "denied",
    "expired",
    "cancelled",
    "open",
    "shadow",
    "exempted",
    "executed:ok",
    "executed:error",
    "executed:panicked",
    "executed:unknown",
];

/// A column's heading: `executed:ok` is `executed_ok`.
pub(crate) fn heading(column: &str) -> String {
    column.replace(':', "_")
}
