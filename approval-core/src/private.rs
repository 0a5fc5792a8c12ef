//! Support for code that `#[requires_approval]` generates. Not a public API:
//! names and signatures change without notice.

use std::future::Future;

use serde::Serialize;
use smallvec::SmallVec;
use std::ops::Range;

use crate::error::ApprovalError;
use crate::gate::{Approval, Call, Confirmed, Gate};
use crate::redact::Redact;
use approval_audit::CanonicalJson;

pub use inventory;
pub use serde;

pub use crate::registry::GatedFunction;

/// The gate for a call: the one named in the attribute, else the scoped
/// one, else the global one.
pub fn resolve_gate(named: Option<&Gate>) -> Result<Gate, ApprovalError> {
    crate::gate::ambient_gate(named)
}

/// Proves at compile time that a parameter can be recorded.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be recorded in the approval request: it is not `serde::Serialize`",
    label = "not `Serialize`",
    note = "derive `Serialize` for it, or list the parameter in `skip(..)` or `redact(..)`"
)]
pub trait RecordableArg {
    /// Appends the argument's canonical JSON (nothing on error).
    fn write_canonical(&self, out: &mut Vec<u8>) -> Result<(), crate::CanonicalError>;
}

impl<T: Serialize + ?Sized> RecordableArg for T {
    fn write_canonical(&self, out: &mut Vec<u8>) -> Result<(), crate::CanonicalError> {
        approval_audit::canonical::write_serialize(out, self)
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

/// The arguments of a call, as recorded and as bound: each argument's
/// canonical JSON written once into one buffer, then assembled into the
/// object (members sorted) without a generic value tree.
#[derive(Debug)]
pub struct Args {
    gate: Gate,
    /// Canonical values back to back: as recorded, and redacted ones' clear
    /// forms (never shown: `Args` is not kept past the call).
    values: Vec<u8>,
    /// Inline for the usual few parameters: no allocation per call.
    entries: SmallVec<[Entry; 4]>,
    skipped: Vec<String>,
    error: Option<ApprovalError>,
    takes_credential: bool,
}

/// One argument: where its values are in `Args::values`.
#[derive(Debug)]
struct Entry {
    /// The pattern parameter it is a binding of, if any.
    group: Option<&'static str>,
    name: &'static str,
    recorded: Range<usize>,
    /// The clear value, where it differs from what is recorded (redacted).
    clear: Option<Range<usize>>,
}

impl Entry {
    /// Its member name in the top-level object.
    fn top(&self) -> &'static str {
        self.group.unwrap_or(self.name)
    }
}

impl Args {
    /// Starts collecting for `gate`.
    pub fn new(gate: &Gate) -> Self {
        Self::owning(gate.clone())
    }

    /// Starts collecting the arguments that `approval` is checked against
    /// (for the gate that approved it).
    pub fn for_approval(approval: &Approval) -> Self {
        Self::owning(approval.gate())
    }

    fn owning(gate: Gate) -> Self {
        Self {
            gate,
            values: Vec::with_capacity(128),
            entries: SmallVec::new(),
            skipped: Vec::new(),
            error: None,
            takes_credential: false,
        }
    }

    /// A recorded argument; inside `group` when it is a binding of a
    /// pattern parameter.
    pub fn arg_in<T: RecordableArg + ?Sized>(
        &mut self,
        group: Option<&'static str>,
        name: &'static str,
        value: &T,
    ) {
        let start = self.values.len();
        match value.write_canonical(&mut self.values) {
            Ok(()) => self.entries.push(Entry {
                group,
                name,
                recorded: start..self.values.len(),
                clear: None,
            }),
            Err(e) => {
                self.error.get_or_insert(ApprovalError::InvalidArguments(e));
            }
        }
    }

