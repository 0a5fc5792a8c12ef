//! Slow and greedy clients against the listener's limits, over real sockets
//! on 127.0.0.1. Every wait is bounded, so a limit that does not hold fails
//! the test instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use approval_listener::Server;
use axum::Router;
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than any limit a test sets: a wait this long means the limit
/// did not act.
const PATIENCE: Duration = Duration::from_secs(10);

const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

fn router() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/echo", post(|body: String| async move { body }))
}

async fn start(server: Server) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, router(), std::future::pending()));
    address
}

/// Reads until the server closes the connection; panics if it does not
/// within [`PATIENCE`].
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => {}
        // A reset is a close too.
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(error)) => panic!("reading failed: {error}"),
        Err(_) => panic!(
            "the server kept the connection open; it had sent {:?}",
            String::from_utf8_lossy(&answer)
        ),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `request` on a new connection and reads until the server closes it.
async fn exchange(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    until_closed(&mut stream).await
}

#[tokio::test]
async fn half_sent_requests_are_closed_and_real_ones_still_served() {
    let address = start(
        Server::new()
            .header_read_timeout(Duration::from_millis(300))
            .max_connections(8),
    )
    .await;
    // Every slot taken by a client that never finishes its headers.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: test\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // A real request waits for a slot, which the timeout frees.
    let answer = exchange(address, REQUEST).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    for stream in &mut slow {
        let rest = until_closed(stream).await;
        assert!(
            !rest.contains("200"),
            "a half-sent request was answered: {rest}"
        );
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let address = start(Server::new().header_read_timeout(Duration::from_millis(200))).await;
    let mut idle = TcpStream::connect(address).await.unwrap();
    until_closed(&mut idle).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_answer() {
    let address = start(Server::new().header_read_timeout(Duration::from_millis(200))).await;
    let answer = exchange(address, b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
}

#[tokio::test]
async fn a_body_sent_slowly_gets_408_and_the_connection_closes() {
    let address = start(Server::new().request_timeout(Duration::from_millis(300))).await;
    let answer = exchange(
        address,
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request timed out"), "{answer}");
    // The same request sent whole is answered.
    let answer = exchange(
        address,
        b"POST /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 5\r\n\r\nwhole",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("whole"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_slot() {
    let address = start(
        Server::new()
            .header_read_timeout(Duration::from_secs(60))
            .max_connections(2),
    )
    .await;
    let held = TcpStream::connect(address).await.unwrap();
    let _also_held = TcpStream::connect(address).await.unwrap();
    let mut third = TcpStream::connect(address).await.unwrap();
    third.write_all(REQUEST).await.unwrap();
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut first)).await;
    assert!(
        early.is_err(),
        "a third connection was served while two held both slots: {early:?}"
    );
    // A slot frees: the waiting connection is served.
    drop(held);
    let answer = until_closed(&mut third).await;
    assert!(answer.ends_with("hello"), "{answer}");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(Server::new().serve(listener, router(), async move {
        match stopped.await {
            Ok(()) | Err(_) => {}
        }
    }));
    assert!(exchange(address, REQUEST).await.ends_with("hello"));
    let mut idle = TcpStream::connect(address).await.unwrap();
    stop.send(()).unwrap();
    until_closed(&mut idle).await;
    tokio::time::timeout(PATIENCE, serving)
        .await
        .expect("the server did not stop")
        .unwrap();
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the listener still accepts after shutdown"
    );
}
