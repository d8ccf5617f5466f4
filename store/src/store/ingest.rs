//! Ingest: turning a byte stream into chunks stored durably ([`ObjectWriter`]) and staged
//! content not yet visible under any key ([`StagedObject`]).

use super::*;

impl Store {
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
}

pub(super) enum NewChunk {
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
            .is_ok_and(|e| e.refs > 0 && e.location.is_held()));
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
    pub(super) manifest: Manifest,
    pub(super) content_hash: ContentHash,
    pub(super) size: u64,
    pub(super) new_chunks: HashMap<ChunkHash, NewChunk>,
    pub(super) pack: Option<(PackId, u64)>,
    /// Keeps the pins on deduplicated chunks until this is committed or dropped.
    sink: ChunkSink,
    pub(super) committed: bool,
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
