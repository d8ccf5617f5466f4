//! Bit rot. A held chunk's bytes are checked against its hash whenever they leave the store:
//! for a client's GET, for a peer, for a copy, and by the scrub pass that walks every held
//! chunk at a rate the operator sets. A copy that fails is dropped, never served: its entry
//! stays, marked [`ChunkLocation::Damaged`], so the swarm fetches a good copy (the keeper for
//! chunks placed here, the scrub's repair and readers for the rest), a client that writes the
//! same content again repairs it, and a node alone reports it lost.

use super::*;

/// Who found a damaged copy: a label for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoundBy {
    /// A read for a client (GET, or the source of a copy).
    Read,
    /// A read to answer a peer.
    Peer,
    /// The scrub pass.
    Scrub,
}

impl FoundBy {
    pub fn label(self) -> &'static str {
        match self {
            FoundBy::Read => "read",
            FoundBy::Peer => "peer",
            FoundBy::Scrub => "scrub",
        }
    }
}

/// What one step of the scrub pass did.
#[derive(Debug, Default)]
pub struct ScrubStep {
    /// Held chunks re-hashed.
    pub chunks: u64,
    pub bytes: u64,
    /// Copies that failed and were dropped in this step.
    pub damaged: Vec<ChunkHash>,
    /// The last chunk checked, where the next step goes on; `None`: the pass is complete.
    pub next: Option<ChunkHash>,
}

/// How long a chunk verified whole is trusted without hashing it again. Its pages were just
/// read and checked, so a read within seconds is served from that same page cache (as ZFS
/// serves from its ARC without re-checking): a ranged reader walking through a chunk does
/// not re-hash up to 4 MiB for every 64 KiB it asks for, and the many readers of a hot
/// dataset share one check. A copy that rots on disk is still caught by the first read after
/// the window, and by the scrub.
const TRUSTED_FOR: Duration = Duration::from_secs(10);
/// Slots of the table of recently verified chunks (one per hash bucket; a collision only
/// costs a re-hash).
const TRUSTED_SLOTS: usize = 4096;

/// Chunks verified whole in the last [`TRUSTED_FOR`].
pub(super) struct Trusted(Mutex<Vec<Option<(ChunkHash, Instant)>>>);

impl Trusted {
    pub(super) fn new() -> Self {
        Self(Mutex::new(vec![None; TRUSTED_SLOTS]))
    }

    fn slot(h: &ChunkHash) -> usize {
        let b = h.as_bytes();
        usize::from(u16::from_le_bytes([b[0], b[1]])) % TRUSTED_SLOTS
    }

    fn holds(&self, h: &ChunkHash) -> bool {
        self.0.lock().is_ok_and(|t| {
            matches!(t[Self::slot(h)], Some((held, at)) if held == *h && at.elapsed() < TRUSTED_FOR)
        })
    }

    pub(super) fn record(&self, h: &ChunkHash) {
        if let Ok(mut t) = self.0.lock() {
            t[Self::slot(h)] = Some((*h, Instant::now()));
        }
    }

    fn forget(&self, h: &ChunkHash) {
        if let Ok(mut t) = self.0.lock()
            && matches!(t[Self::slot(h)], Some((held, _)) if held == *h)
        {
            t[Self::slot(h)] = None;
        }
    }
}

impl Store {
    /// One slice of a chunk, for a client. The whole chunk is checked against its hash first
    /// (a part of a chunk cannot be checked alone), unless it was checked moments ago (see
    /// [`TRUSTED_FOR`]). A copy that fails is dropped and the read gets
    /// [`StoreError::ChunkDamaged`]; a chunk held only by peers gets
    /// [`StoreError::ChunkAbsent`].
    pub fn read_slice(&self, slice: &ChunkSlice) -> Result<Bytes> {
        let hash = slice.chunk.hash;
        if self.shared.trusted.holds(&hash) {
            return read_slice(&self.shared, slice);
        }
        let entry = self.chunk_entry(&hash)?;
        let (offset, len) = (slice.offset as usize, slice.len as usize);
        let bytes = self.checked(&hash, entry.location, FoundBy::Read)?;
        bytes
            .get(offset..offset + len)
            .map(|_| bytes.slice(offset..offset + len))
            .ok_or_else(|| StoreError::Corrupt(format!("chunk {hash} is shorter than its slice")))
    }

