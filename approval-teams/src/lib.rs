//! Microsoft Teams approver for `approval-core`: one Adaptive Card per
//! request, posted by a bot through the Bot Connector ([`connector`]), and
//! the bot's messaging endpoint ([`endpoint`]), where every request's token
//! is checked ([`auth`], with keys from [`keys`]) before a click becomes a
//! vote.

#![forbid(unsafe_code)]

mod approver;
pub mod auth;
pub mod card;
pub mod connector;
pub mod endpoint;
pub mod keys;
pub mod markdown;

pub use approver::{PostedCard, Target, TeamsApprover, TeamsApproverBuilder, TeamsChannel};
