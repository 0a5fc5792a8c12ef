//! Slack approver for `approval-core`. This first part holds what every
//! Slack exchange rests on: checking that a request came from Slack
//! ([`SigningSecret`]), showing agent text safely ([`mrkdwn`]), and the
//! approval message itself ([`message`]). The
//! approver itself (posting Block Kit messages, the interactivity endpoint,
//! Socket Mode) builds on them.

#![forbid(unsafe_code)]

pub mod api;
mod approver;
mod interaction;
pub mod interactivity;
pub mod message;
pub mod mrkdwn;
mod signature;
pub mod socket_mode;

pub use approver::{SlackApprover, SlackApproverBuilder, SlackChannel};
pub use signature::{MAX_SKEW, SignatureError, SigningSecret};
