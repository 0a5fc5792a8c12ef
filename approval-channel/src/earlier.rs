//! How an earlier decision on the same call is told, alike in every
//! channel.

use approval_core::{Decision, Reviewer};

/// How an earlier request for the same call ended, in the words every
/// channel shows: `approved by …`, `denied by …: comment`, `expired`,
/// `cancelled (why)`. `reviewer` shows a reviewer and `text` makes other
/// text safe, each in the channel's own markup.
///
/// ```
/// use approval_channel::earlier_outcome;
/// use approval_core::{Decision, Recovery, Reviewer};
///
/// let denied = Decision::Denied { reviewer: Reviewer::new("slack:U0BOB"), comment: Some("*no*".into()) };
/// let shown = earlier_outcome(&denied, |r| r.id.clone(), |t| t.replace('*', "\\*"));
/// assert_eq!(shown, "denied by slack:U0BOB: \\*no\\*");
/// ```
pub fn earlier_outcome(
    decision: &Decision,
    reviewer: impl Fn(&Reviewer) -> String,
    text: impl Fn(&str) -> String,
) -> String {
    match decision {
        Decision::Approved { reviewers } => format!(
            "approved by {}",
            reviewers
                .iter()
                .map(&reviewer)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Decision::Denied {
            reviewer: who,
            comment,
        } => format!(
            "denied by {}{}",
            reviewer(who),
            comment
                .as_deref()
                .map(|c| format!(": {}", text(c)))
                .unwrap_or_default()
        ),
        Decision::Expired => "expired".to_owned(),
        Decision::Cancelled { why } => format!("cancelled ({})", text(why)),
        _ => "ended".to_owned(),
    }
}
