//! `approval revoke-grant`: revokes a live grant through the decision API
//! of the process that holds it, as one of its reviewers. The grant is
//! that process's; it records the `grant_revoked`, in its own log.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Revokes `grant` at the decision API `api` with the bearer token in
/// `token_file`.
pub(crate) fn revoke_grant(grant: &str, api: &str, token_file: &Path) -> Result<ExitCode, String> {
    // A grant's id is a request id (Crockford base32): anything else could
    // change the path it is put in.
    if grant.is_empty() || !grant.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("{grant:?} is not a grant id"));
    }
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("{}: {e}", token_file.display()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("{}: no token in it", token_file.display()));
    }
    let url = format!("{}/grants/{grant}/revoke", api.trim_end_matches('/'));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(&url)
        .bearer_auth(token)
        .send()
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    // The body is JSON when the API answered; anything else reads as empty.
    let body: serde_json::Value = response
        .text()
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    match status {
        200 => {
            println!(
                "revoked: grant {grant} ({} of {} uses spent)",
                body["used"], body["uses"]
            );
            Ok(ExitCode::SUCCESS)
        }
        404 => {
            println!("not revoked: no live grant {grant} that this reviewer may revoke");
            Ok(ExitCode::from(1))
        }
        401 => Err(format!("{url}: the decision API refused the token (401)")),
        _ => Err(format!(
            "{url}: the decision API answered {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        )),
    }
}
