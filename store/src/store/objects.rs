//! Objects: writing staged content under a key, reading records and bytes back, and
//! deleting, tagging and copying objects and their versions.

use super::*;

impl Store {
    // ---- writing -------------------------------------------------------------------------

    /// Makes `staged` visible as `bucket/key`, replacing any previous object, atomically.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &ObjectKey,
        staged: StagedObject,
        new: NewObject,
    ) -> Result<ObjectRecord> {
        let bucket = bucket.to_owned();
        let okey = object_key(&bucket, key.as_str());
        let (shared, key) = (self.shared.clone(), key.as_str().to_owned());
        self.db.transact(move |tx| {
            let versioning = bucket_in(tx, &bucket)?.versioning;
            let mut staged = staged;
            let manifest = commit_staged(tx, &mut staged, Some(&okey), false)?;
            let rec = ObjectRecord {
                size: staged.size,
                etag: new.etag,
                content_hash: staged.content_hash.to_hex(),
                manifest: manifest.to_hex(),
                last_modified_ms: now_ms(),
                meta: new.meta.clone(),
                checksum: new.checksum.clone(),
                parts: None,
                version_id: VersionId::Null,
                seq: 0,
                tags: new.tags.clone(),
            };
            let rec = install(tx, okey, rec, versioning, new.precondition.as_ref())?;
            journal_version(tx, &shared, &bucket, &key, rec.version_id)?;
            staged.committed = true;
            Ok(rec)
        })
    }

    // ---- reading -------------------------------------------------------------------------

    /// The object's current record, or `NoSuchKey` (`NoSuchBucket` when the bucket is
    /// missing, `DeleteMarker` when the key's latest version is a delete marker).
    pub fn object(&self, bucket: &str, key: &str) -> Result<ObjectRecord> {
        self.object_version(bucket, key, None)
    }

    /// The record of one version (`None`: the current one). A version that does not exist
    /// is `NoSuchVersion`; one that is a delete marker is `DeleteMarker`.
    pub fn object_version(
        &self,
        bucket: &str,
        key: &str,
        id: Option<VersionId>,
    ) -> Result<ObjectRecord> {
        ObjectKey::new(key)?;
        let okey = object_key(bucket, key);
        let found = match id {
            // The common read, one lookup: no snapshot needed.
            None => self
                .shared
                .meta
                .get(Cf::Objects, &okey)?
                .map(|v| from_json::<Version>(&v))
                .transpose()?,
            // One snapshot for the current and the noncurrent lookup: a version promoted
            // between the two reads is not missed.
            Some(id) => {
                let view = self.shared.meta.view();
                match view.get(Cf::Objects, &okey)? {
                    None => None,
                    Some(v) => {
                        let cur: Version = from_json(&v)?;
                        if cur.version_id() == id {
                            Some(cur)
                        } else {
                            find_noncurrent(&view, &okey, id)?.map(|(_, v)| v)
                        }
                    }
                }
            }
        };
        match found {
            Some(Version::Object(o)) => Ok(o),
            Some(Version::DeleteMarker(m)) => Err(StoreError::DeleteMarker {
                key: key.to_owned(),
                version_id: m.version_id,
                named: id.is_some(),
            }),
            None => {
                self.bucket(bucket)?;
                match id {
                    None => Err(StoreError::NoSuchKey(key.to_owned())),
                    Some(id) => Err(StoreError::NoSuchVersion(id.to_string())),
                }
            }
        }
    }

    /// The object's record and its chunk list, as of one moment: if the key is overwritten
    /// between the two reads (the old manifest is gone), the record is read again.
    pub fn object_with_manifest(
        &self,
        bucket: &str,
        key: &str,
        id: Option<VersionId>,
    ) -> Result<(ObjectRecord, Manifest)> {
        for _ in 0..8 {
            let rec = self.object_version(bucket, key, id)?;
            if let Some(v) = self.shared.meta.get(Cf::Manifests, &rec.manifest_id()?.0)? {
                return Ok((rec, Manifest::decode(&v)?));
            }
        }
        Err(StoreError::Raced(format!(
            "{bucket}/{key} changed under every read"
        )))
    }

    /// The part sizes of a multipart object, in part order (`None` for a single-part object,
    /// or one completed before part sizes were recorded).
    pub fn part_sizes(&self, rec: &ObjectRecord) -> Result<Option<Vec<u64>>> {
        if rec.parts.is_none() {
            return Ok(None);
        }
        let Some(v) = self.shared.meta.get(Cf::PartSizes, &rec.manifest_id()?.0)? else {
            return Ok(None);
        };
        Ok(Some(decode_part_sizes(&v)))
    }

    /// Streams `range` of `manifest` to `sink`, one chunk slice at a time, in order; stops
    /// early when `sink` returns false (the client went away).
    pub fn read_range(
        &self,
        manifest: &Manifest,
        range: ByteRange,
        mut sink: impl FnMut(Bytes) -> bool,
    ) -> Result<()> {
        for slice in manifest.slices(range) {
            if !sink(self.read_slice(&slice)?) {
                break;
            }
        }
        Ok(())
    }

    /// The objects whose whole content has BLAKE3 `hash` (at most 16), each with its
    /// manifest: the object that first stored each copy of the content, if it is still that
    /// key's current version. Who may read which is the caller's decision.
    pub fn blob_holders(&self, hash: &ContentHash) -> Result<Vec<BlobHolder>> {
        let mut found = Vec::new();
        self.shared
            .meta
            .scan_prefix(Cf::Blobs, hash.as_bytes(), |k, v| {
                let id = ManifestId(
                    k[32..]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("blob key".into()))?,
                );
                found.push((id, v.to_vec()));
                Ok(found.len() < 16)
            })?;
        let mut holders = Vec::new();
        for (id, okey) in found {
            // Entries written before they named their object (empty) are served to nobody.
            let Some((bucket, key)) = split_object_key(&okey) else {
                continue;
            };
            let current = self
                .shared
                .meta
                .get(Cf::Objects, &okey)?
                .map(|v| from_json::<Version>(&v))
                .transpose()?;
            let Some(Version::Object(rec)) = current else {
                continue;
            };
            if rec.manifest != id.to_hex() {
                continue;
            }
            // An entry can outlive its manifest for the instant between two commits.
            if let Some(v) = self.shared.meta.get(Cf::Manifests, &id.0)? {
                holders.push(BlobHolder {
                    bucket,
                    key,
                    manifest: Manifest::decode(&v)?,
                });
            }
        }
        Ok(holders)
    }

    /// Deletes `bucket/key`: in a versioned bucket, without `version` a delete marker becomes
    /// the latest version and the data stays; with `version`, that version is removed for
    /// good (and the next newest becomes current). Deleting what does not exist succeeds.
    pub fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionId>,
    ) -> Result<Deleted> {
        // A key that could not have been written (NUL, too long) must not reach key layout:
        // `a\0x` would otherwise land inside key `a`'s run of versions.
        ObjectKey::new(key)?;
        let okey = object_key(bucket, key);
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let versioning = bucket_in(tx, &bucket)?.versioning;
            let deleted = match version {
                None => delete_current(tx, okey, versioning),
                Some(id) => delete_version(tx, okey, id),
            }?;
            journal_version(
                tx,
                &shared,
                &bucket,
                &key,
                deleted.version_id.unwrap_or_default(),
            )?;
            Ok(deleted)
        })
    }

    /// Rewrites the tags of one version (`None`: the current one); returns its id.
    pub fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionId>,
        tags: BTreeMap<String, String>,
    ) -> Result<VersionId> {
        ObjectKey::new(key)?;
        let okey = object_key(bucket, key);
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            bucket_in(tx, &bucket)?;
            let cur = current(tx, &okey)?;
            let (slot, found) = match (cur, version) {
                (Some(c), None) => ((Cf::Objects, okey.clone()), Some(c)),
                (Some(c), Some(id)) if c.version_id() == id => {
                    ((Cf::Objects, okey.clone()), Some(c))
                }
                (Some(_), Some(id)) => match find_noncurrent_tx(tx, &okey, id)? {
                    Some((k, v)) => ((Cf::Versions, k), Some(v)),
                    None => ((Cf::Versions, Vec::new()), None),
                },
                (None, _) => ((Cf::Objects, okey.clone()), None),
            };
            match found {
                Some(Version::Object(mut o)) => {
                    o.tags = tags;
                    let id = o.version_id;
                    tx.put(slot.0, slot.1, to_json(&Version::Object(o)));
                    journal_version(tx, &shared, &bucket, &key, id)?;
                    Ok(id)
                }
                Some(Version::DeleteMarker(m)) => Err(StoreError::DeleteMarker {
                    key,
                    version_id: m.version_id,
                    named: version.is_some(),
                }),
                None => match version {
                    Some(id) => Err(StoreError::NoSuchVersion(id.to_string())),
                    None => Err(StoreError::NoSuchKey(key)),
                },
            }
        })
    }

    /// Copies `src` to `dst` without moving a byte: the new object shares the source's chunks
    /// (one more reference each). `meta` replaces the metadata (`None` keeps the source's);
    /// `source_etag`, when given, must still be the source's ETag at commit time.
    pub fn copy_object(
        &self,
        src: (&str, &str, Option<VersionId>),
        dst: (&str, &ObjectKey),
        replace: Replacement,
        source_etag: Option<String>,
        precondition: Option<WritePrecondition>,
    ) -> Result<ObjectRecord> {
        self.bucket(src.0)?;
        let skey = object_key(src.0, src.1);
        let (dst_bucket, okey) = (dst.0.to_owned(), object_key(dst.0, dst.1.as_str()));
        let (src_name, src_version) = (src.1.to_owned(), src.2);
        let (shared, dst_key) = (self.shared.clone(), dst.1.as_str().to_owned());
        self.db.transact(move |tx| {
            let versioning = bucket_in(tx, &dst_bucket)?.versioning;
            let found = match (current(tx, &skey)?, src_version) {
                (Some(c), None) => Some(c),
                (Some(c), Some(id)) if c.version_id() == id => Some(c),
                (Some(_), Some(id)) => find_noncurrent_tx(tx, &skey, id)?.map(|(_, v)| v),
                (None, _) => None,
            };
            let source = match found {
                Some(Version::Object(o)) => o,
                Some(Version::DeleteMarker(m)) => {
                    return Err(StoreError::DeleteMarker {
                        key: src_name,
                        version_id: m.version_id,
                        named: src_version.is_some(),
                    });
                }
                None => {
                    return Err(match src_version {
                        Some(id) => StoreError::NoSuchVersion(id.to_string()),
                        None => StoreError::NoSuchKey(src_name),
                    });
                }
            };
            if let Some(e) = source_etag
                && e != source.etag
            {
                return Err(StoreError::PreconditionFailed(
                    "the source object changed".into(),
                ));
            }
            // The copy shares the source's manifest: one counter update, whatever the size.
            // Shared before `install` releases anything, so copying onto the source's own
            // key keeps the manifest alive.
            share_manifest(tx, source.manifest_id()?)?;
            let rec = ObjectRecord {
                last_modified_ms: now_ms(),
                meta: replace.meta.unwrap_or_else(|| source.meta.clone()),
                tags: replace.tags.unwrap_or_else(|| source.tags.clone()),
                ..source
            };
            let rec = install(tx, okey, rec, versioning, precondition.as_ref())?;
            journal_version(tx, &shared, &dst_bucket, &dst_key, rec.version_id)?;
            Ok(rec)
        })
    }

    /// Deletes many keys (or versions) in one commit. Each item names a key, optionally a
    /// version, and optionally the ETag the object must still have; the result says, per
    /// item, what was deleted (a missing key counts as deleted, as in S3) or why not.
    pub fn delete_objects(
        &self,
        bucket: &str,
        items: Vec<(String, Option<VersionId>, Option<String>)>,
    ) -> Result<Vec<Result<Deleted>>> {
        let bucket = bucket.to_owned();
        let shared = self.shared.clone();
        self.db.transact(move |tx| {
            let versioning = bucket_in(tx, &bucket)?.versioning;
            let mut results = Vec::with_capacity(items.len());
            for (key, version, etag) in items {
                if let Err(e) = ObjectKey::new(&key) {
                    results.push(Err(e));
                    continue;
                }
                let okey = object_key(&bucket, &key);
                if let Some(want) = etag {
                    let cur = match version {
                        None => current(tx, &okey)?,
                        Some(id) => match current(tx, &okey)? {
                            Some(c) if c.version_id() == id => Some(c),
                            _ => find_noncurrent_tx(tx, &okey, id)?.map(|(_, v)| v),
                        },
                    };
                    match cur.as_ref().and_then(Version::object) {
                        Some(o) if want != "*" && want.trim_matches('"') != o.etag => {
                            results.push(Err(StoreError::PreconditionFailed(format!(
                                "the current ETag is {}",
                                o.etag
                            ))));
                            continue;
                        }
                        Some(_) => {}
                        // A condition on an object that is not there cannot hold.
                        None => {
                            results.push(Err(StoreError::NoSuchKey(key)));
                            continue;
                        }
                    }
                }
                let done = match version {
                    None => delete_current(tx, okey, versioning),
                    Some(id) => delete_version(tx, okey, id),
                };
                if let Ok(d) = &done {
                    journal_version(tx, &shared, &bucket, &key, d.version_id.unwrap_or_default())?;
                }
                results.push(done);
            }
            Ok(results)
        })
    }
}
