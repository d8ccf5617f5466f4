//! The store itself: buckets, objects and multipart uploads over chunks and packs.
//!
//! All methods block (RocksDB and file I/O); async callers run them on blocking threads.

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

mod decisions;
mod replication;
use crate::manifest::{ByteRange, ChunkRef, ChunkSlice, Manifest};
use crate::meta::{Cf, Database, Meta, Tx, View};
use crate::names::{BucketName, ObjectKey};
use crate::pack::{PackId, PackSet, PackWriter};
use crate::records::*;
use crate::version::{DeleteMarker, Version, VersionId, Versioning, next_seq};
pub use decisions::{Fate, KeyState};
pub use replication::BatchOutcome;

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
#[derive(Clone, Debug, PartialEq, Eq)]
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

    // ---- chunks for the swarm ------------------------------------------------------------

    /// Whether this node holds the chunk's bytes.
    pub fn has_chunk(&self, hash: &ChunkHash) -> Result<bool> {
        Ok(match self.shared.meta.get(Cf::Chunks, hash.as_bytes())? {
            Some(v) => ChunkEntry::decode(&v)?.location != ChunkLocation::Absent,
            None => false,
        })
    }

    /// A whole chunk's bytes and the kind of copy this node holds, if held here.
    pub fn held_chunk(&self, hash: &ChunkHash) -> Result<Option<HeldChunk>> {
        let Some(v) = self.shared.meta.get(Cf::Chunks, hash.as_bytes())? else {
            return Ok(None);
        };
        let entry = ChunkEntry::decode(&v)?;
        let bytes = match entry.location {
            ChunkLocation::Absent => return Ok(None),
            ChunkLocation::Inline(data) => Bytes::from(data),
            ChunkLocation::Pack { pack, offset, len } => {
                self.shared.packs.read(pack, offset, len as usize)?
            }
        };
        Ok(Some(HeldChunk {
            bytes,
            cached: entry.cached,
        }))
    }

    /// Stores the bytes of a chunk this node references but does not hold (fetched from a
    /// peer). Only a [`VerifiedChunk`] is accepted: nothing unverified is ever stored.
    /// `cached` marks a copy made for reading (evictable under a capacity limit) rather than
    /// one this node holds for durability. Returns false if the chunk was not wanted (no
    /// entry, or already held).
    pub fn put_chunk(&self, chunk: VerifiedChunk, cached: bool) -> Result<bool> {
        let (hash, data) = chunk.into_parts();
        if self.has_chunk(&hash)? {
            return Ok(false);
        }
        let (location, pack) = if data.len() <= INLINE_MAX {
            (ChunkLocation::Inline(data.to_vec()), None)
        } else {
            let mut w = self.shared.packs.writer()?;
            let offset = w.append(&data)?;
            let (pack, size) = self.shared.seal(w)?;
            (
                ChunkLocation::Pack {
                    pack,
                    offset,
                    len: data.len() as u32,
                },
                Some((pack, size)),
            )
        };
        let packs = self.shared.packs.clone();
        let stored = self.db.transact(move |tx| {
            let key = hash.as_bytes().to_vec();
            let Some(v) = tx.get(Cf::Chunks, &key)? else {
                return Ok(false);
            };
            let mut e = ChunkEntry::decode(&v)?;
            if e.location != ChunkLocation::Absent {
                return Ok(false);
            }
            e.location = location;
            e.cached = cached;
            tx.put(Cf::Chunks, key, e.encode());
            if let Some((pack, size)) = pack {
                tx.put(
                    Cf::Packs,
                    pack.0.to_be_bytes().to_vec(),
                    PackRecord {
                        size,
                        live: u64::from(data.len() as u32),
                    }
                    .encode(),
                );
            }
            Ok(true)
        });
        if !matches!(stored, Ok(true))
            && let Some((pack, _)) = pack
        {
            let _ = packs.remove(pack);
        }
        stored
    }

    /// Every chunk entry (including ones no manifest references any more, awaiting
    /// collection), in one scan: what placement, repair and status walk over. Stops when
    /// `f` returns false.
    pub fn chunk_inventory(&self, mut f: impl FnMut(ChunkState) -> bool) -> Result<()> {
        self.shared.meta.scan(Cf::Chunks, &[], |k, v| {
            let e = ChunkEntry::decode(v)?;
            Ok(f(ChunkState {
                hash: ChunkHash::from_slice(k)?,
                refs: e.refs,
                held_bytes: e.location.stored_len(),
                cached: e.cached,
            }))
        })
    }

    /// Marks held chunks as cached copies (evictable) or as copies held for durability.
    pub fn set_cached(&self, hashes: Vec<ChunkHash>, cached: bool) -> Result<()> {
        self.db.transact(move |tx| {
            for h in hashes {
                if let Some(v) = tx.get(Cf::Chunks, h.as_bytes())? {
                    let mut e = ChunkEntry::decode(&v)?;
                    if e.location != ChunkLocation::Absent && e.cached != cached {
                        e.cached = cached;
                        tx.put(Cf::Chunks, h.as_bytes().to_vec(), e.encode());
                    }
                }
            }
            Ok(())
        })
    }

    /// Drops the bytes of cached chunks (not pinned by a write in flight) until at most
    /// `target` bytes of chunk data are held; the chunks stay known as absent, to be fetched
    /// again if read. Oldest packs go first. Returns the bytes freed.
    pub fn evict_to(&self, target: u64) -> Result<u64> {
        let mut held = 0u64;
        let mut candidates = Vec::new();
        self.shared.meta.scan(Cf::Chunks, &[], |k, v| {
            let e = ChunkEntry::decode(v)?;
            let len = e.location.stored_len();
            held += len;
            if e.cached
                && let ChunkLocation::Pack { pack, .. } = e.location
            {
                candidates.push((pack, ChunkHash::from_slice(k)?, len));
            }
            Ok(true)
        })?;
        if held <= target {
            return Ok(0);
        }
        candidates.sort_unstable_by_key(|c| c.0);
        let mut chosen = Vec::new();
        let mut freed = 0;
        for (_, h, len) in candidates {
            if held - freed <= target {
                break;
            }
            if self.shared.pinned(&h) {
                continue;
            }
            freed += len;
            chosen.push(h);
        }
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let mut freed = 0;
            for h in chosen {
                let Some(v) = tx.get(Cf::Chunks, h.as_bytes())? else {
                    continue;
                };
                let e = ChunkEntry::decode(&v)?;
                if !e.cached || shared.pinned(&h) {
                    continue;
                }
                freed += e.location.stored_len();
                // Frees the pack space like a collection, then keeps the entry as absent.
                drop_chunk(tx, &h, &e)?;
                let absent = ChunkEntry {
                    location: ChunkLocation::Absent,
                    cached: false,
                    ..e
                };
                tx.put(Cf::Chunks, h.as_bytes().to_vec(), absent.encode());
            }
            Ok(freed)
        })
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &StoreStats {
        &self.shared.stats
    }

    pub(crate) fn meta(&self) -> &Meta {
        &self.shared.meta
    }

    pub(crate) fn packs(&self) -> &PackSet {
        &self.shared.packs
    }

    // ---- buckets -------------------------------------------------------------------------

    /// Creates a bucket owned by `owner`. Fails with `BucketExists` whoever owns it.
    pub fn create_bucket(
        &self,
        name: &BucketName,
        owner: &str,
        region: Option<String>,
    ) -> Result<()> {
        let key = name.as_str().as_bytes().to_vec();
        let mut rec = BucketRecord {
            id: BucketId::random(),
            follows: None,
            owner: owner.to_owned(),
            created_ms: now_ms(),
            region,
            versioning: None,
            cors: None,
        };
        let n = name.to_string();
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            if tx.get(Cf::Buckets, &key)?.is_some() {
                return Err(StoreError::BucketExists(n));
            }
            rec.follows = last_grave(tx, &n)?;
            tx.put(Cf::Buckets, key, to_json(&rec));
            journal_bucket(tx, &shared, &n)
        })
    }

    /// The bucket's record, or `NoSuchBucket`.
    pub fn bucket(&self, name: &str) -> Result<BucketRecord> {
        match self.shared.meta.get(Cf::Buckets, name.as_bytes())? {
            Some(v) => from_json(&v),
            None => Err(StoreError::NoSuchBucket(name.to_owned())),
        }
    }

    /// All buckets, in name order.
    pub fn buckets(&self) -> Result<Vec<(BucketName, BucketRecord)>> {
        let mut out = Vec::new();
        self.shared.meta.scan(Cf::Buckets, &[], |k, v| {
            out.push((
                BucketName::trusted(String::from_utf8_lossy(k).into_owned()),
                from_json(v)?,
            ));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Turns versioning on or suspends it. Once enabled, a bucket never returns to
    /// "never versioned" (as in S3).
    pub fn set_versioning(&self, name: &str, state: Versioning) -> Result<()> {
        let name = name.to_owned();
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let mut rec = bucket_in(tx, &name)?;
            rec.versioning = Some(state);
            tx.put(Cf::Buckets, name.clone().into_bytes(), to_json(&rec));
            journal_bucket(tx, &shared, &name)
        })
    }

    /// Deletes an empty bucket; its unfinished multipart uploads are aborted with it.
    pub fn delete_bucket(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let id = bucket_in(tx, &name)?.id;
            let prefix = object_key(&name, "");
            if !tx
                .keys_with_prefix_limited(Cf::Objects, &prefix, 1)?
                .is_empty()
            {
                return Err(StoreError::BucketNotEmpty(name));
            }
            for ukey in tx.keys_with_prefix(Cf::Uploads, &prefix)? {
                let upload_id = ukey
                    .rsplit(|b| *b == 0)
                    .next()
                    .map(|s| String::from_utf8_lossy(s).into_owned());
                if let Some(upload_id) = upload_id {
                    release_upload_parts(tx, &upload_id)?;
                }
                tx.delete(Cf::Uploads, ukey);
            }
            tx.delete(Cf::Buckets, name.clone().into_bytes());
            journal_bucket_deleted(tx, &shared, &name, id)
        })
    }

    /// Replaces the bucket's CORS rules (`None` removes them); `NoSuchBucket` if it is gone.
    pub fn set_bucket_cors(&self, name: &str, cors: Option<Vec<CorsRule>>) -> Result<()> {
        let name = name.to_owned();
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let Some(v) = tx.get(Cf::Buckets, name.as_bytes())? else {
                return Err(StoreError::NoSuchBucket(name));
            };
            let mut rec: BucketRecord = from_json(&v)?;
            rec.cors = cors;
            tx.put(Cf::Buckets, name.clone().into_bytes(), to_json(&rec));
            journal_bucket(tx, &shared, &name)
        })
    }

    // ---- writing -------------------------------------------------------------------------

    /// Starts writing new content; feed it with `write`, then `finish`.
    pub fn writer(&self) -> ObjectWriter {
        ObjectWriter {
            shared: self.shared.clone(),
            chunker: Chunker::new(),
            sink: ChunkSink {
                shared: self.shared.clone(),
                chunks: Vec::new(),
                new_chunks: HashMap::new(),
                pack: None,
                pinned: HashSet::new(),
            },
            whole: Some(blake3::Hasher::new()),
            size: 0,
        }
    }

    /// A writer for a caller that computes the whole-content BLAKE3 on another thread (so the
    /// chunking thread does not hash every byte twice) and passes it to `finish_with`.
    pub fn writer_for_hashed(&self) -> ObjectWriter {
        ObjectWriter {
            whole: None,
            ..self.writer()
        }
    }

    /// Makes `staged` visible as `bucket/key`, replacing any previous object, atomically.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &ObjectKey,
        staged: StagedObject,
        new: NewObject,
    ) -> Result<ObjectRecord> {
        let bucket = bucket.to_owned();
        let okey = object_key(&bucket, key.as_str());
        let (shared, key) = (self.shared.clone(), key.as_str().to_owned());
        self.db.transact(move |tx| {
            let versioning = bucket_in(tx, &bucket)?.versioning;
            let mut staged = staged;
            let manifest = commit_staged(tx, &mut staged, true)?;
            let rec = ObjectRecord {
                size: staged.size,
                etag: new.etag,
                content_hash: staged.content_hash.to_hex(),
                manifest: manifest.to_hex(),
                last_modified_ms: now_ms(),
                meta: new.meta.clone(),
                checksum: new.checksum.clone(),
                parts: None,
                version_id: VersionId::Null,
                seq: 0,
                tags: new.tags.clone(),
            };
            let rec = install(tx, okey, rec, versioning, new.precondition.as_ref())?;
            journal_version(tx, &shared, &bucket, &key, rec.version_id)?;
            staged.committed = true;
            Ok(rec)
        })
    }

    // ---- reading -------------------------------------------------------------------------

    /// The object's current record, or `NoSuchKey` (`NoSuchBucket` when the bucket is
    /// missing, `DeleteMarker` when the key's latest version is a delete marker).
    pub fn object(&self, bucket: &str, key: &str) -> Result<ObjectRecord> {
        self.object_version(bucket, key, None)
    }

    /// The record of one version (`None`: the current one). A version that does not exist
    /// is `NoSuchVersion`; one that is a delete marker is `DeleteMarker`.
    pub fn object_version(
        &self,
        bucket: &str,
        key: &str,
        id: Option<VersionId>,
    ) -> Result<ObjectRecord> {
        ObjectKey::new(key)?;
        let okey = object_key(bucket, key);
        let found = match id {
            // The common read, one lookup: no snapshot needed.
            None => self
                .shared
                .meta
                .get(Cf::Objects, &okey)?
                .map(|v| from_json::<Version>(&v))
                .transpose()?,
            // One snapshot for the current and the noncurrent lookup: a version promoted
            // between the two reads is not missed.
            Some(id) => {
                let view = self.shared.meta.view();
                match view.get(Cf::Objects, &okey)? {
                    None => None,
                    Some(v) => {
                        let cur: Version = from_json(&v)?;
                        if cur.version_id() == id {
                            Some(cur)
                        } else {
                            find_noncurrent(&view, &okey, id)?.map(|(_, v)| v)
                        }
                    }
                }
            }
        };
        match found {
            Some(Version::Object(o)) => Ok(o),
            Some(Version::DeleteMarker(m)) => Err(StoreError::DeleteMarker {
                key: key.to_owned(),
                version_id: m.version_id,
                named: id.is_some(),
            }),
            None => {
                self.bucket(bucket)?;
                match id {
                    None => Err(StoreError::NoSuchKey(key.to_owned())),
                    Some(id) => Err(StoreError::NoSuchVersion(id.to_string())),
                }
            }
        }
    }

    /// The object's record and its chunk list, as of one moment: if the key is overwritten
    /// between the two reads (the old manifest is gone), the record is read again.
    pub fn object_with_manifest(
        &self,
        bucket: &str,
        key: &str,
        id: Option<VersionId>,
    ) -> Result<(ObjectRecord, Manifest)> {
        for _ in 0..8 {
            let rec = self.object_version(bucket, key, id)?;
            if let Some(v) = self.shared.meta.get(Cf::Manifests, &rec.manifest_id()?.0)? {
                return Ok((rec, Manifest::decode(&v)?));
            }
        }
        Err(StoreError::Raced(format!(
            "{bucket}/{key} changed under every read"
        )))
    }

    /// The part sizes of a multipart object, in part order (`None` for a single-part object,
    /// or one completed before part sizes were recorded).
    pub fn part_sizes(&self, rec: &ObjectRecord) -> Result<Option<Vec<u64>>> {
        if rec.parts.is_none() {
            return Ok(None);
        }
        let Some(v) = self.shared.meta.get(Cf::PartSizes, &rec.manifest_id()?.0)? else {
            return Ok(None);
        };
        Ok(Some(decode_part_sizes(&v)))
    }

    /// Reads one slice of a chunk.
    pub fn read_slice(&self, slice: &ChunkSlice) -> Result<Bytes> {
        read_slice(&self.shared, slice)
    }

    /// Streams `range` of `manifest` to `sink`, one chunk slice at a time, in order; stops
    /// early when `sink` returns false (the client went away).
    pub fn read_range(
        &self,
        manifest: &Manifest,
        range: ByteRange,
        mut sink: impl FnMut(Bytes) -> bool,
    ) -> Result<()> {
        for slice in manifest.slices(range) {
            if !sink(self.read_slice(&slice)?) {
                break;
            }
        }
        Ok(())
    }

    /// The manifest of some object whose whole-content BLAKE3 is `hash`.
    pub fn blob(&self, hash: &ContentHash) -> Result<Manifest> {
        let mut ids = Vec::new();
        self.shared
            .meta
            .scan_prefix(Cf::Blobs, hash.as_bytes(), |k, _| {
                ids.push(ManifestId(
                    k[32..]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("blob key".into()))?,
                ));
                Ok(ids.len() < 16)
            })?;
        // An entry can outlive its manifest for the instant between two commits; try the next.
        for id in ids {
            if let Some(v) = self.shared.meta.get(Cf::Manifests, &id.0)? {
                return Manifest::decode(&v);
            }
        }
        Err(StoreError::NoSuchBlob(hash.to_hex()))
    }

    /// Lists `bucket` in key order: keys starting with `prefix`, after `after`, grouping keys
    /// that contain `delimiter` past the prefix into common prefixes; at most `max` entries.
    /// Keys whose latest version is a delete marker are not listed.
    pub fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&ListCursor>,
        max: usize,
    ) -> Result<ListPage> {
        let view = self.shared.meta.view();
        let (entries, next) =
            self.scan_current(&view, bucket, prefix, delimiter, after, max, false)?;
        let mut page = ListPage {
            next,
            ..ListPage::default()
        };
        for e in entries {
            match e {
                Listed::Key(k, Version::Object(o)) => page.objects.push((k, o)),
                Listed::Key(_, Version::DeleteMarker(_)) => {}
                Listed::Prefix(p) => page.common_prefixes.push(p),
            }
        }
        Ok(page)
    }

    /// Lists every version of the keys in `bucket` (see [`Store::list_objects`] for `prefix`,
    /// `delimiter` and `after`); `after_version` resumes inside the key `after` names.
    pub fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&ListCursor>,
        after_version: Option<VersionId>,
        max: usize,
    ) -> Result<VersionsPage> {
        let mut page = VersionsPage::default();
        if max == 0 {
            self.bucket(bucket)?;
            return Ok(page);
        }
        // One snapshot for the whole page: a concurrent overwrite cannot list a version both
        // as latest and as noncurrent, nor a promotion hide one.
        let view = self.shared.meta.view();
        // Finish the key the version marker points into (resuming by stamp, so a marker
        // version deleted in between loses nothing), then go on after it.
        if let (Some(ListCursor::Key(k)), Some(v)) = (after, after_version) {
            let okey = object_key(bucket, k);
            let current: Option<Version> = view
                .get(Cf::Objects, &okey)?
                .map(|v| from_json(&v))
                .transpose()?;
            let resume = match (current, v) {
                (Some(c), v) if c.version_id() == v => Some(None),
                (_, VersionId::Stamped { seq, .. }) => Some(Some((seq, v))),
                (_, VersionId::Null) => view
                    .get(Cf::NullVersions, &okey)?
                    .map(|s| decode_seq(&s))
                    .transpose()?
                    .map(|seq| Some((seq, VersionId::Null))),
            };
            if let Some(after_version) = resume {
                let rest = self.noncurrent(&view, &okey, after_version, max + 1)?;
                let more = rest.len() > max;
                for ver in rest.into_iter().take(max) {
                    page.versions.push((k.clone(), ver, false));
                }
                if more {
                    let last = page.versions.last().map(|(_, v, _)| v.version_id());
                    page.next = Some((ListCursor::Key(k.clone()), last));
                    return Ok(page);
                }
            }
        }
        let mut count = page.versions.len();
        let want = max - count;
        if want == 0 {
            // The marker's key filled the page: it is truncated if any key follows.
            let (rest, _) = self.scan_current(&view, bucket, prefix, delimiter, after, 1, true)?;
            if !rest.is_empty() {
                page.next = page
                    .versions
                    .last()
                    .map(|(k, v, _)| (ListCursor::Key(k.clone()), Some(v.version_id())));
            }
            return Ok(page);
        }
        let (entries, more) =
            self.scan_current(&view, bucket, prefix, delimiter, after, want, true)?;
        let n = entries.len();
        for (i, e) in entries.into_iter().enumerate() {
            match e {
                Listed::Prefix(p) => {
                    count += 1;
                    if count == max && (i + 1 < n || more.is_some()) {
                        page.next = Some((ListCursor::Prefix(p.clone()), None));
                    }
                    page.common_prefixes.push(p);
                }
                Listed::Key(k, current) => {
                    let okey = object_key(bucket, &k);
                    // No more than the page can take (and one to tell whether more follow).
                    let mut versions = vec![current];
                    versions.extend(self.noncurrent(&view, &okey, None, max - count)?);
                    let total = versions.len();
                    for (j, v) in versions.into_iter().enumerate() {
                        let id = v.version_id();
                        page.versions.push((k.clone(), v, j == 0));
                        count += 1;
                        if count == max {
                            if j + 1 < total || i + 1 < n || more.is_some() {
                                page.next = Some((ListCursor::Key(k), Some(id)));
                            }
                            return Ok(page);
                        }
                    }
                }
            }
            if count == max {
                break;
            }
        }
        Ok(page)
    }

    /// Up to `limit` noncurrent versions of a key, newest first, older than the version
    /// `after` (its seq and id) if given.
    fn noncurrent(
        &self,
        view: &View<'_>,
        okey: &[u8],
        after: Option<(u64, VersionId)>,
        limit: usize,
    ) -> Result<Vec<Version>> {
        let prefix = versions_prefix(okey);
        let start = match after {
            // Slots sort newest first: the next older version sorts right after this one's
            // slot, whether or not it is still there.
            Some((seq, id)) => {
                let mut k = version_key(okey, seq, id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        view.scan(Cf::Versions, &start, |k, v| {
            if !k.starts_with(&prefix) {
                return Ok(false);
            }
            out.push(from_json(v)?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// The key-ordered scan under both listings: current versions (delete markers too when
    /// `markers`) and common prefixes, at most `max` entries, and where to resume if more
    /// follow.
    #[allow(clippy::too_many_arguments)]
    fn scan_current(
        &self,
        view: &View<'_>,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&ListCursor>,
        max: usize,
        markers: bool,
    ) -> Result<(Vec<Listed>, Option<ListCursor>)> {
        self.bucket(bucket)?;
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let base = object_key(bucket, "");
        let mut start = object_key(bucket, prefix);
        match after {
            Some(ListCursor::Key(k)) => {
                let mut s = object_key(bucket, k);
                s.push(0); // strictly after `k`
                start = start.max(s);
            }
            Some(ListCursor::Prefix(p)) => {
                let mut s = object_key(bucket, p);
                s.push(0xFF); // past every key under `p` (UTF-8 never contains 0xFF)
                start = start.max(s);
            }
            None => {}
        }
        let mut entries = Vec::new();
        let mut next = None;
        if max == 0 {
            return Ok((entries, next));
        }
        let full_prefix = object_key(bucket, prefix);
        let mut last: Option<ListCursor> = None;
        loop {
            let mut seek_to: Option<Vec<u8>> = None;
            view.scan(Cf::Objects, &start, |k, v| {
                if !k.starts_with(&full_prefix) {
                    return Ok(false);
                }
                let key = std::str::from_utf8(&k[base.len()..])
                    .map_err(|_| StoreError::Corrupt("key".into()))?;
                let version: Version = from_json(v)?;
                // Skipped before grouping, so a prefix shows only if something under it is
                // listed.
                if !markers && version.object().is_none() {
                    return Ok(true);
                }
                if entries.len() == max {
                    next = last.clone();
                    return Ok(false);
                }
                if let Some(d) = delimiter
                    && let Some(i) = key[prefix.len()..].find(d)
                {
                    let cp = key[..prefix.len() + i + d.len()].to_owned();
                    let mut s = object_key(bucket, &cp);
                    s.push(0xFF);
                    entries.push(Listed::Prefix(cp.clone()));
                    last = Some(ListCursor::Prefix(cp));
                    seek_to = Some(s);
                    return Ok(false);
                }
                entries.push(Listed::Key(key.to_owned(), version));
                last = Some(ListCursor::Key(key.to_owned()));
                Ok(true)
            })?;
            match seek_to {
                Some(s) if next.is_none() => start = s,
                _ => break,
            }
        }
        Ok((entries, next))
    }

    /// Deletes `bucket/key`: in a versioned bucket, without `version` a delete marker becomes
    /// the latest version and the data stays; with `version`, that version is removed for
    /// good (and the next newest becomes current). Deleting what does not exist succeeds.
    pub fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionId>,
    ) -> Result<Deleted> {
        // A key that could not have been written (NUL, too long) must not reach key layout:
        // `a\0x` would otherwise land inside key `a`'s run of versions.
        ObjectKey::new(key)?;
        let okey = object_key(bucket, key);
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let versioning = bucket_in(tx, &bucket)?.versioning;
            let deleted = match version {
                None => delete_current(tx, okey, versioning),
                Some(id) => delete_version(tx, okey, id),
            }?;
            journal_version(
                tx,
                &shared,
                &bucket,
                &key,
                deleted.version_id.unwrap_or_default(),
            )?;
            Ok(deleted)
        })
    }

    /// Rewrites the tags of one version (`None`: the current one); returns its id.
    pub fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionId>,
        tags: BTreeMap<String, String>,
    ) -> Result<VersionId> {
        ObjectKey::new(key)?;
        let okey = object_key(bucket, key);
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            bucket_in(tx, &bucket)?;
            let cur = current(tx, &okey)?;
            let (slot, found) = match (cur, version) {
                (Some(c), None) => ((Cf::Objects, okey.clone()), Some(c)),
                (Some(c), Some(id)) if c.version_id() == id => {
                    ((Cf::Objects, okey.clone()), Some(c))
                }
                (Some(_), Some(id)) => match find_noncurrent_tx(tx, &okey, id)? {
                    Some((k, v)) => ((Cf::Versions, k), Some(v)),
                    None => ((Cf::Versions, Vec::new()), None),
                },
                (None, _) => ((Cf::Objects, okey.clone()), None),
            };
            match found {
                Some(Version::Object(mut o)) => {
                    o.tags = tags;
                    let id = o.version_id;
                    tx.put(slot.0, slot.1, to_json(&Version::Object(o)));
                    journal_version(tx, &shared, &bucket, &key, id)?;
                    Ok(id)
                }
                Some(Version::DeleteMarker(m)) => Err(StoreError::DeleteMarker {
                    key,
                    version_id: m.version_id,
                    named: version.is_some(),
                }),
                None => match version {
                    Some(id) => Err(StoreError::NoSuchVersion(id.to_string())),
                    None => Err(StoreError::NoSuchKey(key)),
                },
            }
        })
    }

    /// Copies `src` to `dst` without moving a byte: the new object shares the source's chunks
    /// (one more reference each). `meta` replaces the metadata (`None` keeps the source's);
    /// `source_etag`, when given, must still be the source's ETag at commit time.
    pub fn copy_object(
        &self,
        src: (&str, &str, Option<VersionId>),
        dst: (&str, &ObjectKey),
        replace: Replacement,
        source_etag: Option<String>,
    ) -> Result<ObjectRecord> {
        self.bucket(src.0)?;
        let skey = object_key(src.0, src.1);
        let (dst_bucket, okey) = (dst.0.to_owned(), object_key(dst.0, dst.1.as_str()));
        let (src_name, src_version) = (src.1.to_owned(), src.2);
        let (shared, dst_key) = (self.shared.clone(), dst.1.as_str().to_owned());
        self.db.transact(move |tx| {
            let versioning = bucket_in(tx, &dst_bucket)?.versioning;
            let found = match (current(tx, &skey)?, src_version) {
                (Some(c), None) => Some(c),
                (Some(c), Some(id)) if c.version_id() == id => Some(c),
                (Some(_), Some(id)) => find_noncurrent_tx(tx, &skey, id)?.map(|(_, v)| v),
                (None, _) => None,
            };
            let source = match found {
                Some(Version::Object(o)) => o,
                Some(Version::DeleteMarker(m)) => {
                    return Err(StoreError::DeleteMarker {
                        key: src_name,
                        version_id: m.version_id,
                        named: src_version.is_some(),
                    });
                }
                None => {
                    return Err(match src_version {
                        Some(id) => StoreError::NoSuchVersion(id.to_string()),
                        None => StoreError::NoSuchKey(src_name),
                    });
                }
            };
            if let Some(e) = source_etag
                && e != source.etag
            {
                return Err(StoreError::PreconditionFailed(
                    "the source object changed".into(),
                ));
            }
            // The copy shares the source's manifest: one counter update, whatever the size.
            // Shared before `install` releases anything, so copying onto the source's own
            // key keeps the manifest alive.
            share_manifest(tx, source.manifest_id()?)?;
            let rec = ObjectRecord {
                last_modified_ms: now_ms(),
                meta: replace.meta.unwrap_or_else(|| source.meta.clone()),
                tags: replace.tags.unwrap_or_else(|| source.tags.clone()),
                ..source
            };
            let rec = install(tx, okey, rec, versioning, None)?;
            journal_version(tx, &shared, &dst_bucket, &dst_key, rec.version_id)?;
            Ok(rec)
        })
    }

    /// Deletes many keys (or versions) in one commit. Each item names a key, optionally a
    /// version, and optionally the ETag the object must still have; the result says, per
    /// item, what was deleted (a missing key counts as deleted, as in S3) or why not.
    pub fn delete_objects(
        &self,
        bucket: &str,
        items: Vec<(String, Option<VersionId>, Option<String>)>,
    ) -> Result<Vec<Result<Deleted>>> {
        let bucket = bucket.to_owned();
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let versioning = bucket_in(tx, &bucket)?.versioning;
            let mut results = Vec::with_capacity(items.len());
            for (key, version, etag) in items {
                if let Err(e) = ObjectKey::new(&key) {
                    results.push(Err(e));
                    continue;
                }
                let okey = object_key(&bucket, &key);
                if let Some(want) = etag {
                    let cur = match version {
                        None => current(tx, &okey)?,
                        Some(id) => match current(tx, &okey)? {
                            Some(c) if c.version_id() == id => Some(c),
                            _ => find_noncurrent_tx(tx, &okey, id)?.map(|(_, v)| v),
                        },
                    };
                    match cur.as_ref().and_then(Version::object) {
                        Some(o) if want != "*" && want.trim_matches('"') != o.etag => {
                            results.push(Err(StoreError::PreconditionFailed(format!(
                                "the current ETag is {}",
                                o.etag
                            ))));
                            continue;
                        }
                        Some(_) => {}
                        // A condition on an object that is not there cannot hold.
                        None => {
                            results.push(Err(StoreError::NoSuchKey(key)));
                            continue;
                        }
                    }
                }
                let done = match version {
                    None => delete_current(tx, okey, versioning),
                    Some(id) => delete_version(tx, okey, id),
                };
                if let Ok(d) = &done {
                    journal_version(tx, &shared, &bucket, &key, d.version_id.unwrap_or_default())?;
                }
                results.push(done);
            }
            Ok(results)
        })
    }

    // ---- multipart -----------------------------------------------------------------------

    /// Starts a multipart upload; returns its id.
    pub fn create_upload(
        &self,
        bucket: &str,
        key: &ObjectKey,
        rec: UploadRecord,
    ) -> Result<String> {
        let upload_id = hex::encode(rand::random::<[u8; 16]>());
        let ukey = upload_key(bucket, key.as_str(), &upload_id);
        let bucket = bucket.to_owned();
        let id = upload_id.clone();
        self.db.transact(move |tx| {
            if tx.get(Cf::Buckets, bucket.as_bytes())?.is_none() {
                return Err(StoreError::NoSuchBucket(bucket));
            }
            tx.put(Cf::Uploads, ukey, to_json(&rec));
            Ok(())
        })?;
        Ok(id)
    }

    /// The upload's record, or `NoSuchUpload`.
    pub fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRecord> {
        check_upload_id(upload_id)?;
        match self
            .shared
            .meta
            .get(Cf::Uploads, &upload_key(bucket, key, upload_id))?
        {
            Some(v) => from_json(&v),
            None => {
                self.bucket(bucket)?;
                Err(StoreError::NoSuchUpload(upload_id.to_owned()))
            }
        }
    }

    /// Stores part `number` of an upload, replacing an earlier part with that number.
    pub fn put_part(
        &self,
        upload: &UploadRef<'_>,
        number: u32,
        staged: StagedObject,
        etag: String,
        checksum: Option<StoredChecksum>,
    ) -> Result<PartRecord> {
        check_upload_id(upload.upload_id)?;
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(StoreError::InvalidPart(format!(
                "part number {number} is outside 1..=10000"
            )));
        }
        let ukey = upload_key(upload.bucket, upload.key, upload.upload_id);
        let pkey = part_key(upload.upload_id, number);
        let upload_id = upload.upload_id.to_owned();
        self.db.transact(move |tx| {
            if tx.get(Cf::Uploads, &ukey)?.is_none() {
                return Err(StoreError::NoSuchUpload(upload_id));
            }
            let mut staged = staged;
            let manifest = commit_staged(tx, &mut staged, false)?;
            let rec = PartRecord {
                size: staged.size,
                etag,
                manifest: manifest.to_hex(),
                last_modified_ms: now_ms(),
                checksum,
            };
            replace_part(tx, pkey, &rec)?;
            staged.committed = true;
            Ok(rec)
        })
    }

    /// Stores part `number` of an upload as `range` of existing content (UploadPartCopy),
    /// sharing every chunk the range covers whole; only the partial chunks at its two ends
    /// (at most two chunks' worth of bytes) are read and stored anew.
    pub fn put_part_copy(
        &self,
        upload: &UploadRef<'_>,
        number: u32,
        source: &Manifest,
        range: ByteRange,
        etag: String,
        checksum: Option<StoredChecksum>,
    ) -> Result<PartRecord> {
        check_upload_id(upload.upload_id)?;
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(StoreError::InvalidPart(format!(
                "part number {number} is outside 1..=10000"
            )));
        }
        enum Segment {
            Shared(ChunkRef),
            Copied(Box<StagedObject>),
        }
        let mut segments = Vec::new();
        for slice in source.slices(range) {
            if slice.offset == 0 && slice.len == slice.chunk.len {
                segments.push(Segment::Shared(slice.chunk));
            } else {
                let mut w = self.writer();
                w.write(&self.read_slice(&slice)?)?;
                segments.push(Segment::Copied(Box::new(w.finish()?)));
            }
        }
        let ukey = upload_key(upload.bucket, upload.key, upload.upload_id);
        let pkey = part_key(upload.upload_id, number);
        let upload_id = upload.upload_id.to_owned();
        self.db.transact(move |tx| {
            if tx.get(Cf::Uploads, &ukey)?.is_none() {
                return Err(StoreError::NoSuchUpload(upload_id));
            }
            let mut chunks = Vec::new();
            let mut scratch = Vec::new();
            let mut staged_all = Vec::new();
            for seg in segments {
                match seg {
                    Segment::Shared(c) => chunks.push(c),
                    Segment::Copied(mut staged) => {
                        scratch.push(commit_staged(tx, &mut staged, false)?);
                        chunks.extend_from_slice(staged.manifest.chunks());
                        staged_all.push(staged);
                    }
                }
            }
            // The part's own references; the scratch manifests only carried the new
            // chunks into the store and are dropped again.
            for c in &chunks {
                add_ref(tx, &c.hash)?;
            }
            for id in scratch {
                release_manifest(tx, id, None)?;
            }
            let manifest = Manifest::new(chunks);
            let id = ManifestId::random();
            tx.put(Cf::Manifests, id.0.to_vec(), manifest.encode());
            let rec = PartRecord {
                size: manifest.size(),
                etag,
                manifest: id.to_hex(),
                last_modified_ms: now_ms(),
                checksum,
            };
            replace_part(tx, pkey, &rec)?;
            for s in &mut staged_all {
                s.committed = true;
            }
            Ok(rec)
        })
    }

    /// The parts uploaded so far, by part number.
    pub fn parts(&self, upload_id: &str) -> Result<Vec<(u32, PartRecord)>> {
        let mut prefix = upload_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        self.shared.meta.scan_prefix(Cf::Parts, &prefix, |k, v| {
            let n = u32::from_be_bytes(
                k[prefix.len()..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("part key".into()))?,
            );
            out.push((n, from_json(v)?));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Uploads in progress in `bucket` under `prefix`, ordered by key then upload id.
    pub fn uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String, UploadRecord)>> {
        self.bucket(bucket)?;
        let base = object_key(bucket, "");
        let mut out = Vec::new();
        self.shared
            .meta
            .scan_prefix(Cf::Uploads, &object_key(bucket, prefix), |k, v| {
                let rest = &k[base.len()..];
                let split = rest
                    .iter()
                    .rposition(|b| *b == 0)
                    .ok_or_else(|| StoreError::Corrupt("upload key".into()))?;
                let key = String::from_utf8_lossy(&rest[..split]).into_owned();
                let id = String::from_utf8_lossy(&rest[split + 1..]).into_owned();
                out.push((key, id, from_json(v)?));
                Ok(true)
            })?;
        Ok(out)
    }

    /// Completes an upload from the listed `(part number, etag)` pairs, making the object
    /// visible atomically. Computes the S3 multipart ETag and the whole-content BLAKE3
    /// (which needs one sequential read of the parts).
    pub fn complete_upload(
        &self,
        bucket: &str,
        key: &ObjectKey,
        upload_id: &str,
        listed: &[(u32, String)],
        checksum: Option<StoredChecksum>,
        precondition: Option<WritePrecondition>,
    ) -> Result<ObjectRecord> {
        let upload = self.upload(bucket, key.as_str(), upload_id)?;
        if listed.is_empty() {
            return Err(StoreError::InvalidPart("the upload lists no parts".into()));
        }
        let stored: BTreeMap<u32, PartRecord> = self.parts(upload_id)?.into_iter().collect();
        let mut chunks = Vec::new();
        let mut md5s = Md5::new();
        let mut used = Vec::new();
        let mut part_sizes = Vec::with_capacity(listed.len());
        if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(StoreError::InvalidPartOrder);
        }
        for (i, (number, etag)) in listed.iter().enumerate() {
            let part = stored.get(number).ok_or_else(|| {
                StoreError::InvalidPart(format!("part {number} was not uploaded"))
            })?;
            if etag.trim_matches('"') != part.etag {
                return Err(StoreError::InvalidPart(format!(
                    "part {number} has ETag {}, not {etag}",
                    part.etag
                )));
            }
            if i + 1 < listed.len() && part.size < MIN_PART_SIZE {
                return Err(StoreError::PartTooSmall(format!(
                    "part {number} is {} bytes; every part but the last must be at least 5 MiB",
                    part.size
                )));
            }
            let digest =
                hex::decode(&part.etag).map_err(|_| StoreError::Corrupt("part etag".into()))?;
            md5s.update(&digest);
            let m = load_manifest(&self.shared.meta, part.manifest_id()?)?;
            chunks.extend_from_slice(m.chunks());
            used.push((*number, part.manifest.clone()));
            part_sizes.push(part.size);
        }
        let manifest = Manifest::new(chunks);
        let mut whole = blake3::Hasher::new();
        self.read_range(&manifest, ByteRange::full(manifest.size()), |b| {
            whole.update(&b);
            true
        })?;
        let content_hash = ContentHash::from(whole.finalize());
        let etag = format!("{}-{}", hex::encode(md5s.finalize()), listed.len());

        let okey = object_key(bucket, key.as_str());
        let ukey = upload_key(bucket, key.as_str(), upload_id);
        let upload_id = upload_id.to_owned();
        let parts = listed.len() as u32;
        let bucket = bucket.to_owned();
        let (shared, key) = (self.shared.clone(), key.as_str().to_owned());
        self.db.transact(move |tx| {
            let versioning = bucket_in(tx, &bucket)?.versioning;
            if tx.get(Cf::Uploads, &ukey)?.is_none() {
                return Err(StoreError::NoSuchUpload(upload_id));
            }
            // A part re-uploaded while we were hashing changes the content: refuse.
            for (n, m) in &used {
                let now: Option<PartRecord> = tx
                    .get(Cf::Parts, &part_key(&upload_id, *n))?
                    .map(|v| from_json(&v))
                    .transpose()?;
                if now.as_ref().map(|p| &p.manifest) != Some(m) {
                    return Err(StoreError::InvalidPart(format!(
                        "part {n} changed while the upload was completing"
                    )));
                }
            }
            for c in manifest.chunks() {
                add_ref(tx, &c.hash)?;
            }
            let id = ManifestId::random();
            tx.put(Cf::Manifests, id.0.to_vec(), manifest.encode());
            tx.put(Cf::PartSizes, id.0.to_vec(), encode_part_sizes(&part_sizes));
            tx.put(Cf::Blobs, blob_key(&content_hash, id), Vec::new());
            let rec = ObjectRecord {
                size: manifest.size(),
                etag,
                content_hash: content_hash.to_hex(),
                manifest: id.to_hex(),
                last_modified_ms: now_ms(),
                meta: upload.meta,
                checksum,
                parts: Some(parts),
                version_id: VersionId::Null,
                seq: 0,
                tags: upload.tags,
            };
            let rec = install(tx, okey, rec, versioning, precondition.as_ref())?;
            release_upload_parts(tx, &upload_id)?;
            tx.delete(Cf::Uploads, ukey);
            journal_version(tx, &shared, &bucket, &key, rec.version_id)?;
            Ok(rec)
        })
    }

    /// Aborts an upload and frees its parts.
    pub fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        check_upload_id(upload_id)?;
        self.bucket(bucket)?;
        let ukey = upload_key(bucket, key, upload_id);
        let upload_id = upload_id.to_owned();
        self.db.transact(move |tx| {
            if tx.get(Cf::Uploads, &ukey)?.is_none() {
                return Err(StoreError::NoSuchUpload(upload_id));
            }
            release_upload_parts(tx, &upload_id)?;
            tx.delete(Cf::Uploads, ukey);
            Ok(())
        })
    }
}

