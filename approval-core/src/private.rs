//! Support for code that `#[requires_approval]` generates. Not a public API:
//! names and signatures change without notice.

use std::future::Future;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::canonical::CanonicalJson;
use crate::error::ApprovalError;
use crate::gate::{Approval, Call, Gate};
use crate::redact::Redact;

pub use inventory;
pub use serde;

pub use crate::registry::GatedFunction;

static GLOBAL: OnceLock<Gate> = OnceLock::new();

tokio::task_local! {
    static SCOPED: Gate;
}

/// Installs the gate gated functions use when none is named or scoped.
pub(crate) fn install_global(gate: Gate) -> Result<(), Gate> {
    GLOBAL.set(gate)
}

// Not an `async fn`: its state machine would hold `future` twice (as the
// argument and inside the awaited scope), doubling a waiting call's size.
pub(crate) fn scope<F: Future>(gate: Gate, future: F) -> impl Future<Output = F::Output> {
    SCOPED.scope(gate, future)
}

pub(crate) fn sync_scope<R>(gate: Gate, f: impl FnOnce() -> R) -> R {
    SCOPED.sync_scope(gate, f)
}

/// The gate for a call: the one named in the attribute, else the scoped
/// one, else the global one.
pub fn resolve_gate(named: Option<&Gate>) -> Result<Gate, ApprovalError> {
    if let Some(gate) = named {
        return Ok(gate.clone());
    }
    if let Ok(gate) = SCOPED.try_with(Gate::clone) {
        return Ok(gate);
    }
    GLOBAL.get().cloned().ok_or(ApprovalError::NoGate)
}

/// Proves at compile time that a parameter can be recorded.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be recorded in the approval request: it is not `serde::Serialize`",
    label = "not `Serialize`",
    note = "derive `Serialize` for it, or list the parameter in `skip(..)` or `redact(..)`"
)]
pub trait RecordableArg {
    /// The argument as JSON.
    fn to_json(&self) -> Result<Value, crate::CanonicalError>;
}

impl<T: Serialize + ?Sized> RecordableArg for T {
    fn to_json(&self) -> Result<Value, crate::CanonicalError> {
        // serde_json writes NaN and infinities as `null`: refuse them first.
        crate::finite::check(self).map_err(|_| crate::CanonicalError::NonFinite)?;
        serde_json::to_value(self).map_err(|e| crate::CanonicalError::Serialize(e.to_string()))
    }
}

/// Proves at compile time that a gated function returns `Result<T, E>`
/// with `E: From<ApprovalError> + Display` (the text is recorded where the
/// policy opts in).
#[diagnostic::on_unimplemented(
    message = "a gated function must return `Result<T, E>` where `E: From<approval_core::ApprovalError> + Display`, not `{Self}`",
    label = "this return type cannot carry an approval error"
)]
pub trait GatedReturn {}
impl<T, E: From<ApprovalError> + std::fmt::Display> GatedReturn for Result<T, E> {}

/// Checks the return type (spanned at it by the macro).
pub fn gated_return<R: GatedReturn>() {}

/// The arguments of a call, as recorded and as bound.
#[derive(Debug)]
pub struct Args {
    gate: Gate,
    record: Map<String, Value>,
    /// Redacted values in clear, for the binding: (group, name, value).
    /// Without redactions the binding covers exactly what is recorded.
    clear: Vec<(Option<String>, String, Value)>,
    skipped: Vec<String>,
    error: Option<ApprovalError>,
}

impl Args {
    /// Starts collecting for `gate`.
    pub fn new(gate: &Gate) -> Self {
        Self {
            gate: gate.clone(),
            record: Map::new(),
            clear: Vec::new(),
            skipped: Vec::new(),
            error: None,
        }
    }

    /// A recorded argument; inside `group` when it is a binding of a
    /// pattern parameter.
    pub fn arg_in<T: RecordableArg + ?Sized>(
        &mut self,
        group: Option<&str>,
        name: &str,
        value: &T,
    ) {
        match value.to_json() {
            Ok(value) => insert(&mut self.record, group, name, value),
            Err(e) => {
                self.error.get_or_insert(ApprovalError::InvalidArguments(e));
            }
        }
    }

