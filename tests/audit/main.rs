//! End-to-end tests of the audit chain: one test binary, one module an area.

mod crash;
mod power_loss;
mod restart;
