//! One gated call, as the macro (or a caller by hand) describes it.

use std::borrow::Cow;

use approval_audit::CanonicalJson;

/// One gated call, as the macro (or a caller by hand) describes it.
#[derive(Clone)]
#[non_exhaustive]
pub struct Call {
    /// The function's full path (a `&'static str` from the macro: no copy
    /// per call).
    pub action: Cow<'static, str>,
    /// The policy's name.
    pub policy: Cow<'static, str>,
    /// The arguments as recorded: skipped ones absent, redacted ones as
    /// `{"redacted":"<digest>"}`.
    pub args: CanonicalJson,
    /// Names of skipped parameters.
    pub skipped: Vec<String>,
    /// The unredacted arguments, for the binding digest: never shown, and
    /// set only by [`Call::new`] (the same as `args`) or the macro.
    pub(crate) binding_args: Option<CanonicalJson>,
    /// The system acted on.
    pub resource: Option<String>,
    /// Why, in the caller's words.
    pub reason: Option<String>,
    /// Whether the body takes the credential its policy mints.
    pub(crate) takes_credential: bool,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `binding_args` holds redacted values in clear: never shown.
        f.debug_struct("Call")
            .field("action", &self.action)
            .field("policy", &self.policy)
            .field("args", &self.args)
            .field("skipped", &self.skipped)
            .field("resource", &self.resource)
            .field("reason", &self.reason)
            .field("takes_credential", &self.takes_credential)
            .finish_non_exhaustive()
    }
}

impl Call {
    /// A call of `action` under `policy` with arguments that need no
    /// redaction.
    pub fn new(
        action: impl Into<Cow<'static, str>>,
        policy: impl Into<Cow<'static, str>>,
        args: CanonicalJson,
    ) -> Self {
        Self {
            action: action.into(),
            policy: policy.into(),
            binding_args: None,
            args,
            skipped: Vec::new(),
            resource: None,
            reason: None,
            takes_credential: false,
        }
    }

    /// What the binding is computed over: the arguments with redacted
    /// values in clear; the recorded arguments when nothing is redacted.
    pub(crate) fn binding_args(&self) -> &CanonicalJson {
        self.binding_args.as_ref().unwrap_or(&self.args)
    }

    /// Sets the resource.
    #[must_use]
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Says the body takes the credential its policy mints (see
    /// [`Confirmed::execute_with_credential`](crate::Confirmed::execute_with_credential)):
    /// a call that does not say so under a policy that mints, or says so
    /// under one that does not, is refused before anyone is asked.
    #[must_use]
    pub fn takes_credential(mut self) -> Self {
        self.takes_credential = true;
        self
    }

    /// Sets the reason.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}
