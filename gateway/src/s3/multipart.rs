//! Multipart uploads: create, upload part, complete, abort, list parts, list uploads.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::{MAX_PART_NUMBER, ObjectKey, PartRecord, StoredChecksum, UploadRecord};

use super::checksum::{algorithm_named, check_claim, multipart_checksum, multipart_plan, to_dto};
use super::error::{join_err, s3_err};
use super::put::{receive, upload_body};
use super::upload_home::{self, Claimed, Completion, UploadName};
use super::{
    Gateway, commit_err, object_meta_of, precheck_write, tagging, timestamp, with_blake3,
    write_precondition,
};

const MAX_PARTS_LISTED: i32 = 1000;
const MAX_UPLOADS_LISTED: i32 = 1000;

fn initiator(access_key: &str) -> Initiator {
    Initiator {
        display_name: Some(access_key.to_owned()),
        id: Some(access_key.to_owned()),
    }
}

/// A part number from a request, within S3's 1..=10000.
pub(crate) fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            )
        })
}

pub(crate) async fn create(
    g: &Gateway,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let owner = req
        .credentials
        .as_ref()
        .map(|c| c.access_key.clone())
        .unwrap_or_default();
    let input = req.input;
    let key = ObjectKey::new(&input.key).map_err(s3_err)?;
    let meta = object_meta_of!(input)?;
    let plan = multipart_plan(
        input.checksum_algorithm.as_ref(),
        input.checksum_type.as_ref(),
    )?;
    let rec = UploadRecord {
        owner,
        initiated_ms: time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
        meta,
        checksum_algorithm: plan.map(|(a, _)| a.to_owned()),
        checksum_composite: plan.is_some_and(|(_, c)| c),
        tags: tagging::from_header(input.tagging.as_deref())?,
        relay: false,
    };
    let store = g.store.clone();
    let bucket = input.bucket.clone();
    let home = upload_home::home_for_new(g);
    let upload_id =
        tokio::task::spawn_blocking(move || store.create_upload(&bucket, &key, rec, home))
            .await
            .map_err(join_err)?
            .map_err(s3_err)?;
    let output = CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload_id),
        checksum_algorithm: input.checksum_algorithm,
        checksum_type: plan.map(|(_, composite)| {
            ChecksumType::from_static(if composite {
                ChecksumType::COMPOSITE
            } else {
                ChecksumType::FULL_OBJECT
            })
        }),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn upload_part(
    g: &Gateway,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        ..
    } = req;
    let number = part_number(input.part_number)?;
    let name = UploadName {
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        upload_id: input.upload_id.clone(),
    };
    // Fail before reading a possibly large body.
    let (upload, home) = upload_home::record(g, &name).await?;
    let mut input = input;
    // An upload that declared a checksum algorithm gets it for every part, sent or not.
    if input.checksum_algorithm.is_none() {
        input.checksum_algorithm = upload
            .checksum_algorithm
            .clone()
            .map(ChecksumAlgorithm::from);
    }
    let received = receive(g, &headers, trailing_headers, upload_body!(input)).await?;
    let (ingested, stored) = (received.ingested, received.checksum);
    if let Some(want) = &upload.checksum_algorithm
        && !stored
            .as_ref()
            .is_some_and(|c| c.algorithm.eq_ignore_ascii_case(want))
    {
        return Err(s3_error!(
            InvalidRequest,
            "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
            want.to_ascii_lowercase(),
            stored
                .as_ref()
                .map_or("none".to_owned(), |c| c.algorithm.to_ascii_lowercase())
        ));
    }
    let etag = hex::encode(ingested.md5);
    let (e, s) = (etag.clone(), stored.clone());
    let size = ingested.staged.size();
    let staged = ingested.staged;
    upload_home::keep_part(g, &name, (upload, home), number, size, move |store, up| {
        store.put_part(up, number, staged, e, s).map_err(s3_err)
    })
    .await?;
    let c = to_dto(stored.as_ref());
    let output = UploadPartOutput {
        e_tag: Some(ETag::Strong(etag)),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn complete(
    g: &Gateway,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    ObjectKey::new(&input.key).map_err(s3_err)?;
    let precondition = write_precondition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    let parts = input
        .multipart_upload
        .and_then(|m| m.parts)
        .ok_or_else(|| s3_error!(MalformedXML, "The XML you provided did not list any parts"))?;
    let listed = parts
        .into_iter()
        .map(|p| {
            let n = p
                .part_number
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| s3_error!(InvalidPart, "a part has no valid PartNumber"))?;
            let etag = p
                .e_tag
                .map(ETag::into_value)
                .ok_or_else(|| s3_error!(InvalidPart, "part {n} has no ETag"))?;
            Ok((n, etag))
        })
        .collect::<S3Result<Vec<_>>>()?;
    let completion = Completion {
        upload: UploadName {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            upload_id: input.upload_id.clone(),
        },
        listed,
        claimed: Claimed {
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            crc64nvme: input.checksum_crc64nvme,
            sha1: input.checksum_sha1,
            sha256: input.checksum_sha256,
        },
        precondition,
    };
    let rec = upload_home::complete(
        g,
        completion,
        |g, c| async move { complete_here(g, c).await },
    )
    .await?;
    let c = to_dto(rec.checksum.as_ref());
    let output = CompleteMultipartUploadOutput {
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        e_tag: Some(ETag::Strong(rec.etag.clone())),
        location: Some(format!("/{}/{}", input.bucket, input.key)),
        version_id: (!rec.version_id.is_null()).then(|| rec.version_id.to_string()),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        checksum_type: c.checksum_type,
        ..Default::default()
    };
    Ok(with_blake3(S3Response::new(output), &rec.content_hash))
}

