//! The `/metrics` HTTP endpoint (HTTP/1.1, hyper). Anything else is 404.
//!
//! The endpoint takes no credentials, so it bounds what a peer can hold: a request's headers
//! must arrive within [`HttpLimits::header_read`] (an idle keep-alive connection is closed after
//! the same time), a connection lasts at most [`HttpLimits::connection`] (a peer that never
//! reads its answers held its place for ever: hyper has no write timeout), and at most
//! [`HttpLimits::connections`] connections are served at once; one past that is closed as soon
//! as it is accepted.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What one scraper (or a peer posing as one) may hold.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time for a request's headers to arrive, and for an idle connection to send the next.
    pub header_read: Duration,
    /// Connections served at once.
    pub connections: usize,
    /// The longest one connection is served, however it behaves.
    pub connection: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            connections: 32,
            connection: Duration::from_secs(60),
        }
    }
}

/// Serves `render()` at `/metrics` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(limits.connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    // Out of descriptors, say: do not spin on the error.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics connection refused: too many open");
            drop(stream);
            continue;
        };
        let render = render.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move {
                    let res =
                        if req.uri().path() == "/metrics" && req.method() == hyper::Method::GET {
                            hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                // Off the runtime: the counts may read a shared backend.
                                .body(Full::new(Bytes::from(
                                    tokio::task::spawn_blocking(move || render())
                                        .await
                                        .unwrap_or_default(),
                                )))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        };
                    Ok::<_, Infallible>(res.expect("static response parts are valid"))
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // Past its time: the answer being written is finished if the peer reads it (a
                // scraper faster than `header_read` keeps one connection), else it is dropped.
                _ = tokio::time::sleep(limits.connection) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Serves a fixed body with `limits`; the token stops it.
    async fn endpoint(limits: HttpLimits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            Arc::new(|| "docent_up 1\n".to_string()),
            limits,
            stop.clone(),
        ));
        (addr, stop)
    }

    /// Everything the server sends until it closes the connection. The outer timeout only
    /// keeps a broken server from hanging the test run.
    async fn until_closed(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the server never closed the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A scrape, tried again until a slot is free (it frees once the server sees its holder
    /// go), for at most 5 s.
    async fn scrape_once_served(addr: std::net::SocketAddr) -> String {
        let mut served = String::new();
        for _ in 0..200 {
            served = scrape(addr).await;
            if !served.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        served
    }

    async fn scrape(addr: std::net::SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        until_closed(&mut s).await
    }

    #[tokio::test]
    async fn a_peer_that_never_finishes_its_headers_is_disconnected() {
        let (addr, stop) = endpoint(HttpLimits {
            header_read: Duration::from_millis(200),
            connections: 4,
            connection: Duration::from_secs(60),
        })
        .await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let got = until_closed(&mut slow).await;
        assert!(!got.contains("docent_up"), "{got}");
        // The endpoint still serves others.
        assert!(scrape(addr).await.contains("docent_up 1"));
        stop.cancel();
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (addr, stop) = endpoint(HttpLimits {
            header_read: Duration::from_millis(200),
            connections: 4,
            connection: Duration::from_secs(60),
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // One answer, then nothing more is asked: the server hangs up.
        let got = until_closed(&mut s).await;
        assert!(
            got.starts_with("HTTP/1.1 200") && got.contains("docent_up 1"),
            "{got}"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_and_a_freed_slot_serves_again() {
        let (addr, stop) = endpoint(HttpLimits {
            header_read: Duration::from_secs(60),
            connections: 1,
            connection: Duration::from_secs(60),
        })
        .await;
        // The first connection holds the only slot by sending nothing.
        let holder = TcpStream::connect(addr).await.unwrap();
        let refused = scrape(addr).await;
        assert!(refused.is_empty(), "{refused}");
        drop(holder);
        // The slot frees once the server sees the holder go.
        let served = scrape_once_served(addr).await;
        assert!(served.contains("docent_up 1"), "{served}");
        stop.cancel();
    }

    /// Found by a review: hyper has no write timeout, so a peer that never read its answers
    /// held its slot for ever. A connection now lasts at most `connection`.
    #[tokio::test]
    async fn a_connection_held_past_its_time_is_closed_and_frees_its_slot() {
        let (addr, stop) = endpoint(HttpLimits {
            header_read: Duration::from_secs(60),
            connections: 1,
            connection: Duration::from_millis(300),
        })
        .await;
        let mut holder = TcpStream::connect(addr).await.unwrap();
        until_closed(&mut holder).await;
        let served = scrape_once_served(addr).await;
        assert!(served.contains("docent_up 1"), "{served}");
        stop.cancel();
    }
}
