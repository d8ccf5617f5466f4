//! Buckets: create, look up, list, delete, and their versioning and CORS settings.

use super::*;

impl Store {
    /// Creates a bucket owned by `owner` as a new incarnation. Fails with `BucketExists`
    /// whoever owns it. (In a swarm the registry grants the incarnation first: see
    /// [`Store::create_bucket_as`].)
    pub fn create_bucket(
        &self,
        name: &BucketName,
        owner: &str,
        region: Option<String>,
    ) -> Result<()> {
        self.create_bucket_as(name, owner, region, BucketId::random())
    }

    /// The bucket's record, or `NoSuchBucket`.
    pub fn bucket(&self, name: &str) -> Result<BucketRecord> {
        match self.shared.meta.get(Cf::Buckets, name.as_bytes())? {
            Some(v) => from_json(&v),
            None => Err(StoreError::NoSuchBucket(name.to_owned())),
        }
    }

    /// All buckets, in name order.
    pub fn buckets(&self) -> Result<Vec<(BucketName, BucketRecord)>> {
        let mut out = Vec::new();
        self.shared.meta.scan(Cf::Buckets, &[], |k, v| {
            out.push((
                BucketName::trusted(String::from_utf8_lossy(k).into_owned()),
                from_json(v)?,
            ));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Turns versioning on or suspends it. Once enabled, a bucket never returns to
    /// "never versioned" (as in S3).
    pub fn set_versioning(&self, name: &str, state: Versioning) -> Result<()> {
        let name = name.to_owned();
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let mut rec = bucket_in(tx, &name)?;
            rec.versioning = Some(state);
            tx.put(Cf::Buckets, name.clone().into_bytes(), to_json(&rec));
            journal_bucket(tx, &shared, &name)
        })
    }

    /// Deletes an empty bucket; its unfinished multipart uploads are aborted with it.
    pub fn delete_bucket(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let id = bucket_in(tx, &name)?.id;
            let prefix = object_key(&name, "");
            if !tx
                .keys_with_prefix_limited(Cf::Objects, &prefix, 1)?
                .is_empty()
            {
                return Err(StoreError::BucketNotEmpty(name));
            }
            for ukey in tx.keys_with_prefix(Cf::Uploads, &prefix)? {
                let upload_id = ukey
                    .rsplit(|b| *b == 0)
                    .next()
                    .map(|s| String::from_utf8_lossy(s).into_owned());
                if let Some(upload_id) = upload_id {
                    release_upload_parts(tx, &upload_id)?;
                }
                tx.delete(Cf::Uploads, ukey);
            }
            tx.delete(Cf::Buckets, name.clone().into_bytes());
            journal_bucket_deleted(tx, &shared, &name, id)
        })
    }

    /// Replaces the bucket's CORS rules (`None` removes them); `NoSuchBucket` if it is gone.
    pub fn set_bucket_cors(&self, name: &str, cors: Option<Vec<CorsRule>>) -> Result<()> {
        let name = name.to_owned();
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let Some(v) = tx.get(Cf::Buckets, name.as_bytes())? else {
                return Err(StoreError::NoSuchBucket(name));
            };
            let mut rec: BucketRecord = from_json(&v)?;
            rec.cors = cors;
            tx.put(Cf::Buckets, name.clone().into_bytes(), to_json(&rec));
            journal_bucket(tx, &shared, &name)
        })
    }
}
