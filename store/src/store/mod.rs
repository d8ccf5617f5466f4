//! The store itself: buckets, objects and multipart uploads over chunks and packs.
//!
//! All methods block (RocksDB and file I/O); async callers run them on blocking threads.
//!
//! This file holds the public types, opening, closing and garbage collection; the methods
//! and transaction steps of each part of the store live in the sibling files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::chunker::Chunker;
use crate::error::{Result, StoreError};
use crate::hash::{ChunkHash, ContentHash, VerifiedChunk};
use crate::journal::{self, Applied, Change, Entry, Hlc, NodeId, ObjectState, Pulled, StampSource};
use crate::names::BucketId;
use replication::{journal_bucket, journal_bucket_deleted, journal_version, last_grave};

mod buckets;
mod chunks;
mod decisions;
mod ingest;
mod listing;
mod multipart;
mod objects;
mod pieces;
mod pruning;
mod refcounts;
mod replication;
mod scrub;
mod versions;
use crate::manifest::{ByteRange, ChunkRef, ChunkSlice, Manifest};
use crate::meta::{Cf, Database, Meta, Tx, View};
use crate::names::{BucketName, ObjectKey};
use crate::pack::{PackId, PackSet, PackWriter};
use crate::records::*;
use crate::version::{DeleteMarker, Version, VersionId, Versioning, next_seq};
pub use chunks::ReadPin;
pub use decisions::{Fate, KeyState};
pub use ingest::{ObjectWriter, StagedObject};
pub use multipart::upload_home;
pub use pieces::PieceId;
pub use pruning::Pruned;
pub use replication::BatchOutcome;
pub use scrub::{FoundBy, ScrubStep};
// Shared by the sibling files (each has `use super::*`).
use ingest::NewChunk;
use multipart::{decode_part_sizes, encode_part_sizes};
use refcounts::{
    add_ref, commit_staged, drop_chunk, load_manifest, read_slice, reference_chunks,
    release_manifest, release_upload_parts, replace_part, share_manifest,
};
use versions::{
    bucket_in, current, decode_seq, delete_current, delete_version, find_noncurrent,
    find_noncurrent_tx, install, release_version,
};

/// Chunks up to this size are kept inside the metadata database rather than in a pack.
pub const INLINE_MAX: usize = 64 * 1024;
/// S3's minimum size for every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// One chunk entry as [`Store::chunk_inventory`] reports it.
#[derive(Clone, Copy, Debug)]
pub struct ChunkState {
    pub hash: ChunkHash,
    /// Manifest entries pointing at it (0: awaiting collection).
    pub refs: u64,
    /// Bytes of it held here (0: absent, held by peers only).
    pub held_bytes: u64,
    /// A copy made for reading, evictable under a capacity limit.
    pub cached: bool,
    /// Referenced only by pieces of origin objects: the origin keeps it, the swarm places no
    /// copies.
    pub origin_only: bool,
}

/// Counters the gateway exports as metrics.
#[derive(Default)]
pub struct StoreStats {
    /// Sweeps that collected at least one chunk.
    pub gc_runs: AtomicU64,
    pub gc_bytes_freed: AtomicU64,
    /// Pack files unlinked once their last chunk was collected.
    pub packs_removed: AtomicU64,
    pub packs_written: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Held copies that failed verification and were dropped, by who found them.
    pub damaged_by_read: AtomicU64,
    pub damaged_by_peer: AtomicU64,
    pub damaged_by_scrub: AtomicU64,
    /// Damaged copies replaced by a good one fetched from a peer.
    pub repaired: AtomicU64,
    /// The scrub pass's progress: chunks and bytes re-hashed, passes completed.
    pub scrub_chunks: AtomicU64,
    pub scrub_bytes: AtomicU64,
    pub scrub_passes: AtomicU64,
    /// Journal entries dropped as superseded (see [`Store::prune_journal`]).
    pub journal_pruned: AtomicU64,
}

pub(crate) struct Shared {
    meta: Arc<Meta>,
    packs: Arc<PackSet>,
    /// Chunks an upload in flight decided not to write because they were already stored:
    /// their entries must survive until that upload commits, even at zero references.
    pins: Mutex<HashMap<ChunkHash, u32>>,
    stats: Arc<StoreStats>,
    node: NodeId,
    clock: StampSource,
    on_pack_sealed: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
    trusted: scrub::Trusted,
}

