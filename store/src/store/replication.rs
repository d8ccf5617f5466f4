//! The namespace journal inside the store: this node's writes journaled in the commit that
//! makes them, and peers' entries recorded and carried out by the merge rule
//! ([`crate::merge`]) in the commit that records them.
//!
//! Every pulled entry that follows its origin's last one is recorded (so it is passed on,
//! and its origin's later entries are never held up behind it) and then applied, kept
//! waiting in `parked` until the bucket incarnation it depends on is decided here, found
//! superseded, or refused. Nothing is marked seen that is not one of those.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::hash::ManifestHash;
use crate::journal::{INLINE_MANIFEST_CHUNKS, PulledParts};
use crate::merge::{self, Placement, Refusal, Standing, Verdict};
use crate::names::BucketId;

/// What recording one batch of pulled entries did.
#[derive(Clone, Debug, Default)]
pub struct BatchOutcome {
    /// One per entry of the batch, in order.
    pub applied: Vec<Applied>,
    /// Entries that had been waiting (from this batch or earlier) and were applied once what
    /// they waited for arrived.
    pub released: u64,
}

impl Store {
    /// This node's id (kept in the data directory).
    pub fn node_id(&self) -> NodeId {
        self.shared.node
    }

    /// How far into each origin's journal this node has recorded (its version vector).
    pub fn journal_seen(&self) -> Result<BTreeMap<NodeId, u64>> {
        let mut out = BTreeMap::new();
        self.shared.meta.scan(Cf::Seen, &[], |k, v| {
            let id: [u8; 16] = k
                .try_into()
                .map_err(|_| StoreError::Corrupt("seen key".into()))?;
            out.insert(NodeId(id), decode_seq(v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Entries a peer that has seen `seen` lacks, oldest first per origin, up to about
    /// `max_bytes` (at least one entry when any is missing): (origin, number, entry bytes).
    pub fn journal_since(
        &self,
        seen: &BTreeMap<NodeId, u64>,
        max_bytes: usize,
    ) -> Result<Vec<(NodeId, u64, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (origin, have) in self.journal_seen()? {
            let from = seen.get(&origin).copied().unwrap_or(0);
            if have <= from {
                continue;
            }
            let start = journal::entry_key(&origin, from + 1);
            // Numbers missing here were pruned (superseded): a skip marker up to the number
            // before the next entry held, and up to `have` after the last one.
            let mut next = from + 1;
            let mut cut = false;
            self.shared.meta.scan(Cf::Journal, &start, |k, v| {
                if !k.starts_with(&origin.0) {
                    return Ok(false);
                }
                if bytes >= max_bytes && !out.is_empty() {
                    cut = true;
                    return Ok(false);
                }
                let seq = decode_seq(&k[16..])?;
                if seq > next {
                    out.push((origin, seq - 1, Vec::new()));
                }
                bytes += v.len();
                out.push((origin, seq, v.to_vec()));
                next = seq + 1;
                Ok(true)
            })?;
            if !cut && next <= have {
                out.push((origin, have, Vec::new()));
            }
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// A manifest journal entries here name by hash (see [`journal::ObjectState`]).
    pub fn manifest_blob(&self, hash: &ManifestHash) -> Result<Option<Vec<u8>>> {
        self.shared.meta.get(Cf::ManifestBlobs, hash.as_bytes())
    }

    /// Whether this node holds the manifest named `hash`.
    pub fn has_manifest_blob(&self, hash: &ManifestHash) -> Result<bool> {
        Ok(self
            .shared
            .meta
            .get(Cf::ManifestBlobs, hash.as_bytes())?
            .is_some())
    }

    /// This node's own journal length (the number of its last write).
    pub fn journal_head(&self) -> Result<u64> {
        Ok(self
            .shared
            .meta
            .get(Cf::Seen, &self.shared.node.0)?
            .map_or(0, |v| decode_seq(&v).unwrap_or(0)))
    }

    /// Entries recorded here that wait for a bucket incarnation to be decided.
    pub fn journal_parked(&self) -> Result<u64> {
        let mut n = 0;
        self.shared.meta.scan(Cf::Parked, &[], |_, _| {
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }

    /// Records entries pulled from a peer, in one commit, and carries each out by the merge
    /// rule. Entries must arrive in order per origin (a gap is refused, a repeat ignored), so
    /// the journal a node passes on has no holes.
    pub fn apply_journal_batch(&self, batch: Vec<Pulled>) -> Result<BatchOutcome> {
        let shared = self.shared.clone();
        let me = shared.node;
        self.db.transact(move |tx| {
            let mut out = BatchOutcome::default();
            // An origin whose entry was not recorded (a gap, a manifest missing) is stopped
            // for the rest of the batch: nothing after it, a skip marker least of all, may be
            // recorded, or the entry would be passed over for good.
            let mut stopped = HashSet::new();
            for p in batch {
                let p = p.into_parts();
                let origin = p.origin;
                let a = if origin == me {
                    Applied::Duplicate
                } else if stopped.contains(&origin) {
                    Applied::Gap
                } else {
                    record_entry(tx, &shared, p, &mut out.released)?
                };
                if matches!(a, Applied::Gap | Applied::NoManifest) {
                    stopped.insert(origin);
                }
                out.applied.push(a);
            }
            Ok(out)
        })
    }
}

pub(super) fn seen_in(tx: &Tx<'_>, origin: &NodeId) -> Result<u64> {
    Ok(tx
        .get(Cf::Seen, &origin.0)?
        .map_or(0, |v| decode_seq(&v).unwrap_or(0)))
}

// ---- this node's writes ---------------------------------------------------------------------

/// Appends this node's journal entry for `change` and stamps the name with it.
fn journal(tx: &mut Tx<'_>, shared: &Shared, change: Change) -> Result<Hlc> {
    let mut at = (shared.clock)().map_err(StoreError::ClockAhead)?;
    let me = shared.node;
    // A local write replaces what the register holds here, so its stamp must be newer than
    // the held one everywhere: a stamp from a clock behind the writer of the held value (or
    // the same millisecond with a lower node id) would win here and lose on every peer.
    if let Some(held) = tx.get(Cf::Stamps, &change.name_key())? {
        let held = Hlc::decode(&held)?;
        if held >= at {
            at = Hlc {
                wall_ms: held.wall_ms,
                logical: held.logical.saturating_add(1),
                node: me,
            };
        }
    }
    let seq = seen_in(tx, &me)? + 1;
    let entry = Entry { at, change };
    tx.put(Cf::Stamps, entry.change.name_key(), at.encode());
    tx.put(Cf::Journal, journal::entry_key(&me, seq), entry.encode());
    tx.put(Cf::Seen, me.0.to_vec(), seq.to_be_bytes().to_vec());
    Ok(at)
}

/// Journals the bucket's record as this transaction leaves it.
pub(super) fn journal_bucket(tx: &mut Tx<'_>, shared: &Shared, name: &str) -> Result<()> {
    let record = bucket_in(tx, name)?;
    journal(
        tx,
        shared,
        Change::Bucket {
            name: name.to_owned(),
            id: record.id,
            record: Some(record),
        },
    )
    .map(drop)
}

/// Journals the deletion of incarnation `id` of `name` and buries it here.
pub(super) fn journal_bucket_deleted(
    tx: &mut Tx<'_>,
    shared: &Shared,
    name: &str,
    id: BucketId,
) -> Result<()> {
    let at = journal(
        tx,
        shared,
        Change::Bucket {
            name: name.to_owned(),
            id,
            record: None,
        },
    )?;
    bury(tx, name, id, at);
    // Entries that were waiting for this incarnation are superseded now.
    settle_parked(tx, shared, VecDeque::from([id]), &mut 0)
}

/// The incarnation of `name` deleted last here: what a new create of the name follows.
pub(super) fn last_grave(tx: &Tx<'_>, name: &str) -> Result<Option<BucketId>> {
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(0);
    let mut best: Option<(Hlc, BucketId)> = None;
    for k in tx.keys_with_prefix(Cf::Graves, &prefix)? {
        let Some(v) = tx.get(Cf::Graves, &k)? else {
            continue;
        };
        let at = Hlc::decode(&v)?;
        let id = BucketId(
            k[prefix.len()..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("grave key".into()))?,
        );
        if best.is_none_or(|(b, _)| at > b) {
            best = Some((at, id));
        }
    }
    Ok(best.map(|(_, id)| id))
}

/// Journals one version of `bucket/key` as this transaction leaves it (`None` if removed).
pub(super) fn journal_version(
    tx: &mut Tx<'_>,
    shared: &Shared,
    bucket: &str,
    key: &str,
    id: VersionId,
) -> Result<()> {
    let bucket_id = bucket_in(tx, bucket)?.id;
    let okey = object_key(bucket, key);
    let found = match current(tx, &okey)? {
        Some(c) if c.version_id() == id => Some(c),
        _ => find_noncurrent_tx(tx, &okey, id)?.map(|(_, v)| v),
    };
    let state = match found {
        None => None,
        Some(version) => {
            let (chunks, manifest, part_sizes) = match &version {
                Version::Object(o) => {
                    let m = o.manifest_id()?;
                    let sizes = tx.get(Cf::PartSizes, &m.0)?.map(|v| decode_part_sizes(&v));
                    match tx.get(Cf::Manifests, &m.0)? {
                        // A long chunk list stays out of the entry: named by its hash, kept
                        // beside the journal for peers to fetch.
                        Some(bytes)
                            if bytes.len() > INLINE_MANIFEST_CHUNKS * crate::manifest::ENTRY =>
                        {
                            let hash = ManifestHash::of(&bytes);
                            hold_blob(tx, &hash, Some(bytes))?;
                            (None, Some(hash.to_hex()), sizes)
                        }
                        bytes => (bytes.map(hex::encode), None, sizes),
                    }
                }
                Version::DeleteMarker(_) => (None, None, None),
            };
            Some(ObjectState {
                version,
                chunks,
                manifest,
                part_sizes,
            })
        }
    };
    journal(
        tx,
        shared,
        Change::Version {
            bucket: bucket.to_owned(),
            bucket_id,
            key: key.to_owned(),
            version_id: id,
            state,
        },
    )
    .map(drop)
}

// ---- peers' writes --------------------------------------------------------------------------

/// Records one pulled entry and carries it out.
fn record_entry(
    tx: &mut Tx<'_>,
    shared: &Shared,
    pulled: PulledParts,
    released: &mut u64,
) -> Result<Applied> {
    let PulledParts {
        origin,
        seq,
        entry,
        bytes,
        manifest,
    } = pulled;
    let seen = seen_in(tx, &origin)?;
    if seq <= seen {
        return Ok(Applied::Duplicate);
    }
    if bytes.is_empty() {
        // A skip marker: the sender pruned up to `seq` what is superseded by entries it
        // holds, which reach this node as they reached the sender.
        tx.put(Cf::Seen, origin.0.to_vec(), seq.to_be_bytes().to_vec());
        return Ok(Applied::Pruned);
    }
    if seq != seen + 1 {
        return Ok(Applied::Gap);
    }
    // An entry is recorded only with the manifest it names, so that whoever holds the entry
    // can pass both on, and a parked entry finds its manifest when it is applied.
    if let Some(hash) = entry.as_ref().ok().and_then(Entry::named_manifest) {
        let handed = manifest.filter(|m| ManifestHash::of(m) == hash);
        if !hold_blob(tx, &hash, handed)? {
            return Ok(Applied::NoManifest);
        }
    }
    let at = journal::entry_key(&origin, seq);
    tx.put(Cf::Journal, at.clone(), bytes);
    tx.put(Cf::Seen, origin.0.to_vec(), seq.to_be_bytes().to_vec());
    let Ok(entry) = entry else {
        return Ok(Applied::Refused(Refusal::Undecodable));
    };
    settle(tx, shared, entry, &at, released)
}

/// Carries out one entry by the merge rule, then anything it released from waiting.
fn settle(
    tx: &mut Tx<'_>,
    shared: &Shared,
    entry: Entry,
    at: &[u8],
    released: &mut u64,
) -> Result<Applied> {
    let mut decided = VecDeque::new();
    let a = carry_out(tx, shared, entry, at, &mut decided)?;
    settle_parked(tx, shared, decided, released)?;
    Ok(a)
}

/// Decides again every entry waiting on an incarnation that was just decided, and on
/// whatever those decide in turn. A waiting entry is named by its journal key under the
/// incarnation it waits for; its bytes are read back from the journal, not kept twice.
fn settle_parked(
    tx: &mut Tx<'_>,
    shared: &Shared,
    mut decided: VecDeque<BucketId>,
    released: &mut u64,
) -> Result<()> {
    while let Some(id) = decided.pop_front() {
        for k in tx.keys_with_prefix(Cf::Parked, &id.0)? {
            tx.delete(Cf::Parked, k.clone());
            let at = &k[16..];
            // Pruning leaves waiting entries alone; one gone anyway has nothing left to do,
            // and must not stop every later commit that decides its incarnation.
            let Some(bytes) = tx.get(Cf::Journal, at)? else {
                continue;
            };
            // It parks again under the incarnation it still waits for, if any.
            let entry = Entry::decode(&bytes)?;
            if carry_out(tx, shared, entry, at, &mut decided)? == Applied::Newer {
                *released += 1;
            }
        }
    }
    Ok(())
}

/// How incarnation `id` of `name` stands here.
fn standing(
    tx: &Tx<'_>,
    name: &str,
    id: BucketId,
) -> Result<(Standing<'static>, Option<BucketRecord>)> {
    if tx.get(Cf::Graves, &grave_key(name, id))?.is_some() {
        return Ok((Standing::Dead, None));
    }
    Ok(match tx.get(Cf::Buckets, name.as_bytes())? {
        Some(v) => {
            let live: BucketRecord = from_json(&v)?;
            if live.id == id {
                (Standing::Live, Some(live))
            } else {
                (Standing::Unknown, Some(live))
            }
        }
        None => (Standing::Unknown, None),
    })
}

/// One entry, by the merge rule. Pushes the incarnations it decided (made live or dead).
fn carry_out(
    tx: &mut Tx<'_>,
    shared: &Shared,
    entry: Entry,
    journal_key: &[u8],
    decided: &mut VecDeque<BucketId>,
) -> Result<Applied> {
    let named = match entry.named_manifest() {
        Some(h) => tx.get(Cf::ManifestBlobs, h.as_bytes())?,
        None => None,
    };
    let manifest = match merge::validate(&entry, named.as_deref()) {
        Ok(m) => m,
        Err(r) => return Ok(Applied::Refused(r)),
    };
    let name = entry.change.name_key();
    let held = tx
        .get(Cf::Stamps, &name)?
        .map(|v| Hlc::decode(&v))
        .transpose()?;
    let at = entry.at;
    match entry.change {
        Change::Bucket {
            name: bucket,
            id,
            record,
        } => {
            let (st, live) = standing(tx, &bucket, id)?;
            let st = match (&st, &live) {
                (Standing::Unknown, Some(l)) => Standing::Other(l),
                _ => st,
            };
            let follows_dead = match record.as_ref().and_then(|r| r.follows) {
                Some(prev) => tx.get(Cf::Graves, &grave_key(&bucket, prev))?.is_some(),
                None => true,
            };
            let verdict = merge::bucket_verdict(id, record.as_ref(), st, follows_dead, held, at);
            let live_id = live.as_ref().map(|l| l.id);
            match (verdict, record) {
                (Verdict::Older, _) => Ok(Applied::Older),
                (Verdict::Superseded, _) => Ok(Applied::Superseded),
                (Verdict::Park(awaited), _) => park(tx, awaited, journal_key),
                (Verdict::Lose, _) => {
                    resolve_conflict(tx, shared, &bucket, id)?;
                    decided.push_back(id);
                    Ok(Applied::Superseded)
                }
                (Verdict::Apply | Verdict::Replace, None) => {
                    if live_id == Some(id) {
                        drop_incarnation(tx, &bucket, id)?;
                    }
                    bury(tx, &bucket, id, at);
                    tx.put(Cf::Stamps, name, at.encode());
                    decided.push_back(id);
                    Ok(Applied::Newer)
                }
                (Verdict::Apply | Verdict::Replace, Some(rec)) => {
                    if let Some(old) = live_id.filter(|l| *l != id) {
                        drop_incarnation(tx, &bucket, old)?;
                        resolve_conflict(tx, shared, &bucket, old)?;
                        decided.push_back(old);
                    }
                    if live_id != Some(id) {
                        decided.push_back(id);
                    }
                    tx.put(Cf::Buckets, bucket.into_bytes(), to_json(&rec));
                    tx.put(Cf::Stamps, name, at.encode());
                    Ok(Applied::Newer)
                }
            }
        }
        Change::Version {
            bucket,
            bucket_id,
            key,
            version_id,
            state,
        } => {
            let (st, _) = standing(tx, &bucket, bucket_id)?;
            match merge::version_verdict(bucket_id, st, held, at) {
                Verdict::Older => Ok(Applied::Older),
                Verdict::Superseded | Verdict::Lose => Ok(Applied::Superseded),
                Verdict::Park(awaited) => park(tx, awaited, journal_key),
                Verdict::Apply | Verdict::Replace => {
                    tx.put(Cf::Stamps, name, at.encode());
                    let okey = object_key(&bucket, &key);
                    match state {
                        None => {
                            delete_version(tx, okey, version_id)?;
                        }
                        Some(ObjectState {
                            version,
                            part_sizes,
                            ..
                        }) => {
                            let version = match (version, manifest) {
                                (Version::Object(mut rec), Some(m)) => {
                                    let id = adopt_manifest(
                                        tx,
                                        &okey,
                                        &m,
                                        &rec.content_hash()?,
                                        part_sizes.as_deref(),
                                    )?;
                                    rec.manifest = id.to_hex();
                                    Version::Object(rec)
                                }
                                (Version::Object(_), None) => {
                                    return Ok(Applied::Refused(Refusal::Record));
                                }
                                (marker, _) => marker,
                            };
                            place_version(tx, okey, version)?;
                        }
                    }
                    Ok(Applied::Newer)
                }
            }
        }
    }
}

/// Keeps the entry at journal key `at` waiting for incarnation `awaited`.
fn park(tx: &mut Tx<'_>, awaited: BucketId, at: &[u8]) -> Result<Applied> {
    let mut k = awaited.0.to_vec();
    k.extend_from_slice(at);
    tx.put(Cf::Parked, k, Vec::new());
    Ok(Applied::Parked)
}

pub(super) fn grave_key(name: &str, id: BucketId) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&id.0);
    k
}

/// Buries the loser of two live incarnations of one name, and journals its deletion as this
/// node's own write. Which of two records loses is a function of the pair alone, but which
/// pairs meet depends on delivery order (a node that saw the winner deleted first never
/// compares them): the journaled deletion is what makes every node end with the same
/// incarnations dead, whichever pairs each compared.
fn resolve_conflict(tx: &mut Tx<'_>, shared: &Shared, name: &str, loser: BucketId) -> Result<()> {
    tracing::warn!(bucket = %name, incarnation = %loser,
        "two creates of one bucket name met; the later one is deleted");
    let at = journal(
        tx,
        shared,
        Change::Bucket {
            name: name.to_owned(),
            id: loser,
            record: None,
        },
    )?;
    bury(tx, name, loser, at);
    Ok(())
}

/// Records incarnation `id` of `name` as dead.
fn bury(tx: &mut Tx<'_>, name: &str, id: BucketId, at: Hlc) {
    tx.put(Cf::Graves, grave_key(name, id), at.encode());
}

/// Removes the live incarnation `id` of `name` with every version, upload and stamp in it.
fn drop_incarnation(tx: &mut Tx<'_>, name: &str, id: BucketId) -> Result<()> {
    let prefix = object_key(name, "");
    for k in tx.keys_with_prefix(Cf::Objects, &prefix)? {
        if let Some(v) = tx.get(Cf::Objects, &k)? {
            release_version(tx, &from_json(&v)?)?;
        }
        tx.delete(Cf::Objects, k);
    }
    for k in tx.keys_with_prefix(Cf::Versions, &prefix)? {
        if let Some(v) = tx.get(Cf::Versions, &k)? {
            release_version(tx, &from_json(&v)?)?;
        }
        tx.delete(Cf::Versions, k);
    }
    for k in tx.keys_with_prefix(Cf::NullVersions, &prefix)? {
        tx.delete(Cf::NullVersions, k);
    }
    for ukey in tx.keys_with_prefix(Cf::Uploads, &prefix)? {
        if let Some(upload_id) = ukey.rsplit(|b| *b == 0).next() {
            release_upload_parts(tx, &String::from_utf8_lossy(upload_id))?;
        }
        tx.delete(Cf::Uploads, ukey);
    }
    for k in tx.keys_with_prefix(Cf::Stamps, &journal::version_stamps_prefix(&id))? {
        tx.delete(Cf::Stamps, k);
    }
    tx.delete(Cf::Buckets, name.as_bytes().to_vec());
    Ok(())
}

/// Puts a replicated version among the key's versions, replacing its own older state if
/// held; it becomes current if it is the newest (see [`merge::placement`]).
fn place_version(tx: &mut Tx<'_>, okey: Vec<u8>, v: Version) -> Result<()> {
    delete_version(tx, okey.clone(), v.version_id())?;
    let cur = current(tx, &okey)?;
    match merge::placement(cur.as_ref(), &v) {
        Placement::Noncurrent => keep_noncurrent(tx, &okey, &v),
        Placement::Current => {
            if let Some(c) = cur {
                keep_noncurrent(tx, &okey, &c);
            }
            tx.put(Cf::Objects, okey, to_json(&v));
        }
    }
    Ok(())
}

fn keep_noncurrent(tx: &mut Tx<'_>, okey: &[u8], v: &Version) {
    if v.version_id().is_null() {
        tx.put(
            Cf::NullVersions,
            okey.to_vec(),
            v.seq().to_be_bytes().to_vec(),
        );
    }
    tx.put(
        Cf::Versions,
        version_key(okey, v.seq(), v.version_id()),
        to_json(v),
    );
}

/// Takes in a manifest that arrived from a peer: one more reference on each chunk, chunks
/// never seen here recorded as absent (their bytes are fetched when needed).
fn adopt_manifest(
    tx: &mut Tx<'_>,
    okey: &[u8],
    manifest: &Manifest,
    content: &ContentHash,
    part_sizes: Option<&[u64]>,
) -> Result<ManifestId> {
    reference_chunks(tx, manifest, false)?;
    let id = ManifestId::random();
    tx.put(Cf::Manifests, id.0.to_vec(), manifest.encode());
    tx.put(Cf::Blobs, blob_key(content, id), okey.to_vec());
    if let Some(sizes) = part_sizes {
        tx.put(Cf::PartSizes, id.0.to_vec(), encode_part_sizes(sizes));
    }
    Ok(id)
}

/// A manifest kept for journal entries is stored under its hash, and how many entries here
/// name it under the hash and `#` (a big-endian u64): counting one more or fewer rewrites
/// eight bytes, not a chunk list of up to 512 MiB.
fn count_key(hash: &ManifestHash) -> Vec<u8> {
    let mut k = hash.as_bytes().to_vec();
    k.push(b'#');
    k
}

fn blob_count(tx: &Tx<'_>, hash: &ManifestHash) -> Result<u64> {
    Ok(tx
        .get(Cf::ManifestBlobs, &count_key(hash))?
        .and_then(|v| v.try_into().ok())
        .map_or(0, u64::from_be_bytes))
}

/// Counts one more entry naming manifest `hash`, stored from `bytes` if not held yet;
/// false if it is neither held nor given.
pub(super) fn hold_blob(
    tx: &mut Tx<'_>,
    hash: &ManifestHash,
    bytes: Option<Vec<u8>>,
) -> Result<bool> {
    let held = blob_count(tx, hash)?;
    if held == 0 {
        let Some(b) = bytes else {
            return Ok(false);
        };
        tx.put(Cf::ManifestBlobs, hash.as_bytes().to_vec(), b);
    }
    tx.put(
        Cf::ManifestBlobs,
        count_key(hash),
        (held + 1).to_be_bytes().to_vec(),
    );
    Ok(true)
}

/// Counts one entry naming manifest `hash` fewer; the manifest goes with the last.
pub(super) fn release_blob(tx: &mut Tx<'_>, hash: &ManifestHash) -> Result<()> {
    match blob_count(tx, hash)? {
        0 | 1 => {
            tx.delete(Cf::ManifestBlobs, hash.as_bytes().to_vec());
            tx.delete(Cf::ManifestBlobs, count_key(hash));
        }
        n => tx.put(
            Cf::ManifestBlobs,
            count_key(hash),
            (n - 1).to_be_bytes().to_vec(),
        ),
    }
    Ok(())
}
