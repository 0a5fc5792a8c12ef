//! The STS broker: an AssumeRole session per approved call, revoked by a
//! deny on that one session in its role's policies.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use approval_core::{
    BrokerError, CanonicalJson, Clock, Credential, CredentialBroker, CredentialHandle, MintRequest,
};
use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sdk_sts::error::DisplayErrorContext;
use serde_json::{Value, json};

use crate::iam::{Iam, IamError, elements};
use crate::template::{SessionTemplate, role_name};

/// What every session's name starts with, and every deny's: `revoke` acts
/// on no other session.
pub const SESSION_PREFIX: &str = "approval-";
/// The name of each revoked session's deny policy starts with this.
const DENY_PREFIX: &str = "approval-revoked-";
/// STS's shortest session.
const MIN_SESSION: Duration = Duration::from_secs(900);
/// STS's longest session (the role's own maximum may be lower).
const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);
/// Asked for less than the policy allows by this much, so a clock a
/// little ahead at STS still ends the session within the lifetime.
const SKEW: Duration = Duration::from_secs(30);
/// A revoked session's deny stays this long past the session's end.
const DENY_KEPT: Duration = Duration::from_secs(300);

/// Where the broker's STS and IAM requests go.
#[derive(Debug, Clone)]
pub struct Endpoints {
    region: String,
    sts: String,
    iam: String,
}

impl Endpoints {
    /// AWS's own: STS in `region`, the global IAM endpoint.
    pub fn aws(region: impl Into<String>) -> Self {
        let region = region.into();
        Self {
            sts: format!("https://sts.{region}.amazonaws.com"),
            iam: "https://iam.amazonaws.com".into(),
            region,
        }
    }

    /// Others (VPC endpoints, a local STS for tests), signed for `region`.
    pub fn custom(
        region: impl Into<String>,
        sts: impl Into<String>,
        iam: impl Into<String>,
    ) -> Self {
        Self {
            region: region.into(),
            sts: sts.into(),
            iam: iam.into(),
        }
    }
}

/// Mints an STS session per approved call: `AssumeRole` of its template's
/// role, with an inline session policy built from the approved arguments
/// (the session can do only what both the role and that policy allow),
/// named `approval-<request id>`, lasting no longer than the policy's
/// credential lifetime.
///
/// STS sessions cannot be ended one by one, so revoking one puts a deny of
/// everything for that session alone (`aws:userid`, the session's own id)
/// in its role's inline policies; each revoke also deletes the denies of
/// sessions that ended by themselves since. STS sessions last at least 15
/// minutes: a policy using this broker needs a credential lifetime of more
/// than that.
///
/// The broker's own identity needs `sts:AssumeRole` on the templates'
/// roles and `iam:PutRolePolicy`, `iam:ListRolePolicies` and
/// `iam:DeleteRolePolicy` on them; never give it to the agent.
///
/// ```
/// use approval_aws::{Credentials, Endpoints, SessionTemplate, StsBroker};
///
/// let broker = StsBroker::new(
///     Credentials::new("AKIDEXAMPLE", "secret", None, None, "broker"),
///     Endpoints::aws("eu-west-1"),
/// )?
/// .template(
///     "read-prefix",
///     SessionTemplate::new("arn:aws:iam::123456789012:role/exporter")
///         .allow(["s3:GetObject"], ["arn:aws:s3:::{bucket}/{prefix}*"]),
/// );
/// # Ok::<(), approval_core::BrokerError>(())
/// ```
pub struct StsBroker {
    sts: aws_sdk_sts::Client,
    iam: Iam,
    templates: HashMap<String, SessionTemplate>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for StsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.templates.keys().collect();
        names.sort();
        // Never the broker's credentials.
        f.debug_struct("StsBroker")
            .field("templates", &names)
            .finish_non_exhaustive()
    }
}

