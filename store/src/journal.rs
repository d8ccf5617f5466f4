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
use crate::records::BucketRecord;
use crate::version::Version;

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
pub type StampSource = std::sync::Arc<dyn Fn() -> Hlc + Send + Sync>;

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
        Hlc {
            wall_ms: l.0,
            logical: l.1,
            node,
        }
    })
}

/// One journal entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub at: Hlc,
    pub change: Change,
}

/// The state of one name after a write.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // short-lived, one per entry being applied
pub enum Change {
    /// A bucket's record (`None`: deleted).
    Bucket {
        name: String,
        record: Option<BucketRecord>,
    },
    /// A key's current version (`None`: no version left).
    Object {
        bucket: String,
        key: String,
        state: Option<ObjectState>,
    },
}

/// A key's current version as replicated: the record, and for an object its chunk list
/// (so a peer can resolve and fetch it) and part sizes (for reads by part number).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectState {
    pub version: Version,
    /// The encoded manifest, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_sizes: Option<Vec<u64>>,
}

impl Change {
    /// The key of the name's stamp: buckets and objects in one space.
    pub(crate) fn name_key(&self) -> Vec<u8> {
        match self {
            Change::Bucket { name, .. } => {
                let mut k = b"b".to_vec();
                k.extend_from_slice(name.as_bytes());
                k
            }
            Change::Object { bucket, key, .. } => {
                let mut k = b"o".to_vec();
                k.extend_from_slice(bucket.as_bytes());
                k.push(0);
                k.extend_from_slice(key.as_bytes());
                k
            }
        }
    }
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(format!("journal entry: {e}")))
    }
}

/// An entry pulled from a peer: decoded once, kept with the exact bytes that are recorded
/// and passed on.
#[derive(Clone, Debug)]
pub struct Pulled {
    pub origin: NodeId,
    pub seq: u64,
    entry: Entry,
    bytes: Vec<u8>,
}

impl Pulled {
    pub fn decode(origin: NodeId, seq: u64, bytes: Vec<u8>) -> Result<Self> {
        Ok(Self {
            origin,
            seq,
            entry: Entry::decode(&bytes)?,
            bytes,
        })
    }

    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    pub(crate) fn into_parts(self) -> (NodeId, u64, Entry, Vec<u8>) {
        (self.origin, self.seq, self.entry, self.bytes)
    }
}

/// Journal key: origin, then its number (big-endian, so one origin's entries are in order).
pub(crate) fn entry_key(origin: &NodeId, seq: u64) -> Vec<u8> {
    let mut k = origin.0.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// What applying a pulled entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Already had it (a retransmission or an overlap).
    Duplicate,
    /// It does not follow the last entry seen from its origin: pull the gap first.
    Gap,
    /// Recorded; it lost to a newer write of the same name.
    Older,
    /// Recorded and now what the name resolves to.
    Newer,
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
        let mut last = c();
        for _ in 0..1000 {
            let n = c();
            assert!(n > last);
            last = n;
        }
    }
}
