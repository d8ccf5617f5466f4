//! The store's contents as gauges, refreshed by a background count ([`store::Store::census`]).
//!
//! A count scans every object and chunk record, so it runs off the request path at a pace
//! that keeps its cost bounded: every 15 s at most, and never more than a tenth of the time
//! (a count that takes 5 s runs every 50 s).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, IntGauge, IntGaugeVec, Opts, Registry};
use store::{Census, Store};

use super::{Metrics, clamp, reg};

const MIN_INTERVAL: Duration = Duration::from_secs(15);
/// A count may take at most this share of wall time.
const MAX_DUTY: u32 = 10;

pub(crate) struct CensusMetrics {
    objects: IntGaugeVec,
    logical: IntGauge,
    referenced: IntGauge,
    stored: IntGauge,
    chunks: IntGaugeVec,
    pack_bytes: IntGauge,
    uploads: IntGaugeVec,
    journal: IntGauge,
    finished_at: Gauge,
    took: Gauge,
}

impl CensusMetrics {
    pub(crate) fn new(r: &Registry) -> Self {
        let gauge = |name: &str, help: &str| reg(r, IntGauge::new(name, help));
        Self {
            objects: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "store_objects",
                        "Object versions in the namespace this node knows, by kind",
                    ),
                    &["kind"],
                ),
            ),
            logical: gauge(
                "store_logical_bytes",
                "Sizes of all object versions, current and noncurrent: what clients stored",
            ),
            referenced: gauge(
                "store_referenced_bytes",
                "Held chunks' length times references: their size without deduplication",
            ),
            stored: gauge(
                "store_stored_bytes",
                "Bytes of the distinct chunks held on this node",
            ),
            chunks: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "store_chunks",
                        "Chunk entries: held here, known but held by peers only (absent), or damaged (the \
                         copy here failed verification and no good copy has replaced it yet)",
                    ),
                    &["state"],
                ),
            ),
            pack_bytes: gauge(
                "store_pack_bytes",
                "Size of the pack files, space of dead chunks not yet reclaimed included",
            ),
            uploads: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "store_multipart_uploads",
                        "Multipart uploads in progress on this node: those whose home it is, and \
                         relay copies of parts received here for an upload homed elsewhere \
                         (dropped once the home has them)",
                    ),
                    &["kind"],
                ),
            ),
            journal: gauge(
                "store_journal_entries",
                "Namespace journal entries held (every origin's); superseded ones are pruned, so \
                 this follows the namespace's size, not its history",
            ),
            finished_at: reg(
                r,
                Gauge::new(
                    "store_census_timestamp_seconds",
                    "Unix time the last count of the store finished",
                ),
            ),
            took: reg(
                r,
                Gauge::new(
                    "store_census_duration_seconds",
                    "How long the last count of the store took",
                ),
            ),
        }
    }

    fn record(&self, c: &Census) {
        for (kind, n) in [
            ("current", c.current_objects),
            ("noncurrent", c.noncurrent_objects),
            ("delete_marker", c.delete_markers),
        ] {
            self.objects.with_label_values(&[kind]).set(clamp(n));
        }
        self.logical.set(clamp(c.logical_bytes));
        self.referenced.set(clamp(c.referenced_bytes));
        self.stored.set(clamp(c.stored_bytes));
        self.chunks
            .with_label_values(&["held"])
            .set(clamp(c.held_chunks));
        self.chunks
            .with_label_values(&["absent"])
            .set(clamp(c.absent_chunks));
        self.chunks
            .with_label_values(&["damaged"])
            .set(clamp(c.damaged_chunks));
        self.pack_bytes.set(clamp(c.pack_bytes));
        self.journal.set(clamp(c.journal_entries));
        self.uploads
            .with_label_values(&["home"])
            .set(clamp(c.uploads));
        self.uploads
            .with_label_values(&["relay"])
            .set(clamp(c.relay_uploads));
        self.took.set(c.took.as_secs_f64());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.finished_at.set(now.as_secs_f64());
    }
}

/// Counts the store now and then for as long as the process runs.
pub async fn run(store: Arc<Store>, metrics: Arc<Metrics>) {
    loop {
        let s = store.clone();
        let pause = match tokio::task::spawn_blocking(move || s.census()).await {
            Ok(Ok(c)) => {
                metrics.census.record(&c);
                (c.took * MAX_DUTY).max(MIN_INTERVAL)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "counting the store failed");
                MIN_INTERVAL
            }
            Err(e) => {
                tracing::error!(error = %e, "store count task failed");
                MIN_INTERVAL
            }
        };
        tokio::time::sleep(pause).await;
    }
}