    /// A redacted argument: the record keeps only its keyed digest.
    pub fn redact_in<T: Redact + ?Sized>(&mut self, group: Option<&str>, name: &str, value: &T) {
        let canonical = value.canonical_form();
        let digest = self.gate.digest(canonical.as_str().as_bytes());
        let shown = serde_json::json!({ "redacted": crate::chain::hex(&digest) });
        insert(&mut self.record, group, name, shown);
        match serde_json::from_str(canonical.as_str()) {
            Ok(value) => self
                .clear
                .push((group.map(str::to_owned), name.to_owned(), value)),
            Err(e) => {
                self.error.get_or_insert(ApprovalError::InvalidArguments(
                    crate::CanonicalError::Serialize(e.to_string()),
                ));
            }
        }
    }

    /// A skipped argument: named, not recorded.
    pub fn skip(&mut self, name: &str) {
        self.skipped.push(name.to_owned());
    }

    /// The call, or the first argument that could not be recorded.
    pub fn call(
        self,
        action: String,
        policy: &str,
        resource: Option<String>,
        reason: Option<String>,
    ) -> Result<Call, ApprovalError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let recorded = canonical(&self.record)?;
        let bound = if self.clear.is_empty() {
            recorded.clone()
        } else {
            canonical(&unredacted(self.record, self.clear))?
        };
        let mut call = Call::new(action, policy, recorded);
        call.binding_args = bound;
        call.skipped = self.skipped;
        call.resource = resource;
        call.reason = reason;
        Ok(call)
    }

    /// Only the unredacted arguments, for the check before the body runs.
    pub fn binding(self) -> Result<CanonicalJson, ApprovalError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        canonical(&unredacted(self.record, self.clear))
    }
}

fn canonical(map: &Map<String, Value>) -> Result<CanonicalJson, ApprovalError> {
    CanonicalJson::from_object(map).map_err(ApprovalError::InvalidArguments)
}

/// The recorded arguments with each redacted value put back in clear.
fn unredacted(
    mut record: Map<String, Value>,
    clear: Vec<(Option<String>, String, Value)>,
) -> Map<String, Value> {
    for (group, name, value) in clear {
        insert(&mut record, group.as_deref(), &name, value);
    }
    record
}

fn insert(map: &mut Map<String, Value>, group: Option<&str>, name: &str, value: Value) {
    let target = match group {
        None => map,
        Some(group) => match map
            .entry(group.to_owned())
            .or_insert_with(|| Value::Object(Map::new()))
        {
            Value::Object(inner) => inner,
            _ => return,
        },
    };
    target.insert(name.to_owned(), value);
}

/// `module_path!()` and the function's name, as the request's action.
pub fn action(module: &str, function: &str) -> String {
    format!("{module}::{function}")
}

/// Runs a future to completion from synchronous code.
///
/// - Outside any runtime: on a runtime made for this call.
/// - In a multi-thread tokio runtime: in place (`block_in_place`), so the
///   runtime's other threads go on serving approvers.
/// - In a current-thread runtime: refused, since blocking its only thread
///   would starve any approver running on it.
pub struct Blocking {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Blocking {
    /// Picks how to block for this thread.
    pub fn new() -> Result<Self, ApprovalError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => Ok(Self {
                runtime: None,
                handle,
            }),
            Ok(_) => Err(ApprovalError::WouldBlockRuntime),
            Err(_) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ApprovalError::Runtime(e.to_string()))?;
                let handle = runtime.handle().clone();
                Ok(Self {
                    runtime: Some(runtime),
                    handle,
                })
            }
        }
    }

    /// Runs `future` to completion.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            None => tokio::task::block_in_place(|| self.handle.block_on(future)),
        }
    }

    /// Runs an approved synchronous body and records how it ended.
    pub fn execute<T, E>(
        &self,
        approval: Approval,
        body: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<ApprovalError> + std::fmt::Display,
    {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let (outcome, error) = approval.outcome_of(&result);
        self.block_on(approval.record(outcome, error))?;
        match result {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
