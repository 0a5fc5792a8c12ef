// The protocol the macro expands to: an approval runs nothing until its
// arguments are checked again. Skipping the re-check does not compile.
use approval_core::{ApprovalError, Call, Gate};

async fn export(gate: Gate, call: Call) -> Result<u32, ApprovalError> {
    let approval = gate.approve(call).await?;
    approval.execute(async { Ok::<_, ApprovalError>(5000) }).await
}

fn export_blocking(gate: Gate, call: Call) -> Result<u32, ApprovalError> {
    let blocking = approval_core::__private::Blocking::new()?;
    let approval = blocking.block_on(gate.approve(call))?;
    blocking.execute(approval, || Ok::<_, ApprovalError>(5000))
}

fn main() {
    let _ = (export, export_blocking);
}
