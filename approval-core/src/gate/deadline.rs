//! The gate's one timer: each open request expires at its deadline, and
//! `expired` is recorded then, whether or not anyone waits for it.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::lock;

/// A request's place in the timer.
pub(crate) type Key = (Instant, u64);

/// Open requests (`T`, held weakly) by deadline.
#[derive(Debug)]
pub(crate) struct Deadlines<T> {
    queue: Mutex<Queue<T>>,
    seq: AtomicU64,
    /// Woken when an earlier deadline comes in, or the gate is dropped.
    wake: Notify,
    closed: AtomicBool,
    /// Whether the timer task lives: while it does, waiters leave their
    /// deadline to it and keep no timer of their own.
    running: AtomicBool,
}

#[derive(Debug)]
struct Queue<T> {
    by_deadline: BTreeMap<Key, Weak<T>>,
    /// When the timer task wakes next; `None` while it waits for work.
    /// A new deadline wakes it only when it is earlier than this, so a
    /// stream of requests with the same timeout costs no wake-ups.
    wakes_at: Option<Instant>,
}

impl<T> Default for Deadlines<T> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Queue {
                by_deadline: BTreeMap::new(),
                wakes_at: None,
            }),
            seq: AtomicU64::new(0),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            running: AtomicBool::new(true),
        }
    }
}

impl<T> Deadlines<T> {
    /// Schedules `pending` to expire at `at`.
    pub(crate) fn add(&self, at: Instant, pending: &Arc<T>) -> Key {
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

    /// Whether the timer task still runs (it may have gone with its
    /// runtime).
    pub(crate) fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Says the timer task has ended.
    pub(crate) fn stopped(&self) {
        self.running.store(false, Ordering::Release);
    }

    /// Stops the timer task (the gate is being dropped).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The requests due by `now`, taken off the timer.
    fn due(&self, now: Instant) -> Vec<Arc<T>> {
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

/// The timer task: sleeps until the next deadline and hands each request
/// due to `expire`, until it breaks or the timer is closed.
pub(crate) async fn run<T>(
    deadlines: Arc<Deadlines<T>>,
    mut expire: impl FnMut(Arc<T>) -> ControlFlow<()>,
) {
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
        for due in deadlines.due(Instant::now()) {
            if expire(due).is_break() {
                return;
            }
        }
    }
}
