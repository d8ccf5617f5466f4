//! Prometheus metrics for `/metrics` (reference: `docs/metrics.md`).
//!
//! - [`requests`]: every HTTP exchange, by S3 operation: status, error code, latency, time to
//!   first byte, bytes both ways.
//! - [`census`]: the store's contents, counted in the background.
//! - `origin`: requests, bytes and errors of the origins this node fronts.
//! - this module: the registry, and the figures refreshed at each scrape from the store's,
//!   RocksDB's and the swarm's own counters.
//!
//! The store and swarm crates keep plain atomics and call hooks; only the gateway knows about
//! Prometheus.

pub mod census;
mod origin;
pub mod requests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use store::Store;

pub use requests::{OperationName, S3Metrics};

/// Every metric this node exports.
pub struct Metrics {
    registry: Registry,
    /// `process_*` metrics keep their conventional unprefixed names.
    process: Registry,
    pub(crate) s3: S3Metrics,
    pub(crate) census: census::CensusMetrics,
    store: StoreMetrics,
    swarm: SwarmMetrics,
    origin: origin::OriginMetrics,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error caught by tests.
    r.unwrap_or_else(|e| panic!("invalid metric definition: {e}"))
}

/// Registers a metric and hands it back.
pub(crate) fn reg<C: Collector + Clone + 'static>(r: &Registry, c: prometheus::Result<C>) -> C {
    let c = must(c);
    must(r.register(Box::new(c.clone())));
    c
}

/// Brings a Prometheus counter up to a monotonic atomic kept elsewhere.
fn catch_up(c: &IntCounter, v: u64) {
    c.inc_by(v.saturating_sub(c.get()));
}

/// Latency buckets from 0.5 ms to 60 s.
pub(crate) fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0,
    ]
}

struct StoreMetrics {
    written_bytes: IntCounter,
    packs_written: IntCounter,
    gc_runs: IntCounter,
    gc_freed_bytes: IntCounter,
    gc_packs_removed: IntCounter,
    damaged: IntCounterVec,
    repaired: IntCounter,
    scrub_chunks: IntCounter,
    scrub_bytes: IntCounter,
    scrub_passes: IntCounter,
    journal_pruned: IntCounter,
    fsync: Histogram,
    disk_size: IntGauge,
    disk_free: IntGauge,
    write_stopped: IntGauge,
    disk_full: IntGauge,
    delayed_write_rate: IntGauge,
    stall_seconds: prometheus::Counter,
    pending_compaction: IntGauge,
    running_compactions: IntGauge,
    memtable: IntGauge,
    sst: IntGauge,
}

