//! GET, HEAD and LIST on a bucket that fronts an origin: answered as the upstream would
//! (its sizes, ETags, dates and metadata), bytes streamed from pieces kept here or fetched
//! from the upstream once.

use std::sync::Arc;

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::{ByteRange, Manifest, ObjectRecord};

use super::Gateway;
use super::error::origin_err;
use super::get::{
    ChunkStream, Conditions, expires, object_output, plan_read, plan_read_for, stream_range,
};
use super::list::{encoder, max_keys};
use super::timestamp;
use crate::origin::write_back::{self, After, Token};
use crate::origin::{ListQuery, ListedPage, Origin, OriginError, UpstreamObject, WriteMode};

/// Pieces fetched ahead of the one being sent, so the upstream's latency overlaps the send.
const PIECES_AHEAD: u32 = 2;

/// The record GET and HEAD answer from: the upstream's fields, no local content hash.
fn record_of(o: &UpstreamObject) -> ObjectRecord {
    ObjectRecord {
        size: o.size,
        etag: o.etag.clone(),
        content_hash: String::new(),
        manifest: String::new(),
        last_modified_ms: o.last_modified_ms,
        meta: o.meta.clone(),
        checksum: None,
        parts: None,
        version_id: store::VersionId::Null,
        seq: 0,
        tags: Default::default(),
    }
}

/// Origin buckets keep no versions of their own: only the current (`null`) one is there.
fn current_only(version: Option<&str>) -> S3Result<()> {
    match version {
        None | Some("null") => Ok(()),
        Some(_) => Err(s3_error!(
            NoSuchVersion,
            "This bucket fronts an origin; only the current version can be read"
        )),
    }
}

pub(crate) async fn get_object(
    g: &Gateway,
    origin: Arc<Origin>,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    current_only(input.version_id.as_deref())?;
    let key = input.key.clone();
    // A version replaced upstream between our HEAD and the first piece is looked up again
    // once; later pieces of a replaced version end the body early (never mixed bytes).
    let mut retried = false;
    loop {
        let object = origin.object(&key).await.map_err(origin_err)?;
        let rec = record_of(&object);
        let (range, full, checksum) = plan_read!(input, &rec, None)?;
        let body = if range.is_empty() {
            ChunkStream::channel(0).1
        } else {
            let layout = origin.layout(object.size);
            let first = *layout.covering(range.start(), range.end()).start();
            match origin.piece(&key, &object, first).await {
                Ok(m) => stream_pieces(g, origin.clone(), key.clone(), object, range, m),
                Err(OriginError::Changed) if !retried => {
                    retried = true;
                    continue;
                }
                Err(e) => return Err(origin_err(e)),
            }
        };
        let output = object_output!(GetObjectOutput, &rec, range, full, checksum, {
            body: Some(StreamingBlob::new(body)),
        });
        return Ok(S3Response::new(output));
    }
}

/// Streams `range` of an origin object piece by piece, the next pieces fetched meanwhile.
fn stream_pieces(
    g: &Gateway,
    origin: Arc<Origin>,
    key: String,
    object: UpstreamObject,
    range: ByteRange,
    first: Manifest,
) -> ChunkStream {
    let (tx, stream) = ChunkStream::channel(range.len());
    let (store, swarm, metrics) = (g.store.clone(), g.swarm.clone(), g.metrics.clone());
    tokio::spawn(async move {
        let layout = origin.layout(object.size);
        let pieces = layout.covering(range.start(), range.end());
        let last = *pieces.end();
        let mut kept = Some(first);
        for i in pieces {
            for ahead in i + 1..=(i + PIECES_AHEAD).min(last) {
                let (o, k, obj) = (origin.clone(), key.clone(), object.clone());
                tokio::spawn(async move {
                    let _ = o.piece(&k, &obj, ahead).await;
                });
            }
            let manifest = match kept.take() {
                Some(m) => m,
                None => match origin.piece(&key, &object, i).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(key, piece = i, error = %e, "origin read failed mid-stream");
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                },
            };
            let (ps, pe) = layout.piece(i);
            let sub = match ByteRange::new(
                range.start().max(ps) - ps,
                range.end().min(pe) - ps,
                manifest.size(),
            ) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut inner = stream_range(
                store.clone(),
                swarm.clone(),
                manifest,
                sub,
                Some(metrics.clone()),
            );
            while let Some(item) = inner.next().await {
                let item = item.map_err(|e| std::io::Error::other(e.to_string()));
                if let Ok(b) = &item {
                    metrics.origin_served(&origin.spec.bucket, b.len() as u64);
                }
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        }
    });
    stream
}

