//! What the metadata database stores, and how its keys are laid out.
//!
//! Keys are built so that RocksDB's byte order is S3's listing order: an object key is
//! `bucket 0x00 key`, and bucket names cannot contain 0x00, so one bucket's objects are one
//! contiguous, key-sorted run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::hash::ContentHash;
use crate::names::BucketId;
use crate::pack::PackId;
use crate::version::{VersionId, Versioning};

/// Names one stored manifest; fresh for every write (a copy shares its source's, counted in
/// `manifest_refs`), so an overwrite never reuses an id a reader may still hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ManifestId(pub [u8; 16]);

impl ManifestId {
    pub(crate) fn random() -> Self {
        Self(rand::random())
    }

    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub(crate) fn from_hex(s: &str) -> Result<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| StoreError::Corrupt(format!("manifest id {s:?}")))?;
        Ok(Self(out))
    }
}

/// A bucket's record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BucketRecord {
    /// This incarnation of the name (records written before ids existed read as all zeros).
    #[serde(default)]
    pub id: BucketId,
    /// The incarnation of this name whose deletion the creating node had seen: this one is
    /// applied on a peer only once that one is gone there too (causal order across a
    /// delete and re-create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<BucketId>,
    /// Access key of the identity that created the bucket and owns it.
    pub owner: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Region string the bucket was created with (S3 LocationConstraint), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Versioning state; `None` for a bucket that never had versioning enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<Versioning>,
    /// The bucket's CORS rules (PutBucketCors), in the order the client gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Vec<CorsRule>>,
}

/// One CORS rule of a bucket, as validated by the gateway; matched in order, first wins.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CorsRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Origins, each with at most one `*` wildcard.
    pub allowed_origins: Vec<String>,
    /// Upper-case methods among GET, PUT, POST, DELETE, HEAD.
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for (case-insensitive, `*` wildcards).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Response headers the browser may expose to scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

/// Metadata a client sets on an object and gets back: standard headers and `x-amz-meta-*`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
}

/// A checksum a client sent with an upload (algorithm name as S3 spells it, base64 value).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredChecksum {
    pub algorithm: String,
    pub value: String,
    /// A multipart checksum of the parts' checksums (`value` ends in `-N`), rather than a
    /// checksum of the whole content.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub composite: bool,
}

/// An object as listed and resolved.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectRecord {
    pub size: u64,
    /// S3 ETag without quotes: hex MD5, or `md5-of-part-md5s-N` for multipart objects.
    pub etag: String,
    pub content_hash: String,
    pub manifest: String,
    pub last_modified_ms: i64,
    #[serde(default)]
    pub meta: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<StoredChecksum>,
    /// Number of parts for a multipart object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
    #[serde(default, skip_serializing_if = "VersionId::is_null")]
    pub version_id: VersionId,
    /// Orders this version among the key's versions (see [`crate::version`]).
    #[serde(default)]
    pub seq: u64,
    /// Object tags (S3 allows up to 10).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl ObjectRecord {
    /// The whole-content BLAKE3.
    pub fn content_hash(&self) -> Result<ContentHash> {
        self.content_hash.parse()
    }

    pub(crate) fn manifest_id(&self) -> Result<ManifestId> {
        ManifestId::from_hex(&self.manifest)
    }
}

/// A multipart upload in progress.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadRecord {
    pub owner: String,
    pub initiated_ms: i64,
    #[serde(default)]
    pub meta: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<String>,
    /// With an algorithm: whether the object gets a composite checksum (else full-object).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checksum_composite: bool,
    /// Tags from `x-amz-tagging`, applied when the upload completes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// A private upload that only holds a part received here for an upload whose home is
    /// another node, until that node has taken the part over: never listed, never completed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relay: bool,
}

/// One uploaded part.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartRecord {
    pub size: u64,
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    pub manifest: String,
    pub last_modified_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<StoredChecksum>,
}

impl PartRecord {
    pub(crate) fn manifest_id(&self) -> Result<ManifestId> {
        ManifestId::from_hex(&self.manifest)
    }
}

