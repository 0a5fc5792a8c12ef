use approval_core::{requires_approval, ApprovalError};

#[requires_approval(policy = "p")]
async fn export((a, b): (u32, u32)) -> Result<u32, ApprovalError> {
    Ok(a + b)
}

fn main() {}
