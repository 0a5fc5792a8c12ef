use approval_core::{requires_approval, ApprovalError};

struct Connection;

#[requires_approval(policy = "p")]
async fn export(conn: Connection, table: String) -> Result<(), ApprovalError> {
    let _ = (conn, table);
    Ok(())
}

fn main() {}
