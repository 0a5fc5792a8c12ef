//! After a restart: close the requests the log shows still open.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use serde::Deserialize;

use super::{Approver, Gate, Notice};
use crate::error::ApprovalError;
use crate::record::{Event, Outcome};

/// What [`Gate::recover`] found and closed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Requests that had no outcome, now `cancelled`.
    pub cancelled: Vec<String>,
    /// Approved requests whose body was not known to finish, now
    /// `executed` with outcome `unknown`.
    pub unknown: Vec<String>,
}

/// The members recovery reads from each record.
#[derive(Deserialize)]
struct Line {
    event: String,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Default)]
struct State {
    settled: bool,
    approved: bool,
    executed: bool,
}

impl Gate {
    /// Closes what a previous run of this program left open, as the log
    /// shows it: every request with no outcome is recorded `cancelled` (its
    /// waiter is gone, so it can never be approved), and every approved
    /// request with no `executed` gets `executed` with outcome `unknown`.
    /// Late votes for them are refused as `settled`.
    ///
    /// Call it at start-up, before any gated call. It refuses to run on a
    /// log other processes may be writing ([`AuditSink::sole_writer`]):
    /// there, an open request may have a live waiter elsewhere.
    ///
    /// It reads only the end of the log ([`AuditSink::read_recent`]): the
    /// records written within the longest policy timeout, plus the
    /// [recovery margin](super::GateBuilder::recovery_margin), before the
    /// last one. A request still open when the process ended was asked for
    /// within its timeout of that last record (the gate records `expired`
    /// when the timeout passes), and so was its approval. A body still
    /// running longer than the margin after its approval when the process
    /// ended is not found; its `approved` record without `executed` says
    /// the same to an auditor.
    ///
    /// [`AuditSink::sole_writer`]: crate::AuditSink::sole_writer
    /// [`AuditSink::read_recent`]: crate::AuditSink::read_recent
    pub async fn recover(&self) -> Result<Recovery, ApprovalError> {
        let sink = &self.inner.sink;
        if !sink.sole_writer() {
            return Err(ApprovalError::Recovery(
                "the log may have other writers; their requests may still be waited on".into(),
            ));
        }
        let window = self
            .inner
            .policies
            .values()
            .map(|entry| entry.policy.timeout())
            .max()
            .unwrap_or_default()
            .saturating_add(self.inner.recovery_margin);
        let reader = sink.read_recent(window)?;
        // Requests still open or approved-but-not-run; settled ones leave.
        let mut open: HashMap<String, State> = HashMap::new();
        for line in BufReader::new(reader).lines() {
            let line = line.map_err(|e| ApprovalError::Recovery(e.to_string()))?;
            let record: Line = serde_json::from_str(&line)
                .map_err(|e| ApprovalError::Recovery(format!("unreadable record: {e}")))?;
            let Some(id) = record.request_id else {
                continue;
            };
            // Only `requested` opens a request (a late vote for one that
            // settled earlier must not reopen it), or an approval whose
            // request came before the window read.
            match record.event.as_str() {
                "requested" => {
                    open.insert(id, State::default());
                    continue;
                }
                "approved" => {
                    open.entry(id.clone()).or_default();
                }
                _ => {}
            }
            let Some(state) = open.get_mut(&id) else {
                continue;
            };
            match record.event.as_str() {
                "approved" => {
                    state.settled = true;
                    state.approved = true;
                }
                "denied" | "expired" | "cancelled" => state.settled = true,
                "executed" => state.executed = true,
                _ => {}
            }
            if state.settled && (!state.approved || state.executed) {
                open.remove(&id);
            }
        }
        let mut recovery = Recovery::default();
        let mut ids: Vec<_> = open.into_iter().collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, state) in ids {
            if state.approved {
                sink.append_event(Event::Executed {
                    request_id: id.clone(),
                    outcome: Outcome::Unknown,
                    error: None,
                })
                .await?;
                recovery.unknown.push(id.clone());
            } else if !state.settled {
                sink.append_event(Event::Cancelled {
                    request_id: id.clone(),
                    why: "the process waiting for it ended; closed at restart".into(),
                })
                .await?;
                recovery.cancelled.push(id.clone());
            } else {
                continue;
            }
            self.inner.table.closed_at_restart(&id);
        }
        // The shared store closes the previous run's requests too, so no
        // other process counts a vote on them.
        if let Some(coordinator) = &self.inner.coordinator {
            coordinator
                .recovered()
                .await
                .map_err(ApprovalError::Coordination)?;
        }
        // Each approver once, though several routes may name it.
        let recovery = Arc::new(recovery);
        let mut told: Vec<&Arc<dyn Approver>> = Vec::new();
        let mut routes: Vec<_> = self.inner.approvers.iter().collect();
        routes.sort_by(|a, b| a.0.cmp(b.0));
        for (route, approver) in routes {
            if told.iter().any(|t| Arc::ptr_eq(t, approver)) {
                continue;
            }
            told.push(approver);
            if let Some(outbox) = self.inner.outboxes.get(route) {
                outbox.post(Notice::Recovered(recovery.clone()));
            }
        }
        tracing::info!(
            cancelled = recovery.cancelled.len(),
            unknown = recovery.unknown.len(),
            "recovered the previous run's open requests"
        );
        Ok(Recovery::clone(&recovery))
    }
}