/// Upload ids are ours (32 hex digits); anything else cannot name an upload, and must not
/// reach key construction where it could alias another upload's parts.
fn check_upload_id(id: &str) -> Result<()> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(StoreError::NoSuchUpload(id.chars().take(64).collect()))
    }
}

/// Part sizes as stored in `part_sizes`: big-endian u64s in part order.
fn encode_part_sizes(sizes: &[u64]) -> Vec<u8> {
    sizes.iter().flat_map(|s| s.to_be_bytes()).collect()
}

fn decode_part_sizes(v: &[u8]) -> Vec<u64> {
    v.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

// ---- transaction steps (run on the committer thread) -------------------------------------

fn load_manifest(meta: &Meta, id: ManifestId) -> Result<Manifest> {
    let v = meta
        .get(Cf::Manifests, &id.0)?
        .ok_or_else(|| StoreError::Corrupt(format!("manifest {} missing", id.to_hex())))?;
    Manifest::decode(&v)
}

fn read_slice(shared: &Shared, slice: &ChunkSlice) -> Result<Bytes> {
    let v = shared
        .meta
        .get(Cf::Chunks, slice.chunk.hash.as_bytes())?
        .ok_or_else(|| StoreError::Corrupt(format!("chunk {} missing", slice.chunk.hash)))?;
    let (offset, len) = (slice.offset as usize, slice.len as usize);
    match ChunkEntry::decode(&v)?.location {
        ChunkLocation::Absent => Err(StoreError::ChunkAbsent(slice.chunk.hash)),
        ChunkLocation::Inline(data) => data
            .get(offset..offset + len)
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("inline chunk {} too short", slice.chunk.hash))
            }),
        ChunkLocation::Pack {
            pack,
            offset: at,
            len: stored,
        } => {
            if offset + len > stored as usize {
                return Err(StoreError::Corrupt(format!(
                    "chunk {} too short",
                    slice.chunk.hash
                )));
            }
            shared.packs.read(pack, at + offset as u64, len)
        }
    }
}

