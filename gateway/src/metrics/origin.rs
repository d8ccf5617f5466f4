//! What this node asks of its origins: requests, bytes and errors per origin bucket.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::reg;
use crate::origin::OriginError;

pub(crate) struct OriginMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
    bytes: IntCounterVec,
    served: IntCounterVec,
    errors: IntCounterVec,
    backlog_objects: IntGaugeVec,
    backlog_bytes: IntGaugeVec,
    flushed: IntCounterVec,
}

impl OriginMetrics {
    pub(crate) fn new(r: &Registry) -> Self {
        Self {
            requests: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "origin_requests_total",
                        "Requests this node sent to an origin (the SDK's retries not counted), \
                         by local bucket and S3 operation",
                    ),
                    &["bucket", "operation"],
                ),
            ),
            seconds: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "origin_request_seconds",
                        "Time an origin request took, by local bucket and operation, until its \
                         answer (a GetObject: until the last byte of its piece was kept), \
                         retries included, failures too",
                    )
                    .buckets(super::latency_buckets()),
                    &["bucket", "operation"],
                ),
            ),
            bytes: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "origin_read_bytes_total",
                        "Object bytes this node read from an origin, by local bucket",
                    ),
                    &["bucket"],
                ),
            ),
            served: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "origin_served_bytes_total",
                        "Object bytes this node sent to S3 clients from an origin bucket, \
                         whoever fetched them from the upstream (divide the swarm's \
                         origin_read_bytes_total by this for the share the origin served)",
                    ),
                    &["bucket"],
                ),
            ),
            errors: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "origin_errors_total",
                        "Origin requests that failed, by local bucket and kind (not_found, \
                         access_denied, changed, rejected, unavailable, store)",
                    ),
                    &["bucket", "kind"],
                ),
            ),
            backlog_objects: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "origin_write_back_backlog_objects",
                        "Pending writes (objects and deletes) of a write-back origin bucket that \
                         this node is to upload, as of its last pass (the swarm's backlog is the \
                         sum over nodes)",
                    ),
                    &["bucket"],
                ),
            ),
            backlog_bytes: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "origin_write_back_backlog_bytes",
                        "Bytes of the pending objects of origin_write_back_backlog_objects",
                    ),
                    &["bucket"],
                ),
            ),
            flushed: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "origin_write_back_total",
                        "Pending writes this node passed to an origin, by local bucket and \
                         outcome (uploaded, deleted, failed)",
                    ),
                    &["bucket", "outcome"],
                ),
            ),
        }
    }

    /// Makes an origin's series exist from start (at zero), so rates and alerts see it.
    pub(crate) fn configured(&self, bucket: &str) {
        self.bytes.with_label_values(&[bucket]);
        self.served.with_label_values(&[bucket]);
        for op in ["HeadObject", "GetObject", "ListObjects"] {
            self.requests.with_label_values(&[bucket, op]);
        }
        self.errors.with_label_values(&[bucket, "unavailable"]);
    }

    pub(crate) fn backlog(&self, bucket: &str, objects: u64, bytes: u64) {
        self.backlog_objects
            .with_label_values(&[bucket])
            .set(objects as i64);
        self.backlog_bytes
            .with_label_values(&[bucket])
            .set(bytes as i64);
    }

    pub(crate) fn flushed(&self, bucket: &str, outcome: &str) {
        self.flushed.with_label_values(&[bucket, outcome]).inc();
    }

    pub(crate) fn seconds(&self, bucket: &str, op: &str, secs: f64) {
        self.seconds.with_label_values(&[bucket, op]).observe(secs);
    }

    pub(crate) fn request(&self, bucket: &str, op: &str) {
        self.requests.with_label_values(&[bucket, op]).inc();
    }

    pub(crate) fn served(&self, bucket: &str, n: u64) {
        self.served.with_label_values(&[bucket]).inc_by(n);
    }

    pub(crate) fn bytes(&self, bucket: &str, n: u64) {
        self.bytes.with_label_values(&[bucket]).inc_by(n);
    }

    pub(crate) fn error(&self, bucket: &str, e: &OriginError) {
        let kind = match e {
            OriginError::NotFound => "not_found",
            OriginError::AccessDenied(_) => "access_denied",
            OriginError::Changed => "changed",
            OriginError::Rejected { .. } => "rejected",
            OriginError::Unavailable(_) => "unavailable",
            OriginError::Store(_) => "store",
        };
        self.errors.with_label_values(&[bucket, kind]).inc();
    }
}
