//! End-to-end tests of the approval workspace; see `tests/*.rs`.

#![forbid(unsafe_code)]
