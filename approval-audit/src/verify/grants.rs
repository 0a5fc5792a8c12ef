//! What a verifier checks beyond the chain: each use of a grant against
//! its grant (count, time, what it covers), and that nothing uses a grant
//! after its revocation. Only `granted`, `grant_used` and `grant_revoked`
//! records are read for it, on the worker threads; the ledger itself runs
//! in log order.

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Why a grant record does not hold up against the records before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrantFault {
    /// A grant record lacks a member it must have, or has one of the
    /// wrong type (`grant_malformed`).
    Malformed,
    /// A second `granted` record for the same request (`grant_duplicate`).
    Duplicate,
    /// A use or revocation names no earlier `granted` record
    /// (`grant_unknown`).
    Unknown,
    /// A use after the grant's revocation (`grant_revoked`).
    Revoked,
    /// A use at or after the grant's `expires_at` (`grant_expired`).
    Expired,
    /// A use numbered beyond the grant's `uses`, or not above the use
    /// before it (`grant_exhausted`).
    Exhausted,
    /// A use of another action, policy, policy digest, rule or actor than
    /// its grant's, or whose pinned arguments differ (`grant_mismatch`).
    Mismatch,
}

impl GrantFault {
    /// The word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "grant_malformed",
            Self::Duplicate => "grant_duplicate",
            Self::Unknown => "grant_unknown",
            Self::Revoked => "grant_revoked",
            Self::Expired => "grant_expired",
            Self::Exhausted => "grant_exhausted",
            Self::Mismatch => "grant_mismatch",
        }
    }
}

impl fmt::Display for GrantFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::Malformed => "a grant record lacks a member or has one of the wrong type",
            Self::Duplicate => "a second grant for the same request",
            Self::Unknown => "it names no earlier grant",
            Self::Revoked => "the grant it uses was revoked before",
            Self::Expired => "the grant it uses had expired",
            Self::Exhausted => "the grant it uses had no use left",
            Self::Mismatch => "the call is not one its grant covers",
        };
        write!(f, "{} ({what})", self.as_str())
    }
}

