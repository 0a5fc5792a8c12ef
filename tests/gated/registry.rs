//! The compile-time registry: every gated function in this test program,
//! and the start-up check of the policies they name.

use std::sync::Arc;
use std::time::Duration;

use approval_core::{
    ChainWriter, ConfigError, Gate, KeyId, MemorySink, MockApprover, MockBroker, Policy,
    WriterSecret, gated_functions,
};

fn gate_with(policy: &str) -> Gate {
    gate_minting(policy, true)
}

/// A gate with `policy`, and `minting` (which `credential.rs`'s functions
/// name) giving a credential if `mints`.
fn gate_minting(policy: &str, mints: bool) -> Gate {
    let secret = WriterSecret::from_hex(&"31".repeat(32)).unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("r").unwrap(),
        &secret,
    ))));
    let minting = Policy::new("minting", ["mock"], Duration::from_secs(1));
    let minting = if mints {
        minting.credential("broker", "t", Duration::from_secs(1))
    } else {
        minting
    };
    Gate::builder(sink)
        .approver("mock", Arc::new(MockApprover::silent("ci")))
        .broker("broker", Arc::new(MockBroker::new(["t"])))
        .policy(Policy::new(policy, ["mock"], Duration::from_secs(1)))
        .policy(minting)
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

#[test]
fn a_function_and_its_policy_that_disagree_on_a_credential_are_reported_at_start_up() {
    let err = gate_minting("p", false).check_registry().unwrap_err();
    let ConfigError::CredentialMismatch { mismatched } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        mismatched,
        &[
            ("gated::credential::export".to_owned(), "minting".to_owned()),
            (
                "gated::credential::export_blocking".to_owned(),
                "minting".to_owned()
            ),
            (
                "gated::credential::export_later".to_owned(),
                "minting".to_owned()
            ),
        ],
        "{err}"
    );
    let listed = gated_functions();
    let export = listed
        .iter()
        .find(|f| f.action() == "gated::credential::export")
        .unwrap();
    assert!(export.takes_credential());
}