pub(crate) async fn head_object(
    origin: Arc<Origin>,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let input = req.input;
    current_only(input.version_id.as_deref())?;
    let object = origin.object(&input.key).await.map_err(origin_err)?;
    let rec = record_of(&object);
    let (range, full, checksum) = plan_read!(input, &rec, None)?;
    let output = object_output!(HeadObjectOutput, &rec, range, full, checksum, {});
    Ok(S3Response::new(output))
}

fn contents(page: &ListedPage, enc: fn(&str) -> String) -> (Vec<Object>, Vec<CommonPrefix>) {
    let objects = page
        .objects
        .iter()
        .map(|o| Object {
            key: Some(enc(&o.key)),
            size: Some(o.size as i64),
            e_tag: Some(ETag::Strong(o.etag.clone())),
            last_modified: Some(timestamp(o.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from(
                o.storage_class
                    .clone()
                    .unwrap_or_else(|| ObjectStorageClass::STANDARD.to_owned()),
            )),
            ..Default::default()
        })
        .collect();
    let prefixes = page
        .prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc(p)),
        })
        .collect();
    (objects, prefixes)
}

pub(crate) async fn list_objects_v2(
    g: &Gateway,
    origin: Arc<Origin>,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let enc = encoder(input.encoding_type.as_ref())?;
    let max = max_keys(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let mut q = ListQuery {
        prefix: prefix.clone(),
        delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
        max_keys: Some(max as i32),
        token: input.continuation_token.clone(),
        after: input.start_after.clone().filter(|s| !s.is_empty()),
    };
    let page = if origin.spec.write == WriteMode::Back {
        // Our own tokens: where the page started, and the upstream's token when it ended
        // where the upstream's page did.
        let mut after = q.after.clone().map(|key| After { key, prefix: false });
        if let Some(t) = &q.token {
            let t = Token::decode(t).ok_or_else(|| {
                s3_error!(
                    InvalidArgument,
                    "The continuation token provided is incorrect"
                )
            })?;
            q.after = (t.upstream.is_none()).then(|| t.after.key.clone());
            q.token = t.upstream;
            after = Some(t.after);
        }
        let (mut page, cut) = super::write_back::listed(g, &origin, q, after, false).await?;
        page.next_token = match cut {
            Some(after) => Some(Token {
                after,
                upstream: None,
            }),
            None if page.truncated => write_back::last_entry(&page).map(|after| Token {
                after,
                upstream: page.next_token.clone(),
            }),
            None => None,
        }
        .map(|t| t.encode());
        page
    } else {
        origin.list(&q, false).await.map_err(origin_err)?
    };
    let (objects, prefixes) = contents(&page, enc);
    let output = ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(enc(&prefix)),
        delimiter: input.delimiter.as_deref().map(enc),
        max_keys: Some(max as i32),
        key_count: Some((objects.len() + prefixes.len()) as i32),
        is_truncated: Some(page.truncated),
        next_continuation_token: page.next_token,
        continuation_token: input.continuation_token,
        start_after: input.start_after.as_deref().map(enc),
        encoding_type: input.encoding_type,
        contents: Some(objects),
        common_prefixes: Some(prefixes),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn list_objects(
    g: &Gateway,
    origin: Arc<Origin>,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let enc = encoder(input.encoding_type.as_ref())?;
    let max = max_keys(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let q = ListQuery {
        prefix: prefix.clone(),
        delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
        max_keys: Some(max as i32),
        token: None,
        after: input.marker.clone().filter(|s| !s.is_empty()),
    };
    let page = if origin.spec.write == WriteMode::Back {
        let after = q.after.clone().map(|key| After { key, prefix: false });
        let (mut page, cut) = super::write_back::listed(g, &origin, q, after, true).await?;
        if let Some(cut) = cut {
            page.next_marker = Some(cut.key);
        }
        page
    } else {
        origin.list(&q, true).await.map_err(origin_err)?
    };
    let (objects, prefixes) = contents(&page, enc);
    // S3 gives NextMarker only with a delimiter; clients without one page from the last key.
    let next_marker = page
        .truncated
        .then(|| {
            page.next_marker.clone().or_else(|| {
                input
                    .delimiter
                    .as_ref()
                    .and(page.objects.last().map(|o| o.key.clone()))
            })
        })
        .flatten();
    let output = ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(enc(&prefix)),
        delimiter: input.delimiter.as_deref().map(enc),
        marker: input.marker.as_deref().map(enc),
        max_keys: Some(max as i32),
        is_truncated: Some(page.truncated),
        next_marker: next_marker.as_deref().map(enc),
        encoding_type: input.encoding_type,
        contents: Some(objects),
        common_prefixes: Some(prefixes),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}