impl StoreMetrics {
    fn new(r: &Registry) -> Self {
        let counter = |name: &str, help: &str| reg(r, IntCounter::new(name, help));
        let gauge = |name: &str, help: &str| reg(r, IntGauge::new(name, help));
        Self {
            written_bytes: counter(
                "store_written_bytes_total",
                "New chunk bytes written to packs (deduplicated chunks are not written again)",
            ),
            packs_written: counter("store_packs_written_total", "Pack files written"),
            gc_runs: counter(
                "store_gc_runs_total",
                "Garbage-collection sweeps that collected unreferenced chunks",
            ),
            gc_freed_bytes: counter(
                "store_gc_freed_bytes_total",
                "Chunk bytes released by garbage collection",
            ),
            gc_packs_removed: counter(
                "store_gc_packs_removed_total",
                "Pack files unlinked after their last chunk died",
            ),
            damaged: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "store_chunks_damaged_total",
                        "Held chunk copies that failed verification and were dropped (never \
                         served), by what found them: a client read, a peer's read, the scrub",
                    ),
                    &["found_by"],
                ),
            ),
            repaired: counter(
                "store_chunks_repaired_total",
                "Damaged chunk copies replaced by a verified copy from a peer",
            ),
            journal_pruned: counter(
                "store_journal_pruned_total",
                "Namespace journal entries dropped because a newer write of their name (or their \
                 bucket's deletion) supersedes them",
            ),
            scrub_chunks: counter(
                "store_scrub_chunks_total",
                "Held chunks the scrub re-hashed",
            ),
            scrub_bytes: counter(
                "store_scrub_bytes_total",
                "Bytes of held chunks the scrub re-hashed",
            ),
            scrub_passes: counter(
                "store_scrub_passes_total",
                "Scrub passes completed over every held chunk",
            ),
            fsync: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "store_fsync_duration_seconds",
                        "Time each pack took to become durable (write-out and fsync)",
                    )
                    .buckets(latency_buckets()),
                ),
            ),
            disk_size: gauge(
                "store_disk_size_bytes",
                "Size of the file system holding the data directory",
            ),
            disk_free: gauge(
                "store_disk_free_bytes",
                "Bytes available to s3swarm on the file system holding the data directory",
            ),
            write_stopped: gauge(
                "rocksdb_write_stopped",
                "1 while RocksDB refuses writes (a write stop)",
            ),
            disk_full: gauge(
                "store_disk_full",
                "1 while writes are refused because the data directory's disk is full",
            ),
            delayed_write_rate: gauge(
                "rocksdb_delayed_write_rate_bytes",
                "Bytes per second RocksDB slows writes to during a stall; 0 when not stalled",
            ),
            stall_seconds: reg(
                r,
                prometheus::Counter::new(
                    "rocksdb_write_stall_seconds_total",
                    "Time writes spent stalled or stopped by RocksDB",
                ),
            ),
            pending_compaction: gauge(
                "rocksdb_pending_compaction_bytes",
                "Estimated bytes compaction still has to rewrite, all column families",
            ),
            running_compactions: gauge("rocksdb_running_compactions", "Compactions running now"),
            memtable: gauge(
                "rocksdb_memtable_bytes",
                "Memory in memtables, all column families",
            ),
            sst: gauge(
                "rocksdb_sst_bytes",
                "Size of live SST files, all column families",
            ),
        }
    }

    fn refresh(&self, store: &Store) {
        let s = store.stats();
        catch_up(&self.written_bytes, s.bytes_written.load(Relaxed));
        catch_up(&self.packs_written, s.packs_written.load(Relaxed));
        catch_up(&self.gc_runs, s.gc_runs.load(Relaxed));
        catch_up(&self.journal_pruned, s.journal_pruned.load(Relaxed));
        catch_up(&self.gc_freed_bytes, s.gc_bytes_freed.load(Relaxed));
        catch_up(&self.gc_packs_removed, s.packs_removed.load(Relaxed));
        for (by, n) in [
            (store::FoundBy::Read, &s.damaged_by_read),
            (store::FoundBy::Peer, &s.damaged_by_peer),
            (store::FoundBy::Scrub, &s.damaged_by_scrub),
        ] {
            catch_up(
                &self.damaged.with_label_values(&[by.label()]),
                n.load(Relaxed),
            );
        }
        catch_up(&self.repaired, s.repaired.load(Relaxed));
        catch_up(&self.scrub_chunks, s.scrub_chunks.load(Relaxed));
        catch_up(&self.scrub_bytes, s.scrub_bytes.load(Relaxed));
        catch_up(&self.scrub_passes, s.scrub_passes.load(Relaxed));
        match store.disk_space() {
            Ok(d) => {
                self.disk_size.set(clamp(d.size_bytes));
                self.disk_free.set(clamp(d.free_bytes));
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the data directory's disk space"),
        }
        let f = store.db_figures();
        self.write_stopped.set(i64::from(f.write_stopped));
        self.disk_full
            .set(i64::from(crate::disk::full_since().is_some()));
        self.delayed_write_rate.set(clamp(f.delayed_write_rate));
        let stalled = f.stall_micros as f64 / 1e6;
        self.stall_seconds
            .inc_by((stalled - self.stall_seconds.get()).max(0.0));
        self.pending_compaction
            .set(clamp(f.pending_compaction_bytes));
        self.running_compactions.set(clamp(f.running_compactions));
        self.memtable.set(clamp(f.memtable_bytes));
        self.sst.set(clamp(f.sst_bytes));
    }
}

pub(crate) fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Where `SwarmStats` keeps a counter.
type StatField = fn(&swarm::SwarmStats) -> &AtomicU64;

/// A swarm counter: its name, help, and where `SwarmStats` keeps it.
type SwarmCounter = (&'static str, &'static str, StatField);

