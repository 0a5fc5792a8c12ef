//! Per-actor limits: how many requests one actor may have open at once.

use std::sync::Arc;

use super::{GateInner, NO_ACTOR, lock};
use crate::error::ApprovalError;
use crate::record::Actor;

/// A place in an actor's quota of open requests, given back on drop.
#[derive(Debug)]
pub(crate) struct ActorSlot {
    gate: Arc<GateInner>,
    actor: Option<Arc<str>>,
}

impl ActorSlot {
    pub(crate) fn take(
        gate: &Arc<GateInner>,
        actor: Option<&Actor>,
        limit: Option<u32>,
    ) -> Result<Self, ApprovalError> {
        let id = actor.map_or(NO_ACTOR, |a| a.id.as_str());
        let mut counts = lock(&gate.per_actor);
        // The key is shared by the actor's open requests: allocated once.
        let id = match counts.get_key_value(id) {
            Some((key, _)) => key.clone(),
            None => Arc::from(id),
        };
        let count = counts.get(&id).copied().unwrap_or(0);
        if let Some(limit) = limit
            && count >= limit
        {
            return Err(ApprovalError::TooManyPending {
                actor: id.to_string(),
                limit,
            });
        }
        counts.insert(id.clone(), count + 1);
        Ok(Self {
            gate: gate.clone(),
            actor: Some(id),
        })
    }
}

impl Drop for ActorSlot {
    fn drop(&mut self) {
        if let Some(id) = self.actor.take() {
            let mut counts = lock(&self.gate.per_actor);
            if let Some(count) = counts.get_mut(&id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&id);
                }
            }
        }
    }
}