impl Shared {
    /// Seals a pack (write-out, fsync, rename) and accounts for it.
    fn seal(&self, w: PackWriter) -> Result<(PackId, u64)> {
        let t = Instant::now();
        let sealed = w.seal()?;
        if let Some(observe) = &self.on_pack_sealed {
            observe(t.elapsed());
        }
        self.stats.packs_written.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_written
            .fetch_add(sealed.1, Ordering::Relaxed);
        Ok(sealed)
    }

    fn pinned(&self, h: &ChunkHash) -> bool {
        self.pins.lock().map(|p| p.contains_key(h)).unwrap_or(true)
    }

    fn pin(&self, h: ChunkHash) {
        if let Ok(mut p) = self.pins.lock() {
            *p.entry(h).or_default() += 1;
        }
    }

    fn unpin<'a>(&self, hashes: impl IntoIterator<Item = &'a ChunkHash>) {
        if let Ok(mut p) = self.pins.lock() {
            for h in hashes {
                if let Some(n) = p.get_mut(h) {
                    *n -= 1;
                    if *n == 0 {
                        p.remove(h);
                    }
                }
            }
        }
    }
}

/// A content-addressed object store on one directory.
pub struct Store {
    db: Database,
    shared: Arc<Shared>,
    /// The garbage collector's thread, and the channel whose closing stops it.
    sweeper: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

/// What a client supplies when it writes an object (the rest is computed).
#[derive(Clone, Debug, Default)]
pub struct NewObject {
    pub etag: String,
    pub meta: ObjectMeta,
    pub checksum: Option<StoredChecksum>,
    pub precondition: Option<WritePrecondition>,
    pub tags: BTreeMap<String, String>,
}

/// What a copy replaces rather than keeps from its source.
#[derive(Clone, Debug, Default)]
pub struct Replacement {
    pub meta: Option<ObjectMeta>,
    pub tags: Option<BTreeMap<String, String>>,
}

/// What a conditional write requires of the object it replaces.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WritePrecondition {
    /// `If-None-Match: *`: only create, never overwrite.
    NotExists,
    /// `If-Match: <etag>`: only replace this exact version.
    ETagIs(String),
}

impl WritePrecondition {
    /// Whether a write may replace `current` (`None`: no object, or a delete marker).
    pub fn check(&self, key: &str, current: Option<&ObjectRecord>) -> Result<()> {
        match (self, current) {
            (WritePrecondition::NotExists, Some(_)) => Err(StoreError::PreconditionFailed(
                "an object already exists at this key".into(),
            )),
            (WritePrecondition::ETagIs(_), None) => Err(StoreError::NoSuchKey(key.to_owned())),
            (WritePrecondition::ETagIs(want), Some(o)) if want.trim_matches('"') != o.etag => Err(
                StoreError::PreconditionFailed(format!("the current ETag is {}", o.etag)),
            ),
            _ => Ok(()),
        }
    }
}

/// An object whose whole content is a given BLAKE3 (see [`Store::blob_holders`]).
#[derive(Debug, Clone)]
pub struct BlobHolder {
    pub bucket: String,
    pub key: String,
    pub manifest: Manifest,
}

/// A chunk held here, as [`Store::held_chunk`] returns it.
#[derive(Clone, Debug)]
pub struct HeldChunk {
    pub bytes: Bytes,
    /// A copy made for reading (evictable), rather than one held for durability or written
    /// here.
    pub cached: bool,
}

/// Tuning of a store.
#[derive(Clone)]
pub struct StoreOptions {
    /// How long a chunk nobody references is kept before it is collected, so reads that
    /// started before an overwrite or delete can finish.
    pub gc_grace: Duration,
    /// Stamps for this node's namespace writes; `None`: a local clock (no swarm).
    pub clock: Option<Arc<dyn Fn(NodeId) -> StampSource + Send + Sync>>,
    /// Told how long each pack took to become durable (write-out and fsync), for a latency
    /// histogram the store itself does not keep.
    pub on_pack_sealed: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            gc_grace: Duration::from_secs(300),
            clock: None,
            on_pack_sealed: None,
        }
    }
}

