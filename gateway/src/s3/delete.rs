//! Object deletion.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::Gateway;
use super::error::{join_err, s3_err};

pub(crate) async fn delete_object(
    g: &Gateway,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let store = g.store.clone();
    let (bucket, key) = (req.input.bucket, req.input.key);
    // S3 answers 204 whether or not the key existed.
    tokio::task::spawn_blocking(move || store.delete_object(&bucket, &key))
        .await
        .map_err(join_err)?
        .map_err(s3_err)?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
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
    let mut errors = Vec::new();
    for o in &objects {
        if o.version_id.as_deref().is_some_and(|v| v != "null") {
            errors.push(Error {
                key: Some(o.key.clone()),
                version_id: o.version_id.clone(),
                code: Some("NotImplemented".into()),
                message: Some("Deleting a specific version is not supported yet".into()),
            });
            continue;
        }
        items.push((
            o.key.clone(),
            o.e_tag.as_ref().map(|e| e.value().to_owned()),
        ));
    }
    let keys: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
    let store = g.store.clone();
    let bucket = input.bucket;
    let results = tokio::task::spawn_blocking(move || store.delete_objects(&bucket, items))
        .await
        .map_err(join_err)?
        .map_err(s3_err)?;
    let mut deleted = Vec::new();
    for (key, result) in keys.into_iter().zip(results) {
        match result {
            Ok(()) if !quiet => deleted.push(DeletedObject {
                key: Some(key),
                ..Default::default()
            }),
            Ok(()) => {}
            Err(e) => {
                let s3e = s3_err(e);
                errors.push(Error {
                    key: Some(key),
                    code: Some(s3e.code().as_str().to_owned()),
                    message: s3e.message().map(str::to_owned),
                    version_id: None,
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
