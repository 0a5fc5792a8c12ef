//! Votes and answers as they travel between processes through the
//! database, each sealed with the cluster's [`ForwardingKey`]: whoever can
//! write the `approval_votes` table, but does not hold the key, cannot cast
//! a vote or fake an answer.

use std::fmt;
use std::io;
use std::path::Path;

use approval_core::hex::{decode32, encode};
use approval_core::{Ballot, BallotOutcome, CoordinatorError, Forwarded, RejectReason, Vote};
use ring::hmac;
use serde::{Deserialize, Serialize};

/// What a sealed ballot's MAC covers, before the ballot's text.
const BALLOT_LABEL: &[u8] = b"approval-postgres/v1/ballot\n";
/// What a sealed answer's MAC covers, before the vote's id and the text.
const ANSWER_LABEL: &[u8] = b"approval-postgres/v1/answer\n";

/// The key every process of one deployment shares to seal the votes it
/// forwards and the answers it gives (HMAC-SHA256): without it, a row
/// written straight into the database is refused, not cast. Like a
/// channel's secret, whoever holds it can vote as any reviewer: keep it
/// with the writer secrets, not in the database.
///
/// The key file is 64 lowercase hex digits and an optional final newline
/// (the form of a writer secret; `openssl rand -hex 32` makes one).
///
/// ```
/// use approval_postgres::ForwardingKey;
///
/// let key = ForwardingKey::from_hex(&"5a".repeat(32)).unwrap();
/// assert_eq!(format!("{key:?}"), "ForwardingKey([REDACTED])");
/// assert!(ForwardingKey::from_hex("5a5a").is_none());
/// ```
pub struct ForwardingKey(hmac::Key);

impl ForwardingKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Parses key-file text: 64 lowercase hex digits and an optional final
    /// newline.
    pub fn from_hex(text: &str) -> Option<Self> {
        let digits = text.strip_suffix('\n').unwrap_or(text);
        decode32(digits).map(|bytes| Self::from_bytes(&bytes))
    }

    /// Reads a key file (see [`from_hex`](Self::from_hex)); a malformed one
    /// is [`io::ErrorKind::InvalidData`], without its contents.
    pub fn read_file(path: impl AsRef<Path>) -> io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::from_hex(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a forwarding key file holds 64 lowercase hex digits",
            )
        })
    }

    /// `text`, sealed: its MAC (over `label`, `context` and `text`) in hex,
    /// a space, then `text`.
    fn seal(&self, label: &[u8], context: &[u8], text: &str) -> String {
        let mut mac = hmac::Context::with_key(&self.0);
        mac.update(label);
        mac.update(context);
        mac.update(text.as_bytes());
        format!("{} {text}", encode(mac.sign().as_ref()))
    }

    /// The text of `sealed` if its MAC holds (checked in constant time).
    fn open<'a>(&self, label: &[u8], context: &[u8], sealed: &'a str) -> Option<&'a str> {
        let (mac, text) = sealed.split_once(' ')?;
        let mac = decode32(mac)?;
        let mut message = Vec::with_capacity(label.len() + context.len() + text.len());
        message.extend_from_slice(label);
        message.extend_from_slice(context);
        message.extend_from_slice(text.as_bytes());
        hmac::verify(&self.0, &message, &mac).ok()?;
        Some(text)
    }
}

impl fmt::Debug for ForwardingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForwardingKey([REDACTED])")
    }
}

/// A ballot as it travels between processes.
#[derive(Serialize, Deserialize)]
struct WireBallot {
    request_id: String,
    binding: String,
    identity: String,
    channel: String,
    vote: String,
    comment: Option<String>,
    display: Option<String>,
    /// The route it came through in the forwarding process: the waiting
    /// process checks it against the request's routes. (Absent in ballots
    /// of 0.1 processes.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route: Option<String>,
}

