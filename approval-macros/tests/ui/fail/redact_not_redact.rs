use approval_core::{requires_approval, ApprovalError};

struct Token;

#[requires_approval(policy = "p", redact(token))]
async fn export(token: Token) -> Result<(), ApprovalError> {
    let _ = token;
    Ok(())
}

fn main() {}