    /// A redacted argument: the record keeps only its keyed digest.
    pub fn redact_in<T: Redact + ?Sized>(
        &mut self,
        group: Option<&'static str>,
        name: &'static str,
        value: &T,
    ) {
        let canonical = value.canonical_form();
        let digest = self.gate.digest(canonical.as_str().as_bytes());
        let start = self.values.len();
        self.values.extend_from_slice(b"{\"redacted\":\"");
        approval_audit::canonical::write_hex(&mut self.values, &digest);
        self.values.extend_from_slice(b"\"}");
        let middle = self.values.len();
        self.values.extend_from_slice(canonical.as_str().as_bytes());
        self.entries.push(Entry {
            group,
            name,
            recorded: start..middle,
            clear: Some(middle..self.values.len()),
        });
    }

    /// A skipped argument: named, not recorded.
    pub fn skip(&mut self, name: &str) {
        self.skipped.push(name.to_owned());
    }

    /// The body takes the credential its policy mints.
    pub fn takes_credential(&mut self) {
        self.takes_credential = true;
    }

    /// The call, or the first argument that could not be recorded.
    pub fn call(
        mut self,
        action: &'static str,
        policy: &'static str,
        resource: Option<String>,
        reason: Option<String>,
    ) -> Result<Call, ApprovalError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        self.sort()?;
        let recorded = self.object(false);
        let mut call = Call::new(action, policy, recorded);
        if self.entries.iter().any(|e| e.clear.is_some()) {
            call.binding_args = Some(self.object(true));
        }
        call.skipped = self.skipped;
        call.resource = resource;
        call.reason = reason;
        call.takes_credential = self.takes_credential;
        Ok(call)
    }

