//! The auditor's list: every privileged action this program can take, with
//! the policy that guards it, read from the compile-time registry that
//! `#[requires_approval]` fills.
//!
//! ```sh
//! cargo run --example inventory
//! ```
//!
//! A program lists its own gated functions (those linked into it); call
//! `approval_core::gated_functions()` from your service's admin command or
//! start-up log to give auditors the same list.

#![allow(clippy::print_stdout, reason = "an example talks to its user")]

mod crm {
    use approval_core::{ApprovalError, requires_approval};

    /// Exports a table to the data warehouse.
    #[requires_approval(policy = "data-export", resource = format!("warehouse/{table}"))]
    pub async fn export(table: &str) -> Result<u64, ApprovalError> {
        Ok(table.len() as u64)
    }
}

mod iam {
    use approval_core::{ApprovalError, requires_approval};

    /// Grants a role to a user.
    #[requires_approval(policy = "grant-role")]
    pub fn grant(user: &str, role: &str) -> Result<(), ApprovalError> {
        Ok(())
    }

    /// Rotates a signing key.
    #[requires_approval(policy = "key-rotation", redact(reason_code))]
    pub async fn rotate_key(name: &str, reason_code: &str) -> Result<(), ApprovalError> {
        Ok(())
    }
}

fn main() {
    // The functions are never called here: being linked in is enough.
    let functions = approval_core::gated_functions();
    let width = functions
        .iter()
        .map(|f| f.action().len())
        .max()
        .unwrap_or(0);
    println!("{:width$}  policy", "action");
    for function in &functions {
        println!("{:width$}  {}", function.action(), function.policy());
    }
    println!("{} gated functions", functions.len());
}
