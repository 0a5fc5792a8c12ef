//! Why a record fails verification, in the words auditors' tools use.

use std::fmt;

/// Why a record fails verification: the reason words of AUDIT-FORMAT.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The line is not JSON, lacks a chain member, or has one of the wrong
    /// type (including `v` other than 1 and a line without its `\n`).
    Malformed,
    /// The line is JSON but not byte for byte its canonical form.
    NotCanonical,
    /// `seq` is not the previous `seq` + 1 (or 0 first).
    SeqGap,
    /// `prev` is not the previous record's `mac` (or zeros first).
    BrokenLink,
    /// `key_id` is not in the keyring.
    UnknownKey,
    /// `key_id` is not the key current at this `seq`.
    WrongKey,
    /// `mac` does not match.
    BadMac,
}

impl Reason {
    /// The reason word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotCanonical => "not_canonical",
            Self::SeqGap => "seq_gap",
            Self::BrokenLink => "broken_link",
            Self::UnknownKey => "unknown_key",
            Self::WrongKey => "wrong_key",
            Self::BadMac => "bad_mac",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
