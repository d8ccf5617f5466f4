//! Transaction steps (run on the committer thread) on chunk and manifest references:
//! adding staged content, sharing and releasing manifests, and dropping chunks.

use super::*;

pub(super) fn load_manifest(meta: &Meta, id: ManifestId) -> Result<Manifest> {
    let v = meta
        .get(Cf::Manifests, &id.0)?
        .ok_or_else(|| StoreError::Corrupt(format!("manifest {} missing", id.to_hex())))?;
    Manifest::decode(&v)
}

/// One slice of a held chunk, unchecked: only for a chunk verified whole moments ago.
pub(super) fn read_slice(shared: &Shared, slice: &ChunkSlice) -> Result<Bytes> {
    let v = shared
        .meta
        .get(Cf::Chunks, slice.chunk.hash.as_bytes())?
        .ok_or_else(|| StoreError::Corrupt(format!("chunk {} missing", slice.chunk.hash)))?;
    let (offset, len) = (slice.offset as usize, slice.len as usize);
    match ChunkEntry::decode(&v)?.location {
        ChunkLocation::Absent => Err(StoreError::ChunkAbsent(slice.chunk.hash)),
        ChunkLocation::Damaged => Err(StoreError::ChunkDamaged(slice.chunk.hash)),
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

pub(super) fn add_ref(tx: &mut Tx<'_>, hash: &ChunkHash) -> Result<()> {
    let v = tx
        .get(Cf::Chunks, hash.as_bytes())?
        .ok_or_else(|| StoreError::Raced(hash.to_hex()))?;
    let mut e = ChunkEntry::decode(&v)?;
    e.refs += 1;
    e.dead_ms = None;
    e.origin = false;
    tx.put(Cf::Chunks, hash.as_bytes().to_vec(), e.encode());
    Ok(())
}

/// One more reference on each chunk of a manifest that arrived from a peer, chunks never
/// seen here recorded as absent (their bytes are fetched when needed); returns the chunks
/// not held here. `keep`: copies held here become ones kept for durability, not evictable.
pub(super) fn reference_chunks(
    tx: &mut Tx<'_>,
    manifest: &Manifest,
    keep: bool,
) -> Result<Vec<ChunkHash>> {
    let mut absent = Vec::new();
    let mut listed = HashSet::new();
    for c in manifest.chunks() {
        let key = c.hash.as_bytes().to_vec();
        let entry = match tx.get(Cf::Chunks, &key)? {
            Some(v) => {
                let mut e = ChunkEntry::decode(&v)?;
                e.refs += 1;
                e.dead_ms = None;
                e.origin = false;
                e.cached &= !keep;
                e
            }
            None => ChunkEntry {
                refs: 1,
                location: ChunkLocation::Absent,
                dead_ms: None,
                cached: false,
                origin: false,
            },
        };
        if !entry.location.is_held() && listed.insert(c.hash) {
            absent.push(c.hash);
        }
        tx.put(Cf::Chunks, key, entry.encode());
    }
    Ok(absent)
}

/// Adds the staged content's chunk references and manifest; returns the manifest's id.
/// `piece`: the content is a piece of an origin object, not namespace data (see
/// [`ChunkEntry::origin`]).
pub(super) fn commit_staged(
    tx: &mut Tx<'_>,
    staged: &mut StagedObject,
    index_blob: Option<&[u8]>,
    piece: bool,
) -> Result<ManifestId> {
    let mut pack_live = 0u64;
    for c in staged.manifest.chunks() {
        let key = c.hash.as_bytes().to_vec();
        let existing = tx
            .get(Cf::Chunks, &key)?
            .map(|v| ChunkEntry::decode(&v))
            .transpose()?;
        let entry = match existing {
            Some(mut e) if e.location.is_held() => {
                e.refs += 1;
                e.dead_ms = None;
                e.origin &= piece;
                e
            }
            // Unknown here, or known only from a replicated manifest: this write brought the
            // bytes (a writer stores every chunk it does not hold).
            existing => {
                let refs = existing.as_ref().map_or(0, |e| e.refs) + 1;
                let origin = piece && existing.as_ref().is_none_or(|e| e.origin);
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
                    origin,
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
    // The entry names the object it was written for (its object key): `/_blob/<hash>` serves
    // the content only to who may read that object.
    if let Some(okey) = index_blob {
        tx.put(Cf::Blobs, blob_key(&staged.content_hash, id), okey.to_vec());
    }
    Ok(id)
}

/// Stores a part, releasing the one it replaces (a part number uploaded again).
pub(super) fn replace_part(tx: &mut Tx<'_>, pkey: Vec<u8>, rec: &PartRecord) -> Result<()> {
    if let Some(old) = tx.get(Cf::Parts, &pkey)? {
        let old: PartRecord = from_json(&old)?;
        release_manifest(tx, old.manifest_id()?, None)?;
    }
    tx.put(Cf::Parts, pkey, to_json(rec));
    Ok(())
}

pub(super) fn release_upload_parts(tx: &mut Tx<'_>, upload_id: &str) -> Result<()> {
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
pub(super) fn share_manifest(tx: &mut Tx<'_>, id: ManifestId) -> Result<()> {
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
pub(super) fn release_manifest(
    tx: &mut Tx<'_>,
    id: ManifestId,
    content: Option<&ContentHash>,
) -> Result<()> {
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

/// Deletes a chunk's entry and releases its pack space.
pub(super) fn drop_chunk(tx: &mut Tx<'_>, hash: &ChunkHash, e: &ChunkEntry) -> Result<()> {
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
