//! What the example tests share: where `cargo test` put the examples.

use std::path::PathBuf;

/// `cargo test` builds the package's examples beside the test binaries.
pub(crate) fn example(name: &str) -> PathBuf {
    let test = std::env::current_exe().unwrap();
    let target = test.parent().and_then(|deps| deps.parent()).unwrap();
    let path = target.join("examples").join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}
