//! Connections before requests: the accept loop behind [`crate::Server::run`].
//!
//! Everything here happens before a byte of a request reaches a handler, so that slow or
//! numerous clients cannot hold memory or threads without bound:
//! - at most [`HttpLimits::max_connections`] connections are served at once; one more is
//!   answered `503` with `Retry-After` at once, without reading its request, and closed;
//! - the request head must arrive within [`HttpLimits::header_timeout`] (also the longest a
//!   kept-alive connection may idle) and fit in [`HEAD_BUFFER`] bytes;
//! - a response that the client does not read for [`HttpLimits::write_timeout`] ends its
//!   connection (a stalled write never holds the response forever);
//! - on shutdown the listener closes first, then the connections finish the requests they
//!   have (each request admitted gets its answer), within [`HttpLimits::drain_timeout`].
//!
//! Bodies are read by the handlers, under their own timeout and size cap
//! ([`HttpLimits::body_timeout`], [`HttpLimits::max_body_bytes`]), and only after the pool has
//! admitted the request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Sleep;
use tower::ServiceExt as _;

use crate::HttpLimits;
use crate::metrics::Metrics;

/// hyper's read buffer per connection, which bounds a request head (its line and headers).
pub const HEAD_BUFFER: usize = 64 << 10;

/// The answer to a connection over the cap, written before its request is read.
fn over_capacity() -> Vec<u8> {
    let body = r#"{"error":{"code":"unavailable","message":"too many connections; retry later","type":"server_error"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropped on shutdown: every connection task watches it and starts its graceful close.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.connection_refused();
            tokio::spawn(refuse(stream, limits.write_timeout));
            continue;
        };
        let service =
            TowerToHyperService::new(router.clone().map_request(
                |r: hyper::Request<hyper::body::Incoming>| r.map(axum::body::Body::new),
            ));
        let mut stop = stop_rx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.connection_opened();
            let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(HEAD_BUFFER)
                .keep_alive(true);
            let conn = builder.serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended");
                        }
                        break;
                    }
                    changed = stop.changed(), if !stopping => {
                        let _ = changed;
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            metrics.connection_closed();
            drop(slot);
        });
    }
    drop(listener);
    drop(stop_tx);
    // Wait for the connections to finish what they have, up to the drain timeout.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = limits.max_connections - slots.available_permits(),
            "connections still open after the drain timeout"
        );
    }
    Ok(())
}

/// Answers a connection over the cap and closes it.
async fn refuse(mut stream: TcpStream, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        stream.write_all(&over_capacity()).await?;
        stream.shutdown().await
    })
    .await;
}

/// A stream whose writes fail with `TimedOut` once one has made no progress for `timeout`:
/// a client that stops reading its response releases its connection.
struct WriteDeadline {
    inner: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn new(inner: TcpStream, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After an inner poll: clears the timer on progress, arms it while pending, and turns a
    /// pending write that has waited too long into an error.
    fn track<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its response in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.track(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
