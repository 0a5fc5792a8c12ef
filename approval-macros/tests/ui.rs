//! Every misuse of `#[requires_approval]` is a compile error that says what
//! is wrong, pointing at the culprit. Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p approval-macros --test ui` and review
//! them like code.

#[test]
fn misuses_are_compile_errors_at_the_right_span() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
}