fn add_ref(tx: &mut Tx<'_>, hash: &ChunkHash) -> Result<()> {
    let v = tx
        .get(Cf::Chunks, hash.as_bytes())?
        .ok_or_else(|| StoreError::Raced(hash.to_hex()))?;
    let mut e = ChunkEntry::decode(&v)?;
    e.refs += 1;
    e.dead_ms = None;
    tx.put(Cf::Chunks, hash.as_bytes().to_vec(), e.encode());
    Ok(())
}

/// Adds the staged content's chunk references and manifest; returns the manifest's id.
fn commit_staged(
    tx: &mut Tx<'_>,
    staged: &mut StagedObject,
    index_blob: bool,
) -> Result<ManifestId> {
    let mut pack_live = 0u64;
    for c in staged.manifest.chunks() {
        let key = c.hash.as_bytes().to_vec();
        let existing = tx
            .get(Cf::Chunks, &key)?
            .map(|v| ChunkEntry::decode(&v))
            .transpose()?;
        let entry = match existing {
            Some(mut e) if e.location != ChunkLocation::Absent => {
                e.refs += 1;
                e.dead_ms = None;
                e
            }
            // Unknown here, or known only from a replicated manifest: this write brought the
            // bytes (a writer stores every chunk it does not hold).
            existing => {
                let refs = existing.map_or(0, |e| e.refs) + 1;
                let location = match staged.new_chunks.remove(&c.hash) {
                    Some(NewChunk::Inline(d)) => ChunkLocation::Inline(d.to_vec()),
                    Some(NewChunk::Packed { offset }) => {
                        let pack = staged.pack.map(|(p, _)| p).ok_or_else(|| {
                            StoreError::Corrupt("packed chunk without pack".into())
                        })?;
                        pack_live += u64::from(c.len);
                        ChunkLocation::Pack {
                            pack,
                            offset,
                            len: c.len,
                        }
                    }
                    // Deduplicated against a chunk that has since been collected.
                    None => return Err(StoreError::Raced(c.hash.to_hex())),
                };
                ChunkEntry {
                    refs,
                    location,
                    dead_ms: None,
                    cached: false,
                }
            }
        };
        tx.put(Cf::Chunks, key, entry.encode());
    }
    if let Some((pack, size)) = staged.pack {
        if pack_live > 0 {
            tx.put(
                Cf::Packs,
                pack.0.to_be_bytes().to_vec(),
                PackRecord {
                    size,
                    live: pack_live,
                }
                .encode(),
            );
        } else {
            // Every chunk in it was stored meanwhile by a concurrent upload.
            tx.after_commit.push(pack);
        }
    }
    let id = ManifestId::random();
    tx.put(Cf::Manifests, id.0.to_vec(), staged.manifest.encode());
    // Parts are not objects: only whole objects are addressable by content hash.
    if index_blob {
        tx.put(Cf::Blobs, blob_key(&staged.content_hash, id), Vec::new());
    }
    Ok(id)
}

