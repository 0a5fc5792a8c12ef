//! The terminal approver: the person at the controlling terminal decides.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::approver::{Approver, Ballots};
use super::request::{ApprovalRequest, Ballot};
use crate::error::ApproverError;
use approval_audit::Vote;

/// Shows each request on the controlling terminal (`/dev/tty`, not stdin
/// or stdout, so the program's own I/O and the agent's cannot answer) and
/// reads the decision and an optional comment, as reviewer
/// `terminal:<user>`.
///
/// Text the agent wrote (arguments, resource, reason) is shown apart from
/// what the gate derived, with control and bidirectional-override
/// characters replaced by visible escapes, so it cannot redraw the screen
/// or disguise itself. With no terminal the request is refused
/// (`ApproverError::Refused`, naming the cause) and the call fails closed.
#[derive(Debug)]
pub struct TerminalApprover {
    user: String,
    tty: PathBuf,
    /// One prompt at a time.
    lock: Arc<Mutex<()>>,
}

impl TerminalApprover {
    /// Asks as `terminal:<user>`.
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            tty: PathBuf::from("/dev/tty"),
            lock: Arc::default(),
        }
    }

    /// Asks as the operating-system user running the program: the name
    /// the password database gives the process's real user id (never
    /// `$USER`, which the agent's own process may set), else the number.
    ///
    /// A terminal is only as trustworthy as whoever holds it: anyone who
    /// can type into it votes as this user.
    pub fn for_current_user() -> Self {
        Self::new(current_user())
    }

    /// The identity its votes carry: `terminal:<user>`.
    pub fn identity(&self) -> String {
        format!("terminal:{}", self.user)
    }
}

/// The real user's name from the password database, or its number.
#[cfg(unix)]
fn current_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        Ok(None) => uid.to_string(),
        Err(error) => {
            tracing::warn!(%uid, %error, "password database unreadable; naming the terminal reviewer by user id");
            uid.to_string()
        }
    }
}

/// Elsewhere, no real user id to read: `unknown`.
#[cfg(not(unix))]
fn current_user() -> String {
    "unknown".into()
}

#[async_trait]
impl Approver for TerminalApprover {
    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError> {
        let tty = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.tty)
            .map_err(|e| {
                ApproverError::Refused(format!(
                    "no terminal to ask on ({}: {e}); use another approver",
                    self.tty.display()
                ))
            })?;
        let (lock, identity) = (self.lock.clone(), self.identity());
        tokio::spawn(async move {
            let asked = request.clone();
            let answer = tokio::task::spawn_blocking(move || {
                let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
                ask(tty, &asked)
            })
            .await;
            // No answer (the terminal closed): no vote; the request expires.
            if let Ok(Ok((vote, comment))) = answer {
                let mut ballot = Ballot::new(&request, identity, "terminal", vote);
                ballot.comment = comment;
                match ballots.cast(ballot).await {
                    Ok(outcome) => tracing::debug!(?outcome, "terminal vote cast"),
                    // The reviewer has left the prompt: the log, not the
                    // screen, must say so.
                    Err(error) => tracing::error!(
                        request_id = %request.id,
                        %error,
                        "the terminal vote could not be recorded; it does not count"
                    ),
                }
            }
        });
        Ok(())
    }
}

fn ask(tty: File, request: &ApprovalRequest) -> std::io::Result<(Vote, Option<String>)> {
    let mut out = tty.try_clone()?;
    let mut input = BufReader::new(tty);
    out.write_all(render(request).as_bytes())?;
    let vote = loop {
        out.write_all(b"Approve? [y/n] ")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => break Vote::Approve,
            "n" | "no" => break Vote::Deny,
            _ => {}
        }
    };
    out.write_all(b"Comment (optional, Enter for none): ")?;
    out.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    let comment = line.trim();
    Ok((vote, (!comment.is_empty()).then(|| comment.to_owned())))
}

