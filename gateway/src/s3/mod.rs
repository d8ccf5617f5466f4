//! S3 semantics over the store: one file per operation family, errors mapped in `error`.

mod access;
pub mod blob;
mod bucket;
mod checksum;
mod copy;
pub(crate) mod cors;
mod decide;
mod delete;
pub(crate) mod error;
pub(crate) mod form;
#[cfg(fuzzing)]
pub mod fuzzing;
mod get;
pub(crate) mod limits;
mod list;
mod multipart;
mod origin;
mod origin_write;
pub(crate) mod post;
mod put;
pub(crate) mod signature;
mod tagging;
mod upload_home;
mod vhost;
mod write_back;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};
use store::{ObjectMeta, Store, StoreError};

pub(crate) use access::BucketOwnership;
pub(crate) use multipart::expire_incomplete as expire_incomplete_uploads;
pub(crate) use upload_home::{UploadAsk, answer_upload};
pub(crate) use vhost::DomainHost;
pub(crate) use write_back::start_flushers;

use crate::metrics::Metrics;

/// Response header carrying an object's whole-content BLAKE3 (hex, as `b3sum` prints it).
pub const BLAKE3_HEADER: &str = "x-s3swarm-blake3";

/// The `S3` implementation of one node.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) store: Arc<Store>,
    /// The swarm this node is part of, if any: where absent chunks are fetched from.
    pub(crate) swarm: Option<swarm::Swarm>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) region: String,
    pub(crate) max_object_size: u64,
    /// Buckets that front an upstream bucket (see `crate::origin`).
    pub(crate) origins: Arc<crate::origin::Origins>,
}

impl Gateway {
    pub fn new(
        store: Arc<Store>,
        swarm: Option<swarm::Swarm>,
        metrics: Arc<Metrics>,
        region: String,
        max_object_size: u64,
    ) -> Self {
        Self {
            store,
            swarm,
            metrics,
            region,
            max_object_size,
            origins: Arc::default(),
        }
    }

    /// Answers for these origin buckets.
    pub fn with_origins(mut self, origins: Arc<crate::origin::Origins>) -> Self {
        self.origins = origins;
        self
    }

    fn origin(&self, bucket: &str) -> Option<Arc<crate::origin::Origin>> {
        self.origins.get(bucket).cloned()
    }

    /// The origin `bucket` fronts, unless it writes back (its writes are kept in the
    /// namespace, where the ordinary handlers keep them).
    fn origin_through(&self, bucket: &str) -> Option<Arc<crate::origin::Origin>> {
        self.origin(bucket)
            .filter(|o| o.spec.write != crate::origin::WriteMode::Back)
    }

    fn origin_back(&self, bucket: &str) -> Option<Arc<crate::origin::Origin>> {
        self.origin(bucket)
            .filter(|o| o.spec.write == crate::origin::WriteMode::Back)
    }
}

pub(crate) fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// The precondition of a conditional write (`If-None-Match: *`, `If-Match: <etag>`).
pub(crate) fn write_precondition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Option<store::WritePrecondition>> {
    use store::WritePrecondition as W;
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(s3s::s3_error!(
            InvalidRequest,
            "If-Match and If-None-Match cannot be combined on a write"
        )),
        (None, Some(ETagCondition::Any)) => Ok(Some(W::NotExists)),
        (None, Some(ETagCondition::ETag(_))) => Err(s3s::s3_error!(
            NotImplemented,
            "If-None-Match on a write supports only '*'"
        )),
        (Some(ETagCondition::ETag(t)), None) => Ok(Some(W::ETagIs(t.value().to_owned()))),
        (Some(ETagCondition::Any), None) => Err(s3s::s3_error!(
            NotImplemented,
            "If-Match: * on a write is not supported"
        )),
        (None, None) => Ok(None),
    }
}

/// Refuses a decision that needs the whole namespace while this node has not caught up with
/// the swarm (see `swarm::readiness`).
pub(crate) fn require_caught_up(g: &Gateway) -> S3Result<()> {
    match g.swarm.as_ref().map(swarm::Swarm::readiness) {
        Some(Err(why)) => Err(error::not_ready(why)),
        _ => Ok(()),
    }
}

/// Checks a conditional write against the key as it is now, before any body is read, so a
/// write that cannot succeed fails at once (412, or 404 for `If-Match` on no object).
pub(crate) async fn precheck_write(
    g: &Gateway,
    bucket: &str,
    key: &str,
    precondition: Option<&store::WritePrecondition>,
) -> S3Result<()> {
    let Some(p) = precondition.cloned() else {
        return Ok(());
    };
    require_caught_up(g)?;
    if !decide::early_check_is_final(g, &p) {
        return Ok(());
    }
    let store = g.store.clone();
    let (b, k) = (bucket.to_owned(), key.to_owned());
    tokio::task::spawn_blocking(move || {
        let current = match store.object(&b, &k) {
            Ok(r) => Some(r),
            Err(StoreError::NoSuchKey(_) | StoreError::DeleteMarker { .. }) => None,
            Err(e) => return Err(e),
        };
        p.check(&k, current.as_ref())
    })
    .await
    .map_err(error::join_err)?
    .map_err(error::s3_err)
}

