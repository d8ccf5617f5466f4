//! CopyObject: a metadata operation here. The copy shares the source's chunks, so copying a
//! 100 GiB object writes one manifest and one record, never the bytes.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::{ByteRange, ObjectKey, ObjectRecord, Replacement, VersionId};

use super::error::{join_err, s3_err, version_arg};
use super::get::{etag_matches, seconds};
use super::upload_home::{self, UploadName};
use super::{
    Gateway, commit_err, decide, object_meta_of, precheck_write, tagging, timestamp, with_blake3,
    write_precondition,
};

struct CopyConditions<'a> {
    if_match: Option<&'a ETagCondition>,
    if_none_match: Option<&'a ETagCondition>,
    if_modified_since: Option<&'a Timestamp>,
    if_unmodified_since: Option<&'a Timestamp>,
}

/// The conditions of any input with S3's `copy_source_if_*` fields (CopyObject, UploadPartCopy).
macro_rules! copy_conditions_of {
    ($input:expr) => {
        CopyConditions {
            if_match: $input.copy_source_if_match.as_ref(),
            if_none_match: $input.copy_source_if_none_match.as_ref(),
            if_modified_since: $input.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: $input.copy_source_if_unmodified_since.as_ref(),
        }
    };
}

/// `x-amz-copy-source-if-*`: every failure is 412 (there is no 304 for a copy).
fn copy_conditions(c: CopyConditions<'_>, source: &ObjectRecord) -> S3Result<()> {
    let modified = source.last_modified_ms.div_euclid(1000);
    let failed = c.if_match.is_some_and(|e| !etag_matches(e, &source.etag))
        || c.if_none_match
            .is_some_and(|e| etag_matches(e, &source.etag))
        || (c.if_match.is_none() && c.if_unmodified_since.is_some_and(|t| modified > seconds(t)))
        || (c.if_none_match.is_none()
            && c.if_modified_since.is_some_and(|t| modified <= seconds(t)));
    if failed {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ));
    }
    Ok(())
}

/// The source bucket, key and version of a copy, after checking the caller may read it.
fn source_of<'a>(
    g: &Gateway,
    copy_source: &'a CopySource,
    caller: &str,
) -> S3Result<(&'a str, &'a str, Option<VersionId>)> {
    let CopySource::Bucket {
        bucket,
        key,
        version_id,
    } = copy_source
    else {
        return Err(s3_error!(
            NotImplemented,
            "Copying from an access point is not supported"
        ));
    };
    let version = version_arg(version_id.as_deref())?;
    // The access check covered the destination bucket; the source must be the caller's too.
    let owner = g.store.bucket(bucket).map_err(s3_err)?.owner;
    if owner != caller {
        return Err(s3_error!(AccessDenied, "Access Denied to the copy source"));
    }
    Ok((bucket, key, version))
}

/// A copy source that is a delete marker: S3 answers 400 when the request named the marker,
/// 404 when the key's latest version is one; the marker's headers belong to GET, not here.
fn copy_source_err(e: store::StoreError) -> s3s::S3Error {
    match e {
        store::StoreError::DeleteMarker { named: true, .. } => s3_error!(
            InvalidRequest,
            "The source of a copy request may not specifically refer to a delete marker by version id."
        ),
        store::StoreError::DeleteMarker { key, .. } => s3_err(store::StoreError::NoSuchKey(key)),
        e => s3_err(e),
    }
}

/// `If-Match` / `If-None-Match` of a CopyObject, on its destination.
fn destination_precondition(
    headers: &http::HeaderMap,
) -> S3Result<Option<store::WritePrecondition>> {
    let condition = |name: &str| {
        headers
            .get(name)
            .map(|v| {
                ETagCondition::parse_http_header(v.as_bytes())
                    .map_err(|_| s3_error!(InvalidArgument, "{name} is not a valid entity tag"))
            })
            .transpose()
    };
    write_precondition(
        condition("if-match")?.as_ref(),
        condition("if-none-match")?.as_ref(),
    )
}

fn caller_of(creds: Option<&s3s::auth::Credentials>) -> String {
    creds.map(|c| c.access_key.clone()).unwrap_or_default()
}