/// Completes an upload whose home is this node (asked by a client here, or by a peer).
pub(crate) async fn complete_here(g: Gateway, c: Completion) -> S3Result<store::ObjectRecord> {
    let g = &g;
    let Completion {
        upload,
        listed,
        claimed,
        precondition,
    } = c;
    let key = ObjectKey::new(&upload.key).map_err(s3_err)?;
    precheck_write(g, &upload.bucket, &upload.key, precondition.as_ref()).await?;
    let conditional = precondition.is_some();
    let claimed = Checksum {
        checksum_crc32: claimed.crc32,
        checksum_crc32c: claimed.crc32c,
        checksum_crc64nvme: claimed.crc64nvme,
        checksum_sha1: claimed.sha1,
        checksum_sha256: claimed.sha256,
        ..Default::default()
    };
    let checksum =
        upload_checksum(g, &upload.bucket, &upload.key, &upload.upload_id, &listed).await?;
    match &checksum {
        Some(c) => check_claim(&claimed, c)?,
        None if claimed != Checksum::default() => {
            return Err(s3_error!(
                InvalidRequest,
                "The upload was not created with a checksum algorithm, so the object has no checksum to compare"
            ));
        }
        None => {}
    }
    let ticket = match super::decide::multipart_etag(&listed) {
        Some(etag) => {
            super::decide::conditional_write(
                g,
                &upload.bucket,
                &upload.key,
                precondition.as_ref(),
                &etag,
            )
            .await?
        }
        None => None,
    };
    let precondition = if ticket.is_some() { None } else { precondition };
    fetch_absent_parts(g, &upload.upload_id).await?;
    let store = g.store.clone();
    let UploadName {
        bucket, upload_id, ..
    } = upload;
    let rec = tokio::task::spawn_blocking(move || {
        store.complete_upload(&bucket, &key, &upload_id, &listed, checksum, precondition)
    })
    .await
    .map_err(join_err)?
    .map_err(|e| commit_err(e, conditional))?;
    if let Some(t) = ticket {
        t.carried_out();
    }
    Ok(rec)
}

