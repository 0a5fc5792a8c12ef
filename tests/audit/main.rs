//! End-to-end tests of the audit chain: one test binary, one module an area.

mod crash;
mod credential_crash;
mod power_loss;
mod restart;
