//! Origin buckets with `write = "back"` (see `crate::origin::write_back`): writes go to the
//! namespace bucket of the same name and are acknowledged there; reads answer from a pending
//! write before the upstream; listings lay pending keys over the upstream's; and each node
//! runs a flusher that uploads the pending keys it is chosen for.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::{BucketName, ByteRange, ListCursor, StoreError, Version, Versioning};

use super::error::{join_err, origin_err, s3_err};
use super::get::stream_range;
use super::{Gateway, delete, get, multipart, put};
use crate::origin::write_back::{self, After, PendingKey, PendingVersion, Upstream};
use crate::origin::{ListQuery, Listed, ListedPage, Origin, OriginError, WriteMeta};

/// Objects up to this size are uploaded with one PUT, larger ones in parts.
const ONE_PUT_MAX: u64 = 64 << 20;
/// The smallest part of a multipart upload to the origin (S3 allows 10,000 parts).
const PART_SIZE: u64 = 16 << 20;
/// Keys one node uploads at once, per origin.
const UPLOADS_AT_ONCE: usize = 4;
/// How often a flusher looks without being woken.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// The longest wait after failed uploads (the first is 1 s, doubling).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a write-back answer waits for its chunks' copies before answering anyway (the
/// write is durable here and pending; its copies follow).
const COPIES_WITHIN: Duration = Duration::from_secs(10);
/// Pending keys laid over one listing page at most (the backlog is normally far smaller).
const LISTED_PENDING_MAX: usize = 10_000;

/// Whether writes can be kept for `o` on this node: its namespace bucket is here, owned by
/// the origin's owner and versioned (set up now if the flusher has not yet).
async fn ready(g: &Gateway, o: &Origin) -> S3Result<()> {
    if check_ready(g, o).is_err()
        && let Err(e) = set_up(g, o).await
    {
        tracing::debug!(bucket = o.spec.bucket, error = %e, "write-back bucket not set up yet");
    }
    check_ready(g, o)
}

fn check_ready(g: &Gateway, o: &Origin) -> S3Result<()> {
    match g.store.bucket(&o.spec.bucket) {
        Ok(rec) if rec.owner == o.owner && rec.versioning == Some(Versioning::Enabled) => Ok(()),
        Ok(rec) if rec.owner != o.owner => Err(s3_error!(
            ServiceUnavailable,
            "Bucket {} writes back to its origin but its namespace bucket is owned by {}; \
             write-back needs it owned by {}",
            o.spec.bucket,
            rec.owner,
            o.owner
        )),
        Ok(_) | Err(StoreError::NoSuchBucket(_)) => Err(s3_error!(
            ServiceUnavailable,
            "Bucket {} is still being set up for write-back on this node; retry shortly",
            o.spec.bucket
        )),
        Err(e) => Err(s3_err(e)),
    }
}