/// The node id kept in `<dir>/node-id`, drawn on first use.
fn node_id_in(dir: &Path) -> Result<NodeId> {
    let path = dir.join("node-id");
    match fs::read_to_string(&path) {
        Ok(s) => NodeId::from_hex(&s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId(rand::random());
            let tmp = dir.join("node-id.tmp");
            fs::write(&tmp, id.to_hex())?;
            fs::File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &path)?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn sweeper(
    store: &std::sync::Weak<Store>,
    grace: Duration,
    stopped: &std::sync::mpsc::Receiver<()>,
) {
    let tick = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        // Nothing is ever sent: the channel closing (the store closing) ends the wait early.
        if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = stopped.recv_timeout(tick) {
            return;
        }
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = store.sweep(grace) {
            tracing::warn!(error = %e, "garbage collection sweep failed");
        }
    }
}

/// Names one multipart upload.
#[derive(Clone, Copy, Debug)]
pub struct UploadRef<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub upload_id: &'a str,
}

/// One page of a bucket listing.
#[derive(Debug, Default)]
pub struct ListPage {
    pub objects: Vec<(String, ObjectRecord)>,
    pub common_prefixes: Vec<String>,
    /// Set when more entries follow; pass it back as `after` to continue.
    pub next: Option<ListCursor>,
}

/// One page of a version listing, in S3's order: keys ascending, each key's versions newest
/// first (the latest first of all), common prefixes where they fall.
#[derive(Debug, Default)]
pub struct VersionsPage {
    /// Key, version, and whether it is the key's latest version.
    pub versions: Vec<(String, Version, bool)>,
    pub common_prefixes: Vec<String>,
    /// Set when more entries follow: where to resume (and after which version of that key).
    pub next: Option<(ListCursor, Option<VersionId>)>,
}

/// What a DELETE did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The version removed, or the delete marker created; `None` in a bucket that never had
    /// versioning (nothing to name).
    pub version_id: Option<VersionId>,
    /// Whether that version is a delete marker.
    pub delete_marker: bool,
}

/// One entry of a key-ordered scan of current versions.
#[allow(clippy::large_enum_variant)] // as `Version`: keys are the common case
enum Listed {
    Key(String, Version),
    Prefix(String),
}

