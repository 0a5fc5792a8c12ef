//! HTTP channels for `approval-core`, for teams whose approval system is
//! their own (a ticket tool, an internal portal, a workflow engine).
//!
//! [`HttpApprover`] POSTs each request, signed, to a receiver you run; the
//! receiver answers with a vote at once, or answers `202 Accepted` and
//! later POSTs votes to [`callback::router`]. Both directions are signed
//! the same way ([`WebhookSecret`]), each with its own secret.
//!
//! [`ApiApprover`] puts requests on a board that reviewers read and vote
//! on through the [decision API](api::router), each with a bearer token
//! ([`ReviewerTokens`]).

#![forbid(unsafe_code)]

pub mod api;
mod board;
pub mod callback;
mod chain_status;
mod console;
mod document;
mod session;
mod signature;
mod tokens;
mod vote;
mod webhook;

pub use board::ApiApprover;
pub use document::{
    ActorFacts, AgentText, DecisionDocument, EarlierDocument, GateFacts, PolicyFacts,
    RequestDocument,
};
pub use signature::{MAX_SKEW, SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER, WebhookSecret};
pub use tokens::{ReviewerTokens, TokenError};
pub use vote::{VoteMessage, VoteWord};
pub use webhook::{HttpApprover, HttpApproverBuilder, MAX_ANSWER_BYTES};
