//! The compile-time registry of gated functions: an auditor's list of the
//! program's privileged actions, and the start-up check that every policy
//! they name exists.

/// One function marked `#[requires_approval]`, registered at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatedFunction {
    module: &'static str,
    name: &'static str,
    policy: &'static str,
    /// Whether it takes its policy's minted credential (`credential = ..`).
    takes_credential: bool,
}

impl GatedFunction {
    #[doc(hidden)]
    pub const fn new(module: &'static str, name: &'static str, policy: &'static str) -> Self {
        Self {
            module,
            name,
            policy,
            takes_credential: false,
        }
    }

    #[doc(hidden)]
    #[must_use]
    pub const fn taking_credential(mut self) -> Self {
        self.takes_credential = true;
        self
    }

    /// The action: the function's full path.
    pub fn action(&self) -> String {
        format!("{}::{}", self.module, self.name)
    }

    /// The policy it names.
    pub fn policy(&self) -> &'static str {
        self.policy
    }

    /// Whether its body takes the credential its policy mints.
    pub fn takes_credential(&self) -> bool {
        self.takes_credential
    }
}

inventory::collect!(GatedFunction);

/// Every gated function linked into this program, sorted by action.
///
/// ```
/// use approval_core::{gated_functions, requires_approval, ApprovalError};
///
/// #[requires_approval(policy = "key-rotation")]
/// async fn rotate(key: String) -> Result<(), ApprovalError> { Ok(()) }
///
/// let listed = gated_functions();
/// assert!(listed.iter().any(|f| f.action().ends_with("::rotate") && f.policy() == "key-rotation"));
/// ```
pub fn gated_functions() -> Vec<GatedFunction> {
    let mut all: Vec<GatedFunction> = inventory::iter::<GatedFunction>().copied().collect();
    all.sort_by_key(GatedFunction::action);
    all.dedup();
    all
}
