//! Multipart uploads: create, upload parts (or copy them from existing content), list,
//! complete and abort; and the part sizes a completed object keeps.

use super::*;

impl Store {
    /// Starts a multipart upload; returns its id. `home`: the node whose store holds the
    /// upload, written into the id so any node can tell where to send its parts (see
    /// [`upload_home`]); `None` for an id only this store understands.
    pub fn create_upload(
        &self,
        bucket: &str,
        key: &ObjectKey,
        rec: UploadRecord,
        home: Option<NodeId>,
    ) -> Result<String> {
        let random = hex::encode(rand::random::<[u8; 16]>());
        let upload_id = match home {
            Some(node) => format!("{}{random}", node.to_hex()),
            None => random,
        };
        let ukey = upload_key(bucket, key.as_str(), &upload_id);
        let bucket = bucket.to_owned();
        let id = upload_id.clone();
        self.db.transact(move |tx| {
            if tx.get(Cf::Buckets, bucket.as_bytes())?.is_none() {
                return Err(StoreError::NoSuchBucket(bucket));
            }
            tx.put(Cf::Uploads, ukey, to_json(&rec));
            Ok(())
        })?;
        Ok(id)
    }

    /// The upload's record, or `NoSuchUpload`.
    pub fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRecord> {
        check_upload_id(upload_id)?;
        match self
            .shared
            .meta
            .get(Cf::Uploads, &upload_key(bucket, key, upload_id))?
        {
            Some(v) => from_json(&v),
            None => {
                self.bucket(bucket)?;
                Err(StoreError::NoSuchUpload(upload_id.to_owned()))
            }
        }
    }

    /// Stores part `number` of an upload, replacing an earlier part with that number.
    pub fn put_part(
        &self,
        upload: &UploadRef<'_>,
        number: u32,
        staged: StagedObject,
        etag: String,
        checksum: Option<StoredChecksum>,
    ) -> Result<PartRecord> {
        check_upload_id(upload.upload_id)?;
        check_part_number(number)?;
        let ukey = upload_key(upload.bucket, upload.key, upload.upload_id);
        let pkey = part_key(upload.upload_id, number);
        let upload_id = upload.upload_id.to_owned();
        self.db.transact(move |tx| {
            if tx.get(Cf::Uploads, &ukey)?.is_none() {
                return Err(StoreError::NoSuchUpload(upload_id));
            }
            let mut staged = staged;
            let manifest = commit_staged(tx, &mut staged, None, false)?;
            let rec = PartRecord {
                size: staged.size,
                etag,
                manifest: manifest.to_hex(),
                last_modified_ms: now_ms(),
                checksum,
            };
            replace_part(tx, pkey, &rec)?;
            staged.committed = true;
            Ok(rec)
        })
    }