fn bucket_in(tx: &Tx<'_>, bucket: &str) -> Result<BucketRecord> {
    match tx.get(Cf::Buckets, bucket.as_bytes())? {
        Some(v) => from_json(&v),
        None => Err(StoreError::NoSuchBucket(bucket.to_owned())),
    }
}

fn current(tx: &Tx<'_>, okey: &[u8]) -> Result<Option<Version>> {
    tx.get(Cf::Objects, okey)?
        .map(|v| from_json(&v))
        .transpose()
}

/// Checks a conditional write against the key's current version (a delete marker counts as
/// no object). Run inside the commit, so concurrent conditional writers cannot both win.
fn check_precondition(
    okey: &[u8],
    cur: Option<&Version>,
    precondition: Option<&WritePrecondition>,
) -> Result<()> {
    match precondition {
        Some(p) => p.check(
            &String::from_utf8_lossy(okey),
            cur.and_then(Version::object),
        ),
        None => Ok(()),
    }
}

/// Makes `rec` the current version at `okey` if `precondition` holds, under the bucket's
/// versioning state: never versioned, the old object is released; enabled, it becomes a
/// noncurrent version; suspended, the new object is the `null` version, replacing any older
/// `null` version. Returns the record as stored (with its version id).
fn install(
    tx: &mut Tx<'_>,
    okey: Vec<u8>,
    rec: ObjectRecord,
    versioning: Option<Versioning>,
    precondition: Option<&WritePrecondition>,
) -> Result<ObjectRecord> {
    let cur = current(tx, &okey)?;
    check_precondition(&okey, cur.as_ref(), precondition)?;
    match install_version(tx, okey, Version::Object(rec), versioning, cur)? {
        Version::Object(o) => Ok(o),
        Version::DeleteMarker(_) => Err(StoreError::Corrupt("installed a marker".into())),
    }
}

