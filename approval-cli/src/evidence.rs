//! `approval evidence`: one archive an auditor can check alone.
//!
//! The log is verified first (a log that fails is not packed). The
//! archive (`tar`) holds, under `evidence/`:
//!
//! - `log.jsonl`, the whole log (it verifies from its first record), and
//!   `log.jsonl.checkpoint` with `trust.txt` when a checkpoint is given;
//! - `keys/ID.verify`, the verification keys;
//! - `policies/`, the policy files in force, and `policies/digests.csv`
//!   (each policy's `policy_digest`, to match against the records);
//! - `population.csv`, one row per request asked for in the period, for
//!   sampling;
//! - `summary-policies.csv`, `summary-reviewers.csv` and `report.html`;
//! - `MAPPING.md`, which controls the records evidence;
//! - `CHECK.sh`, the commands that check it, and `SHA256SUMS`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use crate::population::Population;

/// What to pack.
pub(crate) struct Pack<'a> {
    pub(crate) log: &'a Path,
    pub(crate) out: &'a Path,
    pub(crate) keys: &'a [String],
    pub(crate) checkpoint: Option<&'a Path>,
    pub(crate) trust: &'a [String],
    pub(crate) policies: &'a [PathBuf],
    pub(crate) from: Option<SystemTime>,
    pub(crate) to: Option<SystemTime>,
}

/// One file of the archive.
struct Entry {
    path: String,
    bytes: Vec<u8>,
    mode: u32,
}

impl Entry {
    /// A file anyone may read.
    fn readable(path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            bytes: bytes.into(),
            mode: 0o644,
        }
    }
}

/// Builds the archive; exit 1 if the log (or its checkpoint) fails.
pub(crate) fn evidence(pack: &Pack<'_>) -> Result<ExitCode, String> {
    let shown = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    if pack.out.exists() {
        return Err(format!(
            "{} already exists; refusing to overwrite it",
            pack.out.display()
        ));
    }
    // Read once: the bytes verified are the bytes packed, though the log
    // may grow meanwhile.
    let log = std::fs::read(pack.log).map_err(|e| shown(pack.log, e))?;
    let name = pack.log.display().to_string();
    let code = crate::verify(&log[..], &name, pack.keys, None)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    if let Some(checkpoint) = pack.checkpoint {
        let code = crate::check_checkpoint(&log[..], &name, checkpoint, pack.trust)?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }

    let population = Population::read(&log, pack.from, pack.to)?;
    let mut entries = vec![Entry::readable("log.jsonl", log)];
    let mut check = String::from(
        "#!/bin/sh\n# Checks this evidence pack: run it in the directory it is in.\nset -e\nsha256sum -c SHA256SUMS\napproval verify log.jsonl",
    );
    for spec in pack.keys {
        let (id, path) = spec
            .split_once('=')
            .ok_or_else(|| format!("--key takes ID=KEYFILE, got {spec:?}"))?;
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "--key {spec:?}: a key id for a file name is letters, digits, - _ ."
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| shown(Path::new(path), e))?;
        // The key can write records too: not for everyone to read.
        entries.push(Entry {
            path: format!("keys/{id}.verify"),
            bytes,
            mode: 0o600,
        });
        write!(check, " --key {id}=keys/{id}.verify").map_err(|e| e.to_string())?;
    }
    if let Some(checkpoint) = pack.checkpoint {
        let bytes = std::fs::read(checkpoint).map_err(|e| shown(checkpoint, e))?;
        entries.push(Entry::readable("log.jsonl.checkpoint", bytes));
        let mut trust = String::new();
        check.push_str(" --checkpoint log.jsonl.checkpoint");
        for line in pack.trust {
            trust.push_str(line);
            trust.push('\n');
            // A key line is `NAME+ID+BASE64`: quoted for the shell.
            write!(check, " --trust '{}'", line.replace('\'', "'\\''"))
                .map_err(|e| e.to_string())?;
        }
        entries.push(Entry::readable("trust.txt", trust));
    }
    check.push('\n');
    if pack.checkpoint.is_some() {
        // A sampled request, shown to someone without the log or a key.
        let trust: String = pack
            .trust
            .iter()
            .map(|line| format!(" --trust '{}'", line.replace('\'', "'\\''")))
            .collect();
        write!(
            check,
            "# One sampled request, provable to someone with the public key alone:\n\
             #   approval prove log.jsonl --request REQUEST_ID --checkpoint log.jsonl.checkpoint > REQUEST_ID.proof.json\n\
             #   approval check-proof REQUEST_ID.proof.json{trust}\n"
        )
        .map_err(|e| e.to_string())?;
    }

    let mut digests = String::from("file,policy,policy_digest\n");
    for path in pack.policies {
        let file = approval_core::PolicyFile::load(path).map_err(|e| e.to_string())?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: not a file name", path.display()))?;
        for policy in file.policies() {
            let digest = approval_audit::hex::encode(&policy.digest());
            crate::csv::row(&mut digests, &[name, &policy.name, &digest]);
        }
        let bytes = std::fs::read(path).map_err(|e| shown(path, e))?;
        entries.push(Entry::readable(format!("policies/{name}"), bytes));
    }
    entries.push(Entry::readable("policies/digests.csv", digests));

    entries.push(Entry::readable("population.csv", population.csv()));
    entries.push(Entry::readable(
        "summary-policies.csv",
        population.by_policy_csv(),
    ));
    entries.push(Entry::readable(
        "summary-reviewers.csv",
        population.by_reviewer_csv(),
    ));
    entries.push(Entry::readable(
        "report.html",
        crate::report::html(&population, pack.log),
    ));
    entries.push(Entry::readable("MAPPING.md", MAPPING));
    entries.push(Entry {
        path: "CHECK.sh".into(),
        bytes: check.clone().into_bytes(),
        mode: 0o755,
    });
    let mut sums = String::new();
    for entry in &entries {
        let digest = ring::digest::digest(&ring::digest::SHA256, &entry.bytes);
        writeln!(
            sums,
            "{}  {}",
            approval_audit::hex::encode(digest.as_ref()),
            entry.path
        )
        .map_err(|e| e.to_string())?;
    }
    entries.push(Entry::readable("SHA256SUMS", sums));
    write_archive(pack.out, &entries).map_err(|e| shown(pack.out, e))?;

    println!(
        "evidence: {} ({} requests in the period, {} files)",
        pack.out.display(),
        population.requests().len(),
        entries.len()
    );
    println!("check it:");
    println!(
        "  tar xf {} && cd evidence && sh CHECK.sh",
        pack.out.display()
    );
    println!("which runs:");
    for line in check.lines().skip(3).filter(|l| !l.starts_with('#')) {
        println!("  {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `entries` under `evidence/` as a tar archive, synced.
fn write_archive(out: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)?;
    let mut archive = tar::Builder::new(file);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(u64::try_from(entry.bytes.len()).unwrap_or(u64::MAX));
        header.set_mode(entry.mode);
        header.set_mtime(0);
        header.set_cksum();
        archive.append_data(
            &mut header,
            format!("evidence/{}", entry.path),
            entry.bytes.as_slice(),
        )?;
    }
    let file = archive.into_inner()?;
    file.sync_all()
}

