//! The HTTP listener both services run: HTTP/1.1 with upgrades, bounded and timed out.
//!
//! `axum::serve` sets none of the limits a service facing a hostile network needs: no
//! header-read timeout (a client that sends half a request line holds its connection for
//! good), no bound on open connections, and Nagle's algorithm left on (a small response or
//! frame then waits for the peer's delayed ACK: a 40 ms stall on Linux). [`serve`] accepts
//! with those set:
//!
//! - **Connection cap.** A permit of [`Limits::max_connections`] is taken *before* `accept`
//!   and lives as long as the connection (an upgraded WebSocket included). At the cap the
//!   listener stops accepting; new connections wait in the kernel's backlog instead of
//!   costing memory here.
//! - **Header-read timeout.** Counted from the moment the server waits for a request head
//!   (the first request, and every keep-alive request after it) to its last byte:
//!   [`Limits::header_read_timeout`]. A connection that has not sent a whole head by then is
//!   closed. Body reads are timed by the handlers that read bodies, after their checks passed.
//! - **`TCP_NODELAY`** on every accepted socket: responses and stream frames leave at once.
//! - **Shutdown.** When `shutdown` is cancelled the listener closes and every HTTP
//!   connection finishes the request in flight, then closes. Upgraded connections (WebSocket)
//!   are no longer HTTP and are the application's to end. [`serve`] returns once the HTTP
//!   connections are done; callers bound that wait with their own deadline.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default [`Limits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to pause accepting after `accept` fails (out of file descriptors, say), so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What one listener allows a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a complete request head (request line and headers).
    pub header_read_timeout: Duration,
    /// Most connections open at once (HTTP and upgraded).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: 10_000,
        }
    }
}

/// Serve `service` (an `axum::Router`, say) on `listener` until `shutdown` is cancelled, then
/// let the HTTP connections finish their request in flight and return.
///
/// # Errors
/// Never returns an error today; the `Result` leaves room for listener failures that must
/// stop the service.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    S: tower_service::Service<
            http::Request<Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "accept failed; pausing the listener");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, %peer, "cannot set TCP_NODELAY");
        }
        let service = service.clone();
        let hyper_service = hyper::service::service_fn(move |req| {
            let mut service = service.clone();
            async move { tower_service::Service::call(&mut service, req).await }
        });
        let conn = http
            .serve_connection(TokioIo::new(stream), hyper_service)
            .with_upgrades();
        let stop = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = stop.cancelled() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = ended {
                tracing::trace!(%err, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    fn hello() -> impl tower_service::Service<
        http::Request<Incoming>,
        Response = http::Response<String>,
        Error = Infallible,
        Future = std::future::Ready<Result<http::Response<String>, Infallible>>,
    > + Clone {
        tower::service_fn(|_req: http::Request<Incoming>| {
            std::future::ready(Ok::<_, Infallible>(http::Response::new("hi".to_owned())))
        })
    }

    async fn start(limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, hello(), limits, stop.clone()));
        (addr, stop)
    }

    /// Read until the peer closes; `None` if it did not within `limit`.
    async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        tokio::time::timeout(limit, stream.read_to_end(&mut out))
            .await
            .ok()
            .map(|_| out)
    }

    #[tokio::test]
    async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
        let (addr, _stop) = start(Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        })
        .await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let answer = read_until_closed(&mut slow, Duration::from_secs(5)).await;
        assert!(answer.is_some(), "the connection was still open after 5 s");
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn a_whole_request_is_answered_and_the_socket_has_nodelay() {
        let (addr, _stop) = start(Limits::default()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut client, Duration::from_secs(5))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("hi"), "{text}");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_one_closes() {
        let (addr, _stop) = start(Limits {
            max_connections: 1,
            ..Limits::default()
        })
        .await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        first
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = first.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        // The first connection is kept alive: the second is connected by the kernel but not
        // served.
        let mut second = TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
        assert!(waiting.is_err(), "a connection beyond the cap was served");
        drop(first);
        let answer = read_until_closed(&mut second, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_returns() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, hello(), Limits::default(), stop.clone()));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