fn install_version(
    tx: &mut Tx<'_>,
    okey: Vec<u8>,
    mut new: Version,
    versioning: Option<Versioning>,
    cur: Option<Version>,
) -> Result<Version> {
    // Newer than what it replaces even if the clock stepped back (a restart after an NTP
    // correction): version order, and the slots in `versions`, follow the seq.
    let seq = next_seq().max(cur.as_ref().map_or(0, |c| c.seq() + 1));
    let id = match versioning {
        Some(Versioning::Enabled) => VersionId::mint(seq),
        _ => VersionId::Null,
    };
    new.set_identity(id, seq);
    let mut old_was_null = false;
    if let Some(old) = cur {
        old_was_null = old.version_id().is_null();
        match versioning {
            None => release_version(tx, &old)?,
            Some(Versioning::Suspended) if old_was_null => release_version(tx, &old)?,
            Some(_) => {
                if old_was_null {
                    tx.put(
                        Cf::NullVersions,
                        okey.clone(),
                        old.seq().to_be_bytes().to_vec(),
                    );
                }
                tx.put(
                    Cf::Versions,
                    version_key(&okey, old.seq(), old.version_id()),
                    to_json(&old),
                );
            }
        }
    }
    // The new version is `null`: an older `null` among the noncurrent ones goes (there is
    // none when the one just replaced was `null`).
    if versioning == Some(Versioning::Suspended) && !old_was_null {
        drop_noncurrent_null(tx, &okey)?;
    }
    tx.put(Cf::Objects, okey, to_json(&new));
    Ok(new)
}