    /// Checks the chunk behind `hash` against its hash (unless it was checked whole in the last
    /// seconds) without holding it: a pack chunk is hashed in 256 KiB reads. A GET checks each
    /// chunk so, then streams it in pieces ([`Store::read_checked_part`]): a client that stops
    /// reading then holds a piece, not a 4 MiB chunk.
    pub fn verify_for_read(&self, hash: &ChunkHash) -> Result<()> {
        // Whether it is still held is asked every time: a trusted chunk may have been evicted
        // since (a cache-only node), and a read must then fetch it, not spin on it.
        let entry = self.chunk_entry(hash)?;
        match entry.location {
            ChunkLocation::Absent => return Err(StoreError::ChunkAbsent(*hash)),
            ChunkLocation::Damaged => return Err(StoreError::ChunkDamaged(*hash)),
            _ if self.shared.trusted.holds(hash) => return Ok(()),
            _ => {}
        }
        let hashed = match entry.location {
            ChunkLocation::Absent => return Err(StoreError::ChunkAbsent(*hash)),
            ChunkLocation::Damaged => return Err(StoreError::ChunkDamaged(*hash)),
            ChunkLocation::Inline(ref data) => Ok(ChunkHash::of(data)),
            ChunkLocation::Pack { pack, offset, len } => {
                self.shared.packs.hash(pack, offset, len as usize)
            }
        };
        match hashed {
            Ok(h) if h == *hash => {}
            Ok(_) => {
                self.lost_copy(hash, &entry.location, FoundBy::Read, Ok(()))?;
            }
            Err(e) if e.is_damage() => {
                self.lost_copy(hash, &entry.location, FoundBy::Read, Err(e))?;
            }
            Err(e) => return Err(e),
        }
        self.shared.trusted.record(hash);
        Ok(())
    }

    /// The bytes of `part` (a part of a chunk [`Store::verify_for_read`] has just checked),
    /// read without a second check.
    pub fn read_checked_part(&self, part: &ChunkSlice) -> Result<Bytes> {
        read_slice(&self.shared, part)
    }

