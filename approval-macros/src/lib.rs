//! `#[requires_approval]`: use it through `approval-core`, which re-exports
//! it and holds everything the expansion calls.

#![forbid(unsafe_code)]

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Makes every call of a function wait for a person's approval, recorded on
/// the audit chain.
///
/// The function must return `Result<T, E>` with
/// `E: From<approval_core::ApprovalError> + Display`: a denial, a timeout or
/// a failure returns that error and the body never runs.
///
/// ```
/// use approval_core::{requires_approval, ApprovalError};
///
/// #[derive(Debug)]
/// struct Export { rows: u64 }
///
/// /// Exports a table; a person approves every call.
/// #[requires_approval(policy = "data-export", resource = format!("warehouse/{table}"), redact(token))]
/// async fn export_table(table: &str, token: &str, rows: u64) -> Result<Export, ApprovalError> {
///     Ok(Export { rows })
/// }
/// ```
///
/// # Options
///
/// - `policy = "name"` (required): the policy that decides who approves.
/// - `resource = <expr>`, `reason = <expr>`: text for reviewers, built from
///   the arguments if you like (anything `Display`).
/// - `skip(a, b)`: parameters left out of the request (their names are
///   recorded as skipped); they need not be `Serialize`.
/// - `redact(c)`: parameters recorded only as a keyed digest; they need
///   `approval_core::Redact` instead of `Serialize`.
/// - `gate = <expr>`: the gate to use (a `Gate` or `&Gate`); without it, the
///   gate scoped with `Gate::scope`, else the one installed with
///   `Gate::install_global`.
/// - `crate = path`: where `approval_core` is, if renamed.
/// - `defer`: the first call answers `ApprovalError::Pending` with the
///   request's id instead of waiting; the same call with the same arguments
///   later runs once if that request was approved.
/// - `credential = name`: the parameter `name` (of type
///   `approval_core::Credential`) is given the credential the policy's
///   broker mints for this approved call alone, and revoked when the body
///   ends. It leaves the function's signature: callers do not pass it.
///
/// ```
/// use approval_core::{requires_approval, ApprovalError, Credential};
///
/// /// Exports a table with a role that can read that table and nothing else.
/// #[requires_approval(policy = "data-export", credential = login)]
/// async fn export_table(table: String, login: Credential) -> Result<u64, ApprovalError> {
///     let _role = login.login();
///     Ok(0)
/// }
///
/// // Callers pass the table only.
/// let _call = export_table(String::from("users"));
/// ```
///
/// Every other parameter must be `serde::Serialize`. A pattern parameter
/// (`(table, rows): (String, u64)`) stays in the signature and is recorded
/// as an object named after the pattern, holding its bindings (which
/// `skip` and `redact` may name); a `_` parameter binds nothing and is not
/// recorded. `self` is the receiver, not an argument, and is not recorded.
///
/// # `async fn` and plain `fn`
///
/// An `async fn` waits without blocking. A plain `fn` blocks its thread
/// until the decision: outside any runtime it waits on a runtime of its
/// own; inside a multi-thread tokio runtime it waits in place
/// (`block_in_place`); inside a current-thread runtime it refuses with
/// `ApprovalError::WouldBlockRuntime` rather than starve the approvers
/// sharing that thread.
#[proc_macro_attribute]
pub fn requires_approval(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = match syn::parse::<attr::Options>(attr) {
        Ok(options) => options,
        Err(e) => return with_error(item, e),
    };
    let function = match syn::parse::<syn::ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(e) => return with_error(item, e),
    };
    match expand::expand(&options, &function) {
        Ok(tokens) => tokens.into(),
        Err(e) => with_error(item, e),
    }
}

/// The item unchanged plus the error: the build fails with our message
/// alone, not with a cascade of errors about a missing function.
fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let mut out = proc_macro2::TokenStream::from(item);
    out.extend(error.to_compile_error());
    out.into()
}