pub(crate) async fn copy_object(
    g: &Gateway,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let caller = caller_of(req.credentials.as_ref());
    // Conditions on the destination (S3 takes If-Match / If-None-Match on CopyObject as on
    // PutObject; s3s's input has no fields for them).
    let precondition = destination_precondition(&req.headers)?;
    let input = req.input;
    let (src_bucket, src_key, src_version) = source_of(g, &input.copy_source, &caller)?;
    let dst_key = ObjectKey::new(&input.key).map_err(s3_err)?;
    precheck_write(g, &input.bucket, &input.key, precondition.as_ref()).await?;
    let conditional = precondition.is_some();
    let source = g
        .store
        .object_version(src_bucket, src_key, src_version)
        .map_err(copy_source_err)?;

    copy_conditions(copy_conditions_of!(input), &source)?;

    let replace = match input
        .metadata_directive
        .as_ref()
        .map(MetadataDirective::as_str)
    {
        None | Some(MetadataDirective::COPY) => false,
        Some(MetadataDirective::REPLACE) => true,
        Some(other) => {
            return Err(s3_error!(
                InvalidArgument,
                "Unknown metadata directive: {other}"
            ));
        }
    };
    let tags = match input
        .tagging_directive
        .as_ref()
        .map(TaggingDirective::as_str)
    {
        None | Some(TaggingDirective::COPY) => None,
        Some(TaggingDirective::REPLACE) => Some(tagging::from_header(input.tagging.as_deref())?),
        Some(other) => {
            return Err(s3_error!(
                InvalidArgument,
                "Unknown tagging directive: {other}"
            ));
        }
    };
    if !replace
        && src_version.is_none()
        && src_bucket == input.bucket
        && src_key == input.key
        && tags.is_none()
    {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
        ));
    }
    let meta = if replace {
        Some(object_meta_of!(input)?)
    } else {
        None
    };
    let store = g.store.clone();
    let (sb, sk, db) = (
        src_bucket.to_string(),
        src_key.to_string(),
        input.bucket.clone(),
    );
    // The copy keeps the source's ETag: that is what a conditional copy leaves at the key.
    let ticket = decide::conditional_write(
        g,
        &input.bucket,
        &input.key,
        precondition.as_ref(),
        &source.etag,
    )
    .await?;
    let precondition = if ticket.is_some() { None } else { precondition };
    // The conditions were checked against this version; the copy must be of the same one.
    let etag = source.etag.clone();
    let pinned = Some(source.version_id);
    let replacement = Replacement { meta, tags };
    let rec = tokio::task::spawn_blocking(move || {
        store.copy_object(
            (&sb, &sk, pinned),
            (&db, &dst_key),
            replacement,
            Some(etag),
            precondition,
        )
    })
    .await
    .map_err(join_err)?
    .map_err(|e| match e {
        e @ store::StoreError::DeleteMarker { .. } => copy_source_err(e),
        e => commit_err(e, conditional),
    })?;
    if let Some(t) = ticket {
        t.carried_out();
    }
    let output = CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(ETag::Strong(rec.etag.clone())),
            last_modified: Some(timestamp(rec.last_modified_ms)),
            ..Default::default()
        }),
        version_id: (!rec.version_id.is_null()).then(|| rec.version_id.to_string()),
        copy_source_version_id: (!source.version_id.is_null())
            .then(|| source.version_id.to_string()),
        ..Default::default()
    };
    Ok(with_blake3(S3Response::new(output), &rec.content_hash))
}

