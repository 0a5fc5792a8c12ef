//! The directory of reviewers: people, their channel identities, groups;
//! and the normal form identities and names are compared in.

use std::borrow::Cow;
use std::collections::HashMap;

use approval_audit::Actor;

/// The form identities and names compare in: surrounding white space
/// removed and letters lowercased. Channel ids are case-insensitive as
/// their services issue them (Slack's `U024BE7LH`, Entra object ids),
/// and so, in practice, are email addresses and login names: `Alice`,
/// `alice` and `ALICE@corp.com`'s `alice@corp.com` are one spelling each.
///
/// ```
/// use approval_core::normal_identity;
///
/// assert_eq!(normal_identity(" Teams:6F1C-AAD "), "teams:6f1c-aad");
/// assert_eq!(normal_identity("Alice"), normal_identity("alice"));
/// ```
pub fn normal_identity(identity: &str) -> String {
    normal_form(identity).into_owned()
}

/// [`normal_identity`], borrowed when `identity` is already in normal form
/// (as ids and names mostly are): the gate compares several per vote.
pub(crate) fn normal_form(identity: &str) -> Cow<'_, str> {
    let trimmed = identity.trim();
    // ASCII only: outside it, lowercasing may change what is not uppercase
    // (titlecase letters), so that takes the full conversion.
    if trimmed
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(trimmed.to_lowercase())
    }
}

/// Maps each person to their identities in each channel, and names groups
/// of people. Every rule that counts or compares reviewers (eligibility,
/// self-approval, "two different people") counts people, not identities,
/// and compares names and identities in their [normal
/// form](normal_identity).
///
/// ```
/// use approval_core::Directory;
///
/// let directory = Directory::new()
///     .person("alice", ["slack:U024BE7LH", "teams:6f1c-aad"])
///     .person("bob", ["slack:U0G9QF9C6"])
///     .group("security", ["alice", "bob"]);
/// assert_eq!(directory.person_of("teams:6F1C-AAD"), Some("alice"));
/// assert_eq!(directory.resolve("Alice"), Some("alice"));
/// assert!(directory.in_group("bob", "security"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Identity (normal form) to person (as the directory spells it).
    person_of: HashMap<String, String>,
    /// Person (normal form) to the directory's spelling.
    people: HashMap<String, String>,
    /// Group (normal form) to its people (the directory's spelling).
    groups: HashMap<String, Vec<String>>,
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
        self.people.insert(normal_identity(name), name.to_owned());
        for identity in identities {
            let identity: String = identity.into();
            self.person_of
                .insert(normal_identity(&identity), name.to_owned());
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
        let members = self.groups.entry(normal_identity(name)).or_default();
        for person in people {
            let person: String = person.into();
            if !members
                .iter()
                .any(|m| normal_identity(m) == normal_identity(&person))
            {
                members.push(person);
            }
        }
        self
    }

    /// Whether the directory names nobody.
    pub fn is_empty(&self) -> bool {
        self.people.is_empty() && self.groups.is_empty()
    }

    /// The person a channel identity belongs to.
    pub fn person_of(&self, identity: &str) -> Option<&str> {
        self.person_of
            .get(normal_form(identity).as_ref())
            .map(String::as_str)
    }

    /// The person `who` is: `who` as a person's name, or as one of their
    /// identities; `None` for someone the directory does not know.
    pub fn resolve(&self, who: &str) -> Option<&str> {
        self.people
            .get(normal_form(who).as_ref())
            .map(String::as_str)
            .or_else(|| self.person_of(who))
    }

    /// The key by which votes count as one person's: the person `who`
    /// resolves to, else `who` itself, in normal form.
    pub(crate) fn voter_key(&self, who: &str) -> String {
        normal_identity(self.resolve(who).unwrap_or(who))
    }

    /// The names a request's requester goes by, in normal form: the
    /// actor's id and the principal it acts for, each with the person it
    /// resolves to. None of them may vote on the request.
    pub(crate) fn requesters<'a>(&'a self, actor: Option<&'a Actor>) -> Vec<Cow<'a, str>> {
        let mut names: Vec<Cow<'a, str>> = actor
            .into_iter()
            .flat_map(|a| [Some(a.id.as_str()), a.on_behalf_of.as_deref()])
            .flatten()
            .flat_map(|r| [Some(r), self.resolve(r)])
            .flatten()
            .map(normal_form)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Whether `person` is in `group`.
    pub fn in_group(&self, person: &str, group: &str) -> bool {
        let person = normal_form(person);
        self.groups
            .get(normal_form(group).as_ref())
            .is_some_and(|g| g.iter().any(|m| normal_form(m) == person))
    }

    /// Whether the directory has a group of that name (in normal form).
    ///
    /// ```
    /// use approval_core::Directory;
    ///
    /// let directory = Directory::new().group("security", ["alice"]);
    /// assert!(directory.has_group("Security"));
    /// assert!(!directory.has_group("admins"));
    /// ```
    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(normal_form(group).as_ref())
    }

    /// The people in `group`, as the directory spells them (none if
    /// unknown).
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
            .get(normal_form(group).as_ref())
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}
