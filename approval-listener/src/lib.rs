//! The HTTP listener of the approval channels (Slack interactivity, the Teams
//! bot endpoint, the webhook callback, the decision API and the console).
//!
//! Those endpoints face the network, and most of what reaches them is not
//! yet authenticated: a signature or token is checked only once a whole
//! request has arrived. `axum::serve` puts no limit on how long a client may
//! take to send it or how many connections it may hold, so a few slow
//! clients (slowloris) can keep every reviewer's vote out. [`Server`] serves
//! the same [`Router`] with three limits:
//!
//! - a **header read timeout** ([`DEFAULT_HEADER_READ_TIMEOUT`]): a
//!   connection that has not sent a whole request head within it, including
//!   an idle keep-alive connection between requests, is closed;
//! - a **request timeout** ([`DEFAULT_REQUEST_TIMEOUT`]): a request whose
//!   body and answer take longer gets `408 Request Timeout` and its
//!   connection is closed, so a body sent a byte at a time cannot hold it;
//! - a **connection limit** ([`DEFAULT_MAX_CONNECTIONS`]): beyond it, new
//!   connections wait in the kernel's accept queue until one closes, and the
//!   process's file descriptors are not exhausted.
//!
//! ```no_run
//! # async fn run(router: axum::Router) -> std::io::Result<()> {
//! use approval_listener::Server;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // Serve until the process ends; pass a signal to stop gracefully.
//! Server::new().serve(listener, router, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

/// How long a client may take to send a request's head (request line and
/// headers), from the connection's start or the end of its last answer.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may take from its head to its answer: reading the
/// body and running the handler. Slack itself gives up after 3 seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many connections are served at once.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;

/// The shortest timeout [`Server`] accepts: shorter ones are raised to it,
/// since a zero timeout would close every connection at once.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// An HTTP/1 server for a [`Router`], with the limits of the crate's
/// documentation. `Server::new()` has the documented defaults.
///
/// ```
/// use std::time::Duration;
/// use approval_listener::Server;
///
/// let server = Server::new()
///     .header_read_timeout(Duration::from_secs(5))
///     .max_connections(64);
/// assert_eq!(server.limits().max_connections, 64);
/// ```
#[derive(Clone, Debug)]
pub struct Server {
    limits: Limits,
}

/// The limits a [`Server`] applies (see [`Server::limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: u32,
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// A server with the default limits.
    ///
    /// ```
    /// use approval_listener::{DEFAULT_MAX_CONNECTIONS, Server};
    ///
    /// assert_eq!(Server::new().limits().max_connections, DEFAULT_MAX_CONNECTIONS);
    /// ```
    pub fn new() -> Server {
        Server {
            limits: Limits {
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                max_connections: DEFAULT_MAX_CONNECTIONS,
            },
        }
    }

    /// Sets the header read timeout (at least [`MIN_TIMEOUT`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use approval_listener::Server;
    ///
    /// let server = Server::new().header_read_timeout(Duration::from_secs(2));
    /// assert_eq!(server.limits().header_read_timeout, Duration::from_secs(2));
    /// ```
    pub fn header_read_timeout(mut self, timeout: Duration) -> Server {
        self.limits.header_read_timeout = timeout.max(MIN_TIMEOUT);
        self
    }

    /// Sets the request timeout (at least [`MIN_TIMEOUT`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use approval_listener::{MIN_TIMEOUT, Server};
    ///
    /// let server = Server::new().request_timeout(Duration::ZERO);
    /// assert_eq!(server.limits().request_timeout, MIN_TIMEOUT);
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Server {
        self.limits.request_timeout = timeout.max(MIN_TIMEOUT);
        self
    }

    /// Sets how many connections are served at once (at least one).
    ///
    /// ```
    /// use approval_listener::Server;
    ///
    /// assert_eq!(Server::new().max_connections(0).limits().max_connections, 1);
    /// ```
    pub fn max_connections(mut self, connections: u32) -> Server {
        self.limits.max_connections = connections.max(1);
        self
    }

    /// The limits this server applies.
    ///
    /// ```
    /// use approval_listener::{DEFAULT_REQUEST_TIMEOUT, Server};
    ///
    /// assert_eq!(Server::new().limits().request_timeout, DEFAULT_REQUEST_TIMEOUT);
    /// ```
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Serves `router` on `listener` until `shutdown` completes, then stops
    /// accepting, lets each open connection finish the request it is in
    /// (each bounded by the timeouts), and returns when all are closed.
    /// Pass `std::future::pending()` to serve for as long as the task runs.
    ///
    /// A failed `accept` (out of file descriptors, say) is a `tracing` event,
    /// and the server goes on after a short pause rather than ending.
    ///
    /// ```no_run
    /// # async fn run(router: axum::Router) -> std::io::Result<()> {
    /// use approval_listener::Server;
    ///
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let serving = tokio::spawn(Server::new().serve(listener, router, async move {
    ///     // Told to stop, or the sender is gone: stop either way.
    ///     match stopped.await {
    ///         Ok(()) | Err(_) => {}
    ///     }
    /// }));
    /// // ... later:
    /// if stop.send(()).is_err() {
    ///     eprintln!("the server had already stopped");
    /// }
    /// serving.await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let limits = self.limits;
        let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
        let (closing, closing_seen) = watch::channel(false);
        let mut shutdown = pin!(shutdown);
        let mut saturated = false;
        loop {
            if slots.available_permits() == 0 {
                if !saturated {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait until one closes"
                    );
                }
                saturated = true;
            } else {
                saturated = false;
            }
            let slot = tokio::select! {
                () = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    // The semaphore is never closed.
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a connection failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            tokio::spawn(connection(
                stream,
                peer,
                router.clone(),
                limits,
                slot,
                closing_seen.clone(),
            ));
        }
        drop(listener);
        closing.send_replace(true);
        // Every connection holds a slot until it closes.
        match slots.acquire_many(limits.max_connections).await {
            Ok(_all) => tracing::debug!("listener stopped: all connections closed"),
            Err(_) => tracing::debug!("listener stopped"),
        }
    }
}

/// Serves one connection, holding its `slot` until it closes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    slot: OwnedSemaphorePermit,
    mut closing: watch::Receiver<bool>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "could not disable Nagle's algorithm");
    }
    let request_timeout = limits.request_timeout;
    let service = service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        async move {
            match tokio::time::timeout(request_timeout, router.oneshot(request)).await {
                Ok(Ok(response)) => Ok::<_, Infallible>(response),
                Ok(Err(never)) => match never {},
                Err(_elapsed) => {
                    tracing::debug!(%peer, "request timed out: answered 408 and closing");
                    Ok(timed_out())
                }
            }
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut served = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let closing = async move {
        // Told to close, or the server is gone (its sender dropped).
        match closing.wait_for(|closing| *closing).await {
            Ok(_) | Err(_) => {}
        }
    };
    let result = tokio::select! {
        result = served.as_mut() => result,
        // Shutting down: finish what is in flight, take no new request.
        () = closing => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(error) = result {
        // A header read timeout, a malformed request, a reset: the peer's
        // doing, not the server's.
        tracing::debug!(%peer, %error, "connection closed with an error");
    }
    drop(slot);
}

fn timed_out() -> Response<Body> {
    let mut response = Response::new(Body::from("request timed out\n"));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