/// Fetches the chunks of an upload's parts held only by peers (parts copied from objects
/// stored elsewhere): completing reads every byte once.
async fn fetch_absent_parts(g: &Gateway, upload_id: &str) -> S3Result<()> {
    let store = g.store.clone();
    let id = upload_id.to_owned();
    let absent = tokio::task::spawn_blocking(move || store.upload_absent_chunks(&id))
        .await
        .map_err(join_err)?
        .map_err(s3_err)?;
    super::copy::fetch_chunks(g, absent).await
}

/// The object checksum an upload's listed parts add up to, if the upload declared an
/// algorithm. The parts are matched by ETag, which pins their content, so a part replaced
/// after this read makes the completion fail rather than store a wrong checksum.
async fn upload_checksum(
    g: &Gateway,
    bucket: &str,
    key: &str,
    upload_id: &str,
    listed: &[(u32, String)],
) -> S3Result<Option<StoredChecksum>> {
    let upload = g.store.upload(bucket, key, upload_id).map_err(s3_err)?;
    let Some(alg) = upload.checksum_algorithm.as_deref() else {
        return Ok(None);
    };
    let alg = algorithm_named(alg)
        .ok_or_else(|| s3_error!(InvalidRequest, "Unsupported checksum algorithm: {alg}"))?;
    // Uploads created before the type was recorded stored no type: SHA ones can only be
    // composite.
    let composite = upload.checksum_composite || alg.starts_with("SHA");
    let store = g.store.clone();
    let id = upload_id.to_owned();
    let stored: std::collections::BTreeMap<u32, PartRecord> =
        tokio::task::spawn_blocking(move || store.parts(&id))
            .await
            .map_err(join_err)?
            .map_err(s3_err)?
            .into_iter()
            .collect();
    let mut parts = Vec::with_capacity(listed.len());
    for (n, etag) in listed {
        // Missing or mismatched parts are reported by the completion itself.
        // The completion checks these too, but an object that declared a checksum must not
        // be stored without one because a part changed in between.
        let Some(p) = stored.get(n).filter(|p| p.etag == etag.trim_matches('"')) else {
            return Err(s3_error!(
                InvalidPart,
                "part {n} was not uploaded with ETag {etag}"
            ));
        };
        let c = p
            .checksum
            .as_ref()
            .filter(|c| c.algorithm == alg)
            .ok_or_else(|| {
                s3_error!(
                    InvalidPart,
                    "part {n} has no {alg} checksum, which the upload requires"
                )
            })?;
        parts.push((c, p.size));
    }
    multipart_checksum(alg, composite, &parts).map(Some)
}

