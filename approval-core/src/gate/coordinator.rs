//! Several gate processes and endpoint replicas on one shared store: who
//! waits on which request, which process's decision stands, and how a vote
//! taken by a replica reaches the process that waits.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::approver::Ballots;
use super::request::{ApprovalRequest, Ballot, BallotOutcome, Decision};
use approval_audit::RejectReason;

use crate::error::CoordinatorError;

/// What the shared store said of a decision this process reached.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settlement {
    /// This process settled the request: its decision stands.
    Settled,
    /// The request had already ended elsewhere (`why`: how, and by whom),
    /// for instance cancelled by another process after this one's lease
    /// lapsed: this process's decision does not stand, and the call is
    /// cancelled.
    Already {
        /// How it ended, in words.
        why: String,
    },
}

/// What became of a vote handed to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Forwarded {
    /// The process that waits on the request checked the vote and
    /// recorded it on its chain; this is its answer.
    Answered(BallotOutcome),
    /// No process waits on the request: the store does not know it
    /// ([`UnknownRequest`](RejectReason::UnknownRequest)) or it has ended
    /// ([`Settled`](RejectReason::Settled)). This process records the
    /// refusal on its own chain.
    NotWaiting(RejectReason),
}

/// Lets gates in several processes share requests and votes (a database
/// the processes share implements it; `approval-postgres` has one). A
/// gate with a coordinator:
///
/// - tells it of each request before any route sees it
///   ([`opened`](Self::opened)): the store records which process waits and
///   leases it to that process;
/// - asks it before any decision stands ([`settle`](Self::settle)): only
///   the first decision the store accepts stands, so two processes can
///   never settle one request differently;
/// - hands it votes for requests this process does not wait on
///   ([`forward`](Self::forward)): the store takes them to the process that
///   does, which checks and records them, and the answer comes back;
/// - gives it its ballots ([`attach`](Self::attach)), where the votes
///   forwarded to this process are to be cast
///   ([`Ballots::cast_forwarded`]).
///
/// Without one, a gate decides alone, as a single process does.
#[async_trait]
pub trait Coordinator: Send + Sync + fmt::Debug {
    /// The gate's ballots, for votes forwarded to this process; called once
    /// when the gate is built.
    fn attach(&self, ballots: Ballots);

    /// This process holds `request` from now on. A `deferred` one has no
    /// caller waiting: it stays open across this process's restarts until
    /// its [`expires_at`](ApprovalRequest::expires_at); votes for it reach
    /// the process's next run once that run reopened it.
    async fn opened(
        &self,
        request: &ApprovalRequest,
        deferred: bool,
    ) -> Result<(), CoordinatorError>;

    /// A request this process opened with a caller waiting became
    /// deferred (its policy queues when unattended): it must now outlive
    /// this run until its deadline, as one opened deferred does. The
    /// default refuses, so a coordinator that cannot do it fails closed
    /// (the request is cancelled, never left half-shared).
    async fn deferred(&self, request: &ApprovalRequest) -> Result<(), CoordinatorError> {
        Err(CoordinatorError {
            what: "defer an open request",
            cause: format!("this coordinator cannot (request {})", request.id),
        })
    }

    /// This process reached `decision` on `request`: does it stand?
    async fn settle(
        &self,
        request: &ApprovalRequest,
        decision: &Decision,
    ) -> Result<Settlement, CoordinatorError>;

    /// A vote for a request this process does not wait on: take it to the
    /// process that does, and return that process's answer, or say that
    /// none waits.
    async fn forward(&self, ballot: &Ballot) -> Result<Forwarded, CoordinatorError>;

    /// After a restart: the previous run's deferred requests this process
    /// `reopened` are held by this run now (votes for them come to its
    /// ballots from here on); close every other request the
    /// previous run held (nobody waits on them any more) and return their
    /// ids.
    async fn recovered(
        &self,
        reopened: &[Arc<ApprovalRequest>],
    ) -> Result<Vec<String>, CoordinatorError>;
}