    /// Stores part `number` of an upload as `range` of existing content (UploadPartCopy),
    /// sharing every chunk the range covers whole; only the partial chunks at its two ends
    /// (at most two chunks' worth of bytes) are read and stored anew.
    pub fn put_part_copy(
        &self,
        upload: &UploadRef<'_>,
        number: u32,
        source: &Manifest,
        range: ByteRange,
        etag: String,
        checksum: Option<StoredChecksum>,
    ) -> Result<PartRecord> {
        check_upload_id(upload.upload_id)?;
        check_part_number(number)?;
        enum Segment {
            Shared(ChunkRef),
            Copied(Box<StagedObject>),
        }
        let mut segments = Vec::new();
        for slice in source.slices(range) {
            if slice.offset == 0 && slice.len == slice.chunk.len {
                segments.push(Segment::Shared(slice.chunk));
            } else {
                let mut w = self.writer();
                w.write(&self.read_slice(&slice)?)?;
                segments.push(Segment::Copied(Box::new(w.finish()?)));
            }
        }
        let ukey = upload_key(upload.bucket, upload.key, upload.upload_id);
        let pkey = part_key(upload.upload_id, number);
        let upload_id = upload.upload_id.to_owned();
        self.db.transact(move |tx| {
            if tx.get(Cf::Uploads, &ukey)?.is_none() {
                return Err(StoreError::NoSuchUpload(upload_id));
            }
            let mut chunks = Vec::new();
            let mut scratch = Vec::new();
            let mut staged_all = Vec::new();
            for seg in segments {
                match seg {
                    Segment::Shared(c) => chunks.push(c),
                    Segment::Copied(mut staged) => {
                        scratch.push(commit_staged(tx, &mut staged, None, false)?);
                        chunks.extend_from_slice(staged.manifest.chunks());
                        staged_all.push(staged);
                    }
                }
            }
            // The part's own references; the scratch manifests only carried the new
            // chunks into the store and are dropped again.
            for c in &chunks {
                add_ref(tx, &c.hash)?;
            }
            for id in scratch {
                release_manifest(tx, id, None)?;
            }
            let rec = record_part(tx, pkey, &Manifest::new(chunks), etag, checksum)?;
            for s in &mut staged_all {
                s.committed = true;
            }
            Ok(rec)
        })
    }

    /// Takes over part `number` of an upload from the node that received it: `manifest` is
    /// the part's chunk list there. The chunks are referenced here (recorded as absent where
    /// this node has never held them), which keeps them, not as evictable copies, and lets
    /// their bytes be stored as they are fetched. Until [`Store::settle_part`] the part is
    /// *pending*: recorded beside the upload's parts (so an abort, completion or expiry of
    /// the upload releases it, even after a crash) but not one of them, so a part uploaded
    /// earlier under that number stays until this one is whole. Returns the pending record
    /// and the chunks this node must fetch.
    pub fn adopt_part(
        &self,
        upload: &UploadRef<'_>,
        number: u32,
        manifest: Manifest,
        etag: String,
        checksum: Option<StoredChecksum>,
    ) -> Result<(PartRecord, Vec<ChunkHash>)> {
        check_upload_id(upload.upload_id)?;
        check_part_number(number)?;
        let ukey = upload_key(upload.bucket, upload.key, upload.upload_id);
        let pkey = part_key(upload.upload_id, number | PENDING);
        let upload_id = upload.upload_id.to_owned();
        self.db.transact(move |tx| {
            if tx.get(Cf::Uploads, &ukey)?.is_none() {
                return Err(StoreError::NoSuchUpload(upload_id));
            }
            let absent = reference_chunks(tx, &manifest, true)?;
            let rec = record_part(tx, pkey, &manifest, etag, checksum)?;
            Ok((rec, absent))
        })
    }

    /// Makes a part taken over with [`Store::adopt_part`] part `number` of its upload, once
    /// its chunks are all here, replacing a part uploaded earlier under that number.
    /// `Raced` if another hand-over of that number replaced this one meanwhile.
    pub fn settle_part(&self, upload: &UploadRef<'_>, number: u32, rec: &PartRecord) -> Result<()> {
        check_upload_id(upload.upload_id)?;
        check_part_number(number)?;
        let ukey = upload_key(upload.bucket, upload.key, upload.upload_id);
        let pending = part_key(upload.upload_id, number | PENDING);
        let pkey = part_key(upload.upload_id, number);
        let (upload_id, rec) = (upload.upload_id.to_owned(), rec.clone());
        self.db.transact(move |tx| {
            if tx.get(Cf::Uploads, &ukey)?.is_none() {
                return Err(StoreError::NoSuchUpload(upload_id));
            }
            let now: Option<PartRecord> = tx
                .get(Cf::Parts, &pending)?
                .map(|v| from_json(&v))
                .transpose()?;
            if now.as_ref().map(|p| &p.manifest) != Some(&rec.manifest) {
                return Err(StoreError::Raced(format!(
                    "part {number} of upload {upload_id} was handed over again meanwhile"
                )));
            }
            // The references move with the record: nothing is released but the old part.
            tx.delete(Cf::Parts, pending);
            replace_part(tx, pkey, &rec)?;
            Ok(())
        })
    }