const SWARM_COUNTERS: [SwarmCounter; 10] = [
    (
        "swarm_chunks_fetched_total",
        "Chunks fetched from peers and stored (reads, repairs, placement)",
        |s| &s.chunks_fetched,
    ),
    ("swarm_chunks_served_total", "Chunks served to peers", |s| {
        &s.chunks_served
    }),
    (
        "swarm_verification_failures_total",
        "Chunks from a peer whose BLAKE3 did not match (the peer is dropped)",
        |s| &s.verification_failures,
    ),
    (
        "swarm_auth_failures_total",
        "Connections refused because the cluster proof failed",
        |s| &s.auth_failures,
    ),
    (
        "swarm_peer_frames_refused_total",
        "Peers' request or notice frames refused: no room in the memory allowed for them, too slow to arrive, or malformed",
        |s| &s.frames_refused,
    ),
    (
        "swarm_peers_dropped_total",
        "Peers cut off for misbehaving",
        |s| &s.peers_dropped,
    ),
    (
        "swarm_journal_entries_applied_total",
        "Namespace journal entries from peers recorded here",
        |s| &s.journal_applied,
    ),
    (
        "swarm_journal_entries_superseded_total",
        "Namespace entries recorded whose bucket was already deleted here (nothing to apply)",
        |s| &s.journal_superseded,
    ),
    (
        "swarm_repaired_chunks_total",
        "Copies this node made to restore placement",
        |s| &s.repairs,
    ),
    (
        "swarm_evicted_bytes_total",
        "Cached chunk bytes dropped to stay within --capacity",
        |s| &s.evicted_bytes,
    ),
];

struct SwarmMetrics {
    node_info: IntGaugeVec,
    members: IntGaugeVec,
    peer_bytes: IntCounterVec,
    connections_refused: IntCounterVec,
    counters: Vec<(IntCounter, StatField)>,
    journal_backlog: IntGauge,
    journal_parked: IntGauge,
    journal_unapplied: IntCounterVec,
    ready: IntGauge,
    registry: IntGaugeVec,
    clock_ahead: Gauge,
    under_replicated: IntGauge,
    lost: IntGauge,
    lag: Gauge,
    chunk_fetch: Histogram,
    apply_delay: Histogram,
    read_bytes: IntCounterVec,
    chunks_read: IntCounterVec,
}