    /// A whole chunk's bytes, checked, and the kind of copy this node holds, if held here
    /// (a damaged copy is dropped and reported as not held).
    pub fn held_chunk(&self, hash: &ChunkHash) -> Result<Option<HeldChunk>> {
        let Some(v) = self.shared.meta.get(Cf::Chunks, hash.as_bytes())? else {
            return Ok(None);
        };
        let entry = ChunkEntry::decode(&v)?;
        let cached = entry.cached;
        match self.checked(hash, entry.location, FoundBy::Peer) {
            Ok(bytes) => Ok(Some(HeldChunk { bytes, cached })),
            Err(StoreError::ChunkAbsent(_) | StoreError::ChunkDamaged(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Re-hashes held chunks in hash order after `after` (from the start: `None`), about
    /// `max_bytes` of them, dropping the copies that fail.
    pub fn scrub_step(&self, after: Option<ChunkHash>, max_bytes: u64) -> Result<ScrubStep> {
        let mut todo: Vec<(ChunkHash, ChunkLocation)> = Vec::new();
        let mut planned = 0u64;
        let mut more = false;
        let from = after.map(|h| h.as_bytes().to_vec()).unwrap_or_default();
        self.shared.meta.scan(Cf::Chunks, &from, |k, v| {
            if Some(k) == after.as_ref().map(|h| &h.as_bytes()[..]) {
                return Ok(true);
            }
            let e = ChunkEntry::decode(v)?;
            if !e.location.is_held() {
                return Ok(true);
            }
            if planned >= max_bytes {
                more = true;
                return Ok(false);
            }
            planned += e.location.stored_len();
            todo.push((ChunkHash::from_slice(k)?, e.location));
            Ok(true)
        })?;
        let mut step = ScrubStep::default();
        for (hash, location) in &todo {
            let good = match location {
                ChunkLocation::Inline(data) => ChunkHash::of(data) == *hash,
                ChunkLocation::Pack { pack, offset, len } => {
                    match self.shared.packs.hash(*pack, *offset, *len as usize) {
                        Ok(h) => h == *hash,
                        Err(e) if e.is_damage() => false,
                        Err(e) => return Err(e),
                    }
                }
                ChunkLocation::Absent | ChunkLocation::Damaged => continue,
            };
            step.chunks += 1;
            step.bytes += location.stored_len();
            if !good && self.quarantine(hash, location, FoundBy::Scrub)? {
                step.damaged.push(*hash);
            }
        }
        let stats = &self.shared.stats;
        stats.scrub_chunks.fetch_add(step.chunks, Ordering::Relaxed);
        stats.scrub_bytes.fetch_add(step.bytes, Ordering::Relaxed);
        step.next = if more {
            todo.last().map(|(h, _)| *h)
        } else {
            None
        };
        if step.next.is_none() {
            stats.scrub_passes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(step)
    }

    /// Chunks still referenced whose copy here was found damaged and not yet replaced (at
    /// most `limit`): what the scrub asks the swarm to repair.
    pub fn damaged_chunks(&self, limit: usize) -> Result<Vec<ChunkHash>> {
        let mut found = Vec::new();
        self.shared.meta.scan(Cf::Chunks, &[], |k, v| {
            let e = ChunkEntry::decode(v)?;
            if e.location == ChunkLocation::Damaged && e.refs > 0 {
                found.push(ChunkHash::from_slice(k)?);
            }
            Ok(found.len() < limit)
        })?;
        Ok(found)
    }

    fn chunk_entry(&self, hash: &ChunkHash) -> Result<ChunkEntry> {
        let v = self
            .shared
            .meta
            .get(Cf::Chunks, hash.as_bytes())?
            .ok_or_else(|| StoreError::Corrupt(format!("chunk {hash} missing")))?;
        ChunkEntry::decode(&v)
    }

    /// The whole bytes at `location`, checked against `hash`; a copy that fails is dropped.
    /// Takes the location by value so that an inline chunk's bytes are handed on, not copied.
    fn checked(&self, hash: &ChunkHash, location: ChunkLocation, by: FoundBy) -> Result<Bytes> {
        let bytes = match location {
            ChunkLocation::Absent => return Err(StoreError::ChunkAbsent(*hash)),
            ChunkLocation::Damaged => return Err(StoreError::ChunkDamaged(*hash)),
            ChunkLocation::Inline(data) => {
                if ChunkHash::of(&data) != *hash {
                    return self.lost_copy(hash, &ChunkLocation::Inline(data), by, Ok(()));
                }
                Bytes::from(data)
            }
            ChunkLocation::Pack { pack, offset, len } => {
                let bytes = match self.shared.packs.read(pack, offset, len as usize) {
                    Ok(b) => b,
                    Err(e) if e.is_damage() => {
                        return self.lost_copy(hash, &location, by, Err(e));
                    }
                    Err(e) => return Err(e),
                };
                if ChunkHash::of(&bytes) != *hash {
                    return self.lost_copy(hash, &location, by, Ok(()));
                }
                bytes
            }
        };
        self.shared.trusted.record(hash);
        Ok(bytes)
    }

    /// Drops a copy found damaged (`why`: the read error, or a hash mismatch) and says so.
    fn lost_copy(
        &self,
        hash: &ChunkHash,
        location: &ChunkLocation,
        by: FoundBy,
        why: Result<()>,
    ) -> Result<Bytes> {
        if self.quarantine(hash, location, by)? {
            return Err(StoreError::ChunkDamaged(*hash));
        }
        // The entry changed between the lookup and the read (collected, evicted, stored
        // again): not damage, the read raced.
        why?;
        Err(StoreError::Corrupt(format!(
            "chunk {hash} changed while it was read"
        )))
    }

    /// Marks the copy at `location` damaged and frees its space, if the entry still points
    /// there. Returns whether it did.
    fn quarantine(&self, hash: &ChunkHash, location: &ChunkLocation, by: FoundBy) -> Result<bool> {
        self.shared.trusted.forget(hash);
        let (h, seen) = (*hash, location.clone());
        let dropped = self.db.transact(move |tx| {
            let key = h.as_bytes().to_vec();
            let Some(v) = tx.get(Cf::Chunks, &key)? else {
                return Ok(false);
            };
            let e = ChunkEntry::decode(&v)?;
            if e.location != seen {
                return Ok(false);
            }
            drop_chunk(tx, &h, &e)?;
            let damaged = ChunkEntry {
                location: ChunkLocation::Damaged,
                cached: false,
                ..e
            };
            tx.put(Cf::Chunks, key, damaged.encode());
            Ok(true)
        })?;
        if dropped {
            let n = match by {
                FoundBy::Read => &self.shared.stats.damaged_by_read,
                FoundBy::Peer => &self.shared.stats.damaged_by_peer,
                FoundBy::Scrub => &self.shared.stats.damaged_by_scrub,
            };
            n.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                chunk = %hash,
                found_by = by.label(),
                "a stored chunk failed verification; the copy is dropped and never served"
            );
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BucketName, ObjectKey, StoreOptions};
    use std::os::unix::fs::FileExt;

    /// A store holding one 12 MB object (several chunks) in one pack, and that pack's path.
    fn store_with_object() -> (tempfile::TempDir, Arc<Store>, Vec<u8>, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), StoreOptions::default()).unwrap();
        store
            .create_bucket(&BucketName::new("rot").unwrap(), "owner", None)
            .unwrap();
        let body = crate::chunker::tests::pseudo_random(12_000_000, 1);
        let mut w = store.writer();
        w.write(&body).unwrap();
        let staged = w.finish().unwrap();
        let new = NewObject {
            etag: "e".into(),
            ..Default::default()
        };
        store
            .put_object("rot", &ObjectKey::new("k").unwrap(), staged, new)
            .unwrap();
        let pack = fs::read_dir(dir.path().join("packs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .next()
            .unwrap();
        (dir, store, body, pack)
    }

    fn flip(pack: &Path, at: u64) {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(pack)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 1], at).unwrap();
    }

    #[test]
    fn a_clean_pass_checks_every_held_byte_in_steps() {
        let (_dir, store, body, _) = store_with_object();
        let (mut chunks, mut bytes, mut steps, mut after) = (0, 0, 0, None);
        loop {
            let step = store.scrub_step(after, 1).unwrap();
            assert!(step.damaged.is_empty());
            chunks += step.chunks;
            bytes += step.bytes;
            steps += 1;
            after = step.next;
            if after.is_none() {
                break;
            }
        }
        assert_eq!(bytes, body.len() as u64, "every byte once");
        assert_eq!(steps, chunks, "a 1-byte budget checks one chunk per step");
        assert!(chunks > 1);
        assert_eq!(store.stats().scrub_passes.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn rot_is_dropped_not_served_and_a_verified_copy_repairs_it() {
        let (_dir, store, body, pack) = store_with_object();
        let (_, manifest) = store.object_with_manifest("rot", "k", None).unwrap();
        // Flip a bit inside the second chunk.
        let second = manifest.chunks()[1];
        let first_len = u64::from(manifest.chunks()[0].len);
        flip(&pack, first_len + 10);

        let step = store.scrub_step(None, u64::MAX).unwrap();
        assert_eq!(step.damaged, vec![second.hash]);
        assert_eq!(step.next, None);
        assert_eq!(store.damaged_chunks(10).unwrap(), vec![second.hash]);
        assert_eq!(store.census().unwrap().damaged_chunks, 1);
        assert!(store.held_chunk(&second.hash).unwrap().is_none());
        let slices: Vec<ChunkSlice> = manifest
            .slices(ByteRange::full(body.len() as u64))
            .collect();
        assert!(matches!(
            store.read_slice(&slices[1]),
            Err(StoreError::ChunkDamaged(h)) if h == second.hash
        ));
        assert_eq!(
            &store.read_slice(&slices[0]).unwrap()[..],
            &body[..first_len as usize]
        );

        // A second scrub finds nothing more: the damaged copy is no longer held.
        assert!(store.scrub_step(None, u64::MAX).unwrap().damaged.is_empty());

        let start = first_len as usize;
        let good = Bytes::copy_from_slice(&body[start..start + second.len as usize]);
        let chunk = VerifiedChunk::new(second.hash, good).unwrap();
        assert!(store.put_chunk(chunk, false).unwrap());
        assert_eq!(store.stats().repaired.load(Ordering::Relaxed), 1);
        assert!(store.damaged_chunks(10).unwrap().is_empty());
        let mut read = Vec::new();
        store
            .read_range(&manifest, ByteRange::full(body.len() as u64), |b| {
                read.extend_from_slice(&b);
                true
            })
            .unwrap();
        assert_eq!(read, body);
    }

    #[test]
    fn a_read_of_part_of_a_rotten_chunk_is_refused_too() {
        let (_dir, store, body, pack) = store_with_object();
        let (_, manifest) = store.object_with_manifest("rot", "k", None).unwrap();
        flip(&pack, 5);
        // 100 bytes far from the flipped one, in the same (first) chunk.
        let range = ByteRange::new(1000, 1100, body.len() as u64).unwrap();
        let slice = manifest.slices(range).next().unwrap();
        assert!(matches!(
            store.read_slice(&slice),
            Err(StoreError::ChunkDamaged(_))
        ));
        assert_eq!(store.stats().damaged_by_read.load(Ordering::Relaxed), 1);
    }
}