    /// Gives up a part taken over whose chunks could not be fetched: releases it if it is
    /// still the pending one recorded as `rec`. The upload's part under that number, if
    /// any, is untouched.
    pub fn abandon_part(&self, upload_id: &str, number: u32, rec: &PartRecord) -> Result<()> {
        check_upload_id(upload_id)?;
        check_part_number(number)?;
        let pkey = part_key(upload_id, number | PENDING);
        let manifest = rec.manifest.clone();
        self.db.transact(move |tx| {
            let Some(v) = tx.get(Cf::Parts, &pkey)? else {
                return Ok(());
            };
            let now: PartRecord = from_json(&v)?;
            if now.manifest == manifest {
                release_manifest(tx, now.manifest_id()?, None)?;
                tx.delete(Cf::Parts, pkey);
            }
            Ok(())
        })
    }

    /// A part's chunk list.
    pub fn part_manifest(&self, part: &PartRecord) -> Result<Manifest> {
        load_manifest(&self.shared.meta, part.manifest_id()?)
    }

    /// The chunks of an upload's parts this node does not hold (parts copied from objects
    /// whose chunks are held elsewhere), which completing the upload must read.
    pub fn upload_absent_chunks(&self, upload_id: &str) -> Result<Vec<ChunkHash>> {
        let mut absent = Vec::new();
        let mut listed = HashSet::new();
        for (_, part) in self.parts(upload_id)? {
            for c in self.part_manifest(&part)?.chunks() {
                if listed.insert(c.hash) && !self.has_chunk(&c.hash)? {
                    absent.push(c.hash);
                }
            }
        }
        Ok(absent)
    }

