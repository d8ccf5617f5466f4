//! CopyObject: a metadata operation here. The copy shares the source's chunks, so copying a
//! 100 GiB object writes one manifest and one record, never the bytes.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::ObjectKey;

use super::error::{join_err, s3_err};
use super::get::{etag_matches, seconds};
use super::{Gateway, object_meta_of, timestamp, with_blake3};

pub(crate) async fn copy_object(
    g: &Gateway,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let caller = req
        .credentials
        .as_ref()
        .map(|c| c.access_key.clone())
        .unwrap_or_default();
    let input = req.input;
    let CopySource::Bucket {
        bucket: src_bucket,
        key: src_key,
        version_id,
    } = &input.copy_source
    else {
        return Err(s3_error!(
            NotImplemented,
            "CopyObject from an access point is not supported"
        ));
    };
    if version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(s3_error!(
            NotImplemented,
            "CopyObject of a specific version is not supported yet"
        ));
    }
    let dst_key = ObjectKey::new(&input.key).map_err(s3_err)?;
    // The access check covered the destination bucket; the source must be the caller's too.
    let src_owner = g.store.bucket(src_bucket).map_err(s3_err)?.owner;
    if src_owner != caller {
        return Err(s3_error!(AccessDenied, "Access Denied to the copy source"));
    }
    let source = g.store.object(src_bucket, src_key).map_err(s3_err)?;

    // x-amz-copy-source-if-*: every failure is 412 (there is no 304 for a copy).
    let modified = source.last_modified_ms.div_euclid(1000);
    let failed = input
        .copy_source_if_match
        .as_ref()
        .is_some_and(|c| !etag_matches(c, &source.etag))
        || input
            .copy_source_if_none_match
            .as_ref()
            .is_some_and(|c| etag_matches(c, &source.etag))
        || (input.copy_source_if_match.is_none()
            && input
                .copy_source_if_unmodified_since
                .as_ref()
                .is_some_and(|t| modified > seconds(t)))
        || (input.copy_source_if_none_match.is_none()
            && input
                .copy_source_if_modified_since
                .as_ref()
                .is_some_and(|t| modified <= seconds(t)));
    if failed {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ));
    }

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
    if !replace && **src_bucket == *input.bucket && **src_key == *input.key {
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
    // The conditions were checked against this version; the copy must be of the same one.
    let etag = source.etag.clone();
    let rec = tokio::task::spawn_blocking(move || {
        store.copy_object((&sb, &sk), (&db, &dst_key), meta, Some(etag))
    })
    .await
    .map_err(join_err)?
    .map_err(s3_err)?;
    let output = CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(ETag::Strong(rec.etag.clone())),
            last_modified: Some(timestamp(rec.last_modified_ms)),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(with_blake3(S3Response::new(output), &rec.content_hash))
}
