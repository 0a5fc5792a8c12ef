use approval_core::{requires_approval, ApprovalError};

#[requires_approval(policy = "p", timeout = 5)]
async fn export(table: String) -> Result<(), ApprovalError> {
    let _ = table;
    Ok(())
}

fn main() {}