    /// The parts uploaded so far, by part number (parts still being handed over are not).
    pub fn parts(&self, upload_id: &str) -> Result<Vec<(u32, PartRecord)>> {
        let mut prefix = upload_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        self.shared.meta.scan_prefix(Cf::Parts, &prefix, |k, v| {
            let n = u32::from_be_bytes(
                k[prefix.len()..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("part key".into()))?,
            );
            if n & PENDING == 0 {
                out.push((n, from_json(v)?));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Uploads in progress in `bucket` under `prefix`, ordered by key then upload id.
    pub fn uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String, UploadRecord)>> {
        self.bucket(bucket)?;
        let base = object_key(bucket, "");
        let mut out = Vec::new();
        self.shared
            .meta
            .scan_prefix(Cf::Uploads, &object_key(bucket, prefix), |k, v| {
                let rest = &k[base.len()..];
                let split = rest
                    .iter()
                    .rposition(|b| *b == 0)
                    .ok_or_else(|| StoreError::Corrupt("upload key".into()))?;
                let key = String::from_utf8_lossy(&rest[..split]).into_owned();
                let id = String::from_utf8_lossy(&rest[split + 1..]).into_owned();
                let rec: UploadRecord = from_json(v)?;
                if !rec.relay {
                    out.push((key, id, rec));
                }
                Ok(true)
            })?;
        Ok(out)
    }

    /// Aborts every incomplete upload, in any bucket, initiated before `before_ms` (Unix ms),
    /// releasing its parts; returns how many. Uploads nobody completes or aborts would
    /// otherwise hold their parts' chunks for good.
    pub fn expire_uploads(&self, before_ms: i64) -> Result<usize> {
        let mut stale = Vec::new();
        self.shared.meta.scan(Cf::Uploads, &[], |k, v| {
            let rec: UploadRecord = from_json(v)?;
            if rec.initiated_ms < before_ms {
                stale.push(k.to_vec());
            }
            Ok(true)
        })?;
        let mut expired = 0;
        for ukey in stale {
            let Some(at) = ukey.iter().rposition(|b| *b == 0) else {
                continue;
            };
            let Some((bucket, key)) = split_object_key(&ukey[..at]) else {
                continue;
            };
            let upload_id = String::from_utf8_lossy(&ukey[at + 1..]).into_owned();
            match self.abort_upload(&bucket, &key, &upload_id) {
                Ok(()) => expired += 1,
                // Completed or aborted meanwhile, or its bucket went: nothing to expire.
                Err(StoreError::NoSuchUpload(_) | StoreError::NoSuchBucket(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// Completes an upload from the listed `(part number, etag)` pairs, making the object
    /// visible atomically. Computes the S3 multipart ETag and the whole-content BLAKE3
    /// (which needs one sequential read of the parts).
    pub fn complete_upload(
        &self,
        bucket: &str,
        key: &ObjectKey,
        upload_id: &str,
        listed: &[(u32, String)],
        checksum: Option<StoredChecksum>,
        precondition: Option<WritePrecondition>,
    ) -> Result<ObjectRecord> {
        let upload = self.upload(bucket, key.as_str(), upload_id)?;
        if listed.is_empty() {
            return Err(StoreError::InvalidPart("the upload lists no parts".into()));
        }
        let stored: BTreeMap<u32, PartRecord> = self.parts(upload_id)?.into_iter().collect();
        let mut chunks = Vec::new();
        let mut md5s = Md5::new();
        let mut used = Vec::new();
        let mut part_sizes = Vec::with_capacity(listed.len());
        if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(StoreError::InvalidPartOrder);
        }
        for (i, (number, etag)) in listed.iter().enumerate() {
            let part = stored.get(number).ok_or_else(|| {
                StoreError::InvalidPart(format!("part {number} was not uploaded"))
            })?;
            if etag.trim_matches('"') != part.etag {
                return Err(StoreError::InvalidPart(format!(
                    "part {number} has ETag {}, not {etag}",
                    part.etag
                )));
            }
            if i + 1 < listed.len() && part.size < MIN_PART_SIZE {
                return Err(StoreError::PartTooSmall(format!(
                    "part {number} is {} bytes; every part but the last must be at least 5 MiB",
                    part.size
                )));
            }
            let digest =
                hex::decode(&part.etag).map_err(|_| StoreError::Corrupt("part etag".into()))?;
            md5s.update(&digest);
            let m = load_manifest(&self.shared.meta, part.manifest_id()?)?;
            chunks.extend_from_slice(m.chunks());
            used.push((*number, part.manifest.clone()));
            part_sizes.push(part.size);
        }
        let manifest = Manifest::new(chunks);
        let mut whole = blake3::Hasher::new();
        self.read_range(&manifest, ByteRange::full(manifest.size()), |b| {
            whole.update(&b);
            true
        })?;
        let content_hash = ContentHash::from(whole.finalize());
        let etag = format!("{}-{}", hex::encode(md5s.finalize()), listed.len());

        let okey = object_key(bucket, key.as_str());
        let ukey = upload_key(bucket, key.as_str(), upload_id);
        let upload_id = upload_id.to_owned();
        let parts = listed.len() as u32;
        let bucket = bucket.to_owned();
        let (shared, key) = (self.shared.clone(), key.as_str().to_owned());
        self.db.transact(move |tx| {
            let versioning = bucket_in(tx, &bucket)?.versioning;
            if tx.get(Cf::Uploads, &ukey)?.is_none() {
                return Err(StoreError::NoSuchUpload(upload_id));
            }
            // A part re-uploaded while we were hashing changes the content: refuse.
            for (n, m) in &used {
                let now: Option<PartRecord> = tx
                    .get(Cf::Parts, &part_key(&upload_id, *n))?
                    .map(|v| from_json(&v))
                    .transpose()?;
                if now.as_ref().map(|p| &p.manifest) != Some(m) {
                    return Err(StoreError::InvalidPart(format!(
                        "part {n} changed while the upload was completing"
                    )));
                }
            }
            for c in manifest.chunks() {
                add_ref(tx, &c.hash)?;
            }
            let id = ManifestId::random();
            tx.put(Cf::Manifests, id.0.to_vec(), manifest.encode());
            tx.put(Cf::PartSizes, id.0.to_vec(), encode_part_sizes(&part_sizes));
            tx.put(Cf::Blobs, blob_key(&content_hash, id), okey.clone());
            let rec = ObjectRecord {
                size: manifest.size(),
                etag,
                content_hash: content_hash.to_hex(),
                manifest: id.to_hex(),
                last_modified_ms: now_ms(),
                meta: upload.meta,
                checksum,
                parts: Some(parts),
                version_id: VersionId::Null,
                seq: 0,
                tags: upload.tags,
            };
            let rec = install(tx, okey, rec, versioning, precondition.as_ref())?;
            release_upload_parts(tx, &upload_id)?;
            tx.delete(Cf::Uploads, ukey);
            journal_version(tx, &shared, &bucket, &key, rec.version_id)?;
            Ok(rec)
        })
    }

    /// Aborts an upload and frees its parts.
    pub fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        check_upload_id(upload_id)?;
        self.bucket(bucket)?;
        let ukey = upload_key(bucket, key, upload_id);
        let upload_id = upload_id.to_owned();
        self.db.transact(move |tx| {
            if tx.get(Cf::Uploads, &ukey)?.is_none() {
                return Err(StoreError::NoSuchUpload(upload_id));
            }
            release_upload_parts(tx, &upload_id)?;
            tx.delete(Cf::Uploads, ukey);
            Ok(())
        })
    }
}

/// The node that holds an upload, from its id: ids made for a swarm node are its node id
/// (32 hex digits) then 32 random ones; a bare 32-digit id names no node (a store alone).
pub fn upload_home(upload_id: &str) -> Option<NodeId> {
    if upload_id.len() != 64 {
        return None;
    }
    NodeId::from_hex(upload_id.get(..32)?).ok()
}

/// Stores a part's chunk list (its chunks already referenced) and records it under `pkey`,
/// replacing what was there.
fn record_part(
    tx: &mut Tx<'_>,
    pkey: Vec<u8>,
    manifest: &Manifest,
    etag: String,
    checksum: Option<StoredChecksum>,
) -> Result<PartRecord> {
    let id = ManifestId::random();
    tx.put(Cf::Manifests, id.0.to_vec(), manifest.encode());
    let rec = PartRecord {
        size: manifest.size(),
        etag,
        manifest: id.to_hex(),
        last_modified_ms: now_ms(),
        checksum,
    };
    replace_part(tx, pkey, &rec)?;
    Ok(rec)
}

/// Marks a part number as a hand-over in progress (see [`Store::adopt_part`]); part numbers
/// end at 10,000, so the bit is never one of theirs.
const PENDING: u32 = 1 << 31;

fn check_part_number(number: u32) -> Result<()> {
    if (1..=MAX_PART_NUMBER).contains(&number) {
        Ok(())
    } else {
        Err(StoreError::InvalidPart(format!(
            "part number {number} is outside 1..=10000"
        )))
    }
}

/// Upload ids are ours (32 or 64 hex digits); anything else cannot name an upload, and must
/// not reach key construction where it could alias another upload's parts.
fn check_upload_id(id: &str) -> Result<()> {
    if (id.len() == 32 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(StoreError::NoSuchUpload(id.chars().take(64).collect()))
    }
}

/// Part sizes as stored in `part_sizes`: big-endian u64s in part order.
pub(super) fn encode_part_sizes(sizes: &[u64]) -> Vec<u8> {
    sizes.iter().flat_map(|s| s.to_be_bytes()).collect()
}

pub(super) fn decode_part_sizes(v: &[u8]) -> Vec<u64> {
    v.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}