    /// Only the unredacted arguments, for the check before the body runs.
    pub fn binding(mut self) -> Result<CanonicalJson, ApprovalError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        self.sort()?;
        Ok(self.object(true))
    }

    /// Puts the entries in canonical member order: by top-level name, then
    /// by name within a pattern's group. Names are unique in a signature;
    /// a clash (which the macro cannot produce) is refused, not merged.
    fn sort(&mut self) -> Result<(), ApprovalError> {
        use approval_audit::canonical::cmp_utf16;
        self.entries.sort_unstable_by(|a, b| {
            cmp_utf16(a.top(), b.top()).then_with(|| cmp_utf16(a.name, b.name))
        });
        let clash = self.entries.windows(2).any(|w| {
            w[0].top() == w[1].top()
                && (w[0].group.is_none() || w[1].group.is_none() || w[0].name == w[1].name)
        });
        if clash {
            return Err(ApprovalError::InvalidArguments(
                crate::CanonicalError::DuplicateMember,
            ));
        }
        Ok(())
    }

    /// The sorted entries as one canonical object, with redacted values in
    /// clear or as recorded.
    fn object(&self, clear: bool) -> CanonicalJson {
        use approval_audit::canonical::write_str;
        let mut out = Vec::with_capacity(self.values.len() + 16 * self.entries.len() + 2);
        out.push(b'{');
        let mut open_group: Option<&str> = None;
        for (i, entry) in self.entries.iter().enumerate() {
            if open_group.is_some() && open_group != entry.group {
                out.push(b'}');
                open_group = None;
            }
            if i > 0 {
                out.push(b',');
            }
            if let Some(group) = entry.group
                && open_group.is_none()
            {
                write_str(&mut out, group);
                out.extend_from_slice(b":{");
                open_group = Some(group);
            }
            write_str(&mut out, entry.name);
            out.push(b':');
            let range = match (&entry.clear, clear) {
                (Some(clear), true) => clear,
                _ => &entry.recorded,
            };
            out.extend_from_slice(&self.values[range.clone()]);
        }
        if open_group.is_some() {
            out.push(b'}');
        }
        out.push(b'}');
        CanonicalJson::from_trusted_bytes(out)
    }
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

    /// Runs a confirmed synchronous body and records how it ended.
    pub fn execute<T, E>(
        &self,
        approval: Confirmed,
        body: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<ApprovalError> + std::fmt::Display,
    {
        self.block_on(approval.refuse_without_credential())?;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        self.finish(approval, result)
    }

    /// Runs a confirmed synchronous body with the credential its policy
    /// mints (revoked however the body ends) and records how it ended.
    pub fn execute_with_credential<T, E>(
        &self,
        approval: Confirmed,
        body: impl FnOnce(crate::Credential) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<ApprovalError> + std::fmt::Display,
    {
        let (credential, minted) = self.block_on(approval.mint())?;
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || body(credential)));
        self.block_on(minted.revoke("the body ended"));
        self.finish(approval, result)
    }

    fn finish<T, E>(
        &self,
        approval: Confirmed,
        result: std::thread::Result<Result<T, E>>,
    ) -> Result<T, E>
    where
        E: From<ApprovalError> + std::fmt::Display,
    {
        let (outcome, error) = approval.outcome_of(&result);
        self.block_on(approval.record(outcome, error))?;
        match result {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::{ChainWriter, KeyId, MemorySink, WriterSecret};

    fn gate() -> Gate {
        let secret = WriterSecret::from_hex(&"33".repeat(32)).unwrap();
        let writer = Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &secret));
        Gate::builder(Arc::new(MemorySink::new(writer)))
            .build()
            .unwrap()
    }

    #[test]
    fn arguments_assemble_into_the_canonical_object_recorded_and_in_clear() {
        let gate = gate();
        let collect = || {
            let mut args = Args::new(&gate);
            args.arg_in(None, "zeta", &1u8);
            args.arg_in(Some("(b, a)"), "b", &"x\"y");
            args.redact_in(None, "token", "s3cret");
            args.arg_in(Some("(b, a)"), "a", &2.5f64);
            args.arg_in(None, "Alpha", &vec![json!({"z": 1, "y": null})]);
            args.arg_in(None, "é", &'c');
            args.skip("scratch");
            args
        };
        let call = collect().call("m::f", "p", None, None).unwrap();
        let digest = approval_audit::hex::encode(&gate.digest(b"\"s3cret\""));
        let recorded = json!({
            "zeta": 1, "(b, a)": {"b": "x\"y", "a": 2.5}, "token": {"redacted": digest},
            "Alpha": [{"z": 1, "y": null}], "é": "c",
        });
        let clear = json!({
            "zeta": 1, "(b, a)": {"b": "x\"y", "a": 2.5}, "token": "s3cret",
            "Alpha": [{"z": 1, "y": null}], "é": "c",
        });
        assert_eq!(call.args, CanonicalJson::from_value(&recorded).unwrap());
        assert_eq!(
            call.binding_args(),
            &CanonicalJson::from_value(&clear).unwrap()
        );
        assert_eq!(call.skipped, ["scratch"]);
        assert_eq!(&collect().binding().unwrap(), call.binding_args());
        // Without redactions the two are the same text.
        let mut plain = Args::new(&gate);
        plain.arg_in(None, "n", &3u8);
        let call = plain.call("m::f", "p", None, None).unwrap();
        assert_eq!(call.args.as_str(), r#"{"n":3}"#);
        assert_eq!(call.binding_args(), &call.args);
    }

    #[test]
    fn a_bad_argument_or_a_clashing_name_refuses_the_call() {
        let gate = gate();
        let mut args = Args::new(&gate);
        args.arg_in(None, "ok", &1u8);
        args.arg_in(None, "ratio", &f64::NAN);
        let err = args.call("m::f", "p", None, None).unwrap_err();
        assert!(
            matches!(
                err,
                ApprovalError::InvalidArguments(crate::CanonicalError::NonFinite)
            ),
            "{err}"
        );
        let mut args = Args::new(&gate);
        args.arg_in(Some("g"), "a", &1u8);
        args.arg_in(None, "g", &2u8);
        let err = args.binding().unwrap_err();
        assert!(
            matches!(
                err,
                ApprovalError::InvalidArguments(crate::CanonicalError::DuplicateMember)
            ),
            "{err}"
        );
    }
}
