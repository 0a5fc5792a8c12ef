//! Proving one request's records to an auditor who sees nothing else: the
//! records, their RFC 6962 inclusion proofs, and the signed checkpoint they
//! are proven against, as one JSON document.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{
    Checkpoint, CheckpointError, Hash, VerifierKey, inclusion_proof, leaf_hash, root,
    verify_inclusion,
};

/// One request's records with their inclusion proofs against a signed
/// checkpoint. Checking it needs the checkpoint signer's public key and
/// nothing else: no log, no secret.
///
/// ```json
/// {"checkpoint": "<signed note>", "request_id": "01J…",
///  "records": [{"index": 41, "line": "{…}", "proof": ["<base64>", …]}]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofDocument {
    /// The signed checkpoint, as its note's text.
    pub checkpoint: String,
    /// The request the records belong to.
    pub request_id: String,
    /// The records, in log order.
    pub records: Vec<InclusionRecord>,
}

/// One record and its proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionRecord {
    /// Its position in the log (its `seq`).
    pub index: u64,
    /// The record line, exactly, without its newline.
    pub line: String,
    /// The sibling hashes from the leaf up, base64.
    pub proof: Vec<String>,
}

/// Why a proof could not be made or does not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The checkpoint is not accepted.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The log does not hold what the checkpoint signs.
    #[error("the log does not match the checkpoint: {0}")]
    LogMismatch(String),
    /// No record of the request is covered by the checkpoint.
    #[error("no record of request {request_id} is covered by the checkpoint ({after} after it)")]
    NothingToProve {
        /// The request.
        request_id: String,
        /// Its records after the checkpoint, not provable yet.
        after: usize,
    },
    /// A record's proof does not lead to the checkpoint's root.
    #[error("record {index} is not in the log the checkpoint signs")]
    NotIncluded {
        /// The record's index.
        index: u64,
    },
    /// A record is not one of the request's, or not at its index.
    #[error("record {index}: {why}")]
    WrongRecord {
        /// The record's index.
        index: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// The document is not a proof document.
    #[error("malformed proof document: {0}")]
    Malformed(String),
    /// Reading the log failed.
    #[error("reading the log: {0}")]
    Io(#[from] std::io::Error),
}

/// The members of a record a proof looks at.
#[derive(Deserialize)]
struct Fields {
    seq: u64,
    #[serde(default)]
    request_id: Option<String>,
}

impl ProofDocument {
    /// Proves the records of `request_id` in `log` against the signed
    /// checkpoint `signed` (its signature is the auditor's to check);
    /// records after the checkpoint are left out (they cannot be proven
    /// yet) and counted in the second value.
    pub fn build(
        log: impl std::io::Read,
        request_id: &str,
        signed: &[u8],
    ) -> Result<(Self, usize), ProofError> {
        use std::io::BufRead;
        let checkpoint = Checkpoint::parse_signed(signed)?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, log);
        let mut leaves: Vec<Hash> = Vec::new();
        let mut found: Vec<(u64, String)> = Vec::new();
        let mut after = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            let record = line.strip_suffix('\n').unwrap_or(&line);
            let index = leaves.len() as u64;
            leaves.push(leaf_hash(record.as_bytes()));
            // Only a line naming the request can be one of its records.
            if record.contains(request_id)
                && serde_json::from_str::<Fields>(record)
                    .is_ok_and(|f| f.request_id.as_deref() == Some(request_id))
            {
                if index < checkpoint.size {
                    found.push((index, record.to_owned()));
                } else {
                    after += 1;
                }
            }
        }
        let size = usize::try_from(checkpoint.size)
            .ok()
            .filter(|&n| n <= leaves.len())
            .ok_or_else(|| {
                ProofError::LogMismatch(format!(
                    "the log has {} records; the checkpoint signs {}",
                    leaves.len(),
                    checkpoint.size
                ))
            })?;
        let signed_leaves = &leaves[..size];
        if root(signed_leaves) != checkpoint.root {
            return Err(ProofError::LogMismatch(format!(
                "the first {size} records are not the ones the checkpoint signs"
            )));
        }
        if found.is_empty() {
            return Err(ProofError::NothingToProve {
                request_id: request_id.to_owned(),
                after,
            });
        }
        let records = found
            .into_iter()
            .map(|(index, line)| {
                let proof = usize::try_from(index)
                    .ok()
                    .and_then(|i| inclusion_proof(signed_leaves, i))
                    .unwrap_or_default();
                InclusionRecord {
                    index,
                    line,
                    proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
                }
            })
            .collect();
        let document = Self {
            checkpoint: String::from_utf8_lossy(signed).into_owned(),
            request_id: request_id.to_owned(),
            records,
        };
        Ok((document, after))
    }

    /// Reads a document.
    pub fn from_json(text: &str) -> Result<Self, ProofError> {
        serde_json::from_str(text).map_err(|e| ProofError::Malformed(e.to_string()))
    }

    /// The document as JSON.
    pub fn to_json(&self) -> String {
        // Strings and integers only: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the document with the checkpoint signer's public keys only:
    /// the checkpoint's signature, and each record's proof up to its root;
    /// each record must name the request and sit at its own `seq`. Returns
    /// the checkpoint.
    pub fn check(&self, trusted: &[VerifierKey]) -> Result<Checkpoint, ProofError> {
        let checkpoint = Checkpoint::open(self.checkpoint.as_bytes(), trusted)?;
        if self.records.is_empty() {
            return Err(ProofError::Malformed("no records".into()));
        }
        if self.records.windows(2).any(|w| w[0].index >= w[1].index) {
            return Err(ProofError::Malformed(
                "records must be in log order, each once".into(),
            ));
        }
        for record in &self.records {
            let fields: Fields =
                serde_json::from_str(&record.line).map_err(|_| ProofError::WrongRecord {
                    index: record.index,
                    why: "not a record",
                })?;
            if fields.request_id.as_deref() != Some(self.request_id.as_str()) {
                return Err(ProofError::WrongRecord {
                    index: record.index,
                    why: "names another request",
                });
            }
            if fields.seq != record.index {
                return Err(ProofError::WrongRecord {
                    index: record.index,
                    why: "its seq is not its index",
                });
            }
            let proof = record
                .proof
                .iter()
                .map(|h| {
                    STANDARD
                        .decode(h)
                        .ok()
                        .and_then(|h| Hash::try_from(h.as_slice()).ok())
                })
                .collect::<Option<Vec<Hash>>>()
                .ok_or_else(|| {
                    ProofError::Malformed("a proof hash is not 32 bytes of base64".into())
                })?;
            let leaf = leaf_hash(record.line.as_bytes());
            if !verify_inclusion(
                &leaf,
                record.index,
                checkpoint.size,
                &proof,
                &checkpoint.root,
            ) {
                return Err(ProofError::NotIncluded {
                    index: record.index,
                });
            }
        }
        Ok(checkpoint)
    }
}
