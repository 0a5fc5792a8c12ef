//! The request ledger against a real PostgreSQL (a throwaway cluster per
//! test), with one `Ledger` per simulated process, each on connections of
//! its own: one settlement per request however many try at once, leases
//! that lapse, a restart that closes only its own requests, votes
//! forwarded across processes and announced by `NOTIFY`, and a database
//! restarted mid-run.

use std::sync::Arc;
use std::time::Duration;

use approval_core::Clock;
use approval_postgres::ledger::{Ending, Ledger, LedgerError, Settlement};

mod cluster;

use cluster::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

async fn ledger(cluster: &Cluster, process: &str) -> Arc<Ledger> {
    Arc::new(Ledger::connect(&cluster.database(), process).await.unwrap())
}

/// Waits (at most 10 s) for the next forwarded vote.
async fn next<T>(votes: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), votes.recv())
        .await
        .expect("a vote within 10 s")
        .expect("still listening")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_deciders_settle_a_request_exactly_once() {
    let cluster = Cluster::start();
    let (a, b) = (
        ledger(&cluster, "host-a").await,
        ledger(&cluster, "host-b").await,
    );
    for round in 0..40 {
        let id = format!("req-{round}");
        a.open(&id, "p", &[7; 32], MINUTE).await.unwrap();
        // Two replicas' deciding votes, and a cancellation, at once.
        let (x, y, z) = tokio::join!(
            a.settle(&id, Ending::Approved, None),
            b.settle(&id, Ending::Denied, Some("no")),
            b.settle(&id, Ending::Cancelled, Some("caller gone")),
        );
        let outcomes = [x.unwrap(), y.unwrap(), z.unwrap()];
        let winners = outcomes
            .iter()
            .filter(|o| **o == Settlement::Settled)
            .count();
        assert_eq!(winners, 1, "round {round}: {outcomes:?}");
        // The losers are told how it ended, and by whom.
        for outcome in &outcomes {
            if let Settlement::Already { by, .. } = outcome {
                assert!(by == "host-a" || by == "host-b");
            }
        }
    }
    // A settled request never changes again, even by hand.
    let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let refused = client
        .execute(
            "UPDATE approval_requests SET state = 'approved' WHERE id = 'req-0'",
            &[],
        )
        .await
        .unwrap_err();
    let message = refused.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("already"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_is_cancelled_by_another_process_and_never_approved_later() {
    let cluster = Cluster::start();
    let (a, b) = (
        ledger(&cluster, "host-a").await,
        ledger(&cluster, "host-b").await,
    );
    a.open("renewed", "p", &[2; 32], MINUTE).await.unwrap();
    a.open("dies", "p", &[4; 32], MINUTE).await.unwrap();
    b.open("other", "p", &[3; 32], MINUTE).await.unwrap();
    // Within the lease, nothing lapses.
    assert!(b.cancel_lapsed().await.unwrap().is_empty());
    // Only the owner renews.
    let ids = ["renewed".to_owned(), "dies".to_owned()];
    assert_eq!(b.renew(&ids, MINUTE).await.unwrap(), 0);
    assert_eq!(a.renew(&ids, MINUTE).await.unwrap(), 2);
    // host-a's last renewal of "dies" leaves no time (then it died).
    assert_eq!(
        a.renew(&["dies".to_owned()], Duration::ZERO).await.unwrap(),
        1
    );
    let mut cancelled = Vec::new();
    for _ in 0..100 {
        cancelled = b.cancel_lapsed().await.unwrap();
        if !cancelled.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cancelled, ["dies"]);
    // A late approval (host-a's, had it survived) changes nothing.
    match a.settle("dies", Ending::Approved, None).await.unwrap() {
        Settlement::Already { ending, by } => {
            assert_eq!((ending, by.as_str()), (Ending::Cancelled, "host-b"));
        }
        other => panic!("expected the cancellation to stand, got {other:?}"),
    }
    // The renewed one and host-b's own are untouched.
    assert_eq!(
        b.settle("other", Ending::Approved, None).await.unwrap(),
        Settlement::Settled
    );
    assert_eq!(
        a.settle("renewed", Ending::Approved, None).await.unwrap(),
        Settlement::Settled
    );
    // Asking again (an answer lost with a connection) is the same answer;
    // another ending is not.
    assert_eq!(
        a.settle("renewed", Ending::Approved, None).await.unwrap(),
        Settlement::Settled
    );
    assert!(matches!(
        a.settle("renewed", Ending::Cancelled, None).await.unwrap(),
        Settlement::Already {
            ending: Ending::Approved,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_closes_its_own_open_requests_and_no_one_elses() {
    let cluster = Cluster::start();
    let (a, b) = (
        ledger(&cluster, "host-a").await,
        ledger(&cluster, "host-b").await,
    );
    a.open("a-1", "p", &[1; 32], MINUTE).await.unwrap();
    a.open("a-2", "p", &[2; 32], MINUTE).await.unwrap();
    a.settle("a-2", Ending::Approved, None).await.unwrap();
    b.open("b-1", "p", &[3; 32], MINUTE).await.unwrap();
    // A second live process under host-a's name is refused.
    match Ledger::connect(&cluster.database(), "host-a").await {
        Err(LedgerError::NameTaken(name)) => assert_eq!(name, "host-a"),
        other => panic!("expected the name to be taken, got {other:?}"),
    }
    drop(a);
    // host-a starts again, under its name.
    let again = ledger(&cluster, "host-a").await;
    assert_eq!(again.cancel_own().await.unwrap(), ["a-1"]);
    assert_eq!(
        b.settle("b-1", Ending::Approved, None).await.unwrap(),
        Settlement::Settled
    );
    match again.settle("a-1", Ending::Approved, None).await.unwrap() {
        Settlement::Already { ending, .. } => assert_eq!(ending, Ending::Cancelled),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_request_is_kept_at_restart_and_expires_not_cancels_when_due() {
    let cluster = Cluster::start();
    let a = ledger(&cluster, "host-a").await;
    let now = approval_core::SystemClock.now();
    a.open_deferred("due", "p", &[1; 32], now - Duration::from_secs(1))
        .await
        .unwrap();
    a.open_deferred("later", "p", &[2; 32], now + MINUTE)
        .await
        .unwrap();
    a.open("blocking", "p", &[3; 32], MINUTE).await.unwrap();
    // Past its deadline: expired by whichever process sweeps, not cancelled.
    let b = ledger(&cluster, "host-b").await;
    assert_eq!(b.cancel_lapsed().await.unwrap(), ["due"]);
    match a.settle("due", Ending::Approved, None).await.unwrap() {
        Settlement::Already { ending, by } => {
            assert_eq!((ending, by.as_str()), (Ending::Expired, "host-b"));
        }
        other => panic!("{other:?}"),
    }
    // A restart keeps what it reopened and cancels the rest.
    drop(a);
    let again = ledger(&cluster, "host-a").await;
    assert_eq!(
        again.recover(&["later".to_owned()]).await.unwrap(),
        ["blocking"]
    );
    assert_eq!(
        again.settle("later", Ending::Approved, None).await.unwrap(),
        Settlement::Settled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_taken_by_another_replica_wakes_the_waiting_process() {
    let cluster = Cluster::start();
    let (owner, replica) = (
        ledger(&cluster, "host-a").await,
        ledger(&cluster, "replica-b").await,
    );
    owner.open("req-1", "p", &[1; 32], MINUTE).await.unwrap();
    // A vote forwarded before the owner listens is not lost.
    let (early, to) = replica.forward("req-1", "ballot-early").await.unwrap();
    assert_eq!(to, "host-a");
    let mut votes = owner.listen().await.unwrap();
    let first = next(&mut votes).await;
    assert_eq!((first.id, first.ballot.as_str()), (early, "ballot-early"));
    assert_eq!(first.received_by, "replica-b");
    owner.answer(first.id, "counted").await.unwrap();
    // Answered once: a second answer changes nothing.
    owner.answer(first.id, "rejected").await.unwrap();
    assert_eq!(
        replica.answer_of(first.id).await.unwrap(),
        (Some("counted".to_owned()), true)
    );
    // Then each forwarded vote arrives as it is announced.
    let (later, _) = replica.forward("req-1", "ballot-later").await.unwrap();
    let second = next(&mut votes).await;
    assert_eq!((second.id, second.request_id.as_str()), (later, "req-1"));
    // Votes for another process's requests are not this one's.
    let other = ledger(&cluster, "host-c").await;
    other.open("req-c", "p", &[2; 32], MINUTE).await.unwrap();
    replica.forward("req-c", "for-c").await.unwrap();
    let (third_id, _) = replica.forward("req-1", "ballot-third").await.unwrap();
    assert_eq!(next(&mut votes).await.id, third_id);
    // Taken once: listening again (a lost connection) does not hand out
    // the votes already taken, only those that were not.
    drop(votes);
    let (untaken, _) = replica.forward("req-1", "ballot-fourth").await.unwrap();
    let mut again = owner.listen().await.unwrap();
    assert_eq!(next(&mut again).await.id, untaken);
    // A vote taken and not answered yet may still be; one left untaken
    // when its request ended never will be.
    assert_eq!(replica.answer_of(third_id).await.unwrap(), (None, true));
    drop(again);
    let (left, _) = replica.forward("req-1", "ballot-left").await.unwrap();
    // An ended or unknown request takes no votes.
    owner.settle("req-1", Ending::Approved, None).await.unwrap();
    assert_eq!(replica.answer_of(left).await.unwrap(), (None, false));
    match replica.forward("req-1", "late").await {
        Err(LedgerError::Ended { ending, .. }) => assert_eq!(ending, Ending::Approved),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        replica.forward("nope", "x").await,
        Err(LedgerError::UnknownRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_fails_calls_closed_then_they_work_again() {
    let cluster = Cluster::start();
    let a = ledger(&cluster, "host-a").await;
    a.open("before", "p", &[1; 32], MINUTE).await.unwrap();
    cluster.stop("immediate");
    match a.settle("before", Ending::Approved, None).await {
        Err(LedgerError::Store { .. }) => {}
        other => panic!("expected a store error, got {other:?}"),
    }
    cluster.restart();
    let mut settled = None;
    for _ in 0..200 {
        match a.settle("before", Ending::Approved, None).await {
            Ok(s) => {
                settled = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    // The open request survived the restart, and settles once.
    assert_eq!(settled, Some(Settlement::Settled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_given_up_on_does_not_keep_the_process_name() {
    let cluster = Cluster::start();
    let a = ledger(&cluster, "host-a").await;
    a.open("held", "p", &[1; 32], MINUTE).await.unwrap();
    // Someone holds the request's row: host-a's settle waits, and is given
    // up on after its bound, while the server still runs that session (and
    // with it the lock on host-a's name).
    let (mut holder, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let held = holder.transaction().await.unwrap();
    held.execute(
        "SELECT 1 FROM approval_requests WHERE id = 'held' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    match a.settle("held", Ending::Approved, None).await {
        Err(LedgerError::TimedOut(what)) => assert_eq!(what, "settle the request"),
        other => panic!("expected the settle to time out, got {other:?}"),
    }
    // The next call connects again and takes the name back from the
    // abandoned session (ending it) instead of finding it taken.
    a.open("next", "p", &[2; 32], MINUTE).await.unwrap();
    held.rollback().await.unwrap();
    // The abandoned settle never happened: the request is still open, and
    // settles now.
    assert_eq!(
        a.settle("held", Ending::Approved, None).await.unwrap(),
        Settlement::Settled
    );
    // Another process's session is never ended to take a name.
    match Ledger::connect(&cluster.database(), "host-a").await {
        Err(LedgerError::NameTaken(name)) => assert_eq!(name, "host-a"),
        other => panic!("expected the name to be taken, got {other:?}"),
    }
    a.open("still-mine", "p", &[3; 32], MINUTE).await.unwrap();
}
