//! Object versions: version ids, delete markers, and a bucket's versioning state.
//!
//! The current version of every key lives in the `objects` column family (so listing and
//! reading the latest state cost what they cost without versioning); older versions move to
//! `versions`, keyed `bucket 0x00 key 0x00 !seq` so a key's versions sort newest first.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::StoreError;
use crate::records::ObjectRecord;

/// A bucket's versioning state; a bucket that never had versioning enabled has none.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Versioning {
    Enabled,
    Suspended,
}

/// Names one version of an object: `null` (written while versioning was off or suspended) or
/// a stamped id minted when the version was written. The stamp orders versions; the salt
/// keeps ids unguessable and distinct across nodes that mint the same stamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VersionId {
    #[default]
    Null,
    Stamped {
        seq: u64,
        salt: u32,
    },
}

impl VersionId {
    pub fn is_null(&self) -> bool {
        matches!(self, VersionId::Null)
    }

    pub(crate) fn mint(seq: u64) -> Self {
        VersionId::Stamped {
            seq,
            salt: rand::random(),
        }
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionId::Null => f.write_str("null"),
            VersionId::Stamped { seq, salt } => write!(f, "{seq:016x}{salt:08x}"),
        }
    }
}

impl FromStr for VersionId {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        if s == "null" {
            return Ok(VersionId::Null);
        }
        let bad = || StoreError::InvalidVersion(s.chars().take(64).collect());
        if s.len() != 24 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let seq = u64::from_str_radix(&s[..16], 16).map_err(|_| bad())?;
        let salt = u32::from_str_radix(&s[16..], 16).map_err(|_| bad())?;
        Ok(VersionId::Stamped { seq, salt })
    }
}

impl Serialize for VersionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VersionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A version that says "deleted": the current state of a key after a DELETE in a versioned
/// bucket. It has no content; older versions stay readable by id.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteMarker {
    #[serde(default)]
    pub version_id: VersionId,
    pub seq: u64,
    /// When the delete happened (unix ms). Named apart from `last_modified_ms` so a marker
    /// never parses as an object record or the reverse.
    pub marker_ms: i64,
}

/// One version of a key: content, or a delete marker.
// Objects are the common case and markers rare: boxing the object would cost an allocation per
// record read to save memory only on markers.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Version {
    Object(ObjectRecord),
    DeleteMarker(DeleteMarker),
}

impl Version {
    pub fn version_id(&self) -> VersionId {
        match self {
            Version::Object(o) => o.version_id,
            Version::DeleteMarker(m) => m.version_id,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Version::Object(o) => o.seq,
            Version::DeleteMarker(m) => m.seq,
        }
    }

    pub fn last_modified_ms(&self) -> i64 {
        match self {
            Version::Object(o) => o.last_modified_ms,
            Version::DeleteMarker(m) => m.marker_ms,
        }
    }

    pub fn object(&self) -> Option<&ObjectRecord> {
        match self {
            Version::Object(o) => Some(o),
            Version::DeleteMarker(_) => None,
        }
    }

    pub(crate) fn set_identity(&mut self, id: VersionId, seq: u64) {
        match self {
            Version::Object(o) => (o.version_id, o.seq) = (id, seq),
            Version::DeleteMarker(m) => (m.version_id, m.seq) = (id, seq),
        }
    }
}

/// A strictly increasing stamp (microseconds since the epoch, bumped past the last one
/// handed out), so versions written in one process order by write even within a microsecond.
pub(crate) fn next_seq() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ObjectMeta;

    #[test]
    fn version_ids_round_trip_and_garbage_is_refused() {
        let id = VersionId::mint(next_seq());
        assert_eq!(id.to_string().parse::<VersionId>().ok(), Some(id));
        assert_eq!("null".parse::<VersionId>().ok(), Some(VersionId::Null));
        for bad in [
            "",
            "NULL",
            "0123",
            "zzzzzzzzzzzzzzzzzzzzzzzz",
            "../../etc/passwd",
        ] {
            assert!(bad.parse::<VersionId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn stamps_increase_strictly() {
        let a = next_seq();
        let b = next_seq();
        assert!(b > a);
    }

    #[test]
    fn objects_and_markers_never_decode_as_each_other() {
        let o = Version::Object(ObjectRecord {
            size: 1,
            etag: "e".into(),
            content_hash: "h".into(),
            manifest: "m".into(),
            last_modified_ms: 5,
            meta: ObjectMeta::default(),
            checksum: None,
            parts: None,
            version_id: VersionId::mint(7),
            seq: 7,
            tags: Default::default(),
        });
        let m = Version::DeleteMarker(DeleteMarker {
            version_id: VersionId::Null,
            seq: 9,
            marker_ms: 5,
        });
        for v in [o, m] {
            let back: Version = serde_json::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap();
            assert_eq!(back, v);
        }
    }
}