/// The waiting process's answer, as it travels back.
#[derive(Serialize, Deserialize)]
struct WireAnswer {
    /// `counted`, `absorbed`, `rejected` or `error`.
    outcome: String,
    /// Whether the vote settled the request (`counted`).
    #[serde(default)]
    settled: bool,
    /// The reason (`rejected`) or the failure (`error`).
    #[serde(default)]
    why: Option<String>,
}

/// `ballot`, sealed for the database. (A sealed ballot copied into a new
/// row casts the same vote again, which the gate absorbs: it is bound to
/// its request and binding, and counts once per reviewer.)
pub(crate) fn seal_ballot(key: &ForwardingKey, ballot: &Ballot) -> String {
    let text = serde_json::to_string(&WireBallot {
        request_id: ballot.request_id.clone(),
        binding: encode(&ballot.binding),
        identity: ballot.identity.clone(),
        channel: ballot.channel.clone(),
        vote: ballot.vote.as_str().to_owned(),
        comment: ballot.comment.clone(),
        display: ballot.display.clone(),
        route: ballot.route().map(str::to_owned),
    })
    .unwrap_or_default();
    key.seal(BALLOT_LABEL, b"", &text)
}

/// Why a forwarded ballot is not cast.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unopened {
    /// Its MAC does not hold: not written by a process with the key.
    Forged,
    /// Sealed, but not a ballot this build reads.
    Unreadable,
}

/// The ballot in a sealed row, if its seal holds and it reads as one
/// for `request_id` (the row's).
pub(crate) fn open_ballot(
    key: &ForwardingKey,
    request_id: &str,
    sealed: &str,
) -> Result<Ballot, Unopened> {
    let text = key
        .open(BALLOT_LABEL, b"", sealed)
        .ok_or(Unopened::Forged)?;
    let wire: WireBallot = serde_json::from_str(text).map_err(|_| Unopened::Unreadable)?;
    let vote = match wire.vote.as_str() {
        "approve" => Vote::Approve,
        "deny" => Vote::Deny,
        _ => return Err(Unopened::Unreadable),
    };
    if wire.request_id != request_id {
        return Err(Unopened::Unreadable);
    }
    let binding = decode32(&wire.binding).ok_or(Unopened::Unreadable)?;
    let mut ballot =
        Ballot::from_parts(wire.request_id, binding, wire.identity, wire.channel, vote);
    ballot.comment = wire.comment;
    ballot.display = wire.display;
    Ok(match wire.route {
        Some(route) => ballot.through_route(route),
        None => ballot,
    })
}

/// The waiting process's answer to vote `vote_id`, sealed.
pub(crate) fn seal_answer(
    key: &ForwardingKey,
    vote_id: i64,
    outcome: &Result<BallotOutcome, String>,
) -> String {
    let answer = match outcome {
        Ok(BallotOutcome::Counted { decision }) => WireAnswer {
            outcome: "counted".into(),
            settled: decision.is_some(),
            why: None,
        },
        Ok(BallotOutcome::Rejected(reason)) => WireAnswer {
            outcome: "rejected".into(),
            settled: false,
            why: Some(reason.as_str().into()),
        },
        Ok(_) => WireAnswer {
            outcome: "absorbed".into(),
            settled: false,
            why: None,
        },
        Err(e) => WireAnswer {
            outcome: "error".into(),
            settled: false,
            why: Some(e.clone()),
        },
    };
    let text = serde_json::to_string(&answer).unwrap_or_default();
    key.seal(ANSWER_LABEL, &vote_id.to_be_bytes(), &text)
}

