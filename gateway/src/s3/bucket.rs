//! Bucket operations.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::{BucketName, StoreError, Versioning};

use super::error::s3_err;
use super::{Gateway, timestamp};

fn owner_of(req_creds: Option<&s3s::auth::Credentials>) -> S3Result<String> {
    req_creds.map(|c| c.access_key.clone()).ok_or_else(|| {
        s3_error!(
            AccessDenied,
            "Anonymous access is not allowed; sign the request."
        )
    })
}

pub(crate) async fn create_bucket(
    g: &Gateway,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let owner = owner_of(req.credentials.as_ref())?;
    let name = BucketName::new(&req.input.bucket).map_err(s3_err)?;
    if let Some(o) = g.origins.get(name.as_str()) {
        return Err(if o.owner == owner {
            s3_error!(
                BucketAlreadyOwnedByYou,
                "This bucket fronts an origin and exists on every node; you own it."
            )
        } else {
            s3_error!(
                BucketAlreadyExists,
                "The requested bucket name is not available."
            )
        });
    }
    super::require_caught_up(g)?;
    let region = req
        .input
        .create_bucket_configuration
        .and_then(|c| c.location_constraint)
        .map(|l| l.as_str().to_owned())
        .filter(|l| !l.is_empty());
    let (id, ticket) = super::decide::bucket_name(g, &name, &owner).await?;
    let store = g.store.clone();
    let (n, o) = (name.clone(), owner.clone());
    let created = tokio::task::spawn_blocking(move || store.create_bucket_as(&n, &o, region, id))
        .await
        .map_err(super::error::join_err)?;
    match created {
        Ok(()) => {
            if let Some(t) = ticket {
                t.carried_out();
            }
        }
        Err(StoreError::BucketExists(b)) => {
            return match g.store.bucket(&b) {
                Ok(rec) if rec.owner == owner => Err(s3_error!(
                    BucketAlreadyOwnedByYou,
                    "Your previous request to create the named bucket succeeded and you already own it."
                )),
                _ => Err(s3_error!(
                    BucketAlreadyExists,
                    "The requested bucket name is not available."
                )),
            };
        }
        Err(e) => return Err(s3_err(e)),
    }
    let output = CreateBucketOutput {
        location: Some(format!("/{name}")),
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn head_bucket(
    g: &Gateway,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    if g.origins.get(&req.input.bucket).is_some() {
        return Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(g.region.clone()),
            ..Default::default()
        }));
    }
    let rec = g.store.bucket(&req.input.bucket).map_err(s3_err)?;
    let output = HeadBucketOutput {
        bucket_region: Some(rec.region.unwrap_or_else(|| g.region.clone())),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn delete_bucket(
    g: &Gateway,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let store = g.store.clone();
    let bucket = req.input.bucket;
    tokio::task::spawn_blocking(move || store.delete_bucket(&bucket))
        .await
        .map_err(super::error::join_err)?
        .map_err(s3_err)?;
    Ok(S3Response::new(DeleteBucketOutput::default()))
}

pub(crate) async fn list_buckets(
    g: &Gateway,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let owner = owner_of(req.credentials.as_ref())?;
    let prefix = req.input.prefix.unwrap_or_default();
    let mut buckets: Vec<Bucket> = g
        .store
        .buckets()
        .map_err(s3_err)?
        .into_iter()
        // A write-back origin's pending writes live in a namespace bucket of its name: it is
        // listed once, as the origin bucket.
        .filter(|(name, rec)| {
            rec.owner == owner
                && name.as_str().starts_with(&prefix)
                && g.origins.get(name.as_str()).is_none()
        })
        .map(|(name, rec)| Bucket {
            name: Some(name.to_string()),
            creation_date: Some(timestamp(rec.created_ms)),
            bucket_region: Some(rec.region.unwrap_or_else(|| g.region.clone())),
        })
        .collect();
    buckets.extend(
        g.origins
            .iter()
            .filter(|o| o.owner == owner && o.spec.bucket.starts_with(&prefix))
            .map(|o| Bucket {
                name: Some(o.spec.bucket.clone()),
                creation_date: Some(timestamp(o.since_ms)),
                bucket_region: Some(g.region.clone()),
            }),
    );
    buckets.sort_by(|a, b| a.name.cmp(&b.name));
    let output = ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(Owner {
            display_name: Some(owner.clone()),
            id: Some(owner),
        }),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn get_bucket_location(
    g: &Gateway,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    let region = match g.origins.get(&req.input.bucket) {
        Some(_) => g.region.clone(),
        None => {
            let rec = g.store.bucket(&req.input.bucket).map_err(s3_err)?;
            rec.region.unwrap_or_else(|| g.region.clone())
        }
    };
    // S3 reports us-east-1 as an empty LocationConstraint.
    let location_constraint =
        (region != "us-east-1").then(|| BucketLocationConstraint::from(region));
    Ok(S3Response::new(GetBucketLocationOutput {
        location_constraint,
    }))
}

/// Versioning has never been enabled on any bucket (it is not implemented yet), which S3
/// reports as a configuration with no status. PutBucketVersioning answers 501.
pub(crate) async fn get_bucket_versioning(
    g: &Gateway,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let rec = g.store.bucket(&req.input.bucket).map_err(s3_err)?;
    // A bucket that never had versioning reports no status at all, as S3 does.
    let status = rec.versioning.map(|v| {
        BucketVersioningStatus::from_static(match v {
            Versioning::Enabled => BucketVersioningStatus::ENABLED,
            Versioning::Suspended => BucketVersioningStatus::SUSPENDED,
        })
    });
    Ok(S3Response::new(GetBucketVersioningOutput {
        status,
        ..Default::default()
    }))
}

pub(crate) async fn put_bucket_versioning(
    g: &Gateway,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let input = req.input;
    let conf = input.versioning_configuration;
    if conf
        .mfa_delete
        .as_ref()
        .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
    {
        return Err(s3_error!(NotImplemented, "MFA Delete is not supported"));
    }
    let state = match conf.status.as_ref().map(BucketVersioningStatus::as_str) {
        Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
        other => {
            return Err(s3_error!(
                MalformedXML,
                "The versioning Status must be Enabled or Suspended, not {other:?}"
            ));
        }
    };
    let store = g.store.clone();
    tokio::task::spawn_blocking(move || store.set_versioning(&input.bucket, state))
        .await
        .map_err(super::error::join_err)?
        .map_err(s3_err)?;
    Ok(S3Response::new(PutBucketVersioningOutput::default()))
}
