//! The review board for people, for teams whose reviewers decide in a
//! browser or their own tools: [`ApiApprover`] puts requests on a board
//! (the [board](ApiApprover)), reviewers read and vote on it through the
//! [decision API](api::router), each with a bearer token
//! ([`ReviewerTokens`]), or in the browser console the same router serves.
//! The JSON documents a request and a decision are shown as
//! ([`RequestDocument`], [`DecisionDocument`]) are also what the signed
//! webhook approver (crate `approval-webhook`) sends.

#![forbid(unsafe_code)]

pub mod api;
mod board;
mod chain_status;
mod console;
mod document;
mod session;
mod tokens;
mod vote;

pub use board::ApiApprover;
pub use document::{
    ActorFacts, AgentText, DecisionDocument, EarlierDocument, GateFacts, PolicyFacts,
    RequestDocument,
};
pub use tokens::{ReviewerTokens, TokenError};
pub use vote::VoteWord;
