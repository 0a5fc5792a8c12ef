//! Policies and the directory of reviewers from a TOML file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, Directory, Policy};

/// A policy file: policies, and the people and groups they name.
///
/// ```toml
/// [[policy]]
/// name = "data-export"
/// routes = ["slack"]
/// required = 2
/// groups = ["security"]
/// timeout_ms = 900000
///
/// [people]
/// alice = ["slack:U024BE7LH", "teams:6f1c-aad"]
/// bob = ["slack:U0G9QF9C6"]
///
/// [groups]
/// security = ["alice", "bob"]
/// ```
///
/// Each `[[policy]]` table has exactly the members of [`Policy`] (its JSON
/// shape, which `policy_digest` is taken over); an unknown member is an
/// error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default, rename = "policy")]
    policies: Vec<Policy>,
    #[serde(default)]
    people: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
}

impl PolicyFile {
    /// Reads and parses `path`; an error names the file, the line and the
    /// cause.
    ///
    /// ```
    /// use approval_core::{ConfigError, PolicyFile};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("policies.toml");
    /// std::fs::write(&path, "[[policy]]\nname = \"x\"\nroutes = [\"slack\"]\ntimeout = 5\n")?;
    /// let err = PolicyFile::load(&path).unwrap_err();
    /// assert!(matches!(err, ConfigError::PolicyFile { line: 4, .. }), "{err}");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::PolicyFile {
            path: path.to_owned(),
            line: 0,
            cause: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses policy-file text; `path` is for error messages.
    pub fn parse(text: &str, path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |span| {
                1 + text[..span.start.min(text.len())].matches('\n').count()
            });
            ConfigError::PolicyFile {
                path: path.into(),
                line,
                cause: e.message().trim_end().to_owned(),
            }
        })
    }

    /// The policies.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The people and groups, as a directory.
    pub fn directory(&self) -> Directory {
        let mut directory = Directory::new();
        for (person, identities) in &self.people {
            directory = directory.person(person, identities.iter().cloned());
        }
        for (group, people) in &self.groups {
            directory = directory.group(group, people.iter().cloned());
        }
        directory
    }
}
