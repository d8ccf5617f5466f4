//! `GET /_blob/<blake3>`: an object's bytes by whole-content hash, for a caller who may read
//! an object with that content; and the admin routes (see [`crate::admin`]), on the same
//! signed path. Content held only by objects the caller may not read answers exactly as
//! content stored nowhere (404 NoSuchKey): the route must not tell who stores which file.
//!
//! Served as an s3s custom route so the request is SigV4-checked (headers or presigned URL)
//! exactly like an S3 call. `_blob` cannot be a bucket name, so it shadows nothing.

use std::sync::Arc;

use http::{HeaderValue, Method, StatusCode, Uri};
use hyper::HeaderMap;
use hyper::http::Extensions;
use s3s::route::S3Route;
use s3s::validation::{AwsNameValidation, NameValidation};
use s3s::{Body, S3Request, S3Response, S3Result, s3_error};
use store::{ByteRange, ContentHash, Store};

use super::error::{join_err, s3_err};
use super::get::stream_range;
use crate::metrics::{Metrics, OperationName};

/// The path segment that introduces a blob hash.
pub const BLOB_PREFIX: &str = "_blob";

pub(crate) struct BlobRoute {
    pub(crate) store: Arc<Store>,
    pub(crate) swarm: Option<swarm::Swarm>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) origins: Arc<crate::origin::Origins>,
}

fn hash_of(uri: &Uri) -> Option<&str> {
    uri.path()
        .strip_prefix("/_blob/")
        .filter(|h| !h.contains('/'))
}

#[async_trait::async_trait]
impl S3Route for BlobRoute {
    fn is_match(&self, method: &Method, uri: &Uri, _: &HeaderMap, ext: &mut Extensions) -> bool {
        if method == Method::POST && uri.path() == crate::admin::PREFETCH_PATH {
            OperationName::set(ext, "Prefetch");
            return true;
        }
        if method != Method::GET && method != Method::HEAD {
            return false;
        }
        let name = if uri.path() == crate::admin::CLUSTER_PATH {
            "ClusterStatus"
        } else if hash_of(uri).is_some() {
            "GetBlob"
        } else {
            return false;
        };
        OperationName::set(ext, name);
        true
    }

    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        if req.uri.path() == crate::admin::PREFETCH_PATH {
            let owner = req
                .credentials
                .as_ref()
                .map(|c| c.access_key.as_str())
                .unwrap_or_default();
            return crate::admin::prefetch(
                &self.store,
                self.swarm.as_ref(),
                &self.origins,
                owner,
                req.uri.query(),
            )
            .await;
        }
        if req.uri.path() == crate::admin::CLUSTER_PATH {
            return crate::admin::cluster_status(self.swarm.as_ref()).await;
        }
        let hex = hash_of(&req.uri).unwrap_or_default();
        let hash: ContentHash = hex.parse().map_err(s3_err)?;
        let store = self.store.clone();
        let reader = req
            .credentials
            .as_ref()
            .map(|c| c.access_key.clone())
            .unwrap_or_default();
        let manifest = tokio::task::spawn_blocking(move || {
            for holder in store.blob_holders(&hash)? {
                if super::access::may_access(&store, &holder.bucket, &reader)? {
                    return Ok(holder.manifest);
                }
            }
            Err(store::StoreError::NoSuchBlob(hash.to_hex()))
        })
        .await
        .map_err(join_err)?
        .map_err(s3_err)?;
        let size = manifest.size();
        let mut resp = if req.method == Method::HEAD {
            S3Response::new(Body::empty())
        } else {
            let stream = stream_range(
                self.store.clone(),
                self.swarm.clone(),
                manifest,
                ByteRange::full(size),
                Some(self.metrics.clone()),
            );
            S3Response::new(Body::from(s3s::dto::StreamingBlob::new(stream)))
        };
        resp.status = Some(StatusCode::OK);
        resp.headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(size));
        resp.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        resp.headers.insert(
            super::BLAKE3_HEADER,
            HeaderValue::from_str(&hash.to_hex()).map_err(|_| s3_error!(InternalError))?,
        );
        Ok(resp)
    }
}

/// AWS bucket-name validation, plus `_blob` so blob paths reach the route above.
pub(crate) struct Names;

impl NameValidation for Names {
    fn validate_bucket_name(&self, name: &str) -> bool {
        name == BLOB_PREFIX
            || name == crate::admin::ADMIN_PREFIX
            || AwsNameValidation::new().validate_bucket_name(name)
    }
}
