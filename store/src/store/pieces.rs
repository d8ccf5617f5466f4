//! Pieces of upstream objects (an origin bucket this node fronts), cached here: each piece is
//! a fixed byte range of one version of an upstream object, kept as a manifest of chunks like
//! an object's, so its chunks are deduplicated, verified and traded with peers like any other.
//! Pieces are not objects: nothing lists them and they are not journaled; the origin stays the
//! truth about what exists.

use super::*;

/// Which piece of which upstream object version. The store only orders them: `object` groups
/// the pieces of one upstream key (so a new version can drop the old one's), `version` tells
/// versions of it apart, `index` is the piece's place in the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PieceId {
    pub object: [u8; 16],
    pub version: [u8; 8],
    pub index: u32,
}

impl PieceId {
    /// The id as bytes (its key in the store; also what a rendezvous choice can hash).
    pub fn key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(28);
        k.extend_from_slice(&self.object);
        k.extend_from_slice(&self.version);
        k.extend_from_slice(&self.index.to_be_bytes());
        k
    }
}

impl Store {
    /// The manifest of a piece this node has taken in (its chunks may have been evicted
    /// since: they are then known as absent and fetched again), or `None`.
    pub fn piece(&self, id: &PieceId) -> Result<Option<Manifest>> {
        let Some(v) = self.shared.meta.get(Cf::Pieces, &id.key())? else {
            return Ok(None);
        };
        let mid = manifest_id(&v)?;
        load_manifest(&self.shared.meta, mid).map(Some)
    }

    /// Keeps staged content as a piece. Chunks this write brought are cached copies (the
    /// origin keeps the durable one): a node with a capacity limit may evict them. If the
    /// piece was taken in meanwhile (a concurrent fetch), that one stays and is returned.
    pub fn put_piece(&self, id: &PieceId, staged: StagedObject) -> Result<Manifest> {
        let key = id.key();
        self.db.transact(move |tx| {
            let mut staged = staged;
            if let Some(v) = tx.get(Cf::Pieces, &key)? {
                return tx_manifest(tx, manifest_id(&v)?);
            }
            let brought: Vec<ChunkHash> = staged.new_chunks.keys().copied().collect();
            let mid = commit_staged(tx, &mut staged, None, true)?;
            for h in brought {
                if let Some(v) = tx.get(Cf::Chunks, h.as_bytes())? {
                    let mut e = ChunkEntry::decode(&v)?;
                    if e.refs == 1 && e.location.is_held() {
                        e.cached = true;
                        tx.put(Cf::Chunks, h.as_bytes().to_vec(), e.encode());
                    }
                }
            }
            tx.put(Cf::Pieces, key, mid.0.to_vec());
            staged.committed = true;
            Ok(staged.manifest.clone())
        })
    }

    /// Records a piece another node took in: its chunks are referenced here and those not
    /// held are known as absent, so they can be fetched from peers.
    pub fn put_piece_manifest(&self, id: &PieceId, manifest: Manifest) -> Result<()> {
        let key = id.key();
        self.db.transact(move |tx| {
            if tx.get(Cf::Pieces, &key)?.is_some() {
                return Ok(());
            }
            for c in manifest.chunks() {
                let ckey = c.hash.as_bytes().to_vec();
                let entry = match tx.get(Cf::Chunks, &ckey)? {
                    Some(v) => {
                        let mut e = ChunkEntry::decode(&v)?;
                        e.refs += 1;
                        e.dead_ms = None;
                        e
                    }
                    None => ChunkEntry {
                        refs: 1,
                        location: ChunkLocation::Absent,
                        dead_ms: None,
                        cached: false,
                        origin: true,
                    },
                };
                tx.put(Cf::Chunks, ckey, entry.encode());
            }
            let mid = ManifestId::random();
            tx.put(Cf::Manifests, mid.0.to_vec(), manifest.encode());
            tx.put(Cf::Pieces, key, mid.0.to_vec());
            Ok(())
        })
    }

    /// Drops the pieces of `object` whose version is not `keep` (the upstream object changed
    /// or went away: `None`), releasing their chunks. Returns how many were dropped.
    pub fn drop_pieces(&self, object: [u8; 16], keep: Option<[u8; 8]>) -> Result<usize> {
        self.db.transact(move |tx| {
            let mut dropped = 0;
            for k in tx.keys_with_prefix(Cf::Pieces, &object)? {
                if keep.is_some_and(|v| k.get(16..24) == Some(&v[..])) {
                    continue;
                }
                if let Some(v) = tx.get(Cf::Pieces, &k)? {
                    release_manifest(tx, manifest_id(&v)?, None)?;
                }
                tx.delete(Cf::Pieces, k);
                dropped += 1;
            }
            Ok(dropped)
        })
    }
}

