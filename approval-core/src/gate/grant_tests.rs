//! Grants through the gate: an approval that covers N more calls like it
//! within T, each use recorded and checked by the verifier; and what a
//! grant never covers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::test_support::{events, records, sink_keyed};
use super::*;
use crate::error::ApproverError;
use crate::{KeyId, MemorySink};
use approval_audit::{Actor, GrantFault, GrantTerms, Keyring, ManualClock, RejectReason, Vote};

/// Exports: one approval from finance, which may grant up to 3 more
/// exports of the same table within 10 minutes.
const EXPORTS: &str = r#"
[[policy]]
name = "data-export"
routes = ["desk"]
groups = ["finance"]
timeout_ms = 600000
grant = { max_uses = 3, max_within_ms = 600000, match = ["table"] }

[[policy]]
name = "two-keys"
routes = ["desk"]
groups = ["finance"]
required = 2
timeout_ms = 600000
grant = { max_uses = 3, max_within_ms = 600000, match = ["table"] }

[[policy]]
name = "no-grants"
routes = ["desk"]
groups = ["finance"]
timeout_ms = 600000

[people]
alice = ["desk:alice"]
bob = ["desk:bob"]
carol = ["desk:carol"]
dave = ["desk:dave"]

[groups]
finance = ["alice", "bob"]
"#;

/// A channel that keeps what it was given.
#[derive(Debug, Default)]
struct Desk {
    delivered: Mutex<Vec<Arc<ApprovalRequest>>>,
}

#[async_trait::async_trait]
impl Approver for Desk {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        _: Ballots,
    ) -> Result<(), ApproverError> {
        lock(&self.delivered).push(request);
        Ok(())
    }
}

struct Harness {
    gate: Gate,
    sink: Arc<MemorySink>,
    desk: Arc<Desk>,
    clock: Arc<ManualClock>,
    runs: Arc<AtomicU32>,
}

fn harness() -> Harness {
    let file = PolicyFile::parse(EXPORTS, "exports.toml").unwrap();
    let (sink, desk) = (sink_keyed("47"), Arc::new(Desk::default()));
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let gate = Gate::builder(sink.clone())
        .approver("desk", desk.clone())
        .policy_file(&file)
        .clock(clock.clone())
        .build()
        .unwrap();
    Harness {
        gate,
        sink,
        desk,
        clock,
        runs: Arc::new(AtomicU32::new(0)),
    }
}

fn export(policy: &str, table: &str, rows: u32) -> Call {
    let args = CanonicalJson::from_serialize(&json!({ "table": table, "rows": rows })).unwrap();
    Call::new("crm::export", policy.to_owned(), args)
}

fn agent() -> Actor {
    Actor::new("export-agent").on_behalf_of("dave")
}

