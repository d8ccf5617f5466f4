//! Authorization: a bucket belongs to the access key that created it.
//!
//! s3s has already verified the signature when `check` runs; here we only decide whether
//! that identity may touch the bucket named in the path. Missing buckets pass through so the
//! operation itself answers NoSuchBucket (or creates it).

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};
use store::{Store, StoreError};

use super::error::s3_err;
use crate::metrics::OperationName;

pub(crate) struct BucketOwnership {
    pub(crate) store: Arc<Store>,
    pub(crate) origins: Arc<crate::origin::Origins>,
}

/// What may be asked of a bucket that fronts an origin: reading, and with `write = "through"`
/// the writes passed to the upstream. Everything else is refused before it touches the store.
const ORIGIN_READS: [&str; 7] = [
    "GetObject",
    "HeadObject",
    "ListObjects",
    "ListObjectsV2",
    "HeadBucket",
    "GetBucketLocation",
    "CreateBucket",
];
const ORIGIN_WRITES: [&str; 7] = [
    "PutObject",
    "DeleteObject",
    "DeleteObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
];

#[async_trait::async_trait]
impl S3Access for BucketOwnership {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name().to_owned();
        OperationName::set(cx.extensions_mut(), &op);
        let Some(creds) = cx.credentials() else {
            return Err(s3_error!(
                AccessDenied,
                "Anonymous access is not allowed; sign the request."
            ));
        };
        let bucket = match cx.s3_path() {
            S3Path::Root => return Ok(()),
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => bucket,
        };
        // The blob route is addressed by content hash, not by bucket.
        if bucket.as_ref() == super::blob::BLOB_PREFIX {
            return Ok(());
        }
        if let Some(o) = self.origins.get(bucket) {
            return if op == "CreateBucket" {
                Ok(()) // answers BucketAlreadyOwnedByYou or BucketAlreadyExists
            } else if o.owner != creds.access_key {
                Err(s3_error!(AccessDenied, "Access Denied"))
            } else if ORIGIN_WRITES.contains(&op.as_str())
                && o.spec.write == crate::origin::WriteMode::None
            {
                Err(s3_error!(
                    AccessDenied,
                    "Bucket {} fronts the origin {} read-only (write = \"none\")",
                    o.spec.bucket,
                    o.spec.upstream_url()
                ))
            } else if !(ORIGIN_READS.contains(&op.as_str())
                || ORIGIN_WRITES.contains(&op.as_str())
                // Write-back keeps uploads in the namespace, where their parts can be listed.
                || (op == "ListParts" && o.spec.write == crate::origin::WriteMode::Back))
            {
                Err(s3_error!(
                    NotImplemented,
                    "{op} is not supported on bucket {}, which fronts the origin {}",
                    o.spec.bucket,
                    o.spec.upstream_url()
                ))
            } else {
                Ok(())
            };
        }
        match self.store.bucket(bucket) {
            Ok(rec) if may_use(&rec, &creds.access_key) => Ok(()),
            // Creating a taken name must answer BucketAlreadyExists, not AccessDenied.
            Ok(_) if cx.s3_op().name() == "CreateBucket" => Ok(()),
            Ok(_) => Err(s3_error!(AccessDenied, "Access Denied")),
            Err(StoreError::NoSuchBucket(_)) => Ok(()),
            Err(e) => Err(s3_err(e)),
        }
    }
}

/// Today's one rule: a bucket and everything in it is its owner's alone.
fn may_use(rec: &store::BucketRecord, identity: &str) -> bool {
    rec.owner == identity
}

/// Whether `identity` may read from `bucket` (false when it does not exist).
pub(crate) fn may_access(store: &Store, bucket: &str, identity: &str) -> store::Result<bool> {
    match store.bucket(bucket) {
        Ok(rec) => Ok(may_use(&rec, identity)),
        Err(StoreError::NoSuchBucket(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
