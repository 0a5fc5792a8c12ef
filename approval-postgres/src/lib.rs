//! PostgreSQL for `approval-core`: [`PostgresSink`] keeps the audit chain
//! in a database, one chain per writer process, appends sharing commits;
//! [`PostgresCoordinator`] lets gate processes and endpoint replicas share
//! requests and votes through the [`ledger`]. Every connection goes to a
//! [`Database`] (TLS with `sslmode=require`). [`PostgresBroker`] mints a
//! login role per approved call, scoped to the tables its arguments name.
//!
//! The client is `tokio-postgres` rather than sqlx: it is what sqlx's
//! PostgreSQL driver would add (pipelining, `LISTEN`/`NOTIFY`) without
//! compile-time checks that need a database at build time, macros, or a
//! pool this crate does not need (one writer connection per sink).
//! Migrations are numbered SQL in [`schema`], applied at connect.

#![forbid(unsafe_code)]

mod broker;
mod connection;
mod coordinator;
pub mod ledger;
pub mod schema;
mod sink;
mod wire;

pub use broker::{PostgresBroker, ROLE_PREFIX, RoleTemplate, TablePrivilege};
pub use connection::{Database, DatabaseError};
pub use coordinator::{MIN_LEASE, PostgresCoordinator};
pub use sink::{ChainReader, PostgresSink};
pub use wire::ForwardingKey;
