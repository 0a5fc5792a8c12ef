//! Runnable examples of the approval workspace; see `examples/*.rs`.

#![forbid(unsafe_code)]
