//! An object's content as the ordered list of its chunks.

use crate::error::{Result, StoreError};
use crate::hash::ChunkHash;

/// One chunk of an object: its address and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub hash: ChunkHash,
    pub len: u32,
}

/// A half-open byte range `[start, end)` inside an object, already checked against its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    start: u64,
    end: u64,
}

impl ByteRange {
    /// The whole of an object of `size` bytes.
    pub fn full(size: u64) -> Self {
        Self {
            start: 0,
            end: size,
        }
    }

    /// `[start, end)`, or an error when it does not fit in `size` or is empty on a non-empty object.
    pub fn new(start: u64, end: u64, size: u64) -> Result<Self> {
        if start > end || end > size || (start == end && size != 0) {
            return Err(StoreError::InvalidRange(format!(
                "bytes {start}-{end} of an object of {size} bytes"
            )));
        }
        Ok(Self { start, end })
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// The part of one chunk a read needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSlice {
    pub chunk: ChunkRef,
    /// Offset inside the chunk.
    pub offset: u32,
    pub len: u32,
}

pub(crate) const ENTRY: usize = 32 + 4;

/// The ordered chunks of one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    chunks: Vec<ChunkRef>,
    /// `ends[i]` is the object offset just past chunk `i`; kept so a range finds its first
    /// chunk by binary search instead of a scan.
    ends: Vec<u64>,
}

impl Manifest {
    /// A manifest of the given chunks, in order.
    pub fn new(chunks: Vec<ChunkRef>) -> Self {
        let mut total = 0u64;
        let ends = chunks
            .iter()
            .map(|c| {
                total += u64::from(c.len);
                total
            })
            .collect();
        Self { chunks, ends }
    }

    /// The chunks in object order.
    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// The object's size in bytes.
    pub fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The chunk slices that cover `range`, in order; only those are read.
    pub fn slices(&self, range: ByteRange) -> impl Iterator<Item = ChunkSlice> + '_ {
        let first = self.ends.partition_point(|&end| end <= range.start());
        self.chunks[first..]
            .iter()
            .zip(&self.ends[first..])
            .map_while(move |(chunk, &end)| {
                let chunk_start = end - u64::from(chunk.len);
                if chunk_start >= range.end() {
                    return None;
                }
                let from = range.start().max(chunk_start);
                let to = range.end().min(end);
                Some(ChunkSlice {
                    chunk: *chunk,
                    offset: (from - chunk_start) as u32,
                    len: (to - from) as u32,
                })
            })
    }

    /// The stored form: 36 bytes per chunk.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.chunks.len() * ENTRY);
        for c in &self.chunks {
            out.extend_from_slice(c.hash.as_bytes());
            out.extend_from_slice(&c.len.to_le_bytes());
        }
        out
    }

    /// Reads the stored form back.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if !bytes.len().is_multiple_of(ENTRY) {
            return Err(StoreError::Corrupt(format!(
                "manifest of {} bytes",
                bytes.len()
            )));
        }
        let chunks = bytes
            .chunks_exact(ENTRY)
            .map(|e| {
                let hash = ChunkHash::from_slice(&e[..32])?;
                let len = u32::from_le_bytes([e[32], e[33], e[34], e[35]]);
                // The chunker cuts 1..=MAX_CHUNK bytes; anything else came from a broken
                // record or a hostile peer (found by the manifest fuzz target).
                if len == 0 || len as usize > crate::chunker::MAX_CHUNK {
                    return Err(StoreError::Corrupt(format!(
                        "manifest names a chunk of {len} bytes"
                    )));
                }
                Ok(ChunkRef { hash, len })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::new(chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_of_no_bytes_or_beyond_the_largest_cut_are_refused() {
        for len in [0u32, crate::chunker::MAX_CHUNK as u32 + 1, u32::MAX] {
            let bad = Manifest::new(vec![ChunkRef {
                hash: ChunkHash::of(b"x"),
                len,
            }]);
            assert!(Manifest::decode(&bad.encode()).is_err(), "{len}");
        }
        let good = Manifest::new(vec![ChunkRef {
            hash: ChunkHash::of(b"x"),
            len: crate::chunker::MAX_CHUNK as u32,
        }]);
        assert_eq!(Manifest::decode(&good.encode()).unwrap(), good);
    }

    fn manifest(lens: &[u32]) -> Manifest {
        Manifest::new(
            lens.iter()
                .enumerate()
                .map(|(i, &len)| ChunkRef {
                    hash: ChunkHash::of(&[i as u8]),
                    len,
                })
                .collect(),
        )
    }

    #[test]
    fn a_range_reads_only_the_chunks_it_covers() {
        let m = manifest(&[10, 10, 10, 10]);
        let s: Vec<_> = m.slices(ByteRange::new(15, 25, 40).unwrap()).collect();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].offset, s[0].len), (5, 5));
        assert_eq!((s[1].offset, s[1].len), (0, 5));
        let all: u32 = m.slices(ByteRange::full(40)).map(|s| s.len).sum();
        assert_eq!(all, 40);
        assert_eq!(m.slices(ByteRange::new(39, 40, 40).unwrap()).count(), 1);
    }

    #[test]
    fn encode_round_trips_and_rejects_garbage() {
        let m = manifest(&[1, 2, 3]);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        assert!(Manifest::decode(&[0; 35]).is_err());
        assert!(ByteRange::new(5, 4, 10).is_err());
        assert!(ByteRange::new(0, 11, 10).is_err());
    }
}
