//! What this node tells the swarm's registry about its namespace when it asks for one of
//! the decisions the registry makes (a bucket name, a conditional write), and the create
//! that carries out a granted claim.

use super::*;

/// How one incarnation of a bucket name stands on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It is the name's live incarnation here.
    Live,
    /// It was deleted (final: it can never hold the name again).
    Dead,
    /// Neither, as far as this node has heard.
    Unknown,
}

/// A key as this node sees it, for a conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    /// The bucket incarnation the key is in.
    pub bucket: BucketId,
    /// The current object's ETag (`None`: no object, or a delete marker).
    pub etag: Option<String>,
    /// The newest write of any version of the key this node has applied.
    pub stamp: Option<Hlc>,
}

impl Store {
    /// Creates `name` as incarnation `id` (one the registry granted), or `BucketExists`.
    pub fn create_bucket_as(
        &self,
        name: &BucketName,
        owner: &str,
        region: Option<String>,
        id: BucketId,
    ) -> Result<()> {
        let key = name.as_str().as_bytes().to_vec();
        let mut rec = BucketRecord {
            id,
            follows: None,
            owner: owner.to_owned(),
            created_ms: now_ms(),
            region,
            versioning: None,
            cors: None,
        };
        let n = name.to_string();
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            if tx.get(Cf::Buckets, &key)?.is_some() {
                return Err(StoreError::BucketExists(n));
            }
            rec.follows = last_grave(tx, &n)?.filter(|g| *g != id);
            tx.put(Cf::Buckets, key, to_json(&rec));
            journal_bucket(tx, &shared, &n)
        })
    }

    /// How incarnation `id` of `name` stands here.
    pub fn incarnation_fate(&self, name: &str, id: BucketId) -> Result<Fate> {
        let m = &self.shared.meta;
        if m.get(Cf::Graves, &replication::grave_key(name, id))?
            .is_some()
        {
            return Ok(Fate::Dead);
        }
        Ok(match m.get(Cf::Buckets, name.as_bytes())? {
            Some(v) if from_json::<BucketRecord>(&v)?.id == id => Fate::Live,
            _ => Fate::Unknown,
        })
    }

    /// `bucket/key` as this node sees it now.
    pub fn key_state(&self, bucket: &str, key: &str) -> Result<KeyState> {
        let rec = self.bucket(bucket)?;
        let m = &self.shared.meta;
        let etag = match m.get(Cf::Objects, &object_key(bucket, key))? {
            Some(v) => match from_json::<Version>(&v)? {
                Version::Object(o) => Some(o.etag),
                Version::DeleteMarker(_) => None,
            },
            None => None,
        };
        Ok(KeyState {
            bucket: rec.id,
            etag,
            stamp: self.key_stamp(rec.id, key)?,
        })
    }

    /// The newest write of any version of `key` in incarnation `bucket` applied here.
    pub fn key_stamp(&self, bucket: BucketId, key: &str) -> Result<Option<Hlc>> {
        let mut prefix = journal::version_stamps_prefix(&bucket);
        prefix.extend_from_slice(key.as_bytes());
        prefix.push(0);
        let mut stamp: Option<Hlc> = None;
        self.shared.meta.scan_prefix(Cf::Stamps, &prefix, |k, v| {
            // A longer key that shares the prefix has a 0 byte further on; ours do not.
            if !k[prefix.len()..].contains(&0) {
                let at = Hlc::decode(v)?;
                if stamp.is_none_or(|s| at > s) {
                    stamp = Some(at);
                }
            }
            Ok(true)
        })?;
        Ok(stamp)
    }
}