/// Creates (once for the swarm) the versioned namespace bucket that holds `o`'s pending writes.
async fn set_up(g: &Gateway, o: &Origin) -> Result<(), String> {
    let name = BucketName::new(&o.spec.bucket).map_err(|e| e.to_string())?;
    match g.store.bucket(name.as_str()) {
        Ok(rec) if rec.owner != o.owner => {
            return Err(format!(
                "namespace bucket {name} is owned by {}, not by the origin's owner {}",
                rec.owner, o.owner
            ));
        }
        Ok(rec) => {
            if rec.versioning != Some(Versioning::Enabled) {
                g.store
                    .set_versioning(name.as_str(), Versioning::Enabled)
                    .map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        Err(StoreError::NoSuchBucket(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    // Claimed by another node whose create has not arrived yet: the next attempt finds it.
    let (id, ticket) = super::decide::bucket_name(g, &name, &o.owner)
        .await
        .map_err(|e| {
            e.message()
                .unwrap_or("the bucket name was not granted")
                .to_owned()
        })?;
    let store = g.store.clone();
    let owner = o.owner.clone();
    tokio::task::spawn_blocking(move || {
        store.create_bucket_as(&name, &owner, None, id)?;
        store.set_versioning(name.as_str(), Versioning::Enabled)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if let Some(t) = ticket {
        t.carried_out();
    }
    Ok(())
}

/// What the namespace holds for a key of a write-back bucket.
enum Pending {
    Object,
    Deleted,
    Nothing,
}

async fn pending(g: &Gateway, o: &Origin, key: &str) -> S3Result<Pending> {
    let store = g.store.clone();
    let (b, k) = (o.spec.bucket.clone(), key.to_owned());
    let (found, stamp) = tokio::task::spawn_blocking(move || {
        let found = store.object(&b, &k);
        let stamp = match &found {
            Err(StoreError::NoSuchKey(_)) => store
                .bucket(&b)
                .and_then(|rec| store.key_stamp(rec.id, &k))
                .ok()
                .flatten(),
            _ => None,
        };
        (found, stamp)
    })
    .await
    .map_err(join_err)?;
    match found {
        Ok(_) => Ok(Pending::Object),
        Err(StoreError::DeleteMarker { .. }) => Ok(Pending::Deleted),
        Err(StoreError::NoSuchKey(_)) => {
            // Written back since the upstream's metadata was learned here: ask again.
            if let Some(s) = stamp {
                o.catalog.expire_before(key, s.wall_ms);
            }
            Ok(Pending::Nothing)
        }
        Err(StoreError::NoSuchBucket(_)) => Ok(Pending::Nothing),
        Err(e) => Err(s3_err(e)),
    }
}

fn no_such_key() -> s3s::S3Error {
    s3_error!(NoSuchKey, "The specified key does not exist.")
}

fn names_a_version(v: Option<&str>) -> bool {
    v.is_some_and(|v| v != "null")
}

pub(crate) async fn get_object(
    g: &Gateway,
    o: Arc<Origin>,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    if !names_a_version(req.input.version_id.as_deref()) {
        match pending(g, &o, &req.input.key).await? {
            Pending::Object => {
                let mut r = get::get_object(g, req).await?;
                r.output.version_id = None;
                return Ok(r);
            }
            Pending::Deleted => return Err(no_such_key()),
            Pending::Nothing => {}
        }
    }
    super::origin::get_object(g, o, req).await
}

pub(crate) async fn head_object(
    g: &Gateway,
    o: Arc<Origin>,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    if !names_a_version(req.input.version_id.as_deref()) {
        match pending(g, &o, &req.input.key).await? {
            Pending::Object => {
                let mut r = get::head_object(g, req).await?;
                r.output.version_id = None;
                return Ok(r);
            }
            Pending::Deleted => return Err(no_such_key()),
            Pending::Nothing => {}
        }
    }
    super::origin::head_object(o, req).await
}

/// A conditional write on a key with nothing pending is judged against the upstream's
/// object (the namespace knows nothing of it), then kept without its condition.
async fn upstream_precondition(
    g: &Gateway,
    o: &Origin,
    key: &str,
    if_match: &mut Option<ETagCondition>,
    if_none_match: &mut Option<ETagCondition>,
) -> S3Result<()> {
    if if_match.is_none() && if_none_match.is_none() {
        return Ok(());
    }
    let Pending::Nothing = pending(g, o, key).await? else {
        return Ok(()); // the namespace's own check applies
    };
    let current = match o.object(key).await {
        Ok(obj) => Some(obj.etag),
        Err(OriginError::NotFound) => None,
        Err(e) => return Err(origin_err(e)),
    };
    let holds = match (if_match.as_ref(), if_none_match.as_ref(), &current) {
        (Some(c), None, Some(etag)) => get::etag_matches(c, etag),
        (Some(_), None, None) => return Err(no_such_key()),
        (None, Some(ETagCondition::Any), cur) => cur.is_none(),
        _ => {
            return Err(s3_error!(
                NotImplemented,
                "This conditional write is not supported on a write-back bucket"
            ));
        }
    };
    if !holds {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ));
    }
    *if_match = None;
    *if_none_match = None;
    Ok(())
}

/// After a write is kept: this node forgets the upstream's old object, the flusher wakes,
/// and the answer waits (at most `COPIES_WITHIN`) until the version's chunks have their
/// `--replicas` copies: the write then outlives this node even before it reaches the origin.
async fn kept(g: &Gateway, o: &Origin, key: &str, version: Option<&str>) {
    o.forget_local(key).await;
    o.flush_wake.notify_one();
    let (Some(sw), Some(v)) = (g.swarm.as_ref(), version.and_then(|v| v.parse().ok())) else {
        return;
    };
    let store = g.store.clone();
    let (b, k) = (o.spec.bucket.clone(), key.to_owned());
    let chunks: Vec<store::ChunkHash> = match tokio::task::spawn_blocking(move || {
        store.object_with_manifest(&b, &k, Some(v))
    })
    .await
    {
        Ok(Ok((_, m))) => m.chunks().iter().map(|c| c.hash).collect(),
        // Overwritten or flushed already: nothing of this version left to wait for.
        _ => return,
    };
    let started = std::time::Instant::now();
    loop {
        // Uploaded already (or overwritten): the origin keeps it now.
        let store = g.store.clone();
        let (b, k) = (o.spec.bucket.clone(), key.to_owned());
        if !matches!(
            tokio::task::spawn_blocking(move || store.object_version(&b, &k, Some(v))).await,
            Ok(Ok(_))
        ) {
            return;
        }
        match sw.copies(&chunks).await {
            Ok((have, want)) if have >= want => return,
            Ok((have, want)) if started.elapsed() > COPIES_WITHIN => {
                tracing::warn!(
                    bucket = o.spec.bucket,
                    key,
                    have,
                    want,
                    "write-back acknowledged before its chunks had all their copies"
                );
                return;
            }
            Err(e) if started.elapsed() > COPIES_WITHIN => {
                tracing::warn!(bucket = o.spec.bucket, key, error = %e, "write-back copies not confirmed");
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub(crate) async fn put_object(
    g: &Gateway,
    o: Arc<Origin>,
    mut req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    ready(g, &o).await?;
    let key = req.input.key.clone();
    let i = &mut req.input;
    upstream_precondition(g, &o, &key, &mut i.if_match, &mut i.if_none_match).await?;
    let mut r = put::put_object(g, req).await?;
    kept(g, &o, &key, r.output.version_id.as_deref()).await;
    r.output.version_id = None;
    Ok(r)
}

pub(crate) async fn delete_object(
    g: &Gateway,
    o: Arc<Origin>,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    if names_a_version(req.input.version_id.as_deref()) {
        return Err(s3_error!(
            InvalidArgument,
            "This bucket fronts an origin; versions cannot be deleted through it"
        ));
    }
    ready(g, &o).await?;
    let key = req.input.key.clone();
    delete::delete_object(g, req).await?;
    kept(g, &o, &key, None).await;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

/// A batch delete: delete markers in the namespace, uploaded as deletes like any pending write.
pub(crate) async fn delete_objects(
    g: &Gateway,
    o: Arc<Origin>,
    mut req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    ready(g, &o).await?;
    let (versions, keys): (Vec<_>, Vec<_>) = std::mem::take(&mut req.input.delete.objects)
        .into_iter()
        .partition(|k| names_a_version(k.version_id.as_deref()));
    req.input.delete.objects = keys;
    let mut r = delete::delete_objects(g, req).await?;
    for d in r.output.deleted.iter_mut().flatten() {
        // An origin bucket shows no versions: the markers are how a delete waits its turn.
        d.delete_marker = None;
        d.delete_marker_version_id = None;
        if let Some(k) = &d.key {
            o.forget_local(k).await;
        }
    }
    let errors = r.output.errors.get_or_insert_with(Vec::new);
    errors.extend(versions.into_iter().map(|v| Error {
        key: Some(v.key),
        version_id: v.version_id,
        code: Some("InvalidArgument".into()),
        message: Some("This bucket fronts an origin; versions cannot be deleted through it".into()),
    }));
    o.flush_wake.notify_one();
    Ok(r)
}

pub(crate) async fn create_upload(
    g: &Gateway,
    o: Arc<Origin>,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    ready(g, &o).await?;
    multipart::create(g, req).await
}

pub(crate) async fn complete_upload(
    g: &Gateway,
    o: Arc<Origin>,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    ready(g, &o).await?;
    let key = req.input.key.clone();
    let mut r = multipart::complete(g, req).await?;
    kept(g, &o, &key, r.output.version_id.as_deref()).await;
    r.output.version_id = None;
    Ok(r)
}

// ---- listing ----------------------------------------------------------------------------

/// The latest state of the pending keys under `prefix` after `after`, in key order.
async fn pending_keys(
    g: &Gateway,
    o: &Origin,
    prefix: &str,
    after: Option<&After>,
) -> S3Result<Vec<PendingKey>> {
    let store = g.store.clone();
    let bucket = o.spec.bucket.clone();
    let prefix = prefix.to_owned();
    let mut cursor = after.map(|a| {
        if a.prefix {
            ListCursor::Prefix(a.key.clone())
        } else {
            ListCursor::Key(a.key.clone())
        }
    });
    tokio::task::spawn_blocking(move || {
        let mut out: Vec<PendingKey> = Vec::new();
        let mut after_version = None;
        loop {
            let page = match store.list_versions(
                &bucket,
                &prefix,
                None,
                cursor.as_ref(),
                after_version,
                1000,
            ) {
                Ok(p) => p,
                Err(StoreError::NoSuchBucket(_)) => return Ok(out),
                Err(e) => return Err(e),
            };
            for (key, version, latest) in page.versions {
                if !latest {
                    continue;
                }
                let object = match version {
                    Version::Object(r) => Some(Listed {
                        key: key.clone(),
                        size: r.size,
                        etag: r.etag,
                        last_modified_ms: r.last_modified_ms,
                        storage_class: None,
                    }),
                    Version::DeleteMarker(_) => None,
                };
                out.push(PendingKey { key, object });
            }
            match page.next {
                Some((c, v)) if out.len() < LISTED_PENDING_MAX => {
                    cursor = Some(c);
                    after_version = v;
                }
                _ => return Ok(out),
            }
        }
    })
    .await
    .map_err(join_err)?
    .map_err(s3_err)
}

/// One page of a write-back bucket's listing: the upstream's page from `after` (with its own
/// token when it has one), the pending keys of that page laid over it.
pub(crate) async fn listed(
    g: &Gateway,
    o: &Origin,
    mut q: ListQuery,
    after: Option<After>,
    v1: bool,
) -> S3Result<(ListedPage, Option<After>)> {
    let max = q.max_keys.map_or(1000, |m| m.max(0) as usize);
    let page = o.list(&q, v1).await.map_err(origin_err)?;
    let pending = pending_keys(g, o, &q.prefix, after.as_ref()).await?;
    let inside: Vec<PendingKey> = write_back::window(&pending, after.as_ref(), &page)
        .cloned()
        .collect();
    let delimiter = q.delimiter.take();
    Ok(write_back::overlay(
        page,
        inside,
        after.as_ref(),
        &q.prefix,
        delimiter.as_deref(),
        max,
    ))
}

// ---- the flusher ------------------------------------------------------------------------

/// Starts one flusher per write-back origin of this node.
pub(crate) fn start_flushers(g: &Gateway) {
    for o in g.origins.iter() {
        if o.spec.write == crate::origin::WriteMode::Back {
            tokio::spawn(flush_loop(g.clone(), o.clone()));
        }
    }
}

async fn flush_loop(g: Gateway, o: Arc<Origin>) {
    let mut warned = false;
    loop {
        match set_up(&g, &o).await {
            Ok(()) => break,
            Err(e) => {
                if !warned {
                    tracing::warn!(bucket = o.spec.bucket, error = %e, "write-back bucket not ready; retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    tracing::info!(bucket = o.spec.bucket, "write-back ready");
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match flush_pass(&g, &o).await {
            Ok(()) => {
                backoff = Duration::from_secs(1);
                FLUSH_EVERY
            }
            Err(e) => {
                tracing::warn!(bucket = o.spec.bucket, error = %e, retry_in = ?backoff, "write-back upload failed");
                let w = backoff + Duration::from_millis(rand::random::<u64>() % 500);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                w
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = o.flush_wake.notified() => {}
        }
    }
}

/// Uploads the pending keys this node is chosen for; the first failure is returned after
/// the others were tried.
async fn flush_pass(g: &Gateway, o: &Arc<Origin>) -> Result<(), String> {
    let pending = pending_keys(g, o, "", None)
        .await
        .map_err(|e| e.to_string())?;
    let live = g.swarm.as_ref().map(swarm::Swarm::live_ids);
    let me = g.swarm.as_ref().map(|s| s.me().id);
    let mine: Vec<PendingKey> = pending
        .into_iter()
        .filter(|p| match (&live, me) {
            (Some(live), Some(me)) => write_back::flusher(&o.spec.bucket, &p.key, live) == Some(me),
            _ => true,
        })
        .collect();
    let bytes: u64 = mine
        .iter()
        .filter_map(|p| p.object.as_ref().map(|x| x.size))
        .sum();
    g.metrics
        .origin_backlog(&o.spec.bucket, mine.len() as u64, bytes);
    let results: Vec<Result<(), String>> = futures::stream::iter(mine)
        .map(|p| flush_key(g, o, p.key))
        .buffer_unordered(UPLOADS_AT_ONCE)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(format!("{failed} key(s) not uploaded; first: {e}")),
        None => Ok(()),
    }
}

/// The versions of one key, newest first.
async fn versions_of(g: &Gateway, o: &Origin, key: &str) -> Result<Vec<PendingVersion>, String> {
    let store = g.store.clone();
    let (b, k) = (o.spec.bucket.clone(), key.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let (mut cursor, mut after_version) = (None, None);
        loop {
            let page = store.list_versions(&b, &k, None, cursor.as_ref(), after_version, 1000)?;
            for (key, version, _) in page.versions {
                if key != k {
                    return Ok(out);
                }
                out.push(PendingVersion {
                    id: version.version_id(),
                    delete_marker: matches!(version, Version::DeleteMarker(_)),
                });
            }
            match page.next {
                Some((c, v)) => {
                    cursor = Some(c);
                    after_version = v;
                }
                None => return Ok(out),
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e: StoreError| e.to_string())
}

async fn flush_key(g: &Gateway, o: &Arc<Origin>, key: String) -> Result<(), String> {
    let versions = versions_of(g, o, &key).await?;
    let Some(plan) = write_back::plan(&versions) else {
        return Ok(());
    };
    let outcome = match plan.upstream {
        Upstream::Put(v) => {
            let store = g.store.clone();
            let (b, k) = (o.spec.bucket.clone(), key.clone());
            let found =
                tokio::task::spawn_blocking(move || store.object_with_manifest(&b, &k, Some(v)))
                    .await
                    .map_err(|e| e.to_string())?;
            match found {
                Ok((rec, manifest)) => upload(g, o, &key, rec, manifest).await.map(|()| "uploaded"),
                // Removed meanwhile (another flusher finished it): nothing left to do.
                Err(StoreError::NoSuchVersion(_) | StoreError::NoSuchKey(_)) => return Ok(()),
                Err(e) => return Err(format!("{key}: {e}")),
            }
        }
        Upstream::Delete => o.delete(&key).await.map(|()| "deleted"),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            g.metrics.origin_flushed(&o.spec.bucket, "failed");
            return Err(format!("{key}: {e}"));
        }
    };
    let store = g.store.clone();
    let (b, k) = (o.spec.bucket.clone(), key.clone());
    tokio::task::spawn_blocking(move || {
        for id in plan.then_remove {
            match store.delete_object(&b, &k, Some(id)) {
                Ok(_) | Err(StoreError::NoSuchVersion(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())??;
    // The upload or delete above already dropped what this node knew of the key
    // (`Origin::written`), and nothing is learned from the upstream while versions are pending.
    g.metrics.origin_flushed(&o.spec.bucket, outcome);
    tracing::debug!(bucket = o.spec.bucket, key, outcome, "written back");
    Ok(())
}

/// Streams one version of a pending object to the upstream: one PUT, or parts of at least
/// `PART_SIZE` (aborted upstream if any part fails).
async fn upload(
    g: &Gateway,
    o: &Arc<Origin>,
    key: &str,
    rec: store::ObjectRecord,
    manifest: store::Manifest,
) -> Result<(), OriginError> {
    let body = |range: ByteRange| {
        let s = stream_range(
            g.store.clone(),
            g.swarm.clone(),
            manifest.clone(),
            range,
            None,
        );
        super::origin_write::upload(Some(StreamingBlob::new(s)))
    };
    let size = rec.size;
    if size <= ONE_PUT_MAX {
        let w = WriteMeta {
            meta: rec.meta.clone(),
            ..Default::default()
        };
        return o
            .put(key, body(ByteRange::full(size)), size, w)
            .await
            .map(drop);
    }
    let part = PART_SIZE.max(size.div_ceil(10_000));
    let id = o.create_upload(key, rec.meta.clone()).await?;
    let mut parts = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + part).min(size);
        let n = parts.len() as i32 + 1;
        let range =
            ByteRange::new(start, end, size).map_err(|e| OriginError::Store(e.to_string()))?;
        match o
            .upload_part(key, &id, n, body(range), end - start, None)
            .await
        {
            Ok(etag) => parts.push((n, etag)),
            Err(e) => {
                let _ = o.abort_upload(key, &id).await;
                return Err(e);
            }
        }
        start = end;
    }
    match o.complete_upload(key, &id, parts).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = o.abort_upload(key, &id).await;
            Err(e)
        }
    }
}
