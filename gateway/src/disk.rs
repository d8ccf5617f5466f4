//! A full disk: while it lasts, writes answer 507 InsufficientStorage (which SDKs do not
//! retry, unlike the 500 they would hammer), `/readyz` says so, and
//! `s3swarm_store_disk_full` is 1. A probe notices when space is back; writes then succeed
//! again by themselves (nothing is latched: each write tries the disk).
//!
//! Uploads are refused while the file system has less than a reserve free
//! (`--disk-reserve-bytes`), so the disk never fills with chunk data: deletes, which need
//! metadata writes, keep working, and are how a user frees space. RocksDB itself stops at a
//! truly full disk and resumes on its own once there is room (its error handler polls).
//!
//! Other write failures that a retry on this node would not fix (the metadata database has
//! stopped accepting writes, the data directory went read-only, the store is closing) are
//! kept the same way: writes answer 503 with the reason, `/readyz` reports it, and the probe
//! clears it once a write lands again.
//!
//! The state is process-wide because the one place that sees the failure is the conversion
//! of store errors into S3 errors (`s3::error::s3_err`), which has no request context; one
//! process serves one data directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use store::Store;

/// Unix milliseconds of the first write refused for a full disk; 0 when writes succeed.
static FULL_SINCE_MS: AtomicI64 = AtomicI64::new(0);

/// Why writes are failing for a reason other than a full disk, while they are.
static FAILING: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// How often the probe looks once the disk was found full.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Free bytes uploads leave on the file system (see the module documentation); set once at
/// start.
static RESERVE_BYTES: AtomicU64 = AtomicU64::new(0);

/// The reserve when none is configured: 1% of the file system, at least 64 MiB, at most 4 GiB.
pub fn default_reserve(fs_size: u64) -> u64 {
    (fs_size / 100).clamp(64 << 20, 4 << 30)
}

pub fn set_reserve(bytes: u64) {
    RESERVE_BYTES.store(bytes, Ordering::Relaxed);
}

/// 507 unless an upload of `incoming` bytes leaves the reserve free.
pub async fn check_room(store: &Arc<Store>, incoming: u64) -> s3s::S3Result<()> {
    let reserve = RESERVE_BYTES.load(Ordering::Relaxed);
    if reserve == 0 {
        return Ok(());
    }
    let free = store.disk_space().map(|d| d.free_bytes).unwrap_or(u64::MAX);
    if free >= reserve.saturating_add(incoming) {
        return Ok(());
    }
    record_full();
    let mut err = s3s::S3Error::with_message(
        s3s::S3ErrorCode::Custom("InsufficientStorage".into()),
        format!(
            "The node's disk is full ({free} bytes free, {reserve} kept in reserve), so nothing \
             was stored. Free space (deleting objects works) or write through another node; \
             writes resume by themselves once there is room."
        ),
    );
    err.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
    Err(err)
}

/// Called when a write failed because the disk is full.
pub fn record_full() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(1)
        .max(1);
    if FULL_SINCE_MS
        .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        tracing::error!(
            "the data directory's disk is full: writes answer 507 until space is freed"
        );
    }
}

/// Called when a write failed in a way that retrying on this node will not fix soon.
pub fn record_failure(reason: String) {
    if let Ok(mut f) = FAILING.lock() {
        if f.is_none() {
            tracing::error!(%reason, "writes are failing on this node; /readyz reports it until a probe write lands");
        }
        *f = Some(reason);
    }
}

/// Why writes are failing (other than for a full disk), if they are.
pub fn failing() -> Option<String> {
    FAILING.lock().ok().and_then(|f| f.clone())
}

/// Since when writes have been refused for a full disk (Unix ms), if they are.
pub fn full_since() -> Option<i64> {
    match FULL_SINCE_MS.load(Ordering::Relaxed) {
        0 => None,
        t => Some(t),
    }
}

/// Runs for the life of the node: while the disk is marked full, checks every
/// [`PROBE_EVERY`] whether there is room again and a write would land (a synced file and a
/// metadata commit), and clears the mark once it would.
pub async fn watch(store: Arc<Store>) {
    let mut failed_probes = 0u64;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let failing = failing().is_some();
        if full_since().is_none() && !failing {
            continue;
        }
        let s = store.clone();
        let probe = tokio::task::spawn_blocking(move || {
            // Room for the reserve and a little more; the probe write then shows whether a
            // write lands.
            let wanted = RESERVE_BYTES.load(Ordering::Relaxed) + (1 << 20);
            let free = s.disk_space().map(|d| d.free_bytes).unwrap_or(0);
            if free < wanted {
                return Probe::StillFull;
            }
            match s.probe_write() {
                Ok(()) => Probe::Lands,
                Err(e) => Probe::Fails(free, e),
            }
        })
        .await;
        match probe {
            Ok(Probe::Lands) => {
                failed_probes = 0;
                if FULL_SINCE_MS.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!("the data directory has room again: writes resume");
                }
                if failing {
                    if let Ok(mut f) = FAILING.lock() {
                        *f = None;
                    }
                    tracing::info!("a probe write landed: writes resume");
                }
            }
            Ok(Probe::Fails(free, e)) => {
                // RocksDB, stopped by a full disk, resumes by itself once its write buffer
                // (64 MiB) is free; until then the probe fails. Say so now and then.
                if failed_probes.is_multiple_of(30) {
                    tracing::warn!(free, error = %e, "space is back but a write does not land yet");
                }
                failed_probes += 1;
            }
            Ok(Probe::StillFull) | Err(_) => {}
        }
    }
}

enum Probe {
    StillFull,
    Lands,
    Fails(u64, store::StoreError),
}
