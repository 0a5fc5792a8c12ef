//! `approval prove`, `check-proof` and `consistency`: what an auditor can
//! be shown, and check, without the rest of the log or any secret.

use std::path::Path;
use std::process::ExitCode;

use approval_audit::checkpoint::{
    Checkpoint, ProofDocument, ProofError, checkpoint_path, consistency_proof, leaf_hashes,
    verify_consistency,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{checkpoint_word, trusted_keys};

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn prove(
    log: &Path,
    request: &str,
    checkpoint: Option<&Path>,
) -> Result<ExitCode, String> {
    let checkpoint = checkpoint.map_or_else(|| checkpoint_path(log), Path::to_owned);
    let signed = read(&checkpoint)?;
    let reader = std::fs::File::open(log).map_err(|e| format!("{}: {e}", log.display()))?;
    match ProofDocument::build(reader, request, &signed) {
        Ok((document, after)) => {
            println!("{}", document.to_json());
            eprintln!(
                "proved {} records of request {request}{}",
                document.records.len(),
                if after > 0 {
                    format!("; {after} after the checkpoint are not provable until the next one")
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ProofError::Io(e)) => Err(format!("{}: {e}", log.display())),
        Err(e) => {
            println!("FAILED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

pub(crate) fn check_proof(file: &Path, trust: &[String]) -> Result<ExitCode, String> {
    let trusted = trusted_keys(trust)?;
    let text =
        String::from_utf8(read(file)?).map_err(|_| format!("{}: not UTF-8", file.display()))?;
    let result = ProofDocument::from_json(&text).and_then(|document| {
        let checkpoint = document.check(&trusted)?;
        Ok((document, checkpoint))
    });
    match result {
        Ok((document, checkpoint)) => {
            println!(
                "ok: these {} records of request {} are in {} (checkpoint of {} records)",
                document.records.len(),
                document.request_id,
                checkpoint.origin,
                checkpoint.size
            );
            for record in &document.records {
                let event = serde_json::from_str::<serde_json::Value>(&record.line)
                    .ok()
                    .and_then(|v| v["event"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                println!("  seq {}: {event}", record.index);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ProofError::Checkpoint(e)) => {
            println!("FAILED checkpoint: {}: {e}", checkpoint_word(&e));
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            println!("FAILED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

pub(crate) fn consistency(
    log: &Path,
    old: &Path,
    new: &Path,
    trust: &[String],
) -> Result<ExitCode, String> {
    let trusted = trusted_keys(trust)?;
    let open = |path: &Path| -> Result<Result<Checkpoint, String>, String> {
        Ok(Checkpoint::open(&read(path)?, &trusted)
            .map_err(|e| format!("{}: {}: {e}", checkpoint_word(&e), path.display())))
    };
    let (older, newer) = match (open(old)?, open(new)?) {
        (Ok(older), Ok(newer)) => (older, newer),
        (Err(e), _) | (_, Err(e)) => {
            println!("FAILED checkpoint: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let reader = std::fs::File::open(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let leaves = leaf_hashes(reader).map_err(|e| format!("{}: {e}", log.display()))?;
    let fits = |size: u64| usize::try_from(size).ok().filter(|&n| n <= leaves.len());
    let (Some(m), Some(n)) = (fits(older.size), fits(newer.size)) else {
        println!(
            "FAILED: the log has {} records; the checkpoints sign {} and {}",
            leaves.len(),
            older.size,
            newer.size
        );
        return Ok(ExitCode::from(1));
    };
    if older.origin != newer.origin {
        println!(
            "FAILED: the checkpoints are of two logs, {} and {}",
            older.origin, newer.origin
        );
        return Ok(ExitCode::from(1));
    }
    if older.size > newer.size {
        println!(
            "FAILED: the older checkpoint signs more records ({}) than the newer ({})",
            older.size, newer.size
        );
        return Ok(ExitCode::from(1));
    }
    // Every tree extends the empty one; RFC 6962 has no proof for it.
    let proof = consistency_proof(&leaves[..n], m).unwrap_or_default();
    let consistent = if older.size == 0 {
        older.root == approval_audit::checkpoint::empty_root()
            && approval_audit::checkpoint::root(&leaves[..n]) == newer.root
    } else {
        verify_consistency(older.size, newer.size, &older.root, &newer.root, &proof)
    };
    if consistent {
        println!(
            "ok: the {} records of the older checkpoint are the first of the {} records of the newer",
            older.size, newer.size
        );
        for hash in &proof {
            println!("  {}", STANDARD.encode(hash));
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "FAILED: inconsistent: the checkpoint of {} records is not a prefix of the checkpoint of {} records, as this log holds them",
            older.size, newer.size
        );
        Ok(ExitCode::from(1))
    }
}