/// UploadPartCopy: a part made of (a range of) an existing object. Like CopyObject it shares
/// the source's chunks; only partial chunks at the range's ends are copied.
///
/// The part's ETag is the source's MD5 ETag when the part is a whole single-part object;
/// otherwise it is derived from the part's chunk hashes (no bytes are read to compute an MD5).
/// Clients echo part ETags back without checking them, and the completed object's ETag is
/// the usual `hash-N` over them.
pub(crate) async fn upload_part_copy(
    g: &Gateway,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let caller = caller_of(req.credentials.as_ref());
    let input = req.input;
    let number = super::multipart::part_number(input.part_number)?;
    let name = UploadName {
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        upload_id: input.upload_id.clone(),
    };
    let (upload, home) = upload_home::record(g, &name).await?;
    let (src_bucket, src_key, src_version) = source_of(g, &input.copy_source, &caller)?;
    let store = g.store.clone();
    let (sb, sk) = (src_bucket.to_owned(), src_key.to_owned());
    let (source, manifest) =
        tokio::task::spawn_blocking(move || store.object_with_manifest(&sb, &sk, src_version))
            .await
            .map_err(join_err)?
            .map_err(copy_source_err)?;
    copy_conditions(copy_conditions_of!(input), &source)?;
    let range = match input.copy_source_range.as_deref() {
        None => ByteRange::full(source.size),
        Some(r) => copy_range(r, source.size)?,
    };
    let whole = range.len() == source.size;
    let slice_manifest = || {
        let mut h = blake3::Hasher::new();
        for s in manifest.slices(range) {
            h.update(s.chunk.hash.as_bytes());
            h.update(&s.offset.to_be_bytes());
            h.update(&s.len.to_be_bytes());
        }
        hex::encode(&h.finalize().as_bytes()[..16])
    };
    let etag = if whole && source.parts.is_none() {
        source.etag.clone()
    } else {
        slice_manifest()
    };
    let algorithm = upload.checksum_algorithm.clone();
    // Chunks the range covers whole are shared, wherever they are held; the partial ones at
    // its ends are read, and with a checksum to compute, every one is: those must be here.
    let read: Vec<store::ChunkHash> = manifest
        .slices(range)
        .filter(|s| algorithm.is_some() || s.offset != 0 || s.len != s.chunk.len)
        .map(|s| s.chunk.hash)
        .collect();
    let store = g.store.clone();
    let absent = tokio::task::spawn_blocking(move || {
        read.into_iter()
            .filter(|h| !store.has_chunk(h).unwrap_or(false))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(join_err)?;
    fetch_chunks(g, absent).await?;
    let e = etag.clone();
    let rec = upload_home::keep_part(
        g,
        &name,
        (upload, home),
        number,
        range.len(),
        move |store, up| {
            // An upload that declared a checksum algorithm needs it for this part too: that
            // one costs a read of the range.
            let checksum = match algorithm {
                None => None,
                Some(alg) => Some(checksum_of_range(store, &manifest, range, &alg)?),
            };
            store
                .put_part_copy(up, number, &manifest, range, e, checksum)
                .map_err(s3_err)
        },
    )
    .await?;
    let c = super::checksum::to_dto(rec.checksum.as_ref());
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(timestamp(rec.last_modified_ms)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
        }),
        copy_source_version_id: (!source.version_id.is_null())
            .then(|| source.version_id.to_string()),
        ..Default::default()
    }))
}

/// `x-amz-copy-source-range: bytes=first-last`, inclusive, inside the source.
pub(crate) fn copy_range(r: &str, size: u64) -> S3Result<ByteRange> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let (a, b) = r
        .trim()
        .strip_prefix("bytes=")
        .and_then(|x| x.split_once('-'))
        .ok_or_else(bad)?;
    let first: u64 = a.trim().parse().map_err(|_| bad())?;
    let last: u64 = b.trim().parse().map_err(|_| bad())?;
    if first > last || last >= size {
        return Err(s3_error!(
            InvalidRange,
            "Range specified is not valid for source object of size: {size}"
        ));
    }
    ByteRange::new(first, last + 1, size).map_err(s3_err)
}

fn checksum_of_range(
    store: &store::Store,
    manifest: &store::Manifest,
    range: ByteRange,
    algorithm: &str,
) -> S3Result<store::StoredChecksum> {
    let mut h = super::checksum::hasher_for(algorithm)?;
    store
        .read_range(manifest, range, |b| {
            h.update(&b);
            true
        })
        .map_err(s3_err)?;
    super::checksum::finish(h, algorithm)
}

/// Fetches chunks this node must read but does not hold, from whichever peers hold them.
pub(crate) async fn fetch_chunks(g: &Gateway, absent: Vec<store::ChunkHash>) -> S3Result<()> {
    if absent.is_empty() {
        return Ok(());
    }
    let Some(sw) = g.swarm.as_ref() else {
        return Err(s3_error!(
            InternalError,
            "chunk {} is referenced but not stored on this node",
            absent[0]
        ));
    };
    sw.fetch(absent.clone())
        .wait_all(&absent)
        .await
        .map_err(|(h, e)| {
            s3_error!(
                ServiceUnavailable,
                "chunk {h} could not be fetched from any peer ({e}); retry shortly"
            )
        })
}
