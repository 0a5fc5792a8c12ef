//! The directory of reviewers: people, their channel identities, groups.

use std::collections::{HashMap, HashSet};

/// Maps each person to their identities in each channel, and names groups
/// of people. Every rule that counts or compares reviewers (eligibility,
/// self-approval, "two different people") counts people, not identities.
///
/// ```
/// use approval_core::Directory;
///
/// let directory = Directory::new()
///     .person("alice", ["slack:U024BE7LH", "teams:6f1c-aad"])
///     .person("bob", ["slack:U0G9QF9C6"])
///     .group("security", ["alice", "bob"]);
/// assert_eq!(directory.person_of("teams:6f1c-aad"), Some("alice"));
/// assert!(directory.in_group("bob", "security"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Directory {
    person_of: HashMap<String, String>,
    groups: HashMap<String, HashSet<String>>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a person and their channel identities.
    #[must_use]
    pub fn person<S: Into<String>>(
        mut self,
        name: &str,
        identities: impl IntoIterator<Item = S>,
    ) -> Self {
        for identity in identities {
            self.person_of.insert(identity.into(), name.to_owned());
        }
        self
    }

    /// Adds a group of people.
    #[must_use]
    pub fn group<S: Into<String>>(
        mut self,
        name: &str,
        people: impl IntoIterator<Item = S>,
    ) -> Self {
        self.groups
            .entry(name.to_owned())
            .or_default()
            .extend(people.into_iter().map(Into::into));
        self
    }

    /// The person a channel identity belongs to.
    pub fn person_of(&self, identity: &str) -> Option<&str> {
        self.person_of.get(identity).map(String::as_str)
    }

    /// Whether `person` is in `group`.
    pub fn in_group(&self, person: &str, group: &str) -> bool {
        self.groups.get(group).is_some_and(|g| g.contains(person))
    }

    /// The people in `group`, in no particular order (none if unknown).
    ///
    /// ```
    /// use approval_core::Directory;
    ///
    /// let directory = Directory::new().group("security", ["alice"]);
    /// assert_eq!(directory.members("security").collect::<Vec<_>>(), ["alice"]);
    /// assert_eq!(directory.members("nobody").count(), 0);
    /// ```
    pub fn members(&self, group: &str) -> impl Iterator<Item = &str> {
        self.groups
            .get(group)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}
