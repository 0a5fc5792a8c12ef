//! One approver's notices, run in order on a task of the gate's, retried
//! with backoff: a slow or failing channel never holds up a call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Approver;
use super::approval::CatchUnwind;
use super::background::Background;
use super::notice::Notice;

/// How many notices may wait for one approver; past that, new ones are
/// dropped (and traced): the decisions themselves are in the audit log.
const CAPACITY: usize = 4096;

/// How a failed `notify` is retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    /// Tries in all, the first included.
    pub(crate) attempts: u32,
    /// The wait after the first failure; doubled after each next one.
    pub(crate) first_delay: Duration,
    /// The longest wait between two tries.
    pub(crate) max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

enum Item {
    Notice(Notice),
    /// Answered once every notice posted before it was handled.
    Drain(oneshot::Sender<()>),
}

/// Where the gate posts one approver's notices.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    route: Arc<str>,
    queue: mpsc::Sender<Item>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Notice(n) => write!(f, "Notice({})", n.kind()),
            Self::Drain(_) => f.write_str("Drain"),
        }
    }
}

impl Outbox {
    /// Starts `approver`'s outbox task (named after `route` in traces).
    pub(crate) fn start(
        background: &Background,
        route: &str,
        approver: Arc<dyn Approver>,
        retry: Retry,
    ) -> Self {
        let (queue, items) = mpsc::channel(CAPACITY);
        let route: Arc<str> = route.into();
        background.spawn(run(route.clone(), approver, items, retry));
        Self { route, queue }
    }

    /// Queues `notice`; never waits.
    pub(crate) fn post(&self, notice: Notice) {
        let kind = notice.kind();
        match self.queue.try_send(Item::Notice(notice)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Item::Notice(notice))) => {
                tracing::error!(
                    route = %self.route,
                    notice = kind,
                    request_id = notice.request_id(),
                    "approver outbox full ({CAPACITY} waiting); notice dropped"
                );
            }
            Err(e) => {
                tracing::error!(route = %self.route, notice = kind, "approver outbox closed; notice dropped: {e}");
            }
        }
    }

    /// Waits until every notice posted so far was handled (delivered or
    /// given up on).
    pub(crate) async fn drain(&self) {
        let (done, handled) = oneshot::channel();
        if self.queue.send(Item::Drain(done)).await.is_err() || handled.await.is_err() {
            tracing::warn!(route = %self.route, "approver outbox ended before draining");
        }
    }
}

/// The outbox task: each notice in turn, until the gate is gone.
async fn run(
    route: Arc<str>,
    approver: Arc<dyn Approver>,
    mut items: mpsc::Receiver<Item>,
    retry: Retry,
) {
    while let Some(item) = items.recv().await {
        match item {
            Item::Notice(notice) => deliver(&route, &*approver, &notice, retry).await,
            Item::Drain(done) => {
                if done.send(()).is_err() {
                    tracing::debug!(route = %route, "nobody waits for the drain any more");
                }
            }
        }
    }
}

async fn deliver(route: &str, approver: &dyn Approver, notice: &Notice, retry: Retry) {
    let mut delay = retry.first_delay;
    for attempt in 1..=retry.attempts.max(1) {
        let request_id = notice.request_id();
        match CatchUnwind(Box::pin(approver.notify(notice))).await {
            Ok(Ok(())) => {
                tracing::trace!(
                    route,
                    notice = notice.kind(),
                    request_id,
                    "notice delivered"
                );
                return;
            }
            Ok(Err(error)) if attempt < retry.attempts => {
                tracing::warn!(
                    route,
                    notice = notice.kind(),
                    request_id,
                    attempt,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    %error,
                    "approver notice failed; retrying"
                );
            }
            Ok(Err(error)) => {
                tracing::error!(
                    route,
                    notice = notice.kind(),
                    request_id,
                    attempts = attempt,
                    %error,
                    "approver notice failed; giving up"
                );
                return;
            }
            // The panic hook has reported it; a panicking hook is a bug to
            // fix, not a failure to retry.
            Err(_panic) => {
                tracing::error!(
                    route,
                    notice = notice.kind(),
                    request_id,
                    "approver notify panicked"
                );
                return;
            }
        }
        tokio::time::sleep(delay).await;
        delay = delay.saturating_mul(2).min(retry.max_delay);
    }
}
