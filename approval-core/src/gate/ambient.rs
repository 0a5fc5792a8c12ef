//! The ambient gate: the one gated functions use when the attribute names
//! none (scoped to a task, else installed for the process).

use std::future::Future;
use std::sync::OnceLock;

use super::Gate;
use crate::error::ApprovalError;

static GLOBAL: OnceLock<Gate> = OnceLock::new();

tokio::task_local! {
    static SCOPED: Gate;
}

impl Gate {
    /// Makes this the gate that gated functions use when they name none and
    /// none is scoped. Set once per process; a second call returns the gate
    /// back as the error.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use approval_core::{ChainWriter, Gate, KeyId, MemorySink, WriterSecret};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let writer = Arc::new(ChainWriter::new(KeyId::new("k1")?, &WriterSecret::generate()?));
    /// let gate = Gate::builder(Arc::new(MemorySink::new(writer))).build()?;
    /// assert!(gate.clone().install_global().is_ok());
    /// assert!(gate.install_global().is_err(), "set once per process");
    /// # Ok(())
    /// # }
    /// ```
    pub fn install_global(self) -> Result<(), Gate> {
        GLOBAL.set(self)
    }

    /// Runs `future` with this gate as the one its gated calls use (tests
    /// use this to give each test its own gate). The future holds a clone
    /// of the gate, not a borrow: it can be spawned.
    // Not an `async fn`: its state machine would hold `future` twice (as the
    // argument and inside the awaited scope), doubling a waiting call's size.
    pub fn scope<F: Future>(&self, future: F) -> impl Future<Output = F::Output> + use<F> {
        SCOPED.scope(self.clone(), future)
    }

    /// Runs `f` with this gate scoped, for synchronous code.
    pub fn sync_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        SCOPED.sync_scope(self.clone(), f)
    }
}

/// The gate for a call: `named`, else the scoped one, else the global one.
pub(crate) fn ambient_gate(named: Option<&Gate>) -> Result<Gate, ApprovalError> {
    if let Some(gate) = named {
        return Ok(gate.clone());
    }
    if let Ok(gate) = SCOPED.try_with(Gate::clone) {
        return Ok(gate);
    }
    GLOBAL.get().cloned().ok_or(ApprovalError::NoGate)
}
