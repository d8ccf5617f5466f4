//! Content-defined chunking (FastCDC 2020) over a pushed byte stream.
//!
//! The cut points are a stored format: two nodes (or two versions of the store) must cut the
//! same bytes at the same places or deduplication silently stops working. That is why the
//! `fastcdc` crate is pinned exactly and the sizes below are constants, not settings.
//!
//! Bytes are pushed as they arrive from the network; a chunk is emitted once `MAX_CHUNK`
//! bytes are buffered (the cut inside that window depends only on those bytes), so memory
//! stays bounded by one maximum chunk plus one network frame whatever the object size.

use bytes::{Bytes, BytesMut};

/// Smallest chunk FastCDC may cut (except the last one of an object).
pub const MIN_CHUNK: usize = 256 * 1024;
/// Target average chunk size.
pub const AVG_CHUNK: usize = 1024 * 1024;
/// Largest chunk; a cut is forced here.
pub const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// Splits a pushed byte stream into content-defined chunks.
#[derive(Default)]
pub struct Chunker {
    buf: BytesMut,
}

impl Chunker {
    /// A chunker with an empty buffer.
    pub fn new() -> Self {
        Self {
            buf: BytesMut::new(),
        }
    }

    /// Appends `data` and hands every chunk that is now final to `emit`.
    pub fn push<E>(
        &mut self,
        data: &[u8],
        mut emit: impl FnMut(Bytes) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut data = data;
        while !data.is_empty() {
            if self.buf.capacity() < MAX_CHUNK {
                // Start a fresh window rather than growing the old one: the old allocation
                // is shared with the chunks just emitted and is freed when they are written.
                let mut fresh = BytesMut::with_capacity(MAX_CHUNK);
                fresh.extend_from_slice(&self.buf);
                self.buf = fresh;
            }
            // Never buffer more than one maximum chunk: cut as soon as the window is full.
            let take = (MAX_CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == MAX_CHUNK {
                let end = cut(&self.buf);
                emit(self.buf.split_to(end).freeze())?;
            }
        }
        Ok(())
    }

    /// Emits whatever is left: the tail of the object.
    pub fn finish<E>(mut self, mut emit: impl FnMut(Bytes) -> Result<(), E>) -> Result<(), E> {
        while !self.buf.is_empty() {
            let end = cut(&self.buf);
            emit(self.buf.split_to(end).freeze())?;
        }
        Ok(())
    }
}

fn cut(window: &[u8]) -> usize {
    let cdc =
        fastcdc::v2020::FastCDC::new(window, MIN_CHUNK as u32, AVG_CHUNK as u32, MAX_CHUNK as u32);
    let (_, end) = cdc.cut(0, window.len());
    end.clamp(1, window.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk_all(data: &[u8], frame: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut c = Chunker::new();
        for piece in data.chunks(frame.max(1)) {
            c.push::<()>(piece, |b| {
                out.push(b);
                Ok(())
            })
            .unwrap();
        }
        c.finish::<()>(|b| {
            out.push(b);
            Ok(())
        })
        .unwrap();
        out
    }

    /// Incompressible test data with no repeats (xorshift), reproducible from `seed`.
    pub(crate) fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn cut_points_do_not_depend_on_network_framing() {
        let data = pseudo_random(9 * 1024 * 1024 + 123, 7);
        let a = chunk_all(&data, 1);
        let b = chunk_all(&data, 65_536);
        let c = chunk_all(&data, data.len());
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.concat(), data);
        for ch in &a[..a.len() - 1] {
            assert!(
                ch.len() >= MIN_CHUNK && ch.len() <= MAX_CHUNK,
                "{}",
                ch.len()
            );
        }
    }

    #[test]
    fn an_edit_in_the_middle_keeps_most_chunks() {
        let data = pseudo_random(16 * 1024 * 1024, 3);
        let mut edited = data.clone();
        edited.splice(8_000_000..8_000_000, b"inserted bytes".iter().copied());
        let a = chunk_all(&data, 100_000);
        let b = chunk_all(&edited, 100_000);
        let shared = a.iter().filter(|c| b.contains(c)).count();
        assert!(shared + 2 >= a.len(), "shared {shared} of {}", a.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn chunks_concatenate_to_input(len in 0usize..3_000_000, frame in 1usize..300_000, seed: u64) {
            let data = pseudo_random(len, seed);
            let chunks = chunk_all(&data, frame);
            prop_assert_eq!(chunks.concat(), data);
            prop_assert!(chunks.iter().all(|c| !c.is_empty()));
        }
    }
}