/// Where a listing resumes: after a key, or after everything under a common prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListCursor {
    Key(String),
    Prefix(String),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (or creates) the store under `dir` and cleans up what a crash left behind.
    pub fn open(dir: &Path) -> Result<Arc<Self>> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens the store with explicit options.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Arc<Self>> {
        fs::create_dir_all(dir)?;
        let packs = Arc::new(PackSet::open(dir)?);
        let stats = Arc::new(StoreStats::default());
        let reap_packs = packs.clone();
        let reap_stats = stats.clone();
        let db = Database::open(
            &dir.join("meta"),
            Box::new(move |ids: &[PackId]| {
                for id in ids {
                    match reap_packs.remove(*id) {
                        Ok(()) => reap_stats.packs_removed.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(pack = ?id, error = %e, "could not unlink dead pack");
                            0
                        }
                    };
                }
            }),
        )?;
        let node = node_id_in(dir)?;
        let clock = match options.clock {
            Some(make) => make(node),
            None => journal::local_clock(node),
        };
        let shared = Arc::new(Shared {
            meta: db.meta.clone(),
            packs,
            pins: Mutex::new(HashMap::new()),
            stats,
            node,
            clock,
            on_pack_sealed: options.on_pack_sealed,
            trusted: scrub::Trusted::new(),
        });
        let store = Arc::new(Self {
            db,
            shared,
            sweeper: Mutex::new(None),
        });
        store.recover()?;
        let weak = Arc::downgrade(&store);
        let grace = options.gc_grace;
        let (stop, stopped) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("store-sweep".into())
            .spawn(move || sweeper(&weak, grace, &stopped))?;
        if let Ok(mut s) = store.sweeper.lock() {
            *s = Some((stop, handle));
        }
        Ok(store)
    }

    /// Whether the thread that commits metadata writes is running (false once the store is
    /// closed): without it every write fails.
    pub fn committer_running(&self) -> bool {
        self.db.committer_running()
    }

    /// Whether a write could be made durable right now: a small file synced where packs are
    /// staged, and a metadata commit (a put and delete of one key in a single batch, so
    /// nothing is ever visible). Asked while writes were failing for a full disk.
    pub fn probe_write(&self) -> Result<()> {
        self.shared.packs.probe()?;
        self.db.transact(|tx| {
            const PROBE: &[u8] = b"\xffwrite-probe";
            tx.put(Cf::Seen, PROBE.to_vec(), Vec::new());
            tx.delete(Cf::Seen, PROBE.to_vec());
            Ok(())
        })
    }

    /// Stops the store's background work and waits for it: the garbage collector, the
    /// commits already queued, RocksDB's flushes and compactions. Reads still work; writes
    /// fail with [`StoreError::Closed`]. A process calls this before it exits (see
    /// `Database::close` for why); dropping the store does it too.
    pub fn close(&self) {
        let sweeper = self.sweeper.lock().map(|mut s| s.take()).unwrap_or(None);
        if let Some((stop, handle)) = sweeper {
            drop(stop);
            // The sweeper itself may hold the last reference and be closing the store.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        self.db.close();
    }

    /// Collects chunks that have had no reference for longer than `grace` (unless an upload
    /// in flight is about to reference them again); returns how many were dropped.
    pub fn sweep(&self, grace: Duration) -> Result<usize> {
        self.sweep_dead_before(
            now_ms().saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// `sweep` with an explicit cutoff: chunks dead at or before `cutoff` (unix ms) go.
    fn sweep_dead_before(&self, cutoff: i64) -> Result<usize> {
        let mut due = Vec::new();
        self.shared.meta.scan(Cf::Graveyard, &[], |k, _| {
            let dead = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if dead as i64 > cutoff || due.len() >= 4096 {
                return Ok(false);
            }
            due.push(k.to_vec());
            Ok(true)
        })?;
        if due.is_empty() {
            return Ok(0);
        }
        let shared = self.shared.clone();
        let stats = self.shared.stats.clone();
        self.db
            .transact(move |tx| {
                let mut dropped = 0;
                let mut freed = 0u64;
                for k in due {
                    let hash = ChunkHash::from_slice(&k[8..])?;
                    let entry = tx
                        .get(Cf::Chunks, hash.as_bytes())?
                        .map(|v| ChunkEntry::decode(&v))
                        .transpose()?;
                    if let Some(e) = entry.filter(|e| e.refs == 0) {
                        if e.dead_ms.is_some_and(|t| t > cutoff) {
                            // Revived and dead again since this entry: a newer one covers it.
                            tx.delete(Cf::Graveyard, k);
                            continue;
                        }
                        if shared.pinned(&hash) {
                            continue; // an upload deduplicated against it: look again next sweep
                        }
                        drop_chunk(tx, &hash, &e)?;
                        freed += e.location.stored_len();
                        dropped += 1;
                    }
                    tx.delete(Cf::Graveyard, k);
                }
                Ok((dropped, freed))
            })
            .map(|(dropped, freed)| {
                if dropped > 0 {
                    stats.gc_runs.fetch_add(1, Ordering::Relaxed);
                    stats.gc_bytes_freed.fetch_add(freed, Ordering::Relaxed);
                }
                dropped
            })
    }

    fn recover(&self) -> Result<()> {
        let meta = self.shared.meta.clone();
        let removed = self
            .shared
            .packs
            .recover(|id| Ok(meta.get(Cf::Packs, &id.0.to_be_bytes())?.is_some()))?;
        // Entries left at zero references by pins of uploads that never committed.
        let mut zombies = Vec::new();
        self.shared.meta.scan(Cf::Chunks, &[], |k, v| {
            if ChunkEntry::decode(v)?.refs == 0 {
                zombies.push(ChunkHash::from_slice(k)?);
            }
            Ok(true)
        })?;
        let mut graves = Vec::new();
        self.shared.meta.scan(Cf::Graveyard, &[], |k, _| {
            graves.push(k.to_vec());
            Ok(true)
        })?;
        // No reader exists yet, so there is nothing to wait for.
        let n = zombies.len();
        if n > 0 || !graves.is_empty() {
            self.db.transact(move |tx| {
                for k in graves {
                    tx.delete(Cf::Graveyard, k);
                }
                for h in zombies {
                    if let Some(v) = tx.get(Cf::Chunks, h.as_bytes())? {
                        let e = ChunkEntry::decode(&v)?;
                        if e.refs == 0 {
                            drop_chunk(tx, &h, &e)?;
                        }
                    }
                }
                Ok(())
            })?;
        }
        if removed > 0 || n > 0 {
            tracing::info!(
                removed_files = removed,
                unreferenced_chunks = n,
                "collected unreferenced data at start"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(store: &Store, h: &ChunkHash) -> Option<ChunkEntry> {
        store
            .shared
            .meta
            .get(Cf::Chunks, h.as_bytes())
            .unwrap()
            .map(|v| ChunkEntry::decode(&v).unwrap())
    }

    fn put(store: &Store, key: &str, data: &[u8]) {
        let mut w = store.writer();
        w.write(data).unwrap();
        let staged = w.finish().unwrap();
        let new = NewObject {
            etag: "e".into(),
            ..Default::default()
        };
        store
            .put_object("bkt", &ObjectKey::new(key).unwrap(), staged, new)
            .unwrap();
    }

    #[test]
    fn a_chunk_revived_and_dead_again_keeps_its_newer_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            dir.path(),
            StoreOptions {
                gc_grace: Duration::from_secs(3600),
                ..Default::default()
            },
        )
        .unwrap();
        store
            .create_bucket(&BucketName::new("bkt").unwrap(), "owner", None)
            .unwrap();
        let data = b"small enough to be one inline chunk";
        let h = ChunkHash::of(data);

        put(&store, "k", data);
        store.delete_object("bkt", "k", None).unwrap();
        let first = entry(&store, &h).and_then(|e| e.dead_ms).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        put(&store, "k", data);
        assert_eq!(
            entry(&store, &h).map(|e| (e.refs, e.dead_ms)),
            Some((1, None)),
            "revived"
        );
        store.delete_object("bkt", "k", None).unwrap();
        let second = entry(&store, &h).and_then(|e| e.dead_ms).unwrap();
        assert!(second > first);

        // The first death is past the cutoff, the second is not: the chunk must stay.
        assert_eq!(store.sweep_dead_before(second - 1).unwrap(), 0);
        assert!(entry(&store, &h).is_some());
        // Once the second death is past the cutoff too, it goes.
        assert_eq!(store.sweep_dead_before(second).unwrap(), 1);
        assert!(entry(&store, &h).is_none());
    }

    #[test]
    fn copies_share_a_manifest_until_the_last_holder_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .create_bucket(&BucketName::new("bkt").unwrap(), "owner", None)
            .unwrap();
        let data = b"one inline chunk, copied twice";
        let h = ChunkHash::of(data);
        put(&store, "src", data);
        let key = |k: &str| ObjectKey::new(k).unwrap();
        for dst in ["a", "b"] {
            store
                .copy_object(
                    ("bkt", "src", None),
                    ("bkt", &key(dst)),
                    Replacement::default(),
                    None,
                    None,
                )
                .unwrap();
        }
        let src = store.object("bkt", "src").unwrap();
        assert_eq!(store.object("bkt", "a").unwrap().manifest, src.manifest);
        assert_eq!(
            entry(&store, &h).map(|e| e.refs),
            Some(1),
            "one manifest, one reference"
        );

        // Copying onto the source's own key (new metadata) keeps the manifest alive.
        let meta = ObjectMeta {
            content_type: Some("text/x-new".into()),
            ..Default::default()
        };
        let replace = Replacement {
            meta: Some(meta),
            tags: None,
        };
        store
            .copy_object(
                ("bkt", "src", None),
                ("bkt", &key("src")),
                replace,
                None,
                None,
            )
            .unwrap();
        for k in ["src", "a"] {
            store.delete_object("bkt", k, None).unwrap();
            assert_eq!(
                entry(&store, &h).and_then(|e| e.dead_ms),
                None,
                "still held by b"
            );
        }
        let (_, m) = store.object_with_manifest("bkt", "b", None).unwrap();
        let mut got = Vec::new();
        store
            .read_range(&m, ByteRange::full(m.size()), |b| {
                got.extend_from_slice(&b);
                true
            })
            .unwrap();
        assert_eq!(got, data);
        store.delete_object("bkt", "b", None).unwrap();
        assert!(
            entry(&store, &h).and_then(|e| e.dead_ms).is_some(),
            "last holder gone"
        );
    }
}
