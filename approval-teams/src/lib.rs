//! Microsoft Teams approver for `approval-core`. This first part holds the
//! inbound authentication every bot request goes through ([`auth`], with
//! the signing keys from [`keys`]); the
//! card, the Bot Connector client and the messaging endpoint build on it.

#![forbid(unsafe_code)]

pub mod auth;
pub mod connector;
pub mod keys;
