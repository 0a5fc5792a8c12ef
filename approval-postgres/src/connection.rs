//! Where the database is and how it is reached, the same way for the sink,
//! the ledger and the reader: connecting bounded in time; TCP keepalives
//! and a TCP user timeout, so that a peer that vanished (a host down, a
//! cable cut) ends the connection within about a minute instead of never;
//! over TLS when the connection string asks for it.

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
/// How long a connection may be idle before keepalive probes start, how
/// often they go, and how many may go unanswered: a vanished peer is
/// noticed within about a minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;
/// How long sent data may go unacknowledged before the connection is
/// given up (a peer that vanished mid-query).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// tokio-postgres's keepalive idle time when the connection string sets
/// none.
const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

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
    /// The database could not be reached or refused the login (the
    /// database's words, never the connection string).
    #[error("could not connect to the database: {0}")]
    Connect(String),
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
            .map_err(|e: tokio_postgres::Error| DatabaseError::ConnectionString(cause(&e)))?;
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

    /// The same database, logged in as a credential a
    /// [`PostgresBroker`](crate::PostgresBroker) minted (its role and
    /// password) instead of the connection string's user.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use approval_core::{CanonicalJson, Credential};
    /// use approval_postgres::Database;
    ///
    /// let admin = Database::new("postgres://admin@db.internal/warehouse")?;
    /// let scope = CanonicalJson::parse("{}").unwrap();
    /// let minted = Credential::new("approval_01j", scope, SystemTime::now())
    ///     .with_login("approval_01j")
    ///     .with_secret("password", "s3cret");
    /// let scoped = admin.as_login(&minted);
    /// assert!(format!("{scoped:?}").contains("approval_01j"));
    /// # Ok::<(), approval_postgres::DatabaseError>(())
    /// ```
    #[must_use]
    pub fn as_login(&self, credential: &approval_core::Credential) -> Self {
        let mut config = self.config.clone();
        config.user(credential.login().unwrap_or(&credential.handle().id));
        config.password(credential.secret("password").unwrap_or_default());
        Self {
            config,
            tls: self.tls.clone(),
        }
    }

    /// Connects, with this crate's timeouts and keepalives, and runs the
    /// connection on the current runtime until the client is dropped.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, DatabaseError> {
        let (client, connection) = self.open().await.map_err(DatabaseError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %cause(&e), "database connection ended");
            }
        });
        Ok(client)
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
        // Unless the connection string chose otherwise.
        if config.get_keepalives() && config.get_keepalives_idle() == DEFAULT_KEEPALIVE_IDLE {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
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

/// What a session-level advisory lock is for: the text the server hashes
/// into the lock's key, before the name.
#[derive(Clone, Copy)]
pub(crate) enum Lock {
    /// The one writer of an audit chain.
    Chain,
    /// The one live process under a name.
    Process,
}

impl Lock {
    fn label(self) -> &'static str {
        match self {
            Self::Chain => "approval audit chain: ",
            Self::Process => "approval process: ",
        }
    }
}

/// Takes the `lock` on `name` for `client`'s session; returns whether it
/// did, and the session's backend pid.
///
/// `abandoned` is a session of this same holder that it gave up on (a
/// query that timed out, a connection that broke): the server may not
/// have noticed yet and still hold the lock for it, for as long as its
/// own keepalives take (hours by default). If that session, and only it,
/// holds the lock, it is terminated and the lock taken (waiting up to a
/// few seconds for it to go). A session another process holds is never
/// touched.
pub(crate) async fn take_lock(
    client: &Client,
    lock: Lock,
    name: &str,
    abandoned: Option<i32>,
) -> Result<(bool, i32), tokio_postgres::Error> {
    let take = "SELECT pg_try_advisory_lock(hashtextextended($1 || $2, 0)), pg_backend_pid()";
    let row = client.query_one(take, &[&lock.label(), &name]).await?;
    let (locked, pid): (bool, i32) = (row.get(0), row.get(1));
    let Some(old) = abandoned.filter(|old| !locked && *old != pid) else {
        return Ok((locked, pid));
    };
    // A bigint key is held as classid (high half), objid (low half),
    // objsubid 1.
    let ended: Option<bool> = client
        .query_opt(
            "SELECT pg_terminate_backend(l.pid, 5000)
               FROM pg_locks l,
                    (SELECT hashtextextended($1 || $2, 0) AS k) key
              WHERE l.locktype = 'advisory' AND l.granted AND l.pid = $3
                AND l.objsubid = 1
                AND l.classid = ((key.k >> 32) & 4294967295)::oid
                AND l.objid = (key.k & 4294967295)::oid",
            &[&lock.label(), &name, &old],
        )
        .await?
        .map(|row| row.get(0));
    if ended != Some(true) {
        return Ok((false, pid));
    }
    let row = client.query_one(take, &[&lock.label(), &name]).await?;
    Ok((row.get(0), pid))
}
