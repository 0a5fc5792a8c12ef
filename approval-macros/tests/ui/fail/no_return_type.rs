use approval_core::requires_approval;

#[requires_approval(policy = "p")]
fn export(table: String) {
    let _ = table;
}

fn main() {}
