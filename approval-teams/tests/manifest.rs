//! The Teams app manifest template (TEAMS.md §8): valid JSON once its
//! placeholders are filled in, within Teams' limits, with its icons.

use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifest");

/// Width and height from a PNG's IHDR chunk, and whether it has alpha.
fn png(name: &str) -> (u32, u32, bool) {
    let bytes = std::fs::read(format!("{DIR}/{name}")).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let number = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    // Colour types 4 and 6 carry alpha.
    (number(16), number(20), matches!(bytes[25], 4 | 6))
}

#[test]
fn the_manifest_template_fills_in_to_a_valid_bot_manifest() {
    let template = std::fs::read_to_string(format!("{DIR}/manifest.json")).unwrap();
    let filled = template
        .replace("{{MANIFEST_ID}}", "0b6c2f1e-8f0c-4d59-9d1e-2d3a4b5c6d7e")
        .replace("{{BOT_APP_ID}}", "571c643a-c513-441e-9ca2-e01b48b9a0de")
        .replace("{{BOT_DOMAIN}}", "approvals.example.com")
        .replace("{{DEVELOPER_NAME}}", "Example Ltd")
        .replace("{{DEVELOPER_HOST}}", "www.example.com");
    assert!(!filled.contains("{{"), "a placeholder is left");
    let manifest: Value = serde_json::from_str(&filled).unwrap();
    assert_eq!(manifest["manifestVersion"], "1.20");
    assert!(manifest["version"].as_str().unwrap().split('.').count() == 3);
    assert!(manifest["name"]["short"].as_str().unwrap().chars().count() <= 30);
    assert!(
        manifest["developer"]["name"]
            .as_str()
            .unwrap()
            .chars()
            .count()
            <= 32
    );
    let (short, full) = (
        manifest["description"]["short"].as_str().unwrap(),
        manifest["description"]["full"].as_str().unwrap(),
    );
    assert!(short.chars().count() <= 80 && full.chars().count() <= 4000 && short != full);
    for url in ["websiteUrl", "privacyUrl", "termsOfUseUrl"] {
        assert!(
            manifest["developer"][url]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
    }
    let bots = manifest["bots"].as_array().unwrap();
    assert_eq!(bots.len(), 1);
    assert_eq!(bots[0]["botId"], "571c643a-c513-441e-9ca2-e01b48b9a0de");
    assert_eq!(bots[0]["isNotificationOnly"], false);
    assert_eq!(manifest["validDomains"][0], "approvals.example.com");
    // The icons the manifest names, at the sizes Teams requires.
    assert_eq!(manifest["icons"]["color"], "color.png");
    assert_eq!(manifest["icons"]["outline"], "outline.png");
    assert_eq!(png("color.png").0, 192);
    assert_eq!(png("color.png").1, 192);
    assert_eq!(png("outline.png"), (32, 32, true));
}
