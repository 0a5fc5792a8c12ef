use approval_core::requires_approval;

#[requires_approval(policy = "p")]
async fn export(table: String) -> Option<u32> {
    let _ = table;
    Some(1)
}

fn main() {}
