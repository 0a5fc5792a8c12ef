//! Connecting to the database, the same way for the sink and the ledger:
//! bounded in time, with TCP keepalives so that a peer that vanished (a
//! host down, a cable cut) is noticed instead of waited on forever.

use std::time::Duration;

use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may be idle before keepalive probes start.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// Connects to the database `config` names; the connection's task is the
/// caller's to spawn. The error is the cause in words: the database's
/// message, never the connection string.
pub(crate) async fn open(
    config: &Config,
) -> Result<(Client, Connection<Socket, NoTlsStream>), String> {
    let mut config = config.clone();
    config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
    match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls)).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(e)) => Err(cause(&e)),
        Err(_) => Err(format!(
            "no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// The error's text: the database's message and SQLSTATE when it is the
/// database's, else the client's words.
pub(crate) fn cause(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
