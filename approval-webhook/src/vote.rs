//! A vote as a receiver sends it, in a synchronous answer or to the
//! callback endpoint.

use approval_core::{Ballot, Vote};
use serde::{Deserialize, Serialize};

use approval_core::hex::decode32;
use approval_http::VoteWord;

/// A vote's JSON: `{"request_id": "…", "binding": "<64 hex>", "reviewer":
/// "alice", "vote": "approve" | "deny", "comment": "…"}` (`comment`
/// optional). The reviewer is named by the receiver and recorded as
/// `webhook:<reviewer>`, the identity the gate's directory maps to a
/// person.
///
/// ```
/// use approval_webhook::VoteMessage;
///
/// let vote: VoteMessage = serde_json::from_str(r#"{"request_id":"req_01",
///     "binding":"8d6a2c4f55e4a4d0a1f0b1d9e0e7c1c2b3a4958677d6e5f4c3b2a19081726354",
///     "reviewer":"alice","vote":"deny","comment":"not during the freeze"}"#).unwrap();
/// assert_eq!(vote.reviewer, "alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VoteMessage {
    /// The request voted on.
    pub request_id: String,
    /// The request's binding, as its document gave it.
    pub binding: String,
    /// Who votes, as the receiver names them.
    pub reviewer: String,
    /// `approve` or `deny`.
    pub vote: VoteWord,
    /// Why, for the agent and the log.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The channel name votes through the webhook carry.
pub(crate) const CHANNEL: &str = "webhook";

impl VoteMessage {
    /// Reads a vote from JSON bytes; `None` if they are not one (or the
    /// binding is not 64 lowercase hex digits, or the reviewer is empty).
    pub(crate) fn parse(bytes: &[u8]) -> Option<(Self, [u8; 32])> {
        let vote: Self = serde_json::from_slice(bytes).ok()?;
        let binding = decode32(&vote.binding)?;
        (!vote.reviewer.is_empty()).then_some((vote, binding))
    }

    /// The ballot the gate checks.
    pub(crate) fn ballot(self, binding: [u8; 32]) -> Ballot {
        let vote = match self.vote {
            VoteWord::Approve => Vote::Approve,
            VoteWord::Deny => Vote::Deny,
        };
        let mut ballot = Ballot::from_parts(
            self.request_id,
            binding,
            format!("{CHANNEL}:{}", self.reviewer),
            CHANNEL,
            vote,
        );
        ballot.comment = self.comment;
        ballot
    }
}
