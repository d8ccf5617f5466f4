//! Accepting connections, and what a slow or stalled client may cost: a socket and a little
//! memory, never a thread, and never for long.
//!
//! `axum::serve` gives hyper no timer, so a connection may take forever to send its request
//! head, sit idle for good, or stop reading a response while the node keeps it; and it accepts
//! without limit. This loop is the same as axum's with four limits:
//! - at most `max_connections` open at once; past that, new connections wait in the kernel's
//!   backlog until one closes (nothing is read from them, so they cost no memory here);
//! - a request head must arrive within `header_timeout` of the connection becoming ready for
//!   one. hyper starts that clock as soon as it waits for a head, so this is also the idle
//!   keep-alive timeout: one setting, not two;
//! - a response write that makes no progress for `send_timeout` (the client stopped reading)
//!   closes the connection ([`SendDeadline`]);
//! - a request body that delivers nothing for `body_timeout` ends with an error the S3 layer
//!   answers as 400 RequestTimeout ([`BodyDeadline`]).
//!
//! And one correction: a request that asked `Expect: 100-continue` and was answered without
//! its body being read ends its connection (`Connection: close`). hyper keeps it otherwise,
//! and a client that skips the body after a final answer, as RFC 9110 lets it (botocore
//! does), has the first bytes of its next request taken as that body: `ET /bucket`, answered
//! SignatureDoesNotMatch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::serve::Listener;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;

/// hyper's HTTP/1 buffer limit (see where it is set).
const HTTP1_BUFFER: usize = 32 * 1024;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tower::ServiceExt;

/// The limits above, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub send_timeout: Duration,
    pub body_timeout: Duration,
}

/// The message a [`BodyDeadline`] error carries; `s3::put::body_error` recognises it.
pub const BODY_TIMEOUT_MESSAGE: &str =
    "RequestTimeout: the request body delivered nothing within the timeout";

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests (graceful shutdown) and returns when all have closed.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    // Connections hold a receiver: they start a graceful shutdown when it changes, and the
    // sender's `closed()` resolves once every one of them has finished.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, _addr) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = tower::service_fn(move |req: http::Request<Incoming>| {
                let watch = asks_continue(&req).then(|| Arc::new(AtomicBool::new(false)));
                let read = watch.clone();
                let req = req.map(|b| Body::new(BodyDeadline::new(b, limits.body_timeout, read)));
                let app = app.clone();
                async move {
                    let mut resp = app.oneshot(req).await?;
                    if watch.is_some_and(|w| !w.load(Ordering::Acquire)) {
                        resp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                // What hyper queues for a client that does not read (and the most a request
                // head may take): ~400 KiB by default, 32 KiB here, so 2,000 stalled readers
                // hold ~0.1 GiB of GET pieces instead of ~1 GiB.
                .max_buf_size(HTTP1_BUFFER);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(limits.header_timeout))
                .keep_alive_timeout(limits.send_timeout);
            let io = TokioIo::new(SendDeadline::new(io, limits.send_timeout));
            let conn =
                builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.changed() => conn.as_mut().graceful_shutdown(),
            }
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error while closing");
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    // Tell every connection, then wait for the last one.
    let _ = stop_tx.send(());
    stop_tx.closed().await;
}

/// Raises this process's open-file limit to its hard limit: every connection is a descriptor,
/// and the common soft default (1,024) is below what `max_connections` allows.
pub fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::warn!(
                    soft = lim.rlim_cur,
                    hard = lim.rlim_max,
                    "cannot raise the open-file limit"
                );
            }
        }
    }
}

/// Fires when the watched side has waited `limit` without progress. Only the start of a wait
/// is stamped, and the one timer is armed for it: when it fires for an earlier wait (progress
/// came since), it is re-armed for the rest. A stream of 16 KiB frames costs a flag each, not
/// a timer each.
struct Watchdog {
    limit: Duration,
    /// When the current wait began; `None` while the side is making progress.
    waiting_since: Option<tokio::time::Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Watchdog {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            waiting_since: None,
            timer: None,
        }
    }

    fn progressed(&mut self) {
        self.waiting_since = None;
    }

    /// Called when the watched side waits: true once this wait has lasted `limit`.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let since = *self
            .waiting_since
            .get_or_insert_with(tokio::time::Instant::now);
        let deadline = since + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

/// A connection whose writes fail once one has made no progress for `limit`: the peer stopped
/// reading, and the response it asked for would otherwise hold its buffers forever.
pub struct SendDeadline<IO> {
    inner: IO,
    watchdog: Watchdog,
}

impl<IO> SendDeadline<IO> {
    pub fn new(inner: IO, limit: Duration) -> Self {
        Self {
            inner,
            watchdog: Watchdog::new(limit),
        }
    }

    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Pending if self.watchdog.expired(cx) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing within the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
            ready => {
                self.watchdog.progressed();
                ready
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendDeadline<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendDeadline<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.on_write(cx, r)
    }
}

/// A request body that fails when it delivers nothing for `limit` while being read: a client
/// that stopped sending mid-upload.
pub struct BodyDeadline {
    inner: Incoming,
    watchdog: Watchdog,
    /// Set once the body has been read to its end (for `Expect: 100-continue` requests).
    read: Option<Arc<AtomicBool>>,
}

impl BodyDeadline {
    pub fn new(inner: Incoming, limit: Duration, read: Option<Arc<AtomicBool>>) -> Self {
        Self {
            inner,
            watchdog: Watchdog::new(limit),
            read,
        }
    }
}

/// Whether a request asks `Expect: 100-continue` for a body it has.
fn asks_continue(req: &http::Request<Incoming>) -> bool {
    use http_body::Body as _;
    req.headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        && !req.body().is_end_stream()
}

/// Why a [`BodyDeadline`] ended.
#[derive(Debug, thiserror::Error)]
#[error("{BODY_TIMEOUT_MESSAGE}")]
pub struct BodyTimedOut;

impl http_body::Body for BodyDeadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending if self.watchdog.expired(cx) => {
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.watchdog.progressed();
                if let Some(read) = &self.read
                    && (r.is_none() || self.inner.is_end_stream())
                {
                    read.store(true, Ordering::Release);
                }
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