pub(crate) async fn abort(
    g: &Gateway,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    let name = UploadName {
        bucket: input.bucket,
        key: input.key,
        upload_id: input.upload_id,
    };
    upload_home::abort(g, &name).await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(crate) async fn list_parts(
    g: &Gateway,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    let name = UploadName {
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        upload_id: input.upload_id.clone(),
    };
    let (upload, all) = upload_home::parts(g, &name).await?;
    let max = input
        .max_parts
        .unwrap_or(MAX_PARTS_LISTED)
        .clamp(0, MAX_PARTS_LISTED) as usize;
    let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
    let mut after: Vec<_> = all.into_iter().filter(|(n, _)| *n > marker).collect();
    let truncated = after.len() > max;
    after.truncate(max);
    let next = after.last().map(|(n, _)| *n as i32);
    let parts = after
        .into_iter()
        .map(|(n, p)| {
            let c = to_dto(p.checksum.as_ref());
            Part {
                part_number: Some(n as i32),
                e_tag: Some(ETag::Strong(p.etag)),
                size: Some(p.size as i64),
                last_modified: Some(timestamp(p.last_modified_ms)),
                checksum_crc32: c.checksum_crc32,
                checksum_crc32c: c.checksum_crc32c,
                checksum_crc64nvme: c.checksum_crc64nvme,
                checksum_sha1: c.checksum_sha1,
                checksum_sha256: c.checksum_sha256,
            }
        })
        .collect();
    let output = ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        max_parts: Some(max as i32),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: if truncated { next } else { None },
        is_truncated: Some(truncated),
        parts: Some(parts),
        initiator: Some(initiator(&upload.owner)),
        owner: Some(Owner {
            display_name: Some(upload.owner.clone()),
            id: Some(upload.owner),
        }),
        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
        checksum_algorithm: upload.checksum_algorithm.map(ChecksumAlgorithm::from),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn list_uploads(
    g: &Gateway,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let max = input
        .max_uploads
        .unwrap_or(MAX_UPLOADS_LISTED)
        .clamp(0, MAX_UPLOADS_LISTED) as usize;
    let prefix = input.prefix.clone().unwrap_or_default();
    let all = upload_home::list(g, &input.bucket, &prefix).await?;
    let key_marker = input.key_marker.clone().unwrap_or_default();
    let id_marker = input.upload_id_marker.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    // A key marker that is a common prefix returned earlier skips every key under it.
    let marker_is_prefix = delimiter
        .as_ref()
        .is_some_and(|d| key_marker.ends_with(d.as_str()) && key_marker.starts_with(&prefix));
    let mut uploads = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    // The last entry returned (key or common prefix, and upload id) is where the next page starts.
    let mut last: Option<(String, Option<String>)> = None;
    let mut truncated = false;
    for (key, id, rec) in all {
        let after_marker = key_marker.is_empty()
            || if marker_is_prefix {
                !key.starts_with(&key_marker) && key > key_marker
            } else {
                key > key_marker || (key == key_marker && !id_marker.is_empty() && id > id_marker)
            };
        if !after_marker {
            continue;
        }
        let common = delimiter.as_ref().and_then(|d| {
            let rest = key.get(prefix.len()..)?;
            rest.find(d.as_str())
                .map(|i| key[..prefix.len() + i + d.len()].to_owned())
        });
        if let Some(cp) = common {
            if prefixes.last() == Some(&cp) {
                continue;
            }
            if uploads.len() + prefixes.len() == max {
                truncated = true;
                break;
            }
            last = Some((cp.clone(), None));
            prefixes.push(cp);
            continue;
        }
        if uploads.len() + prefixes.len() == max {
            truncated = true;
            break;
        }
        last = Some((key.clone(), Some(id.clone())));
        uploads.push(MultipartUpload {
            key: Some(key),
            upload_id: Some(id),
            initiated: Some(timestamp(rec.initiated_ms)),
            initiator: Some(initiator(&rec.owner)),
            owner: Some(Owner {
                display_name: Some(rec.owner.clone()),
                id: Some(rec.owner),
            }),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            checksum_algorithm: rec.checksum_algorithm.map(ChecksumAlgorithm::from),
            ..Default::default()
        });
    }
    let (next_key, next_id) = match (truncated, last) {
        (true, Some((k, id))) => (Some(k), id),
        _ => (None, None),
    };
    let output = ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: Some(prefix),
        delimiter: input.delimiter,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        uploads: Some(uploads),
        common_prefixes: Some(
            prefixes
                .into_iter()
                .map(|p| CommonPrefix { prefix: Some(p) })
                .collect(),
        ),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

/// Runs for the life of the node: aborts incomplete uploads older than `max_age` (S3's
/// lifecycle rule `AbortIncompleteMultipartUpload`, here for every bucket), checking every
/// quarter of `max_age`, at most hourly.
pub(crate) async fn expire_incomplete(
    store: std::sync::Arc<store::Store>,
    max_age: std::time::Duration,
) {
    let every = (max_age / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    );
    loop {
        tokio::time::sleep(every).await;
        let before = time::OffsetDateTime::now_utc().unix_timestamp() * 1000
            - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.expire_uploads(before)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(uploads = n, "expired incomplete multipart uploads"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "expiring incomplete multipart uploads failed")
            }
            Err(e) => tracing::warn!(error = %e, "expiring incomplete multipart uploads failed"),
        }
    }
}
