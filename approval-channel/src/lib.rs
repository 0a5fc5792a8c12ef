//! What the message channels (Slack, Teams) share. A channel posts one
//! message per request and keeps it true; everything but the wire format
//! is done once here, by [`MessageApprover`] over a [`MessageChannel`]:
//! which message shows which request (kept across restarts by a
//! [`MessageStore`]), what it shows (from the gate's own view of the
//! request), its update on every notice (retried by the gate's outbox,
//! each failure traced), and the take-down of messages a restart left.
//! Every channel words earlier decisions on the same arguments alike
//! ([`earlier_outcome`]), and what is left of a grant ([`grant_left`]).

#![forbid(unsafe_code)]

mod approver;
mod earlier;
mod grant;
mod store;

pub use approver::{ENDED_KEPT, MessageApprover, MessageChannel, MessageView};
pub use earlier::earlier_outcome;
pub use grant::grant_left;
pub use store::{MessageStore, StoredMessage};
