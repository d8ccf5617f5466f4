//! PUT, DELETE and multipart uploads on a bucket that fronts an origin with
//! `write = "through"`: passed to the upstream as they arrive (bodies streamed, never held),
//! answered with the upstream's ETags and errors.

use std::sync::Arc;

use aws_smithy_types::byte_stream::ByteStream;
use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::error::origin_err;
use super::{Gateway, object_meta_of};
use crate::origin::{Origin, OriginError, WriteMeta};

/// A client's request body as the SDK's, streamed through.
pub(super) fn upload(body: Option<StreamingBlob>) -> ByteStream {
    match body {
        Some(blob) => ByteStream::from_body_1_x(http_body_util::StreamBody::new(
            blob.map(|r| r.map(http_body::Frame::data)),
        )),
        None => ByteStream::from_static(b""),
    }
}

fn length(n: Option<i64>, max: u64) -> S3Result<u64> {
    let n = n.and_then(|n| u64::try_from(n).ok()).ok_or_else(|| {
        s3_error!(
            MissingContentLength,
            "A write to a bucket that fronts an origin must give its Content-Length"
        )
    })?;
    if n > max {
        return Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed size of {max} bytes"
        ));
    }
    Ok(n)
}

fn condition(c: Option<&ETagCondition>) -> Option<String> {
    c.map(|c| match c {
        ETagCondition::Any => "*".to_owned(),
        ETagCondition::ETag(t) => format!("\"{}\"", t.value()),
    })
}

/// A write's precondition that failed at the origin is the client's 412.
fn write_err(e: OriginError) -> s3s::S3Error {
    match e {
        OriginError::Changed => s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ),
        e => origin_err(e),
    }
}

pub(crate) async fn put_object(
    g: &Gateway,
    origin: Arc<Origin>,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let input = req.input;
    store::ObjectKey::new(&input.key).map_err(super::error::s3_err)?;
    let len = length(input.content_length, g.max_object_size)?;
    let w = WriteMeta {
        meta: object_meta_of!(input)?,
        content_md5: input.content_md5.clone(),
        if_none_match: condition(input.if_none_match.as_ref()),
        if_match: condition(input.if_match.as_ref()),
    };
    let etag = origin
        .put(&input.key, upload(input.body), len, w)
        .await
        .map_err(write_err)?;
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(ETag::Strong(etag)),
        ..Default::default()
    }))
}

pub(crate) async fn delete_object(
    origin: Arc<Origin>,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    if input.version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(s3_error!(
            InvalidArgument,
            "This bucket fronts an origin; versions cannot be deleted through it"
        ));
    }
    origin.delete(&input.key).await.map_err(write_err)?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

/// A batch delete passed to the upstream key by key (a few at once), each answered as the
/// upstream answered it.
pub(crate) async fn delete_objects(
    origin: Arc<Origin>,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let objects = req.input.delete.objects;
    if objects.len() > 1000 {
        return Err(s3_error!(
            MalformedXML,
            "A DeleteObjects request may name at most 1000 keys"
        ));
    }
    let quiet = req.input.delete.quiet.unwrap_or(false);
    let results: Vec<(ObjectIdentifier, Result<(), s3s::S3Error>)> = futures::stream::iter(objects)
        .map(|obj| {
            let origin = origin.clone();
            async move {
                let r = if obj.version_id.as_deref().is_some_and(|v| v != "null") {
                    Err(s3_error!(
                        InvalidArgument,
                        "This bucket fronts an origin; versions cannot be deleted through it"
                    ))
                } else {
                    origin.delete(&obj.key).await.map_err(write_err)
                };
                (obj, r)
            }
        })
        .buffered(8)
        .collect()
        .await;
    let (mut deleted, mut errors) = (Vec::new(), Vec::new());
    for (obj, r) in results {
        match r {
            Ok(()) if !quiet => deleted.push(DeletedObject {
                key: Some(obj.key),
                version_id: obj.version_id,
                ..Default::default()
            }),
            Ok(()) => {}
            Err(e) => errors.push(Error {
                key: Some(obj.key),
                version_id: obj.version_id,
                code: Some(e.code().as_str().to_owned()),
                message: e.message().map(str::to_owned),
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}

pub(crate) async fn create_upload(
    origin: Arc<Origin>,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    store::ObjectKey::new(&input.key).map_err(super::error::s3_err)?;
    let meta = object_meta_of!(input)?;
    let id = origin
        .create_upload(&input.key, meta)
        .await
        .map_err(write_err)?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(id),
        ..Default::default()
    }))
}

pub(crate) async fn upload_part(
    g: &Gateway,
    origin: Arc<Origin>,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let input = req.input;
    super::multipart::part_number(input.part_number)?;
    let len = length(input.content_length, g.max_object_size)?;
    let etag = origin
        .upload_part(
            &input.key,
            &input.upload_id,
            input.part_number,
            upload(input.body),
            len,
            input.content_md5.clone(),
        )
        .await
        .map_err(write_err)?;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(etag)),
        ..Default::default()
    }))
}

pub(crate) async fn complete_upload(
    origin: Arc<Origin>,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    let parts = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let n = p
                .part_number
                .ok_or_else(|| s3_error!(InvalidPart, "A part has no part number"))?;
            let etag = p
                .e_tag
                .map(|e| e.value().to_owned())
                .ok_or_else(|| s3_error!(InvalidPart, "Part {n} has no ETag"))?;
            Ok((n, etag))
        })
        .collect::<S3Result<Vec<_>>>()?;
    if parts.is_empty() {
        return Err(s3_error!(
            MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema"
        ));
    }
    let etag = origin
        .complete_upload(&input.key, &input.upload_id, parts)
        .await
        .map_err(write_err)?;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        e_tag: Some(ETag::Strong(etag)),
        ..Default::default()
    }))
}

pub(crate) async fn abort_upload(
    origin: Arc<Origin>,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    origin
        .abort_upload(&input.key, &input.upload_id)
        .await
        .map_err(write_err)?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}