/// Where a chunk's bytes are, and how many manifest entries point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChunkEntry {
    pub refs: u64,
    pub location: ChunkLocation,
    /// When the last reference went away (unix ms), while the entry waits in the graveyard.
    /// Kept per chunk so an older graveyard entry of a chunk that was revived and died again
    /// does not cut the newer grace period short.
    pub dead_ms: Option<i64>,
    /// A copy fetched from a peer for reading, not one this node is responsible for:
    /// a node with a capacity limit may evict it.
    pub cached: bool,
    /// Referenced only by pieces of origin objects (see `Store::put_piece`): the origin holds
    /// the durable copy, so the swarm places no copies of it. Cleared for good once an
    /// object of the namespace references it.
    pub origin: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChunkLocation {
    /// Referenced by a replicated manifest, bytes held by peers only (until fetched).
    Absent,
    /// Not held: the copy this node had failed verification (bit rot, a truncated or missing
    /// pack) and was dropped. Like `Absent` until a good copy is stored again.
    Damaged,
    /// Small chunks live in the database itself: a file and an fsync for 4 KiB is waste.
    Inline(Vec<u8>),
    Pack {
        pack: PackId,
        offset: u64,
        len: u32,
    },
}

impl ChunkLocation {
    /// Whether this node holds the chunk's bytes.
    pub(crate) fn is_held(&self) -> bool {
        !matches!(self, ChunkLocation::Absent | ChunkLocation::Damaged)
    }

    /// Bytes this node spends on the chunk.
    pub(crate) fn stored_len(&self) -> u64 {
        match self {
            ChunkLocation::Absent | ChunkLocation::Damaged => 0,
            ChunkLocation::Inline(d) => d.len() as u64,
            ChunkLocation::Pack { len, .. } => u64::from(*len),
        }
    }
}

/// Layout: refs (u64 LE), a kind byte (bit 0: in a pack, bit 1: a death time follows, bit 2:
/// absent, bit 3: cached, bit 4: absent because damaged), the death time (i64 LE) if flagged, then the inline bytes or
/// (pack id, offset, length); nothing for an absent chunk.
impl ChunkEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.refs.to_le_bytes().to_vec();
        let in_pack = matches!(self.location, ChunkLocation::Pack { .. });
        let absent = !self.location.is_held();
        let damaged = self.location == ChunkLocation::Damaged;
        out.push(
            u8::from(in_pack)
                | if self.dead_ms.is_some() { 2 } else { 0 }
                | if absent { 4 } else { 0 }
                | if self.cached { 8 } else { 0 }
                | if damaged { 16 } else { 0 }
                | if self.origin { 32 } else { 0 },
        );
        if let Some(t) = self.dead_ms {
            out.extend_from_slice(&t.to_le_bytes());
        }
        match &self.location {
            ChunkLocation::Absent | ChunkLocation::Damaged => {}
            ChunkLocation::Inline(data) => out.extend_from_slice(data),
            ChunkLocation::Pack { pack, offset, len } => {
                out.extend_from_slice(&pack.0.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        let bad = || StoreError::Corrupt(format!("chunk entry of {} bytes", b.len()));
        let u64_at = |at: usize| -> Result<u64> {
            Ok(u64::from_le_bytes(
                b.get(at..at + 8)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            ))
        };
        let refs = u64_at(0)?;
        let kind = *b.get(8).ok_or_else(bad)?;
        // Damaged implies absent; absent excludes a pack location.
        if kind > 63 || (kind & 5) == 5 || (kind & 20) == 16 {
            return Err(bad());
        }
        let (dead_ms, rest) = if kind & 2 != 0 {
            (Some(u64_at(9)? as i64), 17)
        } else {
            (None, 9)
        };
        let location = if kind & 4 != 0 {
            if b.len() != rest {
                return Err(bad());
            }
            if kind & 16 != 0 {
                ChunkLocation::Damaged
            } else {
                ChunkLocation::Absent
            }
        } else if kind & 1 == 0 {
            ChunkLocation::Inline(b[rest..].to_vec())
        } else {
            if b.len() != rest + 20 {
                return Err(bad());
            }
            ChunkLocation::Pack {
                pack: PackId(u64_at(rest)?),
                offset: u64_at(rest + 8)?,
                len: u32::from_le_bytes(b[rest + 16..rest + 20].try_into().map_err(|_| bad())?),
            }
        };
        Ok(Self {
            refs,
            location,
            dead_ms,
            cached: kind & 8 != 0,
            origin: kind & 32 != 0,
        })
    }
}

/// A pack file's size and how many of its bytes are still referenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackRecord {
    pub size: u64,
    pub live: u64,
}

