//! Every HTTP exchange, measured by S3 operation.
//!
//! The operation is known only deep inside s3s (after it has routed the request), the status
//! and error code only in the response, and the duration only when the last body byte has
//! left: so the middleware puts an [`OperationName`] slot into the request for the access
//! check to fill, reads the error code out of small error bodies, and wraps the response body
//! so the exchange is recorded when the body ends (or the client goes away).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use super::{Metrics, latency_buckets, reg};

/// Error bodies larger than this are not read for their code (ours are a few hundred bytes).
const MAX_ERROR_BODY: u64 = 64 * 1024;

pub struct S3Metrics {
    requests: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    ttfb: HistogramVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    in_flight: IntGauge,
}

impl S3Metrics {
    pub(crate) fn new(r: &Registry) -> Self {
        let by_op = |name: &str, help: &str| {
            reg(r, IntCounterVec::new(Opts::new(name, help), &["operation"]))
        };
        let histogram = |name: &str, help: &str| {
            reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(latency_buckets()),
                    &["operation"],
                ),
            )
        };
        Self {
            requests: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "s3_requests_total",
                        "Requests answered, by S3 operation and HTTP status",
                    ),
                    &["operation", "status"],
                ),
            ),
            errors: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "s3_errors_total",
                        "Error responses by S3 operation and S3 error code",
                    ),
                    &["operation", "code"],
                ),
            ),
            duration: histogram(
                "s3_request_duration_seconds",
                "From a request's arrival to the last byte of its response",
            ),
            ttfb: histogram(
                "s3_time_to_first_byte_seconds",
                "From a request's arrival to the first byte of its response body",
            ),
            received: by_op("s3_received_bytes_total", "Request body bytes read"),
            sent: by_op("s3_sent_bytes_total", "Response body bytes sent"),
            in_flight: reg(
                r,
                IntGauge::new(
                    "s3_requests_in_flight",
                    "Requests whose response has not finished",
                ),
            ),
        }
    }
}

/// The slot a request carries for the name of the operation it turned out to be.
#[derive(Clone, Default)]
pub struct OperationName(Arc<OnceLock<String>>);

impl OperationName {
    /// Names the operation of the request carrying `ext` (the first name given sticks).
    pub fn set(ext: &http::Extensions, name: &str) {
        if let Some(slot) = ext.get::<OperationName>() {
            let _ = slot.0.set(name.to_owned());
        }
    }
}

/// What a request that never reached an operation is called.
const UNKNOWN: &str = "Unknown";

/// The middleware: measures the exchange around everything inside it.
pub async fn observe(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let name = OperationName::default();
    let received = Arc::new(AtomicU64::new(0));
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(name.clone());
    let req = Request::from_parts(
        parts,
        Body::new(Counted {
            inner: body,
            n: received.clone(),
        }),
    );
    metrics.s3.in_flight.inc();
    let mut exchange = Exchange {
        metrics: metrics.clone(),
        operation: String::new(),
        status: StatusCode::OK,
        start,
        received,
        sent: 0,
        first_byte: false,
    };
    let resp = next.run(req).await;
    exchange.operation = name.0.get().map_or(UNKNOWN, String::as_str).to_owned();
    exchange.status = resp.status();
    let (parts, mut body) = resp.into_parts();
    if parts.status.is_client_error() || parts.status.is_server_error() {
        let code;
        (code, body) = error_code(parts.status, body).await;
        metrics
            .s3
            .errors
            .with_label_values(&[&exchange.operation, &code])
            .inc();
    }
    if body.is_end_stream() {
        exchange.first_byte();
    }
    Response::from_parts(
        parts,
        Body::new(Observed {
            inner: body,
            exchange: Some(exchange),
        }),
    )
}

/// The S3 error code of an error response: from its XML body (which s3s writes even for
/// HEAD; hyper drops it on the wire), else the code S3 implies by status.
async fn error_code(status: StatusCode, body: Body) -> (String, Body) {
    let small = body
        .size_hint()
        .upper()
        .is_some_and(|n| n <= MAX_ERROR_BODY);
    if !small {
        return (code_for_status(status).to_owned(), body);
    }
    match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let code = code_in_xml(&bytes).unwrap_or_else(|| code_for_status(status).to_owned());
            (code, Body::from(bytes))
        }
        // The body failed while being read: the client gets what the inner body gave,
        // which is nothing more.
        Err(_) => (code_for_status(status).to_owned(), Body::empty()),
    }
}

fn code_in_xml(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    // Codes are identifiers; anything else is not a code (and must not become a label).
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| code.to_owned())
}

/// The generic codes S3 itself uses for body-less errors.
fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        411 => "MissingContentLength",
        412 => "PreconditionFailed",
        416 => "InvalidRange",
        500 => "InternalError",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        s if s >= 500 => "ServerError",
        _ => "ClientError",
    }
}

/// One exchange being measured; recorded when dropped (body finished or abandoned).
struct Exchange {
    metrics: Arc<Metrics>,
    operation: String,
    status: StatusCode,
    start: Instant,
    received: Arc<AtomicU64>,
    sent: u64,
    first_byte: bool,
}

impl Exchange {
    fn first_byte(&mut self) {
        if !self.first_byte {
            self.first_byte = true;
            self.metrics
                .s3
                .ttfb
                .with_label_values(&[&self.operation])
                .observe(self.start.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let s3 = &self.metrics.s3;
        let op = [self.operation.as_str()];
        s3.requests
            .with_label_values(&[&self.operation, self.status.as_str()])
            .inc();
        s3.duration
            .with_label_values(&op)
            .observe(self.start.elapsed().as_secs_f64());
        s3.received
            .with_label_values(&op)
            .inc_by(self.received.load(Relaxed));
        s3.sent.with_label_values(&op).inc_by(self.sent);
        s3.in_flight.dec();
    }
}

/// A response body that reports its first byte, its size and its end.
struct Observed {
    inner: Body,
    exchange: Option<Exchange>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(ex)) = (frame.data_ref(), self.exchange.as_mut())
                    && !data.is_empty()
                {
                    ex.first_byte();
                    ex.sent += data.len() as u64;
                }
            }
            // The body is over (or broke): the exchange ends here, not when hyper gets
            // around to dropping the body.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => drop(self.exchange.take()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that counts what is read from it.
struct Counted {
    inner: Body,
    n: Arc<AtomicU64>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.n.fetch_add(data.len() as u64, Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_codes_from_s3_error_bodies_only() {
        let xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";
        assert_eq!(code_in_xml(xml).as_deref(), Some("NoSuchKey"));
        assert_eq!(code_in_xml(b"internal error\n"), None);
        assert_eq!(code_in_xml(b"<Code></Code>"), None);
        assert_eq!(code_in_xml(b"<Code>a b</Code>"), None, "not a label value");
        assert_eq!(code_for_status(StatusCode::NOT_FOUND), "NotFound");
        assert_eq!(code_for_status(StatusCode::BAD_GATEWAY), "ServerError");
    }
}
