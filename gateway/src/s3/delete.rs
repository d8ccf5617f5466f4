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
