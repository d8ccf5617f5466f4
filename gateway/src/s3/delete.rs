//! Object deletion: plain, by version, and in bulk.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};
use store::Deleted;

use super::Gateway;
use super::error::{join_err, s3_err, version_arg};

fn version_string(d: &Deleted) -> Option<String> {
    d.version_id.map(|v| v.to_string())
}

pub(crate) async fn delete_object(
    g: &Gateway,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let version = version_arg(req.input.version_id.as_deref())?;
    let store = g.store.clone();
    let (bucket, key) = (req.input.bucket, req.input.key);
    let if_match = req.input.if_match.as_ref().map(|e| match e {
        ETagCondition::ETag(t) => t.value().to_owned(),
        ETagCondition::Any => "*".to_owned(),
    });
    // S3 answers 204 whether or not the key (or version) existed; with If-Match the object
    // must exist and carry that ETag, checked in the same commit as the delete.
    let deleted = tokio::task::spawn_blocking(move || match if_match {
        None => store.delete_object(&bucket, &key, version),
        Some(etag) => store
            .delete_objects(&bucket, vec![(key, version, Some(etag))])?
            .pop()
            .unwrap_or(Ok(Deleted::default())),
    })
    .await
    .map_err(join_err)?
    .map_err(s3_err)?;
    Ok(S3Response::new(DeleteObjectOutput {
        delete_marker: deleted.delete_marker.then_some(true),
        version_id: version_string(&deleted),
        ..Default::default()
    }))
}

/// S3 accepts at most this many keys per DeleteObjects request.
const MAX_KEYS: usize = 1000;

pub(crate) async fn delete_objects(
    g: &Gateway,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    let objects = input.delete.objects;
    if objects.len() > MAX_KEYS {
        return Err(s3s::s3_error!(
            MalformedXML,
            "A DeleteObjects request may name at most {MAX_KEYS} keys"
        ));
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let mut items = Vec::with_capacity(objects.len());
    let mut asked = Vec::with_capacity(objects.len());
    let mut errors = Vec::new();
    for o in &objects {
        match version_arg(o.version_id.as_deref()) {
            Ok(v) => {
                items.push((
                    o.key.clone(),
                    v,
                    o.e_tag.as_ref().map(|e| e.value().to_owned()),
                ));
                asked.push((o.key.clone(), o.version_id.clone()));
            }
            Err(e) => errors.push(Error {
                key: Some(o.key.clone()),
                version_id: o.version_id.clone(),
                code: Some(e.code().as_str().to_owned()),
                message: e.message().map(str::to_owned),
            }),
        }
    }
    let store = g.store.clone();
    let bucket = input.bucket;
    let results = tokio::task::spawn_blocking(move || store.delete_objects(&bucket, items))
        .await
        .map_err(join_err)?
        .map_err(s3_err)?;
    let mut deleted = Vec::new();
    for ((key, version_id), result) in asked.into_iter().zip(results) {
        match result {
            Ok(d) if !quiet => deleted.push(DeletedObject {
                key: Some(key),
                // S3 echoes the version asked for and names the marker created or removed.
                version_id: version_id.clone(),
                delete_marker: d.delete_marker.then_some(true),
                delete_marker_version_id: if d.delete_marker {
                    version_string(&d)
                } else {
                    None
                },
            }),
            Ok(_) => {}
            Err(e) => {
                let s3e = s3_err(e);
                errors.push(Error {
                    key: Some(key),
                    code: Some(s3e.code().as_str().to_owned()),
                    message: s3e.message().map(str::to_owned),
                    version_id,
                });
            }
        }
    }
    let output = DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}
