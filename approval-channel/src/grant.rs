//! How a live grant is told, alike in every channel.

use approval_core::GrantView;

/// What is left of a live grant, in the words every channel shows under
/// its approval: `2 of 5 more runs left with the same table, region`. Each
/// argument name is made safe by `text`, in the channel's own markup.
///
/// ```
/// fn grant_line(grant: &approval_core::GrantView) -> String {
///     format!("Grant: {}", approval_channel::grant_left(grant, |name| format!("`{name}`")))
/// }
/// ```
pub fn grant_left(grant: &GrantView, text: impl Fn(&str) -> String) -> String {
    let pinned: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(grant.pinned.as_str()).unwrap_or_default();
    let same = if pinned.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = pinned.keys().map(|name| text(name)).collect();
        format!(" with the same {}", names.join(", "))
    };
    format!(
        "{} of {} more runs left{same}",
        grant.uses.saturating_sub(grant.used),
        grant.uses
    )
}