impl Harness {
    /// Runs `call` as `actor` to the end of its body in a task of its own.
    fn spawn(
        &self,
        call: Call,
        actor: Actor,
    ) -> tokio::task::JoinHandle<Result<u32, ApprovalError>> {
        let (gate, runs) = (self.gate.clone(), self.runs.clone());
        tokio::spawn(async move {
            let args = call.args.clone();
            with_actor(actor, async {
                gate.approve(call)
                    .await?
                    .confirm_args(&args)
                    .await?
                    .execute(async move {
                        Ok::<_, ApprovalError>(runs.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .await
            })
            .await
        })
    }

    /// Waits until the desk has been given `n` requests; the last.
    async fn delivered(&self, n: usize) -> Arc<ApprovalRequest> {
        loop {
            if let Some(last) = lock(&self.desk.delivered).get(n - 1) {
                return last.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn delivered_count(&self) -> usize {
        lock(&self.desk.delivered).len()
    }

    /// Asks for `call` as the agent, and has `voters` approve it, each
    /// granting `terms`; the call's result.
    async fn approved_granting(
        &self,
        call: Call,
        voters: &[&str],
        terms: Option<GrantTerms>,
    ) -> Result<u32, ApprovalError> {
        let n = self.delivered_count() + 1;
        let task = self.spawn(call, agent());
        let request = self.delivered(n).await;
        for voter in voters {
            let mut ballot = Ballot::new(&request, format!("desk:{voter}"), "desk", Vote::Approve);
            if let Some(terms) = terms {
                ballot = ballot.granting(terms);
            }
            self.gate.cast(ballot).await.unwrap();
        }
        task.await.unwrap()
    }

    /// Alice approves an export of `users` as the agent's, granting
    /// `uses` more within ten minutes.
    async fn granted_users(&self, uses: u32) {
        let call = export("data-export", "users", 10);
        let terms = Some(ten_minutes(uses));
        self.approved_granting(call, &["alice"], terms)
            .await
            .unwrap();
    }

    /// Runs `call` as `actor`: `Ok` when it ran at once under a grant,
    /// `Err` with the request it was held on otherwise (then cancelled).
    async fn covered(&self, call: Call, actor: Actor) -> Result<u32, Arc<ApprovalRequest>> {
        let before = self.delivered_count();
        let task = self.spawn(call, actor);
        loop {
            if task.is_finished() {
                return Ok(task.await.unwrap().unwrap());
            }
            if self.delivered_count() > before {
                let held = self.delivered(before + 1).await;
                task.abort();
                return Err(held);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn verified(&self) -> Result<approval_audit::Report, approval_audit::VerifyError> {
        let secret = crate::WriterSecret::from_hex(&"47".repeat(32)).unwrap();
        let keyring = Keyring::new().with(KeyId::new("k").unwrap(), secret.record_key());
        approval_audit::verify(self.sink.read_back().unwrap(), &keyring)
    }
}

fn ten_minutes(uses: u32) -> GrantTerms {
    GrantTerms::new(uses, Duration::from_secs(600))
}

#[tokio::test]
async fn a_grant_covers_its_uses_of_the_same_table_and_no_more() {
    let h = harness();
    let first = h
        .approved_granting(
            export("data-export", "users", 10),
            &["alice"],
            Some(ten_minutes(2)),
        )
        .await;
    assert_eq!(first.unwrap(), 1);
    // Two more exports of `users` (any row count) run at once.
    for rows in [20, 30] {
        h.covered(export("data-export", "users", rows), agent())
            .await
            .expect("covered by the grant");
    }
    assert_eq!(h.runs.load(Ordering::SeqCst), 3);
    // The third is held again: the grant is spent.
    let held = h.covered(export("data-export", "users", 40), agent()).await;
    assert!(held.is_err(), "a spent grant covers nothing");
    assert!(h.gate.grants().is_empty());

    let records = records(&h.sink);
    let evs = events(&h.sink);
    assert_eq!(
        &evs[..9],
        [
            "requested",
            "reviewed",
            "approved",
            "granted",
            "executed",
            "grant_used",
            "executed",
            "grant_used",
            "executed"
        ]
    );
    assert_eq!(
        records[1]["grant"],
        json!({ "uses": 2, "within_ms": 600_000 })
    );
    let granted = &records[3];
    assert_eq!(granted["request_id"], records[0]["request_id"]);
    assert_eq!(granted["uses"], 2);
    assert_eq!(granted["match"], json!({ "table": "users" }));
    assert_eq!(granted["reviewers"][0]["person"], "alice");
    assert_eq!(granted["expires_at"], "2027-01-15T08:10:00.000Z");
    for (record, use_number) in [(&records[5], 1), (&records[7], 2)] {
        assert_eq!(record["grant"], granted["request_id"]);
        assert_eq!(record["use"], use_number);
        assert_eq!(record["actor"]["id"], "export-agent");
        assert_ne!(record["request_id"], granted["request_id"]);
    }
    assert_eq!(records[7]["args"]["rows"], 30);
    let report = h.verified().unwrap();
    assert_eq!((report.grants, report.grant_uses), (1, 2));
}

#[tokio::test]
async fn a_grant_does_not_cover_another_table_another_actor_or_its_approver() {
    let h = harness();
    h.granted_users(3).await;
    let refused = [
        (export("data-export", "payments", 10), agent()),
        // The same agent acting for someone else.
        (
            export("data-export", "users", 10),
            Actor::new("export-agent").on_behalf_of("carol"),
        ),
        // Alice's own agent: she made the grant, and it is not hers.
        (
            export("data-export", "users", 10),
            Actor::new("alice-agent").on_behalf_of("alice"),
        ),
        // Another policy's call with the same arguments.
        (export("no-grants", "users", 10), agent()),
    ];
    for (call, actor) in refused {
        let held = h.covered(call, actor).await;
        assert!(held.is_err(), "held, not covered");
    }
    // The grant is untouched by them.
    let grants = h.gate.grants();
    assert_eq!((grants.len(), grants[0].used), (1, 0));
    assert!(!events(&h.sink).contains(&"grant_used".to_owned()));
}

#[tokio::test]
async fn a_grant_expires_with_its_time() {
    let h = harness();
    h.granted_users(3).await;
    h.clock.advance(Duration::from_secs(599));
    h.covered(export("data-export", "users", 11), agent())
        .await
        .expect("still within its ten minutes");
    h.clock.advance(Duration::from_secs(1));
    let held = h.covered(export("data-export", "users", 12), agent()).await;
    assert!(held.is_err(), "ten minutes on, the grant covers nothing");
    assert_eq!(h.verified().unwrap().grant_uses, 1);
}

#[tokio::test]
async fn a_quorum_policy_needs_the_quorum_for_the_grant_and_takes_the_narrowest_terms() {
    let h = harness();
    let votes = [
        // Alice grants, Bob only approves: approved, no grant.
        [("alice", Some(ten_minutes(3))), ("bob", None)],
        // Both grant: the fewer uses and the shorter time hold.
        [
            ("alice", Some(ten_minutes(3))),
            ("bob", Some(GrantTerms::new(1, Duration::from_secs(300)))),
        ],
    ];
    for (n, votes) in votes.into_iter().enumerate() {
        let task = h.spawn(export("two-keys", "users", 1), agent());
        let request = h.delivered(n + 1).await;
        for (who, terms) in votes {
            let mut ballot = Ballot::new(&request, format!("desk:{who}"), "desk", Vote::Approve);
            if let Some(terms) = terms {
                ballot = ballot.granting(terms);
            }
            let outcome = h.gate.cast(ballot).await.unwrap();
            assert!(
                matches!(outcome, BallotOutcome::Counted { .. }),
                "{who}: {outcome:?}"
            );
        }
        task.await.unwrap().unwrap();
        if n == 0 {
            assert!(
                h.gate.grants().is_empty(),
                "one of two approvers granted nothing"
            );
            assert!(!events(&h.sink).contains(&"granted".to_owned()));
        }
    }
    let grants = h.gate.grants();
    assert_eq!(grants.len(), 1);
    assert_eq!((grants[0].uses, grants[0].reviewers.len()), (1, 2));
    let granted = records(&h.sink)
        .into_iter()
        .find(|r| r["event"] == "granted")
        .unwrap();
    assert_eq!(granted["expires_at"], "2027-01-15T08:05:00.000Z");
}

#[tokio::test]
async fn a_grant_beyond_the_caps_or_where_none_is_allowed_is_refused_and_not_counted() {
    let h = harness();
    let cases = [
        ("data-export", GrantTerms::new(4, Duration::from_secs(60))),
        ("data-export", GrantTerms::new(1, Duration::from_secs(601))),
        ("data-export", GrantTerms::new(0, Duration::from_secs(60))),
        ("no-grants", GrantTerms::new(1, Duration::from_secs(60))),
    ];
    for (n, (policy, terms)) in cases.into_iter().enumerate() {
        let _task = h.spawn(export(policy, "users", 1), agent());
        let request = h.delivered(n + 1).await;
        let outcome = h
            .gate
            .cast(Ballot::new(&request, "desk:alice", "desk", Vote::Approve).granting(terms))
            .await
            .unwrap();
        assert_eq!(outcome, BallotOutcome::Rejected(RejectReason::GrantRefused));
        // Not counted: the request still waits for its approval.
        assert!(h.gate.status(&request.id).unwrap().votes.is_empty());
        let last = records(&h.sink).pop().unwrap();
        assert_eq!(
            (last["event"].as_str(), last["why"].as_str()),
            (Some("rejected_vote"), Some("grant_refused"))
        );
    }
    // A grant with a denial is refused too.
    let _task = h.spawn(export("data-export", "users", 2), agent());
    let request = h.delivered(5).await;
    let outcome = h
        .gate
        .cast(Ballot::new(&request, "desk:alice", "desk", Vote::Deny).granting(ten_minutes(1)))
        .await
        .unwrap();
    assert_eq!(outcome, BallotOutcome::Rejected(RejectReason::GrantRefused));
    assert!(h.gate.grants().is_empty());
}

#[tokio::test]
async fn a_revoked_grant_covers_nothing_and_only_a_reviewer_may_revoke_it() {
    let h = harness();
    h.granted_users(3).await;
    let id = h.gate.grants()[0].id.clone();
    // Carol is in no group of the policy.
    let refused = h
        .gate
        .revoke_grant(&id, "desk:carol", "cli")
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ApprovalError::RevokeRefused { grant_id, why: RejectReason::NotEligible } if *grant_id == id),
        "{refused:?}"
    );
    let unknown = h
        .gate
        .revoke_grant("nope", "desk:bob", "cli")
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, ApprovalError::UnknownGrant { .. }),
        "{unknown:?}"
    );
    h.covered(export("data-export", "users", 11), agent())
        .await
        .expect("still live after the refused revocations");

    let revoked = h.gate.revoke_grant(&id, "desk:bob", "cli").await.unwrap();
    assert!(revoked.revoked);
    assert_eq!(revoked.used, 1);
    let held = h.covered(export("data-export", "users", 12), agent()).await;
    assert!(held.is_err(), "a revoked grant covers nothing");
    let records = records(&h.sink);
    let record = records
        .iter()
        .find(|r| r["event"] == "grant_revoked")
        .unwrap();
    assert_eq!(record["request_id"], id);
    assert_eq!(record["reviewer"]["person"], "bob");
    assert_eq!(record["channel"], "cli");
    assert_eq!(h.verified().unwrap().grant_uses, 1);
}

/// Logs whose writer broke the rules (a use too many, a use repeated,
/// of another table, after the revocation, after the expiry): the
/// verifier names the record and why.
#[tokio::test]
async fn the_verifier_refuses_uses_their_grant_does_not_cover() {
    use approval_audit::{Event, PendingRecord, Requested};

    let revoked = |grant: &str| {
        Event::GrantRevoked {
            request_id: grant.to_owned(),
            reviewer: None,
            channel: "cli".into(),
            why: "test".into(),
        }
        .to_pending()
        .unwrap()
    };
    // (records to append, fault); `None` is a use of the table `users`.
    type Forged = Option<&'static str>;
    let cases: [(Vec<Forged>, bool, GrantFault); 5] = [
        (vec![Some("payments")], false, GrantFault::Mismatch),
        (vec![None, None], false, GrantFault::Exhausted),
        (vec![None], true, GrantFault::Revoked),
        (vec![None], false, GrantFault::Expired),
        (vec![None], false, GrantFault::Unknown),
    ];
    for (n, (uses, revoke_first, fault)) in cases.into_iter().enumerate() {
        let h = harness();
        if fault == GrantFault::Expired {
            // The record's time is the writer's (now): long after a grant
            // made at the gate's clock in 2020 lapsed.
            h.clock
                .set(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000));
        }
        h.granted_users(1).await;
        let granted = records(&h.sink)
            .into_iter()
            .find(|r| r["event"] == "granted")
            .unwrap();
        let grant = if fault == GrantFault::Unknown {
            "no-such-grant".to_owned()
        } else {
            granted["request_id"].as_str().unwrap().to_owned()
        };
        let digest =
            approval_audit::hex::decode32(granted["policy_digest"].as_str().unwrap()).unwrap();
        let actor = agent();
        let mut appended = Vec::new();
        if revoke_first {
            appended.push(revoked(&grant));
        }
        for (at, table) in uses.iter().enumerate() {
            let args = CanonicalJson::from_serialize(
                &json!({ "table": table.unwrap_or("users"), "rows": 1 }),
            )
            .unwrap();
            let asked = Requested {
                request_id: "forged",
                action: "crm::export",
                policy: "data-export",
                policy_digest: &digest,
                args: &args,
                skipped: &[],
                binding: &[0; 32],
                actor: &actor,
                resource: None,
                reason: None,
                deferred: false,
                rule: None,
            };
            appended.push(
                PendingRecord::grant_used(&asked, &grant, u32::try_from(at + 1).unwrap()).unwrap(),
            );
        }
        let before = records(&h.sink).len() as u64;
        let at = before + appended.len() as u64;
        h.sink.append(appended).await.unwrap();
        match h.verified() {
            Err(approval_audit::VerifyError::Grant(failure)) => {
                assert_eq!((failure.fault, failure.line), (fault, at), "case {n}");
            }
            other => panic!("case {n}: expected {fault:?} at line {at}, got {other:?}"),
        }
    }
}

/// A covered call whose body was running when the process ended: the
/// restart records it `executed` with outcome `unknown`, as it does an
/// approved call's, so no use is left without its ending.
#[tokio::test]
async fn a_restart_ends_a_covered_call_whose_body_did_not_finish() {
    let h = harness();
    h.granted_users(2).await;
    let call = export("data-export", "users", 11);
    let approval = with_actor(agent(), async { h.gate.approve(call).await })
        .await
        .unwrap();
    let use_id = approval.request().id.clone();
    // The process ends with the body running: nothing more is written.
    std::mem::forget(approval);
    assert_eq!(events(&h.sink).last().unwrap(), "grant_used");

    let file = PolicyFile::parse(EXPORTS, "exports.toml").unwrap();
    let restarted = Gate::builder(h.sink.clone())
        .approver("desk", Arc::new(Desk::default()))
        .policy_file(&file)
        .build()
        .unwrap();
    let recovery = restarted.recover().await.unwrap();
    assert_eq!(recovery.unknown, std::slice::from_ref(&use_id));
    let last = records(&h.sink).pop().unwrap();
    assert_eq!(
        (
            last["event"].as_str(),
            last["request_id"].as_str(),
            last["outcome"].as_str()
        ),
        (Some("executed"), Some(use_id.as_str()), Some("unknown"))
    );
    // The use stays checked against its grant.
    assert_eq!(h.verified().unwrap().grant_uses, 1);
}

/// The person a grant's calls are made for may give it up, though they
/// may not approve under its policy; through a route outside the policy's
/// routes, even a reviewer may not.
#[tokio::test]
async fn the_requester_may_give_a_grant_up_and_no_one_revokes_through_another_route() {
    let h = harness();
    h.granted_users(3).await;
    let id = h.gate.grants()[0].id.clone();
    let elsewhere = Ballots {
        gate: Arc::downgrade(&h.gate.inner),
        route: Some("pager".into()),
    };
    let refused = elsewhere
        .revoke_grant(&id, "desk:bob", "pager")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            ApprovalError::RevokeRefused {
                why: RejectReason::WrongRoute,
                ..
            }
        ),
        "{refused:?}"
    );
    let revoked = h.gate.revoke_grant(&id, "desk:dave", "cli").await.unwrap();
    assert!(revoked.revoked);
    let record = records(&h.sink).pop().unwrap();
    assert_eq!(
        (
            record["event"].as_str(),
            record["reviewer"]["person"].as_str()
        ),
        (Some("grant_revoked"), Some("dave"))
    );
}