/// Frees a version's data (a delete marker has none).
fn release_version(tx: &mut Tx<'_>, v: &Version) -> Result<()> {
    match v {
        Version::Object(o) => release_manifest(tx, o.manifest_id()?, Some(&o.content_hash()?)),
        Version::DeleteMarker(_) => Ok(()),
    }
}

fn drop_noncurrent_null(tx: &mut Tx<'_>, okey: &[u8]) -> Result<()> {
    if let Some((k, v)) = find_noncurrent_tx(tx, okey, VersionId::Null)? {
        release_version(tx, &v)?;
        tx.delete(Cf::Versions, k);
        tx.delete(Cf::NullVersions, okey.to_vec());
    }
    Ok(())
}

/// DELETE without a version id.
fn delete_current(
    tx: &mut Tx<'_>,
    okey: Vec<u8>,
    versioning: Option<Versioning>,
) -> Result<Deleted> {
    let cur = current(tx, &okey)?;
    if versioning.is_none() {
        if let Some(old) = cur {
            release_version(tx, &old)?;
            tx.delete(Cf::Objects, okey);
        }
        return Ok(Deleted::default());
    }
    let marker = Version::DeleteMarker(DeleteMarker {
        version_id: VersionId::Null,
        seq: 0,
        marker_ms: now_ms(),
    });
    let marker = install_version(tx, okey, marker, versioning, cur)?;
    Ok(Deleted {
        version_id: Some(marker.version_id()),
        delete_marker: true,
    })
}

