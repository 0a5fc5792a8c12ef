//! `#[requires_approval]`; use it through `approval-core`.
//!
//! The attribute arrives with the gate; this crate is a placeholder until
//! then so the workspace has its final shape.

#![forbid(unsafe_code)]