/// Which controls the records evidence, for the auditor's working papers.
const MAPPING: &str = "# What this evidence supports\n\n\
Each privileged call an agent made is a `requested` record; a person's vote \
is a `reviewed` record naming them; the outcome (`approved`, `denied`, \
`expired`, `cancelled`) and the body's run (`executed`) follow, each sealed \
into one HMAC-SHA256 chain that `approval verify` checks (CHECK.sh). Signed \
checkpoints, when included, show the log was not cut off or rewritten.\n\n\
| framework | control | what in this pack |\n\
| --- | --- | --- |\n\
| SOC 2 | CC6.1, CC6.3 (logical access, least privilege) | every privileged call needed a person's approval under a named policy (`population.csv`: policy, reviewers); minted credentials scoped to one call (`credential_minted`, `credential_revoked`) |\n\
| SOC 2 | CC8.1 (changes authorised) | configuration and key changes gated by policy, each approved before it ran (`approved` precedes `executed` per request) |\n\
| ISO/IEC 27001:2022 | A.5.15 (access control) | the policies in force (`policies/`, matched by `policy_digest`) and who approved under them (`summary-reviewers.csv`) |\n\
| ISO/IEC 27001:2022 | A.8.15 (logging) | the log itself, its verification (`approval verify`) and its checkpoints |\n\
| NIST SP 800-53 | AC-6 (least privilege) | no standing approval: one approval per call and arguments (the `binding`); credentials minted per call |\n\
| NIST SP 800-53 | AU-9 (protection of audit information) | the MAC chain and signed checkpoints: an edit, a deletion or a cut-off is found |\n\
| NIST SP 800-53 | AU-10 (non-repudiation) | each vote names its reviewer and channel; the chain shows it was not altered since (the channel vouches for who voted) |\n\n\
`population.csv` lists every request asked for in the period, for sampling; \
`report.html` summarises it. The verification keys in `keys/` can also \
write records: keep this pack as confidential as the log.\n";