impl SwarmMetrics {
    fn new(r: &Registry) -> Self {
        let gauge = |name: &str, help: &str| reg(r, IntGauge::new(name, help));
        let by = |name: &str, help: &str, labels: &[&str]| {
            reg(r, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let read_bytes = by(
            "read_bytes_total",
            "Object bytes sent to S3 clients, by where their chunk came from",
            &["source"],
        );
        let chunks_read = by(
            "chunks_read_total",
            "Chunks read for S3 clients, by where they came from",
            &["source"],
        );
        let connections_refused = by(
            "swarm_connections_refused_total",
            "Peers' connections turned away: too many proving the cluster secret at once (handshakes), or as many proved ones as --swarm-max-connections (busy)",
            &["reason"],
        );
        for why in swarm::admission::Refusal::ALL {
            connections_refused.with_label_values(&[why.label()]);
        }
        // Both sources exist from the start, so a share of zero reads as 0, not as no data.
        for source in ["local", "peer"] {
            read_bytes.with_label_values(&[source]);
            chunks_read.with_label_values(&[source]);
        }
        Self {
            node_info: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "swarm_node_info",
                        "This node's swarm id and role (always 1)",
                    ),
                    &["node_id", "role"],
                ),
            ),
            members: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "swarm_members",
                        "Swarm members by state as this node sees them, itself included",
                    ),
                    &["state"],
                ),
            ),
            peer_bytes: by(
                "swarm_peer_bytes_total",
                "Chunk bytes exchanged with peers, by direction and the peer's role",
                &["direction", "class"],
            ),
            connections_refused,
            counters: SWARM_COUNTERS
                .iter()
                .map(|(name, help, field)| (reg(r, IntCounter::new(*name, *help)), *field))
                .collect(),
            journal_backlog: gauge(
                "swarm_journal_backlog_entries",
                "Namespace entries peers hold that this node has not recorded yet",
            ),
            journal_parked: gauge(
                "swarm_journal_parked_entries",
                "Namespace entries recorded here that wait for their bucket to arrive",
            ),
            ready: gauge(
                "swarm_ready",
                "1 once this node has caught up with the swarm since it started (see /readyz)",
            ),
            registry: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "registry",
                        "The swarm's registry (bucket names, conditional writes) as this node \
                         sees it: voters, members (voters and learners), leader (1: this node \
                         leads), has_leader, voter (1: this node votes), term, applied (log index)",
                    ),
                    &["figure"],
                ),
            ),
            clock_ahead: reg(
                r,
                Gauge::new(
                    "swarm_clock_ahead_seconds",
                    "How far this node's clock runs ahead of its peers' beyond the allowed 60 s \
                     (0: within it); while above 0 the node refuses writes",
                ),
            ),
            journal_unapplied: by(
                "swarm_journal_entries_unapplied_total",
                "Namespace entries from peers not applied, by origin node and reason \
                 (undecodable, bucket_name, key, record: refused; clock_ahead: held back)",
                &["origin", "reason"],
            ),
            under_replicated: gauge(
                "swarm_under_replicated_chunks",
                "Chunks placement assigns to this node that it does not hold yet",
            ),
            lost: gauge(
                "swarm_lost_chunks",
                "Chunks placed on this node that it lacks and no live member holds",
            ),
            lag: reg(
                r,
                Gauge::new(
                    "swarm_namespace_lag_seconds",
                    "Delay of the last namespace entry applied here; 0 once caught up with every peer",
                ),
            ),
            chunk_fetch: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "swarm_chunk_fetch_duration_seconds",
                        "From asking a peer for one chunk to holding it verified",
                    )
                    .buckets(latency_buckets()),
                ),
            ),
            apply_delay: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "swarm_namespace_apply_delay_seconds",
                        "From a namespace write's stamp on its origin to its application here, \
                         per entry",
                    )
                    .buckets(latency_buckets()),
                ),
            ),
            read_bytes,
            chunks_read,
        }
    }

    fn refresh(&self, swarm: &swarm::Swarm) {
        let s = swarm.stats();
        for (counter, field) in &self.counters {
            catch_up(counter, field(s).load(Relaxed));
        }
        for why in swarm::admission::Refusal::ALL {
            catch_up(
                &self.connections_refused.with_label_values(&[why.label()]),
                s.connections_refused[why.index()].load(Relaxed),
            );
        }
        for i in 0..2 {
            let class = swarm::PeerClass::label(i);
            catch_up(
                &self.peer_bytes.with_label_values(&["sent", class]),
                s.bytes_sent[i].load(Relaxed),
            );
            catch_up(
                &self.peer_bytes.with_label_values(&["received", class]),
                s.bytes_received[i].load(Relaxed),
            );
        }
        self.journal_backlog
            .set(clamp(s.journal_backlog.load(Relaxed)));
        self.journal_parked
            .set(clamp(s.journal_parked.load(Relaxed)));
        self.ready.set(i64::from(swarm.readiness().is_ok()));
        if let Some(r) = swarm.registry() {
            let v = r.view();
            for (figure, value) in [
                ("voters", v.voters as u64),
                ("members", v.members as u64),
                ("leader", u64::from(v.leader)),
                ("has_leader", u64::from(v.has_leader)),
                ("voter", u64::from(v.voter)),
                ("term", v.term),
                ("applied", v.last_applied),
            ] {
                self.registry.with_label_values(&[figure]).set(clamp(value));
            }
        }
        self.clock_ahead
            .set(s.clock_ahead_ms.load(Relaxed) as f64 / 1000.0);
        if let Ok(unapplied) = s.journal_unapplied.lock() {
            for ((origin, reason), n) in unapplied.iter() {
                catch_up(
                    &self
                        .journal_unapplied
                        .with_label_values(&[origin.to_hex().as_str(), reason]),
                    *n,
                );
            }
        }
        self.under_replicated
            .set(clamp(s.replication_backlog.load(Relaxed)));
        self.lost.set(clamp(s.chunks_lost.load(Relaxed)));
        self.lag
            .set(s.namespace_lag_ms.load(Relaxed) as f64 / 1000.0);
        let counts = swarm.member_counts();
        for state in [
            swarm::State::Alive,
            swarm::State::Suspect,
            swarm::State::Down,
            swarm::State::Left,
        ] {
            self.members
                .with_label_values(&[&format!("{state:?}").to_lowercase()])
                .set(counts.get(&state).copied().unwrap_or(0) as i64);
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new_custom(Some("s3swarm".into()), None).unwrap_or_default();
        let r = &registry;
        let build = reg(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "build_info",
                    "The binary's version and the git commit it was built from (always 1)",
                ),
                &["version", "commit"],
            ),
        );
        build
            .with_label_values(&[crate::VERSION, crate::GIT_COMMIT])
            .set(1);
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        must(process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        Arc::new(Self {
            s3: S3Metrics::new(r),
            census: census::CensusMetrics::new(r),
            store: StoreMetrics::new(r),
            swarm: SwarmMetrics::new(r),
            origin: origin::OriginMetrics::new(r),
            registry,
            process,
        })
    }

    /// Records this node's swarm identity (once, when the swarm has started).
    pub fn swarm_started(&self, swarm: &swarm::Swarm) {
        let me = swarm.me();
        let role = if me.storage { "storage" } else { "cache" };
        self.swarm
            .node_info
            .with_label_values(&[&me.id.to_string(), role])
            .set(1);
    }

    /// A hook for the store: how long a pack took to become durable.
    pub fn pack_sealed_observer(self: &Arc<Self>) -> Arc<dyn Fn(Duration) + Send + Sync> {
        let m = self.clone();
        Arc::new(move |d| m.store.fsync.observe(d.as_secs_f64()))
    }

    /// Hooks for the swarm: chunk fetch latency, namespace apply delay.
    pub fn swarm_hooks(self: &Arc<Self>) -> swarm::Hooks {
        let (m, n) = (self.clone(), self.clone());
        swarm::Hooks {
            chunk_fetched: Some(Arc::new(move |d: Duration| {
                m.swarm.chunk_fetch.observe(d.as_secs_f64())
            })),
            entry_applied: Some(Arc::new(move |d: Duration| {
                n.swarm.apply_delay.observe(d.as_secs_f64())
            })),
        }
    }

    /// A chunk read for a client, from this node's store or fetched from a peer for it.
    pub fn chunk_read(&self, from_peer: bool, bytes: usize) {
        let source = if from_peer { "peer" } else { "local" };
        self.swarm.chunks_read.with_label_values(&[source]).inc();
        self.swarm
            .read_bytes
            .with_label_values(&[source])
            .inc_by(bytes as u64);
    }

    /// An origin bucket this node fronts.
    pub fn origin_configured(&self, bucket: &str) {
        self.origin.configured(bucket);
    }

    /// A request sent to an origin.
    pub fn origin_request(&self, bucket: &str, op: &str) {
        self.origin.request(bucket, op);
    }

    /// How long a request to an origin took.
    pub fn origin_seconds(&self, bucket: &str, op: &str, secs: f64) {
        self.origin.seconds(bucket, op, secs);
    }

    /// Object bytes sent to a client from an origin bucket.
    pub fn origin_served(&self, bucket: &str, n: u64) {
        self.origin.served(bucket, n);
    }

    /// Object bytes read from an origin.
    pub fn origin_bytes(&self, bucket: &str, n: u64) {
        self.origin.bytes(bucket, n);
    }

    /// The write-back backlog this node is to upload for an origin bucket.
    pub fn origin_backlog(&self, bucket: &str, objects: u64, bytes: u64) {
        self.origin.backlog(bucket, objects, bytes);
    }

    /// A pending write passed to an origin (`uploaded`, `deleted`) or not (`failed`).
    pub fn origin_flushed(&self, bucket: &str, outcome: &str) {
        self.origin.flushed(bucket, outcome);
    }

    /// A failed origin request.
    pub fn origin_error(&self, bucket: &str, e: &crate::origin::OriginError) {
        self.origin.error(bucket, e);
    }

    /// Renders the text exposition, refreshing store and swarm figures first.
    pub fn render(&self, store: &Store, swarm: Option<&swarm::Swarm>) -> String {
        if let Some(sw) = swarm {
            self.swarm.refresh(sw);
        }
        self.store.refresh(store);
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
