//! Credential brokers: instead of the agent holding every privilege of the
//! process it runs in, an approved call's body gets a credential minted for
//! that call alone (its scope derived from the approved arguments by a
//! template its policy names), and the credential is revoked when the body
//! ends.
//!
//! The gate drives a broker; a broker only talks to the system it mints
//! for. See [`CredentialBroker`] for the contract and
//! [`Policy::credential`](crate::Policy::credential) for how a policy asks
//! for one.

use std::time::SystemTime;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::ApprovalRequest;
use crate::error::BrokerError;
use approval_audit::CanonicalJson;

/// Mints credentials for approved calls and revokes them.
///
/// The gate calls [`mint`](Self::mint) after a call is approved and its
/// arguments checked again, records `credential_minted` (the credential's
/// id, scope and expiry, never its secrets), runs the body with the
/// credential, then calls [`revoke`](Self::revoke) and records
/// `credential_revoked`: when the body returns, fails or panics, when the
/// caller stops waiting on it, and at the next [`Gate::recover`] for any
/// credential a crash left. So `revoke` must work from the
/// [`CredentialHandle`] alone (what the record holds), and must succeed
/// for a credential that is already gone.
///
/// ```
/// use std::time::SystemTime;
/// use approval_core::{
///     BrokerError, CanonicalJson, Credential, CredentialBroker, CredentialHandle, MintRequest,
/// };
///
/// /// Hands out one-off tokens for a ticketing system's API.
/// #[derive(Debug)]
/// struct Tickets;
///
/// #[async_trait::async_trait]
/// impl CredentialBroker for Tickets {
///     fn check_template(&self, template: &str) -> Result<(), BrokerError> {
///         match template {
///             "comment-only" => Ok(()),
///             other => Err(BrokerError::UnknownTemplate(other.to_owned())),
///         }
///     }
///
///     async fn mint(&self, request: MintRequest<'_>) -> Result<Credential, BrokerError> {
///         let scope = CanonicalJson::from_serialize(&serde_json::json!({"may": "comment"}))
///             .map_err(|e| BrokerError::Backend(e.to_string()))?;
///         // A real broker asks its system for a token valid until
///         // `request.expires_at`, and names it so that `revoke` finds it.
///         Ok(Credential::new(format!("tok-{}", request.request.id), scope, request.expires_at)
///             .with_secret("token", "t0k3n"))
///     }
///
///     async fn revoke(&self, _credential: &CredentialHandle) -> Result<(), BrokerError> {
///         Ok(())
///     }
/// }
/// ```
///
/// [`Gate::recover`]: crate::Gate::recover
#[async_trait]
pub trait CredentialBroker: Send + Sync + std::fmt::Debug + 'static {
    /// Checks that `template` names a scope this broker can derive, when
    /// the gate is built: a policy naming a template its broker does not
    /// have fails at start-up, not at the first call.
    fn check_template(&self, template: &str) -> Result<(), BrokerError>;

    /// Mints a credential for `request`'s body: its scope derived from the
    /// approved arguments by the template, working no later than
    /// `request.expires_at`. An argument the template cannot turn into a
    /// scope is [`BrokerError::Scope`]; the call does not run.
    async fn mint(&self, request: MintRequest<'_>) -> Result<Credential, BrokerError>;

    /// Revokes a credential this broker minted, by what its
    /// `credential_minted` record holds; `Ok` if it is already gone.
    async fn revoke(&self, credential: &CredentialHandle) -> Result<(), BrokerError>;
}

/// What a broker is asked to mint a credential for.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct MintRequest<'a> {
    /// The approved request: its id, action, recorded arguments (redacted
    /// ones as digests, so no secret can reach a recorded scope) and actor.
    pub request: &'a ApprovalRequest,
    /// The policy's template for the scope.
    pub template: &'a str,
    /// The latest the credential may work until: now plus the policy's
    /// credential lifetime.
    pub expires_at: SystemTime,
}