/// The error of a write's commit. A conditional write that passed [`precheck_write`] and
/// failed at commit lost a race with a concurrent write: S3 answers 409 for that.
pub(crate) fn commit_err(e: StoreError, conditional: bool) -> s3s::S3Error {
    match e {
        StoreError::PreconditionFailed(m) if conditional => error::s3_err(StoreError::Conflict(m)),
        StoreError::NoSuchKey(_) if conditional => error::s3_err(StoreError::Conflict(
            "the object was deleted meanwhile".into(),
        )),
        e => error::s3_err(e),
    }
}

pub(crate) fn with_blake3<T>(mut resp: S3Response<T>, hex: &str) -> S3Response<T> {
    if let Ok(v) = http::HeaderValue::from_str(hex) {
        resp.headers.insert(BLAKE3_HEADER, v);
    }
    resp
}

/// The metadata a client sets (standard headers and `x-amz-meta-*`), from any input with the
/// standard field names (PutObject, CreateMultipartUpload, CopyObject), checked against S3's
/// 2 KiB limit on user metadata.
macro_rules! object_meta_of {
    ($input:expr) => {{
        let meta = $crate::s3::object_meta(
            $input.content_type.clone(),
            $input.content_encoding.clone(),
            $input.content_disposition.clone(),
            $input.content_language.clone(),
            $input.cache_control.clone(),
            $input.expires.clone(),
            $input.metadata.clone(),
        );
        $crate::s3::put::check_metadata_size(&meta).map(|()| meta)
    }};
}
pub(crate) use object_meta_of;

#[allow(clippy::too_many_arguments)]
pub(crate) fn object_meta(
    content_type: Option<ContentType>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
) -> ObjectMeta {
    let expires = expires.and_then(|t| {
        let mut out = Vec::new();
        t.format(TimestampFormat::HttpDate, &mut out).ok()?;
        String::from_utf8(out).ok()
    });
    ObjectMeta {
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        expires,
        user: metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
    }
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        bucket::create_bucket(self, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        bucket::head_bucket(self, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        bucket::delete_bucket(self, req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        bucket::list_buckets(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        bucket::get_bucket_location(self, req).await
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        cors::put_bucket_cors(self, req).await
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        cors::get_bucket_cors(self, req).await
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        cors::delete_bucket_cors(self, req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        if let Some(o) = self.origin_back(&req.input.bucket) {
            return write_back::put_object(self, o, req).await;
        }
        if let Some(o) = self.origin(&req.input.bucket) {
            return origin_write::put_object(self, o, req).await;
        }
        put::put_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        if let Some(o) = self.origin_back(&req.input.bucket) {
            return write_back::delete_objects(self, o, req).await;
        }
        if let Some(o) = self.origin(&req.input.bucket) {
            return origin_write::delete_objects(o, req).await;
        }
        delete::delete_objects(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        list::list_object_versions(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        bucket::get_bucket_versioning(self, req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        bucket::put_bucket_versioning(self, req).await
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        tagging::put(self, req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        tagging::get(self, req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        tagging::delete(self, req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        get::get_object_attributes(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        copy::upload_part_copy(self, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        copy::copy_object(self, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        if let Some(o) = self.origin_back(&req.input.bucket) {
            return write_back::get_object(self, o, req).await;
        }
        if let Some(o) = self.origin(&req.input.bucket) {
            return origin::get_object(self, o, req).await;
        }
        get::get_object(self, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        if let Some(o) = self.origin_back(&req.input.bucket) {
            return write_back::head_object(self, o, req).await;
        }
        if let Some(o) = self.origin(&req.input.bucket) {
            return origin::head_object(o, req).await;
        }
        get::head_object(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        if let Some(o) = self.origin_back(&req.input.bucket) {
            return write_back::delete_object(self, o, req).await;
        }
        if let Some(o) = self.origin(&req.input.bucket) {
            return origin_write::delete_object(o, req).await;
        }
        delete::delete_object(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        if let Some(o) = self.origin(&req.input.bucket) {
            return origin::list_objects_v2(self, o, req).await;
        }
        list::list_objects_v2(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        if let Some(o) = self.origin(&req.input.bucket) {
            return origin::list_objects(self, o, req).await;
        }
        list::list_objects(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        if let Some(o) = self.origin_back(&req.input.bucket) {
            return write_back::create_upload(self, o, req).await;
        }
        if let Some(o) = self.origin(&req.input.bucket) {
            return origin_write::create_upload(o, req).await;
        }
        multipart::create(self, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        if let Some(o) = self.origin_through(&req.input.bucket) {
            return origin_write::upload_part(self, o, req).await;
        }
        multipart::upload_part(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        if let Some(o) = self.origin_back(&req.input.bucket) {
            return write_back::complete_upload(self, o, req).await;
        }
        if let Some(o) = self.origin(&req.input.bucket) {
            return origin_write::complete_upload(o, req).await;
        }
        multipart::complete(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        if let Some(o) = self.origin_through(&req.input.bucket) {
            return origin_write::abort_upload(o, req).await;
        }
        multipart::abort(self, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_uploads(self, req).await
    }
}
