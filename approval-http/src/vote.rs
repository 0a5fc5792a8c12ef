//! The two words a vote is, as the decision API reads and writes them.

use serde::{Deserialize, Serialize};

/// `approve` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VoteWord {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}