/// The outcome in a sealed answer to vote `vote_id`, as the replica that
/// took the vote reports it.
pub(crate) fn open_answer(
    key: &ForwardingKey,
    vote_id: i64,
    sealed: &str,
) -> Result<Forwarded, CoordinatorError> {
    let refused = |cause: String| CoordinatorError {
        what: "count the vote in the waiting process",
        cause,
    };
    let text = key
        .open(ANSWER_LABEL, &vote_id.to_be_bytes(), sealed)
        .ok_or_else(|| refused("the answer's seal does not hold".into()))?;
    let answer: WireAnswer =
        serde_json::from_str(text).map_err(|e| refused(format!("unreadable answer: {e}")))?;
    match answer.outcome.as_str() {
        // The replica learns that it settled, not how: it does not wait.
        "counted" => Ok(Forwarded::Answered(BallotOutcome::Counted {
            decision: None,
        })),
        "absorbed" => Ok(Forwarded::Answered(BallotOutcome::Absorbed)),
        "rejected" => answer
            .why
            .as_deref()
            .and_then(RejectReason::parse)
            .map(|why| Forwarded::Answered(BallotOutcome::Rejected(why)))
            .ok_or_else(|| refused("a refusal without a reason".into())),
        _ => Err(refused(answer.why.unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ForwardingKey {
        ForwardingKey::from_bytes(&[byte; 32])
    }

    fn ballot() -> Ballot {
        let mut ballot = Ballot::from_parts("req-1", [9; 32], "slack:UALICE", "slack", Vote::Deny)
            .through_route("slack-ops");
        ballot.comment = Some("not today".into());
        ballot
    }

    #[test]
    fn a_sealed_ballot_opens_with_the_same_key_only() {
        let sealed = seal_ballot(&key(1), &ballot());
        let opened = open_ballot(&key(1), "req-1", &sealed).unwrap();
        assert_eq!(opened.identity, "slack:UALICE");
        assert_eq!(opened.vote, Vote::Deny);
        assert_eq!(opened.binding, [9; 32]);
        assert_eq!(opened.comment.as_deref(), Some("not today"));
        assert_eq!(opened.route(), Some("slack-ops"), "the route travels");
        assert_eq!(
            open_ballot(&key(2), "req-1", &sealed).unwrap_err(),
            Unopened::Forged
        );
    }

    #[test]
    fn a_changed_ballot_or_a_moved_one_is_refused() {
        let sealed = seal_ballot(&key(1), &ballot());
        let approving = sealed.replace("\"deny\"", "\"approve\"");
        assert_ne!(approving, sealed);
        assert_eq!(
            open_ballot(&key(1), "req-1", &approving).unwrap_err(),
            Unopened::Forged
        );
        // Unsealed text, as someone writing the table would put it.
        let (_, text) = sealed.split_once(' ').unwrap();
        assert_eq!(
            open_ballot(&key(1), "req-1", text).unwrap_err(),
            Unopened::Forged
        );
        // Sealed for one request, found in another's row.
        assert_eq!(
            open_ballot(&key(1), "req-2", &sealed).unwrap_err(),
            Unopened::Unreadable
        );
    }

    #[test]
    fn an_answer_is_bound_to_its_vote() {
        let counted = Ok(BallotOutcome::Counted { decision: None });
        let sealed = seal_answer(&key(1), 41, &counted);
        assert!(matches!(
            open_answer(&key(1), 41, &sealed),
            Ok(Forwarded::Answered(BallotOutcome::Counted { .. }))
        ));
        // Copied onto another vote, or written without the key.
        let moved = open_answer(&key(1), 42, &sealed).unwrap_err();
        assert_eq!(moved.cause, "the answer's seal does not hold");
        assert!(open_answer(&key(2), 41, &sealed).is_err());
        // A refusal travels with its reason; an error with its words.
        let rejected = seal_answer(
            &key(1),
            7,
            &Ok(BallotOutcome::Rejected(RejectReason::SelfApproval)),
        );
        assert!(matches!(
            open_answer(&key(1), 7, &rejected),
            Ok(Forwarded::Answered(BallotOutcome::Rejected(
                RejectReason::SelfApproval
            )))
        ));
        let failed = seal_answer(&key(1), 8, &Err("audit sink failed".into()));
        assert_eq!(
            open_answer(&key(1), 8, &failed).unwrap_err().cause,
            "audit sink failed"
        );
    }
}
