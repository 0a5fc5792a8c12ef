//! Per-actor limits: how many requests one actor may have open at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{GateInner, NO_ACTOR, lock};
use crate::error::ApprovalError;
use approval_audit::Actor;

/// Open requests per actor id.
pub(crate) type Counts = Arc<Mutex<HashMap<Arc<str>, u32>>>;

/// A place in an actor's quota of open requests, given back on drop. It
/// holds the counts, not the gate: an open request on the gate's table
/// holds its slot, and must not keep the gate alive.
#[derive(Debug)]
pub(crate) struct ActorSlot {
    counts: Counts,
    actor: Option<Arc<str>>,
}

impl ActorSlot {
    pub(crate) fn take(
        gate: &Arc<GateInner>,
        actor: Option<&Actor>,
        limit: u32,
    ) -> Result<Self, ApprovalError> {
        let id = actor.map_or(NO_ACTOR, |a| a.id.as_str());
        let mut counts = lock(&gate.per_actor);
        // The key is shared by the actor's open requests: allocated once.
        let id = match counts.get_key_value(id) {
            Some((key, _)) => key.clone(),
            None => Arc::from(id),
        };
        let count = counts.get(&id).copied().unwrap_or(0);
        if count >= limit {
            return Err(ApprovalError::TooManyPending {
                actor: id.to_string(),
                limit,
            });
        }
        counts.insert(id.clone(), count + 1);
        Ok(Self {
            counts: gate.per_actor.clone(),
            actor: Some(id),
        })
    }
}

impl Drop for ActorSlot {
    fn drop(&mut self) {
        if let Some(id) = self.actor.take() {
            let mut counts = lock(&self.counts);
            if let Some(count) = counts.get_mut(&id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&id);
                }
            }
        }
    }
}
