//! The gate's one timer: each open request expires at its deadline, and
//! `expired` is recorded then, whether or not anyone waits for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::table::Pending;
use super::{GateInner, lock};
use crate::gate::request::Decision;

/// A request's place in the timer.
pub(crate) type Key = (Instant, u64);

/// Open requests by deadline.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    queue: Mutex<Queue>,
    seq: AtomicU64,
    /// Woken when an earlier deadline comes in, or the gate is dropped.
    wake: Notify,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct Queue {
    by_deadline: BTreeMap<Key, Weak<Pending>>,
    /// When the timer task wakes next; `None` while it waits for work.
    /// A new deadline wakes it only when it is earlier than this, so a
    /// stream of requests with the same timeout costs no wake-ups.
    wakes_at: Option<Instant>,
}

/// How long to wait before trying again to record an expiry the sink
/// refused.
const RETRY: Duration = Duration::from_secs(1);

impl Deadlines {
    /// Schedules `pending` to expire at `at`.
    pub(crate) fn add(&self, at: Instant, pending: &Arc<Pending>) -> Key {
        let key = (at, self.seq.fetch_add(1, Ordering::Relaxed));
        let mut queue = lock(&self.queue);
        let earliest = queue.wakes_at.is_none_or(|wakes_at| at < wakes_at);
        if earliest {
            queue.wakes_at = Some(at);
        }
        queue.by_deadline.insert(key, Arc::downgrade(pending));
        drop(queue);
        if earliest {
            self.wake.notify_one();
        }
        key
    }

    /// Takes a settled request off the timer.
    pub(crate) fn remove(&self, key: Key) {
        // The timer may wake for nothing then: cheaper than waking it now.
        lock(&self.queue).by_deadline.remove(&key);
    }

    /// Stops the timer task (the gate is being dropped).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The requests due by `now`, taken off the timer.
    fn due(&self, now: Instant) -> Vec<Arc<Pending>> {
        let mut queue = lock(&self.queue);
        let mut due = Vec::new();
        while let Some(entry) = queue.by_deadline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            if let Some(pending) = entry.remove().upgrade() {
                due.push(pending);
            }
        }
        due
    }

    /// The next deadline, which the timer task then sleeps until.
    fn next(&self) -> Option<Instant> {
        let mut queue = lock(&self.queue);
        let next = queue.by_deadline.first_key_value().map(|(key, _)| key.0);
        queue.wakes_at = next;
        next
    }
}

/// The timer task: sleeps until the next deadline, expires what is due.
pub(crate) async fn run(gate: Weak<GateInner>, deadlines: Arc<Deadlines>) {
    loop {
        if deadlines.closed.load(Ordering::Acquire) {
            return;
        }
        let woken = deadlines.wake.notified();
        match deadlines.next() {
            Some(at) if at <= Instant::now() => {}
            Some(at) => {
                tokio::select! {
                    () = woken => continue,
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => {
                woken.await;
                continue;
            }
        }
        let Some(gate) = gate.upgrade() else {
            return;
        };
        for pending in deadlines.due(Instant::now()) {
            let expiring = gate.clone();
            let deadlines = deadlines.clone();
            // Each on its own: one slow write does not hold up the others.
            gate.background.spawn(async move {
                let gate = expiring;
                if let Err(error) = gate.finish(&pending, Decision::Expired).await {
                    tracing::error!(
                        request_id = %pending.request.id,
                        %error,
                        "could not record the expiry; trying again"
                    );
                    let key = deadlines.add(Instant::now() + RETRY, &pending);
                    pending.set_deadline_key(key);
                }
            });
        }
    }
}
