use approval_core::{requires_approval, ApprovalError, Credential};

#[requires_approval(policy = "p", credential = login)]
async fn export(table: String, creds: Credential) -> Result<(), ApprovalError> {
    drop((table, creds));
    Ok(())
}

fn main() {}
