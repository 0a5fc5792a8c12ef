//! The compile-time registry: every gated function in this test program,
//! and the start-up check of the policies they name.

use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    ChainWriter, ConfigError, Gate, KeyId, MemorySink, MockApprover, Policy, WriterSecret,
    gated_functions,
};

fn gate_with(policy: &str) -> Gate {
    let secret = WriterSecret::from_hex(&"31".repeat(32)).unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("r").unwrap(),
        &secret,
    ))));
    Gate::builder(sink)
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .policy(Policy::new(policy, ["mock"], Duration::from_secs(1)))
        .build()
        .unwrap()
}

#[test]
fn every_gated_function_is_listed_with_its_policy() {
    let listed: Vec<(String, &str)> = gated_functions()
        .iter()
        .map(|f| (f.action(), f.policy()))
        .collect();
    for action in [
        "gated::shapes::free_async",
        "gated::shapes::by_ref",
        "gated::shapes::by_mut",
        "gated::shapes::by_value",
        "gated::shapes::rotate",
        "gated::shapes::generic",
        "gated::shapes::own_error",
        "gated::shapes::grant",
        "gated::blocking::rotate_key",
    ] {
        assert!(
            listed.contains(&(action.to_owned(), "p")),
            "{action} missing from {listed:?}"
        );
    }
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
}

#[test]
fn a_missing_policy_is_reported_at_start_up() {
    assert!(gate_with("p").check_registry().is_ok());
    let err = gate_with("other").check_registry().unwrap_err();
    let ConfigError::MissingPolicies { missing } = &err else {
        panic!("{err}")
    };
    assert!(
        missing.contains(&("gated::blocking::rotate_key".to_owned(), "p".to_owned())),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("gated::shapes::free_async needs p"),
        "{err}"
    );
}