/// DELETE of one version: removed for good; if it was the current one, the next newest
/// version (if any) becomes current.
fn delete_version(tx: &mut Tx<'_>, okey: Vec<u8>, id: VersionId) -> Result<Deleted> {
    let gone = |v: &Version| Deleted {
        version_id: Some(id),
        delete_marker: v.object().is_none(),
    };
    let cur = current(tx, &okey)?;
    if let Some(c) = cur
        && c.version_id() == id
    {
        release_version(tx, &c)?;
        match tx.first_with_prefix(Cf::Versions, &versions_prefix(&okey))? {
            Some((k, v)) => {
                let promoted: Version = from_json(&v)?;
                if promoted.version_id().is_null() {
                    tx.delete(Cf::NullVersions, okey.clone());
                }
                tx.put(Cf::Objects, okey, v);
                tx.delete(Cf::Versions, k);
            }
            None => tx.delete(Cf::Objects, okey),
        }
        return Ok(gone(&c));
    }
    match find_noncurrent_tx(tx, &okey, id)? {
        Some((k, v)) => {
            release_version(tx, &v)?;
            tx.delete(Cf::Versions, k);
            if id.is_null() {
                tx.delete(Cf::NullVersions, okey);
            }
            Ok(gone(&v))
        }
        // S3 answers success for a version that does not exist.
        None => Ok(Deleted {
            version_id: Some(id),
            delete_marker: false,
        }),
    }
}

/// A noncurrent version by id, as the transaction sees it. A stamped id names its slot; the
/// `null` one is found through `null_versions`, so neither needs a scan of the key's history.
fn find_noncurrent_tx(
    tx: &Tx<'_>,
    okey: &[u8],
    id: VersionId,
) -> Result<Option<(Vec<u8>, Version)>> {
    find_noncurrent_via(|cf, k| tx.get(cf, k), okey, id)
}

/// [`find_noncurrent_tx`] for readers outside a transaction.
fn find_noncurrent(
    view: &View<'_>,
    okey: &[u8],
    id: VersionId,
) -> Result<Option<(Vec<u8>, Version)>> {
    find_noncurrent_via(|cf, k| view.get(cf, k), okey, id)
}

fn find_noncurrent_via(
    get: impl Fn(Cf, &[u8]) -> Result<Option<Vec<u8>>>,
    okey: &[u8],
    id: VersionId,
) -> Result<Option<(Vec<u8>, Version)>> {
    let seq = match id {
        VersionId::Stamped { seq, .. } => seq,
        VersionId::Null => match get(Cf::NullVersions, okey)? {
            Some(v) => decode_seq(&v)?,
            None => return Ok(None),
        },
    };
    let k = version_key(okey, seq, id);
    Ok(match get(Cf::Versions, &k)? {
        Some(v) => {
            let v: Version = from_json(&v)?;
            (v.version_id() == id).then_some((k, v))
        }
        None => None,
    })
}

fn decode_seq(v: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
        StoreError::Corrupt("null version pointer".into())
    })?))
}

/// Stores a part, releasing the one it replaces (a part number uploaded again).
fn replace_part(tx: &mut Tx<'_>, pkey: Vec<u8>, rec: &PartRecord) -> Result<()> {
    if let Some(old) = tx.get(Cf::Parts, &pkey)? {
        let old: PartRecord = from_json(&old)?;
        release_manifest(tx, old.manifest_id()?, None)?;
    }
    tx.put(Cf::Parts, pkey, to_json(rec));
    Ok(())
}

fn release_upload_parts(tx: &mut Tx<'_>, upload_id: &str) -> Result<()> {
    let mut prefix = upload_id.as_bytes().to_vec();
    prefix.push(0);
    for pkey in tx.keys_with_prefix(Cf::Parts, &prefix)? {
        if let Some(v) = tx.get(Cf::Parts, &pkey)? {
            let part: PartRecord = from_json(&v)?;
            release_manifest(tx, part.manifest_id()?, None)?;
        }
        tx.delete(Cf::Parts, pkey);
    }
    Ok(())
}

/// Counts one more holder of a manifest (a copy). A manifest without a counter entry has one
/// holder, so only shared manifests pay for the entry.
fn share_manifest(tx: &mut Tx<'_>, id: ManifestId) -> Result<()> {
    if tx.get(Cf::Manifests, &id.0)?.is_none() {
        return Err(StoreError::Raced(format!("manifest {}", id.to_hex())));
    }
    let holders = manifest_holders(tx, id)?;
    tx.put(
        Cf::ManifestRefs,
        id.0.to_vec(),
        (holders + 1).to_be_bytes().to_vec(),
    );
    Ok(())
}

