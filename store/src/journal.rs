//! The namespace journal: every write to a bucket or object name, recorded as the state of
//! that name afterwards, stamped with a hybrid logical clock ([`Hlc`]) and numbered per origin
//! node. Peers pull the entries they have not seen (by origin and number, see
//! [`crate::Store::journal_since`]) and apply them last-writer-wins by stamp
//! ([`crate::Store::apply_journal`]). Entries of every origin are kept, not only a node's own,
//! so a node can pass on what it learned from a peer that has since gone away.
//!
//! Recording the resulting state (not the operation) makes applying idempotent and
//! order-insensitive per name: the newest stamp wins whatever arrives first.

use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::hash::ManifestHash;
pub use crate::merge::Refusal;
use crate::names::BucketId;
use crate::records::BucketRecord;
use crate::version::{Version, VersionId};

/// A node's identity in the swarm: 16 random bytes, drawn once when its data directory is
/// created (kept in `<data-dir>/node-id`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|_| StoreError::Corrupt(format!("node id {s:?}")))?;
        Ok(Self(out))
    }
}

/// Short form for logs: the first six bytes.
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// A hybrid-logical-clock timestamp: wall milliseconds, a counter for events within the same
/// millisecond, and the node that made it, so two distinct writes never compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    pub wall_ms: u64,
    pub logical: u32,
    pub node: NodeId,
}

impl Hlc {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.wall_ms.to_be_bytes().to_vec();
        out.extend_from_slice(&self.logical.to_be_bytes());
        out.extend_from_slice(&self.node.0);
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        let bad = || StoreError::Corrupt(format!("stamp of {} bytes", b.len()));
        if b.len() != 28 {
            return Err(bad());
        }
        Ok(Self {
            wall_ms: u64::from_be_bytes(b[..8].try_into().map_err(|_| bad())?),
            logical: u32::from_be_bytes(b[8..12].try_into().map_err(|_| bad())?),
            node: NodeId(b[12..28].try_into().map_err(|_| bad())?),
        })
    }
}

/// Where a store gets the stamps of its own writes (the swarm's clock, which also takes in
/// the stamps it sees from peers).
/// It may refuse (why, in words a client is shown): a node whose clock runs too far ahead of
/// its peers' takes no writes, since peers would hold back entries stamped that far ahead.
pub type StampSource = std::sync::Arc<dyn Fn() -> std::result::Result<Hlc, String> + Send + Sync>;

/// A stand-alone stamp source for a store outside any swarm: wall time, never backwards.
pub fn local_clock(node: NodeId) -> StampSource {
    let last = Mutex::new((0u64, 0u32));
    std::sync::Arc::new(move || {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
        *l = if now > l.0 { (now, 0) } else { (l.0, l.1 + 1) };
        Ok(Hlc {
            wall_ms: l.0,
            logical: l.1,
            node,
        })
    })
}

/// One journal entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub at: Hlc,
    pub change: Change,
}

/// The state of one replicated name after a write. Names are fine-grained so that every
/// change is a write of one register: a bucket incarnation, or one version of a key in one
/// bucket incarnation. What a key resolves to (its current version: the newest by seq) is
/// derived from its versions, the same way on every node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // short-lived, one per entry being applied
pub enum Change {
    /// One incarnation of a bucket name: its record, or `None` once it is deleted (for good:
    /// a later create of the name is another incarnation).
    Bucket {
        name: String,
        id: BucketId,
        record: Option<BucketRecord>,
    },
    /// One version of a key: its state, or `None` once it is removed for good (a delete by
    /// version id, or an overwrite in a bucket that keeps no history).
    Version {
        bucket: String,
        bucket_id: BucketId,
        key: String,
        version_id: VersionId,
        state: Option<ObjectState>,
    },
}

/// A version as replicated: the record, and for an object its chunk list (so a peer can
/// resolve and fetch it) and part sizes (for reads by part number, at most 10,000).
///
/// The chunk list is carried only when short ([`INLINE_MANIFEST_CHUNKS`] chunks at most);
/// a longer one is named by its hash (`manifest`) and travels beside the entry, fetched and
/// verified like a chunk, so no entry grows with its object: an object of 160,000 chunks
/// replicates in an entry the size of a small one's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectState {
    pub version: Version,
    /// The encoded manifest, hex, when short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<String>,
    /// The BLAKE3 of the encoded manifest, hex, when it is not carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_sizes: Option<Vec<u64>>,
}

/// The longest chunk list a journal entry carries itself (about 4.6 KB of hex).
pub const INLINE_MANIFEST_CHUNKS: usize = 32;

/// The largest manifest a peer may hand over (a 5 TiB object of 256 KiB chunks needs 1.5 GB;
/// one of this size describes 7 TiB of average 1 MiB chunks).
pub const MAX_MANIFEST_BYTES: u64 = 512 << 20;

impl Change {
    /// The key of the name's stamp. A bucket incarnation is `b id`; a version is
    /// `v bucket-id key 0x00 version-id`, so one incarnation's stamps are one range.
    pub(crate) fn name_key(&self) -> Vec<u8> {
        match self {
            Change::Bucket { id, .. } => {
                let mut k = b"b".to_vec();
                k.extend_from_slice(&id.0);
                k
            }
            Change::Version {
                bucket_id,
                key,
                version_id,
                ..
            } => {
                let mut k = version_stamps_prefix(bucket_id);
                k.extend_from_slice(key.as_bytes());
                k.push(0);
                k.extend_from_slice(version_id.to_string().as_bytes());
                k
            }
        }
    }