impl StsBroker {
    /// A broker acting as `credentials`, with no template yet.
    pub fn new(credentials: Credentials, endpoints: Endpoints) -> Result<Self, BrokerError> {
        use aws_smithy_http_client::tls;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new(endpoints.region))
            .endpoint_url(endpoints.sts)
            .credentials_provider(credentials.clone())
            .http_client(http)
            .build();
        Ok(Self {
            sts: aws_sdk_sts::Client::from_conf(config),
            iam: Iam::new(endpoints.iam, credentials).map_err(BrokerError::Backend)?,
            templates: HashMap::new(),
            clock: Arc::new(approval_core::SystemClock),
        })
    }

    /// Adds a template under the name policies use.
    #[must_use]
    pub fn template(mut self, name: impl Into<String>, template: SessionTemplate) -> Self {
        self.templates.insert(name.into(), template);
        self
    }

    /// Reads time from `clock` (tests move it on).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Deletes the denies of sessions of `role` that ended by themselves
    /// more than a few minutes ago.
    async fn tidy(&self, role: &str, now: SystemTime) -> Result<(), IamError> {
        let mut marker: Option<String> = None;
        let mut stale = Vec::new();
        loop {
            let mut params = vec![("RoleName", role)];
            if let Some(marker) = &marker {
                params.push(("Marker", marker));
            }
            let listed = self.iam.call("ListRolePolicies", &params).await?;
            for name in elements(&listed, "member") {
                let ended = name
                    .strip_prefix(DENY_PREFIX)
                    .and_then(|rest| rest.split_once('-'))
                    .and_then(|(secs, _)| secs.parse::<u64>().ok())
                    .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
                if ended.is_some_and(|ended| ended + DENY_KEPT < now) {
                    stale.push(name);
                }
            }
            marker = elements(&listed, "Marker").next();
            if elements(&listed, "IsTruncated").next().as_deref() != Some("true")
                || marker.is_none()
            {
                break;
            }
        }
        for name in stale {
            match self
                .iam
                .call(
                    "DeleteRolePolicy",
                    &[("RoleName", role), ("PolicyName", &name)],
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_no_such_entity() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The session name for a request: the prefix and the request id's
/// letters and digits, within STS's 64 characters.
fn session_name(request_id: &str) -> String {
    let mut name = String::from(SESSION_PREFIX);
    name.extend(
        request_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(64 - SESSION_PREFIX.len()),
    );
    name
}

#[async_trait]
impl CredentialBroker for StsBroker {
    fn check_template(&self, template: &str) -> Result<(), BrokerError> {
        let found = self
            .templates
            .get(template)
            .ok_or_else(|| BrokerError::UnknownTemplate(template.to_owned()))?;
        match found.problem() {
            Some(why) => Err(BrokerError::Scope {
                template: template.to_owned(),
                why: why.into(),
            }),
            None => Ok(()),
        }
    }

    async fn mint(&self, request: MintRequest<'_>) -> Result<Credential, BrokerError> {
        let template = request.template_in(&self.templates)?;
        let policy = template
            .policy(&request.args()?)
            .map_err(|why| request.scope_error(why))?;
        let left = request
            .expires_at
            .duration_since(self.clock.now())
            .unwrap_or_default()
            .saturating_sub(SKEW)
            .min(MAX_SESSION);
        if left < MIN_SESSION {
            return Err(request.scope_error(format!(
                "an STS session lasts at least 15 minutes, and the policy's credential lifetime leaves {} s",
                left.as_secs()
            )));
        }
        let session = session_name(&request.request.id);
        let seconds = i32::try_from(left.as_secs()).unwrap_or(i32::MAX);
        let assumed = self
            .sts
            .assume_role()
            .role_arn(template.role_arn())
            .role_session_name(&session)
            .policy(policy.to_string())
            .duration_seconds(seconds)
            .send()
            .await
            .map_err(|e| {
                BrokerError::Backend(format!("AssumeRole: {}", DisplayErrorContext(&e)))
            })?;
        let missing = |what: &str| BrokerError::Backend(format!("AssumeRole gave no {what}"));
        let keys = assumed
            .credentials()
            .ok_or_else(|| missing("credentials"))?;
        let user = assumed
            .assumed_role_user()
            .ok_or_else(|| missing("assumed role user"))?;
        let expires_at = SystemTime::try_from(*keys.expiration())
            .map_err(|_| missing("expiration a clock can hold"))?;
        let scope = CanonicalJson::from_value(&json!({
            "policy": policy,
            "role_arn": template.role_arn(),
            "session": session,
        }))
        .map_err(|e| BrokerError::Backend(e.to_string()))?;
        Ok(Credential::new(user.assumed_role_id(), scope, expires_at)
            .with_login(keys.access_key_id())
            .with_secret("secret_access_key", keys.secret_access_key())
            .with_secret("session_token", keys.session_token()))
    }

    async fn revoke(&self, credential: &CredentialHandle) -> Result<(), BrokerError> {
        let left_alone = |why: &str| {
            BrokerError::Backend(format!(
                "{} is not a session this broker mints ({why}); left alone",
                credential.id
            ))
        };
        // `ROLEID:session-name`, the session's `aws:userid`.
        let Some((_, session)) = credential.id.split_once(':') else {
            return Err(left_alone("not a session id"));
        };
        if session != session_name(&credential.request_id) {
            return Err(left_alone("not its request's session"));
        }
        let scope: Value = serde_json::from_str(credential.scope.as_str())
            .map_err(|e| BrokerError::Backend(e.to_string()))?;
        let role = scope
            .get("role_arn")
            .and_then(Value::as_str)
            .and_then(role_name)
            .ok_or_else(|| left_alone("no role in its scope"))?;
        let now = self.clock.now();
        if credential.expires_at <= now {
            return Ok(()); // Ended by itself.
        }
        let ends = credential
            .expires_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let name = format!("{DENY_PREFIX}{ends}-{}", &session[SESSION_PREFIX.len()..]);
        let deny = json!({
            "Statement": [{
                "Action": "*",
                "Condition": {"StringEquals": {"aws:userid": credential.id}},
                "Effect": "Deny",
                "Resource": "*",
            }],
            "Version": "2012-10-17",
        })
        .to_string();
        let put = self
            .iam
            .call(
                "PutRolePolicy",
                &[
                    ("RoleName", role),
                    ("PolicyName", &name),
                    ("PolicyDocument", &deny),
                ],
            )
            .await;
        match put {
            Ok(_) => {}
            // No role, no session of it.
            Err(e) if e.is_no_such_entity() => return Ok(()),
            Err(e) => return Err(BrokerError::Backend(e.to_string())),
        }
        if let Err(error) = self.tidy(role, now).await {
            // The session is denied; an old deny left is tidied next time.
            tracing::warn!(role, %error, "could not delete the denies of ended sessions");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_keep_letters_and_digits_within_sts_limit() {
        assert_eq!(session_name("01J9ZC4Q7W"), "approval-01J9ZC4Q7W");
        assert_eq!(session_name("a:b/c"), "approval-abc");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
    }
}
