//! End-to-end tests of the approval workspace; see `tests/*.rs`.

#![forbid(unsafe_code)]

/// The README's examples, compiled and run as doc tests here, where every
/// crate they use is a dependency.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