    /// The bucket incarnation the change is about or belongs to.
    pub fn bucket_id(&self) -> BucketId {
        match self {
            Change::Bucket { id, .. } => *id,
            Change::Version { bucket_id, .. } => *bucket_id,
        }
    }
}

/// Where the stamps of one bucket incarnation's versions live in `stamps`.
pub(crate) fn version_stamps_prefix(bucket: &BucketId) -> Vec<u8> {
    let mut k = b"v".to_vec();
    k.extend_from_slice(&bucket.0);
    k
}

impl Entry {
    /// The manifest this entry names by hash and does not carry, if any (an unparsable hash
    /// names none: the entry is refused when applied).
    pub fn named_manifest(&self) -> Option<ManifestHash> {
        match &self.change {
            Change::Version {
                state:
                    Some(ObjectState {
                        manifest: Some(h), ..
                    }),
                ..
            } => h.parse().ok(),
            _ => None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(format!("journal entry: {e}")))
    }
}

/// An entry pulled from a peer: decoded once (or found undecodable: it is still recorded,
/// so its origin's later entries are not held up behind it), kept with the exact bytes that
/// are recorded and passed on.
#[derive(Clone, Debug)]
pub struct Pulled {
    pub origin: NodeId,
    pub seq: u64,
    entry: std::result::Result<Entry, String>,
    bytes: Vec<u8>,
    /// The manifest the entry names by hash, once fetched and checked against it.
    manifest: Option<Vec<u8>>,
}

impl Pulled {
    pub fn new(origin: NodeId, seq: u64, bytes: Vec<u8>) -> Self {
        Self {
            origin,
            seq,
            entry: Entry::decode(&bytes).map_err(|e| e.to_string()),
            bytes,
            manifest: None,
        }
    }

    /// The decoded entry, or why it could not be decoded.
    pub fn entry(&self) -> std::result::Result<&Entry, &str> {
        self.entry.as_ref().map_err(String::as_str)
    }

    /// The manifest the entry names by hash and does not carry, if any (see
    /// [`Entry::named_manifest`]).
    pub fn named_manifest(&self) -> Option<ManifestHash> {
        self.entry.as_ref().ok()?.named_manifest()
    }

    /// Hands over the manifest the entry names; false (and not kept) if `bytes` do not hash
    /// to the name.
    pub fn attach_manifest(&mut self, bytes: Vec<u8>) -> bool {
        let ok = self.named_manifest() == Some(ManifestHash::of(&bytes));
        if ok {
            self.manifest = Some(bytes);
        }
        ok
    }

    pub(crate) fn into_parts(self) -> PulledParts {
        PulledParts {
            origin: self.origin,
            seq: self.seq,
            entry: self.entry,
            bytes: self.bytes,
            manifest: self.manifest,
        }
    }
}

pub(crate) struct PulledParts {
    pub origin: NodeId,
    pub seq: u64,
    pub entry: std::result::Result<Entry, String>,
    pub bytes: Vec<u8>,
    pub manifest: Option<Vec<u8>>,
}

/// Journal key: origin, then its number (big-endian, so one origin's entries are in order).
pub(crate) fn entry_key(origin: &NodeId, seq: u64) -> Vec<u8> {
    let mut k = origin.0.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// What recording a pulled entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Already had it (a retransmission or an overlap): not recorded again.
    Duplicate,
    /// It does not follow the last entry seen from its origin: pull the gap first.
    Gap,
    /// Recorded; it lost to a newer write of the same name.
    Older,
    /// Recorded and applied (entries it released from waiting included).
    Newer,
    /// Recorded and kept until the bucket incarnation it depends on is decided here.
    Parked,
    /// Recorded; its bucket incarnation is deleted (or lost a concurrent create), so there is
    /// nothing to apply it to.
    Superseded,
    /// Recorded but refused: it is not something a client could have written.
    Refused(Refusal),
    /// Not recorded: it names a manifest this node neither holds nor was handed (pull it
    /// and the manifest again).
    NoManifest,
    /// A skip marker: the sender pruned these numbers (entries superseded by others it
    /// holds); recorded as seen.
    Pruned,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_order_as_encoded() {
        let a = Hlc {
            wall_ms: 5,
            logical: 2,
            node: NodeId([1; 16]),
        };
        let b = Hlc {
            wall_ms: 5,
            logical: 3,
            node: NodeId([0; 16]),
        };
        assert_eq!(Hlc::decode(&a.encode()).unwrap(), a);
        assert!(a < b);
        assert!(a.encode() < b.encode(), "byte order is stamp order");
        assert!(Hlc::decode(&[0; 27]).is_err());
    }

    #[test]
    fn the_local_clock_never_repeats() {
        let c = local_clock(NodeId([9; 16]));
        let mut last = c().unwrap();
        for _ in 0..1000 {
            let n = c().unwrap();
            assert!(n > last);
            last = n;
        }
    }
}
