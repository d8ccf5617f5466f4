//! Pieces: fixed-size byte ranges of an upstream object, the unit fetched from the origin.
//! Their ids are derived from where the object lives and which version it is, so every node
//! computes the same ids for the same upstream bytes.

use store::PieceId;

use super::client::UpstreamObject;
use super::spec::OriginSpec;

/// How an object of `size` bytes is cut into pieces of `piece_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub size: u64,
    pub piece_size: u64,
}

impl Layout {
    /// Number of pieces (0 for an empty object).
    pub fn count(&self) -> u32 {
        u32::try_from(self.size.div_ceil(self.piece_size)).unwrap_or(u32::MAX)
    }

    /// Bytes `start..end` of piece `index`.
    pub fn piece(&self, index: u32) -> (u64, u64) {
        let start = u64::from(index) * self.piece_size;
        (
            start.min(self.size),
            (start + self.piece_size).min(self.size),
        )
    }

    /// The pieces bytes `start..end` touch (`end > start`).
    pub fn covering(&self, start: u64, end: u64) -> std::ops::RangeInclusive<u32> {
        let first = (start / self.piece_size) as u32;
        let last = (end.saturating_sub(1) / self.piece_size) as u32;
        first..=last
    }
}

/// Groups the pieces of one upstream key, whatever its version.
pub fn object_id(spec: &OriginSpec, key: &str) -> [u8; 16] {
    let mut h = blake3::Hasher::new_derive_key("s3swarm origin object 1");
    for part in [
        spec.http
            .as_deref()
            .or(spec.endpoint.as_deref())
            .unwrap_or("aws"),
        &spec.upstream_bucket,
        &spec.upstream_key(key),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// Tells versions apart: the ETag and size the origin gave, and how it is cut.
pub fn version_id(object: &UpstreamObject, piece_size: u64) -> [u8; 8] {
    let mut h = blake3::Hasher::new_derive_key("s3swarm origin version 1");
    h.update(&(object.etag.len() as u64).to_le_bytes());
    h.update(object.etag.as_bytes());
    h.update(&object.size.to_le_bytes());
    h.update(&piece_size.to_le_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

pub fn piece_id(
    spec: &OriginSpec,
    key: &str,
    object: &UpstreamObject,
    piece_size: u64,
    index: u32,
) -> PieceId {
    PieceId {
        object: object_id(spec, key),
        version: version_id(object, piece_size),
        index,
    }
}

/// The live members that fetch a piece from the upstream for the whole swarm, first choice
/// first (`n` at most): rendezvous hashing, so every node with the same view ranks them the
/// same, and a member leaving moves only its own pieces.
pub fn owners(id: &PieceId, live: &[swarm::NodeId], n: usize) -> Vec<swarm::NodeId> {
    swarm::holders(&store::ChunkHash::of(&id.key()), live, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_a_range_and_end_at_the_object() {
        let l = Layout {
            size: 20,
            piece_size: 8,
        };
        assert_eq!(l.count(), 3);
        assert_eq!(l.piece(0), (0, 8));
        assert_eq!(l.piece(2), (16, 20));
        assert_eq!(l.covering(0, 20), 0..=2);
        assert_eq!(l.covering(7, 9), 0..=1);
        assert_eq!(l.covering(8, 16), 1..=1);
        assert_eq!(l.covering(19, 20), 2..=2);
        let empty = Layout {
            size: 0,
            piece_size: 8,
        };
        assert_eq!(empty.count(), 0);
    }
}
