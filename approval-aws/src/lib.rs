//! AWS for `approval-core`: [`StsBroker`] gives each approved call's body
//! an STS session of a role, with an inline session policy built from the
//! approved arguments by a [`SessionTemplate`], and revokes it when the
//! body ends (see `docs/credentials.md`).
//!
//! Requests are signed by the AWS SDK (STS) and `aws-sigv4` (the three
//! IAM calls revocation makes), over rustls with ring.

#![forbid(unsafe_code)]

mod broker;
mod iam;
mod template;

pub use aws_credential_types::Credentials;
pub use broker::{Endpoints, SESSION_PREFIX, StsBroker};
pub use template::SessionTemplate;
