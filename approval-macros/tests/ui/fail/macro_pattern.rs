use approval_core::{requires_approval, ApprovalError};

// A pattern written by a macro binds names the attribute cannot see: its
// values would reach the body outside the approval's binding.
macro_rules! pair {
    ($a:ident, $b:ident) => {
        ($a, $b)
    };
}

#[requires_approval(policy = "p")]
async fn export(pair!(table, rows): (String, u64)) -> Result<(), ApprovalError> {
    println!("{table} {rows}");
    Ok(())
}

fn main() {}