fn manifest_holders(tx: &Tx<'_>, id: ManifestId) -> Result<u64> {
    match tx.get(Cf::ManifestRefs, &id.0)? {
        None => Ok(1),
        Some(v) => Ok(u64::from_be_bytes(v.as_slice().try_into().map_err(
            |_| StoreError::Corrupt(format!("manifest counter {}", id.to_hex())),
        )?)),
    }
}

/// Drops one holder of a manifest; the last one drops one reference per manifest entry and
/// collects chunks nobody references any more.
fn release_manifest(tx: &mut Tx<'_>, id: ManifestId, content: Option<&ContentHash>) -> Result<()> {
    match manifest_holders(tx, id)? {
        0 | 1 => tx.delete(Cf::ManifestRefs, id.0.to_vec()),
        2 => {
            tx.delete(Cf::ManifestRefs, id.0.to_vec());
            return Ok(());
        }
        n => {
            tx.put(
                Cf::ManifestRefs,
                id.0.to_vec(),
                (n - 1).to_be_bytes().to_vec(),
            );
            return Ok(());
        }
    }
    let Some(v) = tx.get(Cf::Manifests, &id.0)? else {
        return Ok(());
    };
    let manifest = Manifest::decode(&v)?;
    for c in manifest.chunks() {
        let Some(v) = tx.get(Cf::Chunks, c.hash.as_bytes())? else {
            continue;
        };
        let mut e = ChunkEntry::decode(&v)?;
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 {
            // Not dropped yet: a read that resolved this chunk a moment ago must still find
            // it. The sweeper collects it after the grace period unless it is referenced again.
            let now = now_ms();
            e.dead_ms = Some(now);
            tx.put(Cf::Graveyard, grave_key(now, &c.hash), Vec::new());
        }
        tx.put(Cf::Chunks, c.hash.as_bytes().to_vec(), e.encode());
    }
    tx.delete(Cf::Manifests, id.0.to_vec());
    tx.delete(Cf::PartSizes, id.0.to_vec());
    if let Some(h) = content {
        tx.delete(Cf::Blobs, blob_key(h, id));
    }
    Ok(())
}

fn grave_key(dead_ms: i64, hash: &ChunkHash) -> Vec<u8> {
    let mut k = (dead_ms.max(0) as u64).to_be_bytes().to_vec();
    k.extend_from_slice(hash.as_bytes());
    k
}

fn drop_chunk(tx: &mut Tx<'_>, hash: &ChunkHash, e: &ChunkEntry) -> Result<()> {
    tx.delete(Cf::Chunks, hash.as_bytes().to_vec());
    if let ChunkLocation::Pack { pack, len, .. } = e.location {
        let pkey = pack.0.to_be_bytes().to_vec();
        if let Some(v) = tx.get(Cf::Packs, &pkey)? {
            let mut rec = PackRecord::decode(&v)?;
            rec.live = rec.live.saturating_sub(u64::from(len));
            if rec.live == 0 {
                tx.delete(Cf::Packs, pkey);
                tx.after_commit.push(pack);
            } else {
                tx.put(Cf::Packs, pkey, rec.encode());
            }
        }
    }
    Ok(())
}

// ---- ingest --------------------------------------------------------------------------------

enum NewChunk {
    Inline(Bytes),
    Packed { offset: u64 },
}

struct ChunkSink {
    shared: Arc<Shared>,
    chunks: Vec<ChunkRef>,
    new_chunks: HashMap<ChunkHash, NewChunk>,
    pack: Option<PackWriter>,
    /// Looked up for every chunk of an upload, so a set, not a list.
    pinned: HashSet<ChunkHash>,
}

impl ChunkSink {
    fn take(&mut self, chunk: Bytes) -> Result<()> {
        let hash = ChunkHash::of(&chunk);
        self.chunks.push(ChunkRef {
            hash,
            len: chunk.len() as u32,
        });
        if self.new_chunks.contains_key(&hash) || self.pinned.contains(&hash) {
            return Ok(());
        }
        // Pin before looking, so the entry cannot be collected between the look and our commit.
        self.shared.pin(hash);
        let stored = self.shared.meta.get(Cf::Chunks, hash.as_bytes());
        // A chunk at zero references may be swept any moment: store its bytes again rather
        // than race the sweeper (the commit still reuses the entry if it survives).
        let live = matches!(&stored, Ok(Some(v)) if ChunkEntry::decode(v)
            .is_ok_and(|e| e.refs > 0 && e.location != ChunkLocation::Absent));
        if live {
            self.pinned.insert(hash);
            return Ok(());
        }
        self.shared.unpin([&hash]);
        stored?;
        if chunk.len() <= INLINE_MAX {
            self.new_chunks.insert(hash, NewChunk::Inline(chunk));
        } else {
            let pack = match &mut self.pack {
                Some(p) => p,
                None => self.pack.insert(self.shared.packs.writer()?),
            };
            let offset = pack.append(&chunk)?;
            self.new_chunks.insert(hash, NewChunk::Packed { offset });
        }
        Ok(())
    }
}

impl Drop for ChunkSink {
    fn drop(&mut self) {
        self.shared.unpin(&self.pinned);
    }
}

/// Turns a byte stream into stored chunks: FastCDC cuts, BLAKE3 per chunk and for the whole,
/// new chunks appended to one pack. Memory is bounded by one maximum chunk.
pub struct ObjectWriter {
    shared: Arc<Shared>,
    chunker: Chunker,
    sink: ChunkSink,
    /// `None` when the caller hashes the whole content itself (see `Store::writer_for_hashed`).
    whole: Option<blake3::Hasher>,
    size: u64,
}

impl ObjectWriter {
    /// Feeds the next bytes of the content.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if let Some(w) = &mut self.whole {
            w.update(data);
        }
        self.size += data.len() as u64;
        let sink = &mut self.sink;
        self.chunker.push(data, |c| sink.take(c))
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the new chunks durable (one fsync for the pack) and returns the staged content,
    /// not yet visible under any key.
    pub fn finish(mut self) -> Result<StagedObject> {
        let hash = self
            .whole
            .take()
            .map(|w| ContentHash::from(w.finalize()))
            .ok_or_else(|| {
                StoreError::Corrupt("writer was created for an external content hash".into())
            })?;
        self.finish_with(hash)
    }

    /// Like `finish`, with the whole-content BLAKE3 the caller computed over the same bytes
    /// (only for writers from `Store::writer_for_hashed`).
    pub fn finish_with(self, content_hash: ContentHash) -> Result<StagedObject> {
        if self.whole.is_some() {
            return Err(StoreError::Corrupt(
                "finish_with on a writer that hashes itself; use finish".into(),
            ));
        }
        self.finish_unchecked(content_hash)
    }

    fn finish_unchecked(self, content_hash: ContentHash) -> Result<StagedObject> {
        let ObjectWriter {
            shared,
            chunker,
            mut sink,
            size,
            ..
        } = self;
        chunker.finish(|c| sink.take(c))?;
        let pack = match sink.pack.take() {
            Some(p) => Some(shared.seal(p)?),
            None => None,
        };
        Ok(StagedObject {
            manifest: Manifest::new(std::mem::take(&mut sink.chunks)),
            content_hash,
            size,
            new_chunks: std::mem::take(&mut sink.new_chunks),
            pack,
            sink,
            committed: false,
        })
    }
}

/// Content written durably but not yet referenced by any object; dropping it uncommitted
/// deletes its pack.
pub struct StagedObject {
    manifest: Manifest,
    content_hash: ContentHash,
    size: u64,
    new_chunks: HashMap<ChunkHash, NewChunk>,
    pack: Option<(PackId, u64)>,
    /// Keeps the pins on deduplicated chunks until this is committed or dropped.
    sink: ChunkSink,
    committed: bool,
}

impl StagedObject {
    /// Whole-content BLAKE3.
    pub fn content_hash(&self) -> ContentHash {
        self.content_hash
    }

    /// Content length.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for StagedObject {
    fn drop(&mut self) {
        if !self.committed
            && let Some((pack, _)) = self.pack
        {
            let _ = self.sink.shared.packs.remove(pack);
        }
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
            .copy_object(("bkt", "src", None), ("bkt", &key("src")), replace, None)
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