impl fmt::Display for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Settled => f.write_str("settled here"),
            Self::Already { why } => write!(f, "already ended: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::{
        ApprovalError, Call, CanonicalJson, ChainWriter, Directory, Gate, KeyId, MemorySink,
        MockApprover, Policy, Vote, WriterSecret,
    };

    /// A store shared by the gates of one test, standing in for a
    /// database: who waits on each request, how each ended.
    #[derive(Debug, Default)]
    struct Store {
        owners: HashMap<String, String>,
        ended: HashMap<String, String>,
        ballots: HashMap<String, Ballots>,
        down: bool,
    }

    #[derive(Debug)]
    struct Shared {
        process: String,
        store: Arc<Mutex<Store>>,
    }

    fn down() -> CoordinatorError {
        CoordinatorError {
            what: "reach the store",
            cause: "down".into(),
        }
    }

    #[async_trait]
    impl Coordinator for Shared {
        fn attach(&self, ballots: Ballots) {
            let mut store = self.store.lock().unwrap();
            store.ballots.insert(self.process.clone(), ballots);
        }

        async fn opened(
            &self,
            request: &ApprovalRequest,
            _deferred: bool,
        ) -> Result<(), CoordinatorError> {
            let mut store = self.store.lock().unwrap();
            if store.down {
                return Err(down());
            }
            store
                .owners
                .insert(request.id.clone(), self.process.clone());
            Ok(())
        }

        async fn settle(
            &self,
            request: &ApprovalRequest,
            decision: &Decision,
        ) -> Result<Settlement, CoordinatorError> {
            let mut store = self.store.lock().unwrap();
            if store.down {
                return Err(down());
            }
            if let Some(ended) = store.ended.get(&request.id) {
                return Ok(Settlement::Already { why: ended.clone() });
            }
            let word = match decision {
                Decision::Approved { .. } => "approved",
                Decision::Denied { .. } => "denied",
                Decision::Expired => "expired",
                Decision::Cancelled { .. } => "cancelled",
            };
            store
                .ended
                .insert(request.id.clone(), format!("{word} by {}", self.process));
            Ok(Settlement::Settled)
        }

        async fn forward(&self, ballot: &Ballot) -> Result<Forwarded, CoordinatorError> {
            let ballots = {
                let store = self.store.lock().unwrap();
                if store.ended.contains_key(&ballot.request_id) {
                    return Ok(Forwarded::NotWaiting(RejectReason::Settled));
                }
                let Some(owner) = store.owners.get(&ballot.request_id) else {
                    return Ok(Forwarded::NotWaiting(RejectReason::UnknownRequest));
                };
                store.ballots.get(owner).cloned().ok_or_else(down)?
            };
            ballots
                .cast_forwarded(ballot.clone())
                .await
                .map(Forwarded::Answered)
                .map_err(|e| CoordinatorError {
                    what: "cast",
                    cause: e.to_string(),
                })
        }

        async fn recovered(
            &self,
            _reopened: &[Arc<ApprovalRequest>],
        ) -> Result<Vec<String>, CoordinatorError> {
            Ok(Vec::new())
        }
    }

    /// A gate of process `process` on `store`.
    fn gate(
        process: &str,
        store: &Arc<Mutex<Store>>,
    ) -> (Gate, Arc<MemorySink>, Arc<MockApprover>) {
        let secret = WriterSecret::from_hex(&"11".repeat(32)).unwrap();
        let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
            KeyId::new("k").unwrap(),
            &secret,
        ))));
        let mock = Arc::new(MockApprover::silent("ci"));
        let gate = Gate::builder(sink.clone())
            .approver("mock", mock.clone())
            .policy(Policy::new("export", ["mock"], Duration::from_secs(60)).approvers(["alice"]))
            .directory(Directory::new().person("alice", ["slack:UALICE"]))
            .coordinator(Arc::new(Shared {
                process: process.into(),
                store: store.clone(),
            }))
            .build()
            .unwrap();
        (gate, sink, mock)
    }

    fn call() -> Call {
        let args = CanonicalJson::from_serialize(&json!({"table": "users"})).unwrap();
        Call::new("crm::export", "export", args)
    }

    async fn waiting(
        gate: &Gate,
        mock: &MockApprover,
    ) -> (
        tokio::task::JoinHandle<Result<String, ApprovalError>>,
        Arc<ApprovalRequest>,
    ) {
        let gate = gate.clone();
        let task =
            tokio::spawn(async move { gate.approve(call()).await.map(|a| a.request().id.clone()) });
        while mock.requests().is_empty() {
            tokio::task::yield_now().await;
        }
        (task, mock.requests()[0].clone())
    }

    #[tokio::test]
    async fn a_coordinator_that_cannot_defer_cancels_a_request_its_policy_would_queue() {
        let store = Arc::new(Mutex::new(Store::default()));
        let secret = WriterSecret::from_hex(&"11".repeat(32)).unwrap();
        let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
            KeyId::new("k").unwrap(),
            &secret,
        ))));
        // Saturday noon; the desk attends on weekdays: the policy queues.
        let saturday = std::time::UNIX_EPOCH + Duration::from_secs(2 * 86_400 + 12 * 3600);
        let weekdays = crate::AttendedHours::new(
            ["mon", "tue", "wed", "thu", "fri"],
            "09:00",
            "18:00",
            "+00:00",
        )
        .unwrap();
        let gate = Gate::builder(sink.clone())
            .approver("mock", Arc::new(MockApprover::silent("ci")))
            .policy(
                Policy::new("export", ["mock"], Duration::from_secs(60))
                    .approvers(["alice"])
                    .attended(weekdays)
                    .when_unreachable(crate::Unreachable::Queue),
            )
            .directory(Directory::new().person("alice", ["slack:UALICE"]))
            .clock(Arc::new(crate::ManualClock::new(saturday)))
            .coordinator(Arc::new(Shared {
                process: "a".into(),
                store,
            }))
            .build()
            .unwrap();
        // This coordinator keeps the trait's default: it cannot defer.
        let refused = gate.submit(call()).await.err().unwrap();
        assert!(
            matches!(&refused, ApprovalError::Coordination(e) if e.what == "defer an open request"),
            "{refused:?}"
        );
        let log = String::from_utf8(sink.bytes()).unwrap();
        let events: Vec<&str> = log
            .lines()
            .map(|l| {
                l.split("\"event\":\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(events, ["requested", "cancelled"]);
        assert!(
            log.contains("could not be queued with the other processes"),
            "{log}"
        );
    }

    #[tokio::test]
    async fn a_vote_taken_by_another_process_reaches_the_one_that_waits() {
        let store = Arc::default();
        let (a, a_sink, a_mock) = gate("a", &store);
        let (b, b_sink, _) = gate("b", &store);
        let (waiter, request) = waiting(&a, &a_mock).await;
        // Cast on b, as its endpoint would: b does not wait on it.
        let ballot = Ballot::new(&request, "slack:UALICE", "slack", Vote::Approve);
        let outcome = b.cast(ballot).await.unwrap();
        assert!(matches!(
            outcome,
            BallotOutcome::Counted { decision: Some(_) }
        ));
        assert_eq!(waiter.await.unwrap().unwrap(), request.id);
        // Recorded by the process that waited, on its own chain.
        let a_log = String::from_utf8(a_sink.bytes()).unwrap();
        assert!(a_log.contains("\"event\":\"reviewed\""));
        assert!(a_log.contains("\"event\":\"approved\""));
        assert!(b_sink.bytes().is_empty());
    }

    #[tokio::test]
    async fn a_vote_no_process_waits_for_is_refused_and_recorded_where_it_was_cast() {
        let store = Arc::default();
        let (a, _, a_mock) = gate("a", &store);
        let (b, b_sink, _) = gate("b", &store);
        let (waiter, request) = waiting(&a, &a_mock).await;
        let approve = Ballot::new(&request, "slack:UALICE", "slack", Vote::Approve);
        b.cast(approve.clone()).await.unwrap();
        waiter.await.unwrap().unwrap();
        // Ended: b refuses a late vote, on its own chain.
        let outcome = b.cast(approve).await.unwrap();
        assert_eq!(outcome, BallotOutcome::Rejected(RejectReason::Settled));
        let mut unknown = Ballot::new(&request, "slack:UALICE", "slack", Vote::Deny);
        unknown.request_id = "made-up".into();
        let outcome = b.cast(unknown).await.unwrap();
        assert_eq!(
            outcome,
            BallotOutcome::Rejected(RejectReason::UnknownRequest)
        );
        let b_log = String::from_utf8(b_sink.bytes()).unwrap();
        let rejected: Vec<&str> = b_log
            .lines()
            .filter(|l| l.contains("\"event\":\"rejected_vote\""))
            .collect();
        assert_eq!(rejected.len(), 2, "{b_log}");
        assert!(
            rejected[0].contains("\"why\":\"settled\""),
            "{}",
            rejected[0]
        );
        assert!(
            rejected[1].contains("\"why\":\"unknown_request\""),
            "{}",
            rejected[1]
        );
    }

    #[tokio::test]
    async fn a_request_that_ended_elsewhere_is_cancelled_not_approved() {
        let store: Arc<Mutex<Store>> = Arc::default();
        let (a, a_sink, a_mock) = gate("a", &store);
        let (waiter, request) = waiting(&a, &a_mock).await;
        // Another process cancelled it (its lease lapsed, say).
        store
            .lock()
            .unwrap()
            .ended
            .insert(request.id.clone(), "cancelled by b".into());
        let ballot = Ballot::new(&request, "slack:UALICE", "slack", Vote::Approve);
        a.cast(ballot).await.unwrap();
        match waiter.await.unwrap() {
            Err(ApprovalError::Cancelled { why }) => {
                assert_eq!(why, "ended elsewhere: cancelled by b");
            }
            other => panic!("expected a cancellation, got {other:?}"),
        }
        let log = String::from_utf8(a_sink.bytes()).unwrap();
        assert!(!log.contains("\"event\":\"approved\""), "{log}");
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_ends_the_request_for_every_process() {
        let store: Arc<Mutex<Store>> = Arc::default();
        let (a, _, a_mock) = gate("a", &store);
        let (waiter, request) = waiting(&a, &a_mock).await;
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        let mut ended = None;
        for _ in 0..1000 {
            ended = store.lock().unwrap().ended.get(&request.id).cloned();
            if ended.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(ended.as_deref(), Some("cancelled by a"));
    }

    #[tokio::test]
    async fn an_unreachable_store_fails_closed() {
        let store: Arc<Mutex<Store>> = Arc::default();
        let (a, a_sink, a_mock) = gate("a", &store);
        let (waiter, request) = waiting(&a, &a_mock).await;
        store.lock().unwrap().down = true;
        // The approval cannot be confirmed: the vote fails, the call waits.
        let ballot = Ballot::new(&request, "slack:UALICE", "slack", Vote::Approve);
        match a.cast(ballot.clone()).await {
            Err(ApprovalError::Coordination(e)) => assert_eq!(e.what, "reach the store"),
            other => panic!("expected a coordination error, got {other:?}"),
        }
        assert!(!waiter.is_finished());
        // Neither the vote nor an approval was recorded.
        let log = String::from_utf8(a_sink.bytes()).unwrap();
        assert!(!log.contains("\"event\":\"reviewed\""), "{log}");
        assert!(!log.contains("\"event\":\"approved\""), "{log}");
        // Back: the same vote now counts.
        store.lock().unwrap().down = false;
        a.cast(ballot).await.unwrap();
        waiter.await.unwrap().unwrap();
        // A new request while the store is down does not start.
        store.lock().unwrap().down = true;
        match a.approve(call()).await {
            Err(ApprovalError::Coordination(_)) => {}
            other => panic!("expected a coordination error, got {other:?}"),
        }
    }
}