impl MintRequest<'_> {
    /// The template of this name among a broker's `templates`, or
    /// [`BrokerError::UnknownTemplate`].
    pub fn template_in<'t, T>(
        &self,
        templates: &'t std::collections::HashMap<String, T>,
    ) -> Result<&'t T, BrokerError> {
        templates
            .get(self.template)
            .ok_or_else(|| BrokerError::UnknownTemplate(self.template.to_owned()))
    }

    /// A [`BrokerError::Scope`] for this request's template.
    pub fn scope_error(&self, why: impl Into<String>) -> BrokerError {
        BrokerError::Scope {
            template: self.template.to_owned(),
            why: why.into(),
        }
    }

    /// The approved arguments, as recorded, for a template to read.
    pub fn args(&self) -> Result<serde_json::Value, BrokerError> {
        serde_json::from_str(self.request.args.as_str())
            .map_err(|e| self.scope_error(e.to_string()))
    }
}

/// A credential minted for one approved call, as its body receives it.
///
/// Its secrets are wiped from memory when it is dropped, and neither
/// `Debug` nor any record shows them.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use approval_core::{CanonicalJson, Credential};
///
/// let scope = CanonicalJson::from_serialize(&serde_json::json!({"select": ["public.users"]}))?;
/// let expires = SystemTime::now() + Duration::from_secs(300);
/// let credential = Credential::new("approval_01j", scope, expires)
///     .with_login("approval_01j")
///     .with_secret("password", "hunter2");
/// assert_eq!(credential.secret("password"), Some("hunter2"));
/// assert!(!format!("{credential:?}").contains("hunter2"));
/// # Ok::<(), approval_core::CanonicalError>(())
/// ```
pub struct Credential {
    handle: CredentialHandle,
    login: Option<String>,
    secrets: Vec<(String, Zeroizing<String>)>,
}

impl Credential {
    /// A credential known to its system as `id`, allowed `scope` (a JSON
    /// object), working until `expires_at`.
    pub fn new(id: impl Into<String>, scope: CanonicalJson, expires_at: SystemTime) -> Self {
        Self {
            handle: CredentialHandle {
                request_id: String::new(),
                broker: String::new(),
                id: id.into(),
                scope,
                expires_at,
            },
            login: None,
            secrets: Vec::new(),
        }
    }

    /// Sets the name it logs in as (a user name, an access key id), where
    /// that is not a secret.
    #[must_use]
    pub fn with_login(mut self, login: impl Into<String>) -> Self {
        self.login = Some(login.into());
        self
    }

    /// Adds a secret (a password, a session token) by name.
    #[must_use]
    pub fn with_secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets
            .push((name.into(), Zeroizing::new(value.into())));
        self
    }

    /// What the gate records of it and revokes it by.
    pub fn handle(&self) -> &CredentialHandle {
        &self.handle
    }

    /// The name it logs in as, if the broker set one.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// A secret by name.
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn handle_mut(&mut self) -> &mut CredentialHandle {
        &mut self.handle
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names of the secrets only, never their values.
        let names: Vec<&str> = self.secrets.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Credential")
            .field("handle", &self.handle)
            .field("login", &self.login)
            .field("secrets", &names)
            .finish()
    }
}

/// What identifies a minted credential without its secrets: what the
/// `credential_minted` record holds, and all [`CredentialBroker::revoke`]
/// gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CredentialHandle {
    /// The approved request it was minted for (set by the gate).
    pub request_id: String,
    /// The broker's name in the gate (set by the gate).
    pub broker: String,
    /// What its system knows it by (a role name, a session name).
    pub id: String,
    /// What it may do: a JSON object, recorded.
    pub scope: CanonicalJson,
    /// When it stops working by itself.
    pub expires_at: SystemTime,
}

impl CredentialHandle {
    /// A handle, as a broker's tests or tools build one (the gate builds
    /// its own from what it minted or recorded).
    pub fn new(
        request_id: impl Into<String>,
        broker: impl Into<String>,
        id: impl Into<String>,
        scope: CanonicalJson,
        expires_at: SystemTime,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            broker: broker.into(),
            id: id.into(),
            scope,
            expires_at,
        }
    }
}

