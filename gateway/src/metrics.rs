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
    chunks_read: IntCounterVec,
    swarm_members: IntGaugeVec,
    swarm_counters: IntCounterVec,
    swarm_peer_bytes: IntCounterVec,
    swarm_gauges: IntGaugeVec,
    swarm_lag: prometheus::Gauge,
}

/// The `event` label of `s3swarm_swarm_events_total`, in the order `render_swarm` reads them.
const SWARM_EVENTS: [&str; 8] = [
    "chunks_fetched",
    "chunks_served",
    "verification_failures",
    "auth_failures",
    "peers_dropped",
    "journal_applied",
    "repaired_chunks",
    "evicted_bytes",
];

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
        let chunks_read = must(IntCounterVec::new(
            Opts::new(
                "chunks_read_total",
                "Chunks read for GET responses, by where their bytes came from",
            ),
            &["source"],
        ));
        let swarm_members = must(IntGaugeVec::new(
            Opts::new(
                "swarm_members",
                "Swarm members by state, this node included",
            ),
            &["state"],
        ));
        let swarm_counters = must(IntCounterVec::new(
            Opts::new("swarm_events_total", "Swarm events by kind"),
            &["event"],
        ));
        let swarm_peer_bytes = must(IntCounterVec::new(
            Opts::new(
                "swarm_peer_bytes_total",
                "Chunk bytes exchanged with peers, by direction and peer class",
            ),
            &["direction", "class"],
        ));
        let swarm_gauges = must(IntGaugeVec::new(
            Opts::new("swarm_backlog", "Work the swarm has not done yet, by kind"),
            &["kind"],
        ));
        let swarm_lag = must(prometheus::Gauge::new(
            "swarm_namespace_lag_seconds",
            "Delay between a namespace write on its origin and its application here (last entry)",
        ));
        let r = &registry;
        must(r.register(Box::new(chunks_read.clone())));
        must(r.register(Box::new(swarm_members.clone())));
        must(r.register(Box::new(swarm_counters.clone())));
        must(r.register(Box::new(swarm_peer_bytes.clone())));
        must(r.register(Box::new(swarm_gauges.clone())));
        must(r.register(Box::new(swarm_lag.clone())));
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
            chunks_read,
            swarm_members,
            swarm_counters,
            swarm_peer_bytes,
            swarm_gauges,
            swarm_lag,
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

    /// A chunk read for a response, from this node's store or fetched from a peer.
    pub fn chunk_read(&self, from_peer: bool) {
        self.chunks_read
            .with_label_values(&[if from_peer { "peer" } else { "local" }])
            .inc();
    }

    fn render_swarm(&self, swarm: &swarm::Swarm) {
        use std::sync::atomic::Ordering::Relaxed;
        let catch_up = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        let s = swarm.stats();
        let counters = [
            &s.chunks_fetched,
            &s.chunks_served,
            &s.verification_failures,
            &s.auth_failures,
            &s.peers_dropped,
            &s.journal_applied,
            &s.repairs,
            &s.evicted_bytes,
        ];
        for (name, v) in SWARM_EVENTS.iter().zip(counters) {
            catch_up(
                &self.swarm_counters.with_label_values(&[name]),
                v.load(Relaxed),
            );
        }
        for i in 0..2 {
            let class = swarm::PeerClass::label(i);
            catch_up(
                &self.swarm_peer_bytes.with_label_values(&["sent", class]),
                s.bytes_sent[i].load(Relaxed),
            );
            catch_up(
                &self
                    .swarm_peer_bytes
                    .with_label_values(&["received", class]),
                s.bytes_received[i].load(Relaxed),
            );
        }
        for (kind, v) in [
            ("journal_entries", &s.journal_backlog),
            ("under_replicated_chunks", &s.replication_backlog),
            ("lost_chunks", &s.chunks_lost),
        ] {
            self.swarm_gauges
                .with_label_values(&[kind])
                .set(v.load(Relaxed) as i64);
        }
        self.swarm_lag
            .set(s.namespace_lag_ms.load(Relaxed) as f64 / 1000.0);
        let counts = swarm.member_counts();
        for state in [
            swarm::State::Alive,
            swarm::State::Suspect,
            swarm::State::Down,
            swarm::State::Left,
        ] {
            self.swarm_members
                .with_label_values(&[&format!("{state:?}").to_lowercase()])
                .set(counts.get(&state).copied().unwrap_or(0) as i64);
        }
    }

    /// Renders the text exposition, refreshing store and swarm figures first.
    pub fn render(&self, store: &Store, swarm: Option<&swarm::Swarm>) -> String {
        if let Some(sw) = swarm {
            self.render_swarm(sw);
        }
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
