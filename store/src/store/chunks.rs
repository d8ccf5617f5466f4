//! Chunks for the swarm: what this node holds, storing chunks fetched from peers, the
//! inventory placement and repair walk, and evicting cached copies.

use super::*;

impl Store {
    /// Whether this node holds the chunk's bytes.
    pub fn has_chunk(&self, hash: &ChunkHash) -> Result<bool> {
        Ok(match self.shared.meta.get(Cf::Chunks, hash.as_bytes())? {
            Some(v) => ChunkEntry::decode(&v)?.location.is_held(),
            None => false,
        })
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
                return Ok(None);
            };
            let mut e = ChunkEntry::decode(&v)?;
            if e.location.is_held() {
                return Ok(None);
            }
            let repaired = e.location == ChunkLocation::Damaged;
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
            Ok(Some(repaired))
        });
        if !matches!(stored, Ok(Some(_)))
            && let Some((pack, _)) = pack
        {
            let _ = packs.remove(pack);
        }
        if matches!(stored, Ok(Some(_))) {
            // The bytes were verified on their way in: a read right after (the GET that
            // fetched them) need not hash them again.
            self.shared.trusted.record(&hash);
        }
        if matches!(stored, Ok(Some(true))) {
            self.shared.stats.repaired.fetch_add(1, Ordering::Relaxed);
            tracing::info!(chunk = %hash, "a damaged chunk was replaced by a verified copy");
        }
        stored.map(|s| s.is_some())
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
                origin_only: e.origin,
            }))
        })
    }

    /// Marks held chunks as cached copies (evictable) or as copies held for durability.
    pub fn set_cached(&self, hashes: Vec<ChunkHash>, cached: bool) -> Result<()> {
        self.db.transact(move |tx| {
            for h in hashes {
                if let Some(v) = tx.get(Cf::Chunks, h.as_bytes())? {
                    let mut e = ChunkEntry::decode(&v)?;
                    if e.location.is_held() && e.cached != cached {
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

    /// Keeps `hash` from eviction while the returned guard lives (whether or not it is held
    /// yet): a read pins the chunks it is about to send, so a cache-only node does not drop
    /// one between its arrival from a peer and its last byte going out.
    pub fn pin_for_read(&self, hash: ChunkHash) -> ReadPin {
        self.shared.pin(hash);
        ReadPin {
            shared: self.shared.clone(),
            hash,
        }
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
}

/// A chunk kept from eviction for a read (see [`Store::pin_for_read`]).
pub struct ReadPin {
    shared: Arc<Shared>,
    hash: ChunkHash,
}

impl Drop for ReadPin {
    fn drop(&mut self) {
        self.shared.unpin([&self.hash]);
    }
}
