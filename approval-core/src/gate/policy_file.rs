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
///
/// [[policy]]
/// name = "payment"
/// routes = ["slack"]
/// groups = ["security"]
/// timeout_ms = 900000
/// # Rules, in order: the first whose Cedar condition holds sets the
/// # approvals needed; none holding leaves `required` (1).
/// rules = [
///   { when = "context.args.amount_cents > 1000000", required = 2 },
///   { when = "context.args.amount_cents < 10000", required = 0 },
/// ]
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

/// Where each policy's approvers, groups and rules are written in the file.
#[derive(Deserialize)]
struct FileSpans {
    #[serde(default)]
    policy: Vec<PolicySpans>,
}

#[derive(Deserialize)]
struct PolicySpans {
    #[serde(default)]
    approvers: Vec<toml::Spanned<String>>,
    #[serde(default)]
    groups: Vec<toml::Spanned<String>>,
    #[serde(default)]
    escalate_groups: Vec<toml::Spanned<String>>,
    #[serde(default)]
    rules: Vec<RuleSpans>,
}

#[derive(Deserialize)]
struct RuleSpans {
    when: toml::Spanned<String>,
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

    /// Parses policy-file text; `path` is for error messages. A file with
    /// people or groups must name, as each policy's approvers, only
    /// people it lists or identities it maps to them (else one person
    /// could count twice toward a quorum):
    ///
    /// ```
    /// use approval_core::{ConfigError, PolicyFile};
    ///
    /// let text = "[[policy]]\nname = \"x\"\nroutes = [\"slack\"]\ntimeout_ms = 5\n\
    ///             approvers = [\"alice\",\n  \"teams:6f1c\"]\n\
    ///             [people]\nalice = [\"slack:U1\"]\n";
    /// let err = PolicyFile::parse(text, "p.toml").unwrap_err();
    /// assert!(matches!(err, ConfigError::PolicyFile { line: 6, .. }), "{err}");
    /// ```
    pub fn parse(text: &str, path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let path = path.into();
        let error = |span: Option<std::ops::Range<usize>>, cause: String| {
            let line = span.map_or(0, |span| {
                1 + text[..span.start.min(text.len())].matches('\n').count()
            });
            ConfigError::PolicyFile {
                path: path.clone(),
                line,
                cause,
            }
        };
        let file: Self =
            toml::from_str(text).map_err(|e| error(e.span(), e.message().trim_end().to_owned()))?;
        let directory = file.directory();
        // Parsed again for where each approver, group and rule is written.
        let spans: FileSpans =
            toml::from_str(text).map_err(|e| error(e.span(), e.message().trim_end().to_owned()))?;
        for (policy, spans) in file.policies.iter().zip(spans.policy) {
            // Each rule is a Cedar expression: a bad one is an error at
            // its line, not when the gate is built.
            if let Err(e) = super::Conditions::new(&policy.rules) {
                let at = spans.rules.get(e.rule).map(|r| r.when.span());
                return Err(error(
                    at,
                    format!("policy {} rule {}: {}", policy.name, e.rule, e.cause),
                ));
            }
            let unmapped = spans
                .approvers
                .iter()
                .filter(|_| !directory.is_empty())
                .find(|a| directory.resolve(a.get_ref()).is_none());
            if let Some(approver) = unmapped {
                return Err(error(
                    Some(approver.span()),
                    format!(
                        "policy {} names approver {}, who is not in [people]",
                        policy.name,
                        approver.get_ref()
                    ),
                ));
            }
            if let Some(group) = spans
                .groups
                .iter()
                .chain(&spans.escalate_groups)
                .find(|g| !directory.has_group(g.get_ref()))
            {
                return Err(error(
                    Some(group.span()),
                    format!(
                        "policy {} names group {}, which is not in [groups]",
                        policy.name,
                        group.get_ref()
                    ),
                ));
            }
        }
        Ok(file)
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