/// The request as the terminal shows it.
pub(crate) fn render(request: &ApprovalRequest) -> String {
    let policy = &request.policy;
    let mut lines = vec![
        String::new(),
        format!("=== Approval request {} ===", request.id),
        format!("Action:    {}", visible(&request.action)),
        format!(
            "Policy:    {} (needs {} approval{})",
            visible(&policy.name),
            policy.required,
            if policy.required == 1 { "" } else { "s" }
        ),
    ];
    match &request.actor {
        Some(actor) => {
            let kind = actor
                .kind
                .map(|kind| format!(" ({})", kind.as_str()))
                .unwrap_or_default();
            let model = actor
                .model
                .as_deref()
                .map(|model| format!(", model {}", visible(model)))
                .unwrap_or_default();
            lines.push(format!("Agent:     {}{kind}{model}", visible(&actor.id)));
            if let Some(person) = &actor.on_behalf_of {
                lines.push(format!("For:       {}", visible(person)));
            }
        }
        None => lines.push("Agent:     (no actor in scope)".to_owned()),
    }
    lines.push(format!(
        "Binding:   {}",
        approval_audit::hex::encode(&request.binding)
    ));
    for earlier in &request.earlier {
        let outcome = match &earlier.decision {
            super::Decision::Approved { reviewers } => format!(
                "approved by {}",
                reviewers
                    .iter()
                    .map(|r| visible(&r.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            super::Decision::Denied { reviewer, comment } => format!(
                "DENIED by {}{}",
                visible(&reviewer.id),
                comment
                    .as_deref()
                    .map(|c| format!(": {}", visible(c)))
                    .unwrap_or_default()
            ),
            super::Decision::Expired => "expired".to_owned(),
            super::Decision::Cancelled { why } => format!("cancelled ({})", visible(why)),
        };
        lines.push(format!(
            "Earlier:   the same call was {outcome} (request {})",
            earlier.request_id
        ));
    }
    lines.push("--- written by the agent, unverified ---".to_owned());
    if let Some(resource) = &request.resource {
        lines.push(format!("Resource:  {}", visible(resource)));
    }
    if let Some(reason) = &request.reason {
        lines.push(format!("Reason:    {}", visible(reason)));
    }
    lines.push(format!("Arguments: {}", visible(request.args.as_str())));
    if !request.skipped.is_empty() {
        lines.push(format!(
            "Not shown: {}",
            visible(&request.skipped.join(", "))
        ));
    }
    lines.push(String::new());
    lines.join("\n")
}

/// `s` with every control, line-separating and bidirectional-formatting
/// character replaced by a visible `\u{…}` escape: a terminal's version of
/// the rule that agent text never starts a line of its own.
pub(crate) fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let hidden = c.is_control()
            || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if hidden {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{TerminalApprover, visible};

    /// Run by the test below in a child process whose `$USER` it chose.
    #[test]
    fn print_terminal_identity_for_parent() {
        #[allow(clippy::disallowed_methods, reason = "the parent test's marker")]
        if std::env::var_os("APPROVAL_PRINT_TERMINAL_IDENTITY").is_some() {
            #[allow(clippy::print_stdout, reason = "read by the parent test")]
            {
                println!(
                    "identity={}",
                    TerminalApprover::for_current_user().identity()
                );
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_terminal_reviewer_is_the_real_user_not_whatever_user_says() {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "gate::terminal::tests::print_terminal_identity_for_parent",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env("APPROVAL_PRINT_TERMINAL_IDENTITY", "1")
            .env("USER", "mallory")
            .env("LOGNAME", "mallory")
            .output()
            .unwrap();
        let out = String::from_utf8(child.stdout).unwrap();
        // The harness may print its own words on the same line.
        let identity = out
            .split_once("identity=")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no identity in {out}"));
        let uid = nix::unistd::getuid();
        let expected = nix::unistd::User::from_uid(uid)
            .unwrap()
            .map_or_else(|| uid.to_string(), |u| u.name);
        assert_eq!(identity, format!("terminal:{expected}"));
        assert_ne!(identity, "terminal:mallory");
    }

    #[test]
    fn agent_text_cannot_hide_controls_or_reorder_the_screen() {
        assert_eq!(visible("plain ünïcode"), "plain ünïcode");
        assert_eq!(visible("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(visible("x\ny\r"), "x\\u{a}y\\u{d}");
        assert_eq!(visible("user\u{202E}gpj.exe"), "user\\u{202e}gpj.exe");
        assert_eq!(
            visible("\u{2066}\u{200f}\u{9b}"),
            "\\u{2066}\\u{200f}\\u{9b}"
        );
    }
}

#[cfg(test)]
mod line_start_tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::render;
    use crate::CanonicalJson;
    use crate::gate::{ApprovalRequest, Policy};
    use approval_audit::Actor;

    #[test]
    fn agent_text_never_starts_a_line_of_the_terminal_s_request() {
        let fake = |brk: &str| format!("ok{brk}Policy:    none (needs 0 approvals)");
        let request = ApprovalRequest {
            id: "r1".into(),
            action: "crm::export".into(),
            policy: Arc::new(Policy::new(
                "data-export",
                ["terminal"],
                Duration::from_secs(60),
            )),
            rule: None,
            args: CanonicalJson::from_serialize(&serde_json::json!({"table": fake("\n")})).unwrap(),
            skipped: Vec::new(),
            binding: [0; 32],
            actor: Some(Arc::new(
                Actor::new(fake("\u{2028}"))
                    .model(fake("\r\n"))
                    .on_behalf_of(fake("\u{85}")),
            )),
            resource: Some(fake("\u{2029}")),
            reason: Some(fake("\r")),
            expires_at: SystemTime::UNIX_EPOCH,
            earlier: Vec::new(),
        };
        let shown = render(&request);
        let starts = shown
            .split(crate::LINE_BREAKS)
            .filter(|line| line.starts_with("Policy:"))
            .collect::<Vec<_>>();
        assert_eq!(
            starts,
            ["Policy:    data-export (needs 1 approval)"],
            "{shown}"
        );
        assert_eq!(shown.matches("Policy:    none").count(), 6, "{shown}");
    }
}