impl PackRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.size.to_le_bytes().to_vec();
        out.extend_from_slice(&self.live.to_le_bytes());
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != 16 {
            return Err(StoreError::Corrupt(format!(
                "pack record of {} bytes",
                b.len()
            )));
        }
        let size = u64::from_le_bytes(
            b[..8]
                .try_into()
                .map_err(|_| StoreError::Corrupt("pack record".into()))?,
        );
        let live = u64::from_le_bytes(
            b[8..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("pack record".into()))?,
        );
        Ok(Self { size, live })
    }
}

pub(crate) fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Where a noncurrent version lives: after the object key, `0x00`, the inverted stamp and
/// the inverted rank of its id, so a key's versions sort newest first by (seq, version id),
/// the order `merge::placement` keeps. Two versions minted with the same seq on two nodes
/// (their ids differ by salt) have two slots: a slot keyed by the seq alone let one
/// overwrite the other, a version lost without a delete.
pub(crate) fn version_key(okey: &[u8], seq: u64, id: crate::version::VersionId) -> Vec<u8> {
    use crate::version::VersionId;
    let rank = match id {
        VersionId::Null => 0,
        VersionId::Stamped { salt, .. } => u64::from(salt) + 1,
    };
    let mut k = Vec::with_capacity(okey.len() + 17);
    k.extend_from_slice(okey);
    k.push(0);
    k.extend_from_slice(&(!seq).to_be_bytes());
    k.extend_from_slice(&(!rank).to_be_bytes());
    k
}

/// The prefix under which all noncurrent versions of `okey` live.
pub(crate) fn versions_prefix(okey: &[u8]) -> Vec<u8> {
    let mut k = okey.to_vec();
    k.push(0);
    k
}

pub(crate) fn upload_key(bucket: &str, key: &str, upload_id: &str) -> Vec<u8> {
    let mut k = object_key(bucket, key);
    k.push(0);
    k.extend_from_slice(upload_id.as_bytes());
    k
}

pub(crate) fn part_key(upload_id: &str, part: u32) -> Vec<u8> {
    let mut k = upload_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&part.to_be_bytes());
    k
}

/// `bucket` and `key` back out of an [`object_key`] (bucket names hold no NUL).
pub(crate) fn split_object_key(okey: &[u8]) -> Option<(String, String)> {
    let at = okey.iter().position(|&b| b == 0)?;
    let bucket = std::str::from_utf8(&okey[..at]).ok()?;
    let key = std::str::from_utf8(&okey[at + 1..]).ok()?;
    Some((bucket.to_owned(), key.to_owned()))
}

pub(crate) fn blob_key(hash: &ContentHash, manifest: ManifestId) -> Vec<u8> {
    let mut k = hash.as_bytes().to_vec();
    k.extend_from_slice(&manifest.0);
    k
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(format!("record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_entries_round_trip() {
        for loc in [
            ChunkLocation::Absent,
            ChunkLocation::Damaged,
            ChunkLocation::Inline(b"tiny".to_vec()),
            ChunkLocation::Pack {
                pack: PackId(7),
                offset: 1 << 40,
                len: 123,
            },
        ] {
            for dead_ms in [None, Some(1_763_000_000_000)] {
                for (cached, origin) in [(false, false), (true, false), (false, true), (true, true)]
                {
                    let e = ChunkEntry {
                        refs: 3,
                        location: loc.clone(),
                        dead_ms,
                        cached,
                        origin,
                    };
                    assert_eq!(ChunkEntry::decode(&e.encode()).unwrap(), e);
                }
            }
        }
        assert!(ChunkEntry::decode(&[1, 2]).is_err());
        assert!(
            ChunkEntry::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 5]).is_err(),
            "unknown location kind"
        );
        assert!(
            ChunkEntry::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 16]).is_err(),
            "damaged but not absent"
        );
        assert!(
            ChunkEntry::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 1, 5]).is_err(),
            "truncated pack location"
        );
    }

    #[test]
    fn object_keys_sort_like_s3_within_a_bucket() {
        let a = object_key("b", "a/b");
        let b = object_key("b", "a0");
        let other = object_key("b0", "");
        assert!(a < b);
        assert!(b < other, "a bucket's keys stay before the next bucket's");
    }
}
