use approval_core::requires_approval;

#[derive(Debug)]
struct MyError;

#[requires_approval(policy = "p")]
async fn export(table: String) -> Result<(), MyError> {
    let _ = table;
    Ok(())
}

fn main() {}
