//! Session templates: the role a session is of, and the inline session
//! policy built from the approved arguments.

use serde_json::{Value, json};

/// One `Allow` statement of a session policy; resources may name approved
/// arguments as `{name}`.
#[derive(Debug, Clone)]
struct Statement {
    actions: Vec<String>,
    resources: Vec<String>,
}

/// Which role a session assumes and what its inline session policy allows
/// (a session can do only what both the role's policies and this allow).
///
/// A resource may name the approved call's string arguments as `{name}`:
/// `arn:aws:s3:::{bucket}/{prefix}*` for a call with `bucket` and `prefix`.
/// An argument is refused unless it is a plain name (letters, digits and
/// `. _ - / = + @ , :`), so no wildcard or placeholder of its own can widen
/// what was approved.
///
/// ```
/// use approval_aws::SessionTemplate;
///
/// let read_prefix = SessionTemplate::new("arn:aws:iam::123456789012:role/exporter")
///     .allow(["s3:GetObject"], ["arn:aws:s3:::{bucket}/{prefix}*"])
///     .allow(["s3:ListBucket"], ["arn:aws:s3:::{bucket}"]);
/// assert_eq!(read_prefix.role_name(), Some("exporter"));
/// ```
#[derive(Debug, Clone)]
pub struct SessionTemplate {
    role_arn: String,
    statements: Vec<Statement>,
}

impl SessionTemplate {
    /// Sessions of the role `role_arn`, allowed nothing yet.
    pub fn new(role_arn: impl Into<String>) -> Self {
        Self {
            role_arn: role_arn.into(),
            statements: Vec::new(),
        }
    }

    /// Allows `actions` on `resources` (with `{argument}` placeholders).
    #[must_use]
    pub fn allow<A: Into<String>, R: Into<String>>(
        mut self,
        actions: impl IntoIterator<Item = A>,
        resources: impl IntoIterator<Item = R>,
    ) -> Self {
        self.statements.push(Statement {
            actions: actions.into_iter().map(Into::into).collect(),
            resources: resources.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// The role's ARN.
    pub fn role_arn(&self) -> &str {
        &self.role_arn
    }

    /// The role's name (the ARN's last path segment), if it is a role ARN.
    pub fn role_name(&self) -> Option<&str> {
        role_name(&self.role_arn)
    }

    /// What is wrong with the template, if anything.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.role_name().is_none() {
            return Some("its role ARN is not an IAM role's (arn:...:iam::ACCOUNT:role/NAME)");
        }
        if self.statements.is_empty()
            || self
                .statements
                .iter()
                .any(|s| s.actions.is_empty() || s.resources.is_empty())
        {
            return Some("it allows nothing");
        }
        None
    }

    /// The session policy for a call with these (recorded) arguments.
    pub(crate) fn policy(&self, args: &Value) -> Result<Value, String> {
        let statements = self
            .statements
            .iter()
            .map(|statement| {
                let resources = statement
                    .resources
                    .iter()
                    .map(|resource| fill(resource, args))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(json!({
                    "Action": statement.actions,
                    "Effect": "Allow",
                    "Resource": resources,
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(json!({"Statement": statements, "Version": "2012-10-17"}))
    }
}

/// The role name in an IAM role ARN.
pub(crate) fn role_name(arn: &str) -> Option<&str> {
    let (head, path) = arn.split_once(":role/")?;
    let name = path.rsplit('/').next()?;
    (head.starts_with("arn:") && head.contains(":iam::") && !name.is_empty()).then_some(name)
}

/// `resource` with each `{name}` replaced by the argument `name`.
fn fill(resource: &str, args: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(resource.len());
    let mut rest = resource;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("resource {resource:?} has an unclosed placeholder"))?;
        let name = &after[..close];
        let value = args
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("argument {name} is not a recorded string"))?;
        if !plain(value) {
            return Err(format!(
                "argument {name} is not a plain name (letters, digits, . _ - / = + @ , :)"
            ));
        }
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn plain(value: &str) -> bool {
    !value.is_empty()
        && !value.contains("..")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/=+@,:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> SessionTemplate {
        SessionTemplate::new("arn:aws:iam::123456789012:role/data/exporter")
            .allow(["s3:GetObject"], ["arn:aws:s3:::{bucket}/{prefix}*"])
    }

    #[test]
    fn arguments_fill_the_policy_and_hostile_ones_are_refused() {
        let policy = template()
            .policy(&json!({"bucket": "reports", "prefix": "2026/q4/"}))
            .unwrap();
        assert_eq!(
            policy["Statement"][0]["Resource"],
            json!(["arn:aws:s3:::reports/2026/q4/*"])
        );
        for (bucket, why) in [
            ("*", "not a plain name"),
            ("reports/{prefix}", "not a plain name"),
            ("a b", "not a plain name"),
            ("../other", "not a plain name"),
            ("", "not a plain name"),
        ] {
            let err = template()
                .policy(&json!({"bucket": bucket, "prefix": "x"}))
                .unwrap_err();
            assert!(err.contains(why), "{bucket:?}: {err}");
        }
        let err = template().policy(&json!({"bucket": 7})).unwrap_err();
        assert!(
            err.contains("argument bucket is not a recorded string"),
            "{err}"
        );
    }

    #[test]
    fn a_template_names_a_role_and_allows_something() {
        assert_eq!(template().role_name(), Some("exporter"));
        assert_eq!(template().problem(), None);
        let nothing = SessionTemplate::new("arn:aws:iam::123456789012:role/exporter");
        assert_eq!(nothing.problem(), Some("it allows nothing"));
        let user =
            SessionTemplate::new("arn:aws:iam::123456789012:user/alice").allow(["s3:*"], ["*"]);
        assert!(user.problem().unwrap().contains("role ARN"));
    }
}
