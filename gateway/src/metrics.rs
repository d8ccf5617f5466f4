//! Prometheus metrics for `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use store::Store;

/// Every metric this node exports.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    s3_operations: IntCounterVec,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    store_packs_written: IntCounter,
    store_bytes_written: IntCounter,
    store_gc_bytes_freed: IntCounter,
    store_gc_packs_removed: IntCounter,
    store_fsync_seconds: prometheus::Counter,
    rocksdb: IntGaugeVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error caught by tests.
    r.unwrap_or_else(|e| panic!("invalid metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new_custom(Some("s3swarm".into()), None).unwrap_or_default();
        let http_requests = must(IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by method and status code",
            ),
            &["method", "status"],
        ));
        let http_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to response headers, by method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["method"],
        ));
        let s3_operations = must(IntCounterVec::new(
            Opts::new("s3_operations_total", "Authenticated S3 operations by name"),
            &["operation"],
        ));
        let bytes_in = must(IntCounter::new(
            "s3_received_bytes_total",
            "Object bytes received in PUT and UploadPart",
        ));
        let bytes_out = must(IntCounter::new(
            "s3_sent_bytes_total",
            "Object bytes sent in GET responses",
        ));
        let store_packs_written = must(IntCounter::new(
            "store_packs_written_total",
            "Pack files written",
        ));
        let store_bytes_written = must(IntCounter::new(
            "store_written_bytes_total",
            "New chunk bytes written to packs",
        ));
        let store_gc_bytes_freed = must(IntCounter::new(
            "store_gc_freed_bytes_total",
            "Chunk bytes released by garbage collection",
        ));
        let store_gc_packs_removed = must(IntCounter::new(
            "store_gc_packs_removed_total",
            "Pack files unlinked when their last chunk died",
        ));
        let store_fsync_seconds = must(prometheus::Counter::new(
            "store_fsync_seconds_total",
            "Time spent making packs durable",
        ));
        let rocksdb = must(IntGaugeVec::new(
            Opts::new("rocksdb_property", "Selected RocksDB integer properties"),
            &["name"],
        ));
        let r = &registry;
        must(r.register(Box::new(http_requests.clone())));
        must(r.register(Box::new(http_duration.clone())));
        must(r.register(Box::new(s3_operations.clone())));
        must(r.register(Box::new(bytes_in.clone())));
        must(r.register(Box::new(bytes_out.clone())));
        must(r.register(Box::new(store_packs_written.clone())));
        must(r.register(Box::new(store_bytes_written.clone())));
        must(r.register(Box::new(store_gc_bytes_freed.clone())));
        must(r.register(Box::new(store_gc_packs_removed.clone())));
        must(r.register(Box::new(store_fsync_seconds.clone())));
        must(r.register(Box::new(rocksdb.clone())));
        #[cfg(target_os = "linux")]
        must(r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        let build = must(IntGaugeVec::new(
            Opts::new("build_info", "Version of this binary"),
            &["version"],
        ));
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        must(r.register(Box::new(build)));
        Arc::new(Self {
            registry,
            http_requests,
            http_duration,
            s3_operations,
            bytes_in,
            bytes_out,
            store_packs_written,
            store_bytes_written,
            store_gc_bytes_freed,
            store_gc_packs_removed,
            store_fsync_seconds,
            rocksdb,
        })
    }

    pub fn http_request(&self, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .with_label_values(&[method, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
    }

    pub fn s3_operation(&self, name: &str) {
        self.s3_operations.with_label_values(&[name]).inc();
    }

    pub fn bytes_in(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    pub fn bytes_out(&self, n: u64) {
        self.bytes_out.inc_by(n);
    }

    /// Renders the text exposition, refreshing store figures first.
    pub fn render(&self, store: &Store) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let s = store.stats();
        // The store keeps plain atomics; bring the counters up to them.
        let catch_up = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        catch_up(&self.store_packs_written, s.packs_written.load(Relaxed));
        catch_up(&self.store_bytes_written, s.bytes_written.load(Relaxed));
        catch_up(&self.store_gc_bytes_freed, s.gc_bytes_freed.load(Relaxed));
        catch_up(&self.store_gc_packs_removed, s.gc_runs.load(Relaxed));
        let fsync = s.fsync_seconds_total_micros.load(Relaxed) as f64 / 1e6;
        self.store_fsync_seconds
            .inc_by((fsync - self.store_fsync_seconds.get()).max(0.0));
        for p in [
            "rocksdb.estimate-pending-compaction-bytes",
            "rocksdb.is-write-stopped",
            "rocksdb.actual-delayed-write-rate",
            "rocksdb.estimate-num-keys",
        ] {
            if let Some(v) = store.db_property(p) {
                self.rocksdb.with_label_values(&[p]).set(v as i64);
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