/// What a covered call must share with its grant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Covered {
    action: String,
    policy: String,
    policy_digest: String,
    #[serde(default)]
    rule: Option<u64>,
    actor: ActorIds,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct ActorIds {
    id: String,
    #[serde(default)]
    on_behalf_of: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GrantedLine {
    request_id: String,
    #[serde(flatten)]
    covered: Covered,
    uses: u64,
    expires_at: String,
    #[serde(rename = "match")]
    pinned: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct UsedLine {
    ts: String,
    grant: String,
    #[serde(rename = "use")]
    use_number: u64,
    #[serde(flatten)]
    covered: Covered,
    args: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RevokedLine {
    request_id: String,
}

/// A grant record, read.
#[derive(Debug)]
pub(crate) enum GrantFact {
    Granted {
        id: String,
        covered: Covered,
        uses: u64,
        expires_at: SystemTime,
        pinned: Map<String, Value>,
    },
    Used {
        at: SystemTime,
        grant: String,
        use_number: u64,
        covered: Covered,
        args: Map<String, Value>,
    },
    Revoked {
        grant: String,
    },
    Malformed,
}

impl GrantFact {
    /// Reads `line` if its `event` is a grant's; `None` for other events.
    pub(crate) fn read(event: &str, line: &[u8]) -> Option<Box<Self>> {
        let ts = |text: &str| crate::clock::parse_ts(text.as_bytes());
        let fact = match event {
            "granted" => serde_json::from_slice::<GrantedLine>(line)
                .ok()
                .and_then(|g| {
                    Some(Self::Granted {
                        expires_at: ts(&g.expires_at)?,
                        id: g.request_id,
                        covered: g.covered,
                        uses: g.uses,
                        pinned: g.pinned,
                    })
                }),
            "grant_used" => serde_json::from_slice::<UsedLine>(line).ok().and_then(|u| {
                Some(Self::Used {
                    at: ts(&u.ts)?,
                    grant: u.grant,
                    use_number: u.use_number,
                    covered: u.covered,
                    args: u.args,
                })
            }),
            "grant_revoked" => {
                serde_json::from_slice::<RevokedLine>(line)
                    .ok()
                    .map(|r| Self::Revoked {
                        grant: r.request_id,
                    })
            }
            _ => return None,
        };
        Some(Box::new(fact.unwrap_or(Self::Malformed)))
    }
}

struct Grant {
    /// Its place among the grants, in log order.
    order: usize,
    covered: Covered,
    uses: u64,
    expires_at: SystemTime,
    pinned: Map<String, Value>,
    last_use: u64,
    revoked: bool,
}

/// A grant as a log has it, once read to the end: what it covers and
/// what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrantSummary {
    /// The id of the request whose approval made it.
    pub id: String,
    /// The action it covers.
    pub action: String,
    /// The policy it was made under.
    pub policy: String,
    /// The actor whose calls it covers.
    pub actor_id: String,
    /// The person that actor acts for, if recorded.
    pub on_behalf_of: Option<String>,
    /// How many more calls it covers in all.
    pub uses: u64,
    /// The number of its last use (0 for none).
    pub last_use: u64,
    /// When it stops covering any call.
    pub expires_at: SystemTime,
    /// Whether a `grant_revoked` record ended it.
    pub revoked: bool,
}

/// Every grant seen so far, in log order.
#[derive(Default)]
pub(crate) struct Ledger {
    grants: HashMap<String, Grant>,
    /// How many `grant_used` records held up.
    pub(crate) uses: u64,
}

impl Ledger {
    /// How many grants were made.
    pub(crate) fn granted(&self) -> u64 {
        self.grants.len() as u64
    }

    /// The grants, in the order they were made.
    pub(crate) fn into_summaries(self) -> Vec<GrantSummary> {
        let mut grants: Vec<(String, Grant)> = self.grants.into_iter().collect();
        grants.sort_unstable_by_key(|(_, g)| g.order);
        grants
            .into_iter()
            .map(|(id, g)| GrantSummary {
                id,
                action: g.covered.action,
                policy: g.covered.policy,
                actor_id: g.covered.actor.id,
                on_behalf_of: g.covered.actor.on_behalf_of,
                uses: g.uses,
                last_use: g.last_use,
                expires_at: g.expires_at,
                revoked: g.revoked,
            })
            .collect()
    }

    /// Takes the next grant record into account.
    pub(crate) fn apply(&mut self, fact: &GrantFact) -> Result<(), GrantFault> {
        match fact {
            GrantFact::Malformed => Err(GrantFault::Malformed),
            GrantFact::Granted {
                id,
                covered,
                uses,
                expires_at,
                pinned,
            } => {
                if self.grants.contains_key(id) {
                    return Err(GrantFault::Duplicate);
                }
                let order = self.grants.len();
                self.grants.insert(
                    id.clone(),
                    Grant {
                        order,
                        covered: covered.clone(),
                        uses: *uses,
                        expires_at: *expires_at,
                        pinned: pinned.clone(),
                        last_use: 0,
                        revoked: false,
                    },
                );
                Ok(())
            }
            GrantFact::Revoked { grant } => {
                let grant = self.grants.get_mut(grant).ok_or(GrantFault::Unknown)?;
                grant.revoked = true;
                Ok(())
            }
            GrantFact::Used {
                at,
                grant,
                use_number,
                covered,
                args,
            } => {
                let grant = self.grants.get_mut(grant).ok_or(GrantFault::Unknown)?;
                if grant.revoked {
                    return Err(GrantFault::Revoked);
                }
                if *at >= grant.expires_at {
                    return Err(GrantFault::Expired);
                }
                // Numbers rise: a use whose record could not be confirmed
                // is spent, so a gap is allowed, a repeat is not.
                if *use_number <= grant.last_use || *use_number > grant.uses {
                    return Err(GrantFault::Exhausted);
                }
                if *covered != grant.covered
                    || grant
                        .pinned
                        .iter()
                        .any(|(name, value)| args.get(name) != Some(value))
                {
                    return Err(GrantFault::Mismatch);
                }
                grant.last_use = *use_number;
                self.uses += 1;
                Ok(())
            }
        }
    }
}
