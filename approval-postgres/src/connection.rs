//! Where the database is and how it is reached, the same way for the sink,
//! the ledger and the reader: bounded in time, with TCP keepalives so that
//! a peer that vanished (a host down, a cable cut) is noticed instead of
//! waited on forever, and over TLS when the connection string asks for it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may be idle before keepalive probes start.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// The stream under every connection: TLS, or plain TCP or a Unix socket.
pub(crate) type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// A database to connect to: a connection string (a `postgres://` URL or
/// `key=value` pairs, as libpq reads them, with the options
/// `tokio-postgres` knows) and the certificates its server is checked
/// against.
///
/// TLS follows `sslmode`: `require` connects over TLS only, and always
/// checks the server's certificate and name (libpq's `verify-full`),
/// against the web PKI's roots or, after
/// [`trusting`](Self::trusting), the deployment's own CA only;
/// `disable` and `prefer` (the default) connect without TLS: an unchecked
/// TLS session would keep out eavesdroppers but not an attacker in the
/// middle, so this crate does not pretend to offer one.
///
/// ```
/// use approval_postgres::Database;
///
/// let db = Database::new("postgres://approval:s3cret@db.internal/approval?sslmode=require")?;
/// assert!(db.uses_tls());
/// assert!(!format!("{db:?}").contains("s3cret"));
/// assert!(Database::new("postgres://db.internal/approval?sslmode=bogus").is_err());
/// # Ok::<(), approval_postgres::DatabaseError>(())
/// ```
#[derive(Clone)]
pub struct Database {
    config: Config,
    tls: MakeRustlsConnect,
}

/// A connection string or a certificate file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseError {
    /// The connection string does not parse (its text is not repeated: it
    /// may hold a password).
    #[error("the database connection string is not valid: {0}")]
    ConnectionString(String),
    /// The TLS library refused its configuration.
    #[error("TLS to the database cannot be set up: {0}")]
    Tls(String),
    /// The CA file cannot be read, or holds no certificate.
    #[error("the database CA file {path} cannot be used: {cause}")]
    Certificates {
        /// The file.
        path: String,
        /// Why.
        cause: String,
    },
}

impl Database {
    /// Parses `connection_string`; TLS, if it asks for it, checks the
    /// server against the web PKI's roots.
    pub fn new(connection_string: &str) -> Result<Self, DatabaseError> {
        let config: Config = connection_string
            .parse()
            .map_err(|e: tokio_postgres::Error| DatabaseError::ConnectionString(e.to_string()))?;
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Ok(Self {
            config,
            tls: make_tls(roots)?,
        })
    }

    /// Trusts only the CA certificates in the PEM file at `path` (libpq's
    /// `sslrootcert`), such as a cloud provider's database CA bundle.
    pub fn trusting(mut self, path: impl AsRef<Path>) -> Result<Self, DatabaseError> {
        let path = path.as_ref();
        let unusable = |cause: String| DatabaseError::Certificates {
            path: path.display().to_string(),
            cause,
        };
        let mut roots = RootCertStore::empty();
        for certificate in
            CertificateDer::pem_file_iter(path).map_err(|e| unusable(e.to_string()))?
        {
            let certificate = certificate.map_err(|e| unusable(e.to_string()))?;
            roots
                .add(certificate)
                .map_err(|e| unusable(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(unusable("no certificate in it".into()));
        }
        self.tls = make_tls(roots)?;
        Ok(self)
    }

    /// Whether connections use TLS (`sslmode=require`).
    pub fn uses_tls(&self) -> bool {
        self.config.get_ssl_mode() == SslMode::Require
    }

    /// Connects; the connection's task is the caller's to spawn. The error
    /// is the cause in words: the database's message, never the
    /// connection string.
    pub(crate) async fn open(&self) -> Result<(Client, Connection<Socket, Stream>), String> {
        let mut config = self.config.clone();
        config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
        if !self.uses_tls() {
            config.ssl_mode(SslMode::Disable);
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(self.tls.clone())).await {
            Ok(Ok(connected)) => Ok(connected),
            Ok(Err(e)) => Err(cause(&e)),
            Err(_) => Err(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }
}

impl std::str::FromStr for Database {
    type Err = DatabaseError;

    fn from_str(connection_string: &str) -> Result<Self, Self::Err> {
        Self::new(connection_string)
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("Database")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .field("tls", &self.uses_tls())
            .finish_non_exhaustive()
    }
}

fn make_tls(roots: RootCertStore) -> Result<MakeRustlsConnect, DatabaseError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DatabaseError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The error's text: the database's message and SQLSTATE when it is the
/// database's, else the client's words and their causes (a TLS handshake
/// says why it failed).
pub(crate) fn cause(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