#[cfg(any(test, feature = "mock"))]
pub use mock::MockBroker;

#[cfg(any(test, feature = "mock"))]
mod mock {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{BrokerError, Credential, CredentialBroker, CredentialHandle, MintRequest};
    use approval_audit::CanonicalJson;

    /// A broker for tests and CI: mints `mock-<request id>` credentials
    /// (scope: the template and the approved arguments) and keeps which
    /// are live, so a test can check that each was revoked.
    ///
    /// ```
    /// use approval_core::MockBroker;
    ///
    /// let broker = MockBroker::new(["export"]);
    /// assert!(broker.live().is_empty());
    /// ```
    #[derive(Debug, Default)]
    pub struct MockBroker {
        templates: Vec<String>,
        live: Mutex<Vec<CredentialHandle>>,
        minted: Mutex<Vec<String>>,
        revoked: Mutex<Vec<String>>,
        fail_mint: AtomicBool,
        fail_revoke: AtomicBool,
    }

    impl MockBroker {
        /// A broker with these templates.
        pub fn new<S: Into<String>>(templates: impl IntoIterator<Item = S>) -> Self {
            Self {
                templates: templates.into_iter().map(Into::into).collect(),
                ..Self::default()
            }
        }

        /// Makes every mint fail (`true`) or succeed again.
        pub fn fail_mint(&self, fail: bool) {
            self.fail_mint.store(fail, Ordering::SeqCst);
        }

        /// Makes every revoke fail (`true`) or succeed again.
        pub fn fail_revoke(&self, fail: bool) {
            self.fail_revoke.store(fail, Ordering::SeqCst);
        }

        /// The credentials minted and not revoked.
        pub fn live(&self) -> Vec<CredentialHandle> {
            lock(&self.live).clone()
        }

        /// The ids of every credential minted, in order.
        pub fn minted(&self) -> Vec<String> {
            lock(&self.minted).clone()
        }

        /// The ids of every credential revoked, in order (one it did not
        /// mint too: after a restart, the records say what to revoke).
        pub fn revoked(&self) -> Vec<String> {
            lock(&self.revoked).clone()
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[async_trait::async_trait]
    impl CredentialBroker for MockBroker {
        fn check_template(&self, template: &str) -> Result<(), BrokerError> {
            if self.templates.iter().any(|t| t == template) {
                Ok(())
            } else {
                Err(BrokerError::UnknownTemplate(template.to_owned()))
            }
        }

        async fn mint(&self, request: MintRequest<'_>) -> Result<Credential, BrokerError> {
            if self.fail_mint.load(Ordering::SeqCst) {
                return Err(BrokerError::Backend("mock: mint refused".into()));
            }
            let scope = format!(
                r#"{{"args":{},"template":{}}}"#,
                request.request.args.as_str(),
                serde_json::Value::from(request.template)
            );
            let scope = CanonicalJson::parse(&scope).map_err(|e| BrokerError::Scope {
                template: request.template.to_owned(),
                why: e.to_string(),
            })?;
            let id = format!("mock-{}", request.request.id);
            let credential = Credential::new(id.clone(), scope, request.expires_at)
                .with_login(id.clone())
                .with_secret("token", format!("secret-for-{id}"));
            let mut handle = credential.handle().clone();
            handle.request_id.clone_from(&request.request.id);
            lock(&self.live).push(handle);
            lock(&self.minted).push(id);
            Ok(credential)
        }

        async fn revoke(&self, credential: &CredentialHandle) -> Result<(), BrokerError> {
            if self.fail_revoke.load(Ordering::SeqCst) {
                return Err(BrokerError::Backend("mock: revoke refused".into()));
            }
            lock(&self.live).retain(|c| c.id != credential.id);
            lock(&self.revoked).push(credential.id.clone());
            Ok(())
        }
    }
}