fn manifest_id(v: &[u8]) -> Result<ManifestId> {
    v.try_into()
        .map(ManifestId)
        .map_err(|_| StoreError::Corrupt("piece entry is not a manifest id".into()))
}

fn tx_manifest(tx: &Tx<'_>, id: ManifestId) -> Result<Manifest> {
    let v = tx
        .get(Cf::Manifests, &id.0)?
        .ok_or_else(|| StoreError::Corrupt(format!("manifest {} missing", id.to_hex())))?;
    Manifest::decode(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(store: &Store, data: &[u8]) -> StagedObject {
        let mut w = store.writer();
        w.write(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn a_piece_keeps_its_chunks_until_a_new_version_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let id = PieceId {
            object: [1; 16],
            version: [2; 8],
            index: 0,
        };
        assert!(store.piece(&id).unwrap().is_none());
        let m = store.put_piece(&id, staged(&store, &data)).unwrap();
        assert_eq!(m.size(), data.len() as u64);
        assert_eq!(store.piece(&id).unwrap(), Some(m.clone()));
        // A second fetch of the same piece keeps the first.
        let again = store.put_piece(&id, staged(&store, &data)).unwrap();
        assert_eq!(again, m);
        let range = ByteRange::full(m.size());
        let read: Vec<u8> = m
            .slices(range)
            .flat_map(|s| store.read_slice(&s).unwrap().to_vec())
            .collect();
        assert_eq!(read, data);
        // Its chunks are evictable copies the swarm places no copies of.
        let mut cached = 0;
        store
            .chunk_inventory(|c| {
                cached += usize::from(c.cached && c.origin_only && c.refs > 0);
                true
            })
            .unwrap();
        assert_eq!(cached, m.chunks().len());
        // The same version is kept; another version drops it and frees its chunks.
        assert_eq!(store.drop_pieces([1; 16], Some([2; 8])).unwrap(), 0);
        assert_eq!(store.drop_pieces([1; 16], Some([3; 8])).unwrap(), 1);
        assert!(store.piece(&id).unwrap().is_none());
        let mut live = 0;
        store
            .chunk_inventory(|c| {
                live += usize::from(c.refs > 0);
                true
            })
            .unwrap();
        assert_eq!(live, 0);
    }

    #[test]
    fn an_object_sharing_a_pieces_chunks_makes_them_namespace_data_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let id = PieceId {
            object: [7; 16],
            version: [1; 8],
            index: 0,
        };
        store.put_piece(&id, staged(&store, &data)).unwrap();
        store
            .create_bucket(&BucketName::new("bkt").unwrap(), "o", None)
            .unwrap();
        let key = ObjectKey::new("k").unwrap();
        store
            .put_object("bkt", &key, staged(&store, &data), NewObject::default())
            .unwrap();
        let origin_only = |store: &Store| {
            let mut n = 0;
            store
                .chunk_inventory(|c| {
                    n += usize::from(c.origin_only);
                    true
                })
                .unwrap();
            n
        };
        assert_eq!(origin_only(&store), 0, "the object needs them placed");
        // The piece going does not make them origin-only again.
        store.drop_pieces([7; 16], None).unwrap();
        assert_eq!(origin_only(&store), 0);
    }

    #[test]
    fn a_piece_from_a_peer_is_known_with_absent_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        let other = Store::open(other.path()).unwrap();
        let data = vec![9u8; 200_000];
        let id = PieceId {
            object: [4; 16],
            version: [5; 8],
            index: 3,
        };
        let m = other.put_piece(&id, staged(&other, &data)).unwrap();
        store.put_piece_manifest(&id, m.clone()).unwrap();
        assert_eq!(store.piece(&id).unwrap(), Some(m.clone()));
        for c in m.chunks() {
            assert!(!store.has_chunk(&c.hash).unwrap());
        }
    }

    #[test]
    fn a_chunk_evicted_right_after_its_fetch_reads_as_absent_not_as_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        let other = Store::open(other.path()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
        let id = PieceId {
            object: [8; 16],
            version: [8; 8],
            index: 0,
        };
        let m = other.put_piece(&id, staged(&other, &data)).unwrap();
        store.put_piece_manifest(&id, m.clone()).unwrap();
        let c = m.chunks()[0];
        let bytes = other
            .read_slice(&ChunkSlice {
                chunk: c,
                offset: 0,
                len: c.len,
            })
            .unwrap();
        // Stored as a fetch stores it: verified on arrival, so trusted for a while.
        assert!(
            store
                .put_chunk(VerifiedChunk::new(c.hash, bytes).unwrap(), true)
                .unwrap()
        );
        store.verify_for_read(&c.hash).unwrap();
        store.evict_to(0).unwrap();
        assert!(matches!(
            store.verify_for_read(&c.hash),
            Err(StoreError::ChunkAbsent(_))
        ));
    }
}
