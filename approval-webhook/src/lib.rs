//! A webhook approver for `approval-core`, for teams whose approval system
//! is their own (a ticket tool, an internal portal, a workflow engine).
//!
//! [`HttpApprover`] POSTs each request, signed, to a receiver you run; the
//! receiver answers with a vote at once, or answers `202 Accepted` and
//! later POSTs votes to [`callback::router`]. Both directions are signed
//! the same way ([`WebhookSecret`]), each with its own secret. The request
//! is sent as `approval_http`'s [`RequestDocument`](approval_http::RequestDocument).

#![forbid(unsafe_code)]

pub mod callback;
mod signature;
mod vote;
mod webhook;

pub use signature::{MAX_SKEW, SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER, WebhookSecret};
pub use vote::VoteMessage;
pub use webhook::{HttpApprover, HttpApproverBuilder, MAX_ANSWER_BYTES};
