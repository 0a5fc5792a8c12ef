//! Microsoft Teams approver for `approval-core`. This first part holds the
//! inbound authentication every bot request goes through ([`auth`]); the
//! card, the Bot Connector client and the messaging endpoint build on it.

#![forbid(unsafe_code)]

pub mod auth;
