use approval_core::{requires_approval, ApprovalError};

#[requires_approval(resource = "x")]
async fn export(table: String) -> Result<(), ApprovalError> {
    let _ = table;
    Ok(())
}

fn main() {}
