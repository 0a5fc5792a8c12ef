//! A plain HTTP/1.1 client for the loopback benchmarks (included by
//! `#[path]`): keep-alive connections, one request at a time each, so the
//! load generator takes as little of the shared cores as it can.

use std::time::Duration;

/// One keep-alive connection.
pub(crate) struct Connection {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    pub(crate) async fn open(host: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(host).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buffer: Vec::with_capacity(1024),
        }
    }

    /// Sends one request; returns the response's status.
    pub(crate) async fn send(&mut self, request: &[u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(request).await.expect("write");
        self.buffer.clear();
        let mut chunk = [0u8; 1024];
        // Read the head, then the body its Content-Length names.
        let head_end = loop {
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed");
            self.buffer.extend_from_slice(&chunk[..n]);
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("length"));
        while self.buffer.len() < head_end + length {
            let n = self.stream.read(&mut chunk).await.expect("read");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        head[9..12].parse().expect("status")
    }
}

/// Sends `requests` over `connections` keep-alive connections, each one
/// request at a time; returns the status of each.
pub(crate) async fn send_raw(host: &str, requests: Vec<Vec<u8>>, connections: usize) -> Vec<u16> {
    let per = requests.len().div_ceil(connections);
    let mut tasks = Vec::new();
    let mut requests = requests.into_iter();
    for _ in 0..connections {
        let batch: Vec<_> = requests.by_ref().take(per).collect();
        let host = host.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&host).await;
            let mut statuses = Vec::with_capacity(batch.len());
            for request in batch {
                statuses.push(connection.send(&request).await);
            }
            statuses
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    all
}

/// The sample at `per_mille` thousandths of the sorted samples.
pub(crate) fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    sorted[(sorted.len() * per_mille / 1000).min(sorted.len() - 1)]
}

/// A `POST` of `body` to `path` on `host`, with `headers` (`Name: value`
/// lines), as request bytes.
pub(crate) fn post(host: &str, path: &str, headers: &[String], body: &str) -> Vec<u8> {
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    request.into_bytes()
}
