//! ListObjectsV2 and ListObjects (V1).

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::{ListCursor, ListPage, Version};

use super::error::{join_err, s3_err, version_arg};
use super::{Gateway, timestamp};

const MAX_KEYS: i32 = 1000;

/// Continuation tokens are opaque to clients; ours name the last key or common prefix
/// returned, so a listing resumes exactly after it even if keys were added meanwhile.
pub(crate) fn encode_token(c: &ListCursor) -> String {
    match c {
        ListCursor::Key(k) => format!("k{}", hex::encode(k)),
        ListCursor::Prefix(p) => format!("p{}", hex::encode(p)),
    }
}

pub(crate) fn decode_token(t: &str) -> S3Result<ListCursor> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "The continuation token provided is incorrect"
        )
    };
    let (kind, rest) = t.split_at_checked(1).ok_or_else(bad)?;
    let text = String::from_utf8(hex::decode(rest).map_err(|_| bad())?).map_err(|_| bad())?;
    match kind {
        "k" => Ok(ListCursor::Key(text)),
        "p" => Ok(ListCursor::Prefix(text)),
        _ => Err(bad()),
    }
}

/// `encoding-type=url`: percent-encode everything but unreserved characters and '/', which
/// is what SDKs (that decode with `unquote_plus`) round-trip safely.
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn encoder(encoding: Option<&EncodingType>) -> S3Result<fn(&str) -> String> {
    match encoding.map(EncodingType::as_str) {
        None => Ok(|s: &str| s.to_owned()),
        Some(e) if e.eq_ignore_ascii_case("url") => Ok(url_encode),
        Some(e) => Err(s3_error!(
            InvalidArgument,
            "Invalid Encoding Method specified in Request: {e}"
        )),
    }
}

pub(crate) fn max_keys(v: Option<i32>) -> S3Result<usize> {
    match v {
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must be non-negative")),
        Some(n) => Ok(n.min(MAX_KEYS) as usize),
        None => Ok(MAX_KEYS as usize),
    }
}

async fn page(
    g: &Gateway,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<ListCursor>,
    max: usize,
) -> S3Result<ListPage> {
    let store = g.store.clone();
    let (b, p, d) = (
        bucket.to_owned(),
        prefix.to_owned(),
        delimiter.map(str::to_owned),
    );
    tokio::task::spawn_blocking(move || {
        store.list_objects(&b, &p, d.as_deref(), after.as_ref(), max)
    })
    .await
    .map_err(join_err)?
    .map_err(s3_err)
}

fn contents(
    page: &ListPage,
    enc: fn(&str) -> String,
    owner: Option<&Owner>,
) -> (Vec<Object>, Vec<CommonPrefix>) {
    let objects = page
        .objects
        .iter()
        .map(|(key, rec)| Object {
            key: Some(enc(key)),
            size: Some(rec.size as i64),
            e_tag: Some(ETag::Strong(rec.etag.clone())),
            last_modified: Some(timestamp(rec.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            owner: owner.cloned(),
            checksum_algorithm: rec
                .checksum
                .as_ref()
                .map(|c| vec![ChecksumAlgorithm::from(c.algorithm.clone())]),
            ..Default::default()
        })
        .collect();
    let prefixes = common_prefixes(page, enc);
    (objects, prefixes)
}

pub(crate) async fn list_objects_v2(
    g: &Gateway,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let enc = encoder(input.encoding_type.as_ref())?;
    let max = max_keys(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let after = match (&input.continuation_token, &input.start_after) {
        (Some(t), _) => Some(decode_token(t)?),
        (None, Some(s)) if !s.is_empty() => Some(ListCursor::Key(s.clone())),
        _ => None,
    };
    let page = page(
        g,
        &input.bucket,
        &prefix,
        input.delimiter.as_deref(),
        after,
        max,
    )
    .await?;
    let owner = input.fetch_owner.unwrap_or(false).then(|| {
        let id = req.credentials.as_ref().map(|c| c.access_key.clone());
        Owner {
            display_name: id.clone(),
            id,
        }
    });
    let (objects, prefixes) = contents(&page, enc, owner.as_ref());
    let output = ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(enc(&prefix)),
        delimiter: input.delimiter.as_deref().map(enc),
        max_keys: Some(max as i32),
        key_count: Some((objects.len() + prefixes.len()) as i32),
        is_truncated: Some(page.next.is_some()),
        next_continuation_token: page.next.as_ref().map(encode_token),
        continuation_token: input.continuation_token,
        start_after: input.start_after.as_deref().map(enc),
        encoding_type: input.encoding_type,
        contents: Some(objects),
        common_prefixes: Some(prefixes),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

/// A V1-style marker is a key; when it names a common prefix returned earlier, the listing
/// skips everything under that prefix.
fn marker_cursor(marker: &str, prefix: &str, delimiter: Option<&str>) -> ListCursor {
    match delimiter {
        // A marker equal to the prefix is a key (e.g. `dir/` under prefix `dir/`), not a
        // common prefix to skip.
        Some(d)
            if !d.is_empty()
                && marker.ends_with(d)
                && marker.starts_with(prefix)
                && marker.len() > prefix.len() =>
        {
            ListCursor::Prefix(marker.to_owned())
        }
        _ => ListCursor::Key(marker.to_owned()),
    }
}

/// A page that resumes after a V1-style marker (ListObjects, ListObjectVersions).
async fn page_after_marker(
    g: &Gateway,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    marker: Option<&str>,
    max: usize,
) -> S3Result<ListPage> {
    let after = marker
        .filter(|m| !m.is_empty())
        .map(|m| marker_cursor(m, prefix, delimiter));
    page(g, bucket, prefix, delimiter, after, max).await
}

/// The requesting identity, as S3 reports owners in listings.
fn requester(creds: Option<&s3s::auth::Credentials>) -> Option<Owner> {
    creds.map(|c| Owner {
        display_name: Some(c.access_key.clone()),
        id: Some(c.access_key.clone()),
    })
}

fn common_prefixes(page: &ListPage, enc: fn(&str) -> String) -> Vec<CommonPrefix> {
    page.common_prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc(p)),
        })
        .collect()
}

/// ListObjectVersions: every version and delete marker, keys ascending, each key's versions
/// newest first. A bucket that never had versioning lists one `null` version per key.
pub(crate) async fn list_object_versions(
    g: &Gateway,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let enc = encoder(input.encoding_type.as_ref())?;
    let max = max_keys(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let key_marker = input.key_marker.clone().filter(|m| !m.is_empty());
    let version_marker = input.version_id_marker.clone().filter(|m| !m.is_empty());
    if version_marker.is_some() && key_marker.is_none() {
        return Err(s3_error!(
            InvalidArgument,
            "A version-id marker cannot be specified without a key marker."
        ));
    }
    let after_version = version_arg(version_marker.as_deref())?;
    let after = key_marker.as_deref().map(|m| {
        if after_version.is_some() {
            ListCursor::Key(m.to_owned())
        } else {
            marker_cursor(m, &prefix, input.delimiter.as_deref())
        }
    });
    let store = g.store.clone();
    let (b, p, d) = (
        input.bucket.clone(),
        prefix.clone(),
        input.delimiter.clone(),
    );
    let page = tokio::task::spawn_blocking(move || {
        store.list_versions(&b, &p, d.as_deref(), after.as_ref(), after_version, max)
    })
    .await
    .map_err(join_err)?
    .map_err(s3_err)?;
    let owner = requester(req.credentials.as_ref());
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    for (key, v, latest) in &page.versions {
        let id = Some(v.version_id().to_string());
        match v {
            Version::Object(rec) => versions.push(ObjectVersion {
                key: Some(enc(key)),
                version_id: id,
                is_latest: Some(*latest),
                size: Some(rec.size as i64),
                e_tag: Some(ETag::Strong(rec.etag.clone())),
                last_modified: Some(timestamp(rec.last_modified_ms)),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                checksum_algorithm: rec
                    .checksum
                    .as_ref()
                    .map(|c| vec![ChecksumAlgorithm::from(c.algorithm.clone())]),
                owner: owner.clone(),
                ..Default::default()
            }),
            Version::DeleteMarker(m) => markers.push(DeleteMarkerEntry {
                key: Some(enc(key)),
                version_id: id,
                is_latest: Some(*latest),
                last_modified: Some(timestamp(m.marker_ms)),
                owner: owner.clone(),
            }),
        }
    }
    let (next_key, next_version) = match &page.next {
        Some((ListCursor::Key(k), v)) => (Some(enc(k)), v.map(|v| v.to_string())),
        Some((ListCursor::Prefix(p), _)) => (Some(enc(p)), None),
        None => (None, None),
    };
    let output = ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: Some(enc(&prefix)),
        delimiter: input.delimiter.as_deref().map(enc),
        key_marker: input.key_marker.as_deref().map(enc),
        version_id_marker: input.version_id_marker,
        max_keys: Some(max as i32),
        is_truncated: Some(page.next.is_some()),
        next_key_marker: next_key,
        next_version_id_marker: next_version,
        encoding_type: input.encoding_type,
        versions: Some(versions),
        delete_markers: Some(markers),
        common_prefixes: Some(
            page.common_prefixes
                .iter()
                .map(|p| CommonPrefix {
                    prefix: Some(enc(p)),
                })
                .collect(),
        ),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn list_objects(
    g: &Gateway,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let enc = encoder(input.encoding_type.as_ref())?;
    let max = max_keys(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let marker = input.marker.clone().filter(|m| !m.is_empty());
    let page = page_after_marker(
        g,
        &input.bucket,
        &prefix,
        input.delimiter.as_deref(),
        marker.as_deref(),
        max,
    )
    .await?;
    let owner = requester(req.credentials.as_ref());
    let (objects, prefixes) = contents(&page, enc, owner.as_ref());
    // S3 sends NextMarker only with a delimiter; clients otherwise continue from the last key.
    let next_marker = match (&page.next, input.delimiter.as_deref()) {
        (Some(ListCursor::Key(k) | ListCursor::Prefix(k)), Some(d)) if !d.is_empty() => {
            Some(enc(k))
        }
        _ => None,
    };
    let output = ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(enc(&prefix)),
        delimiter: input.delimiter.as_deref().map(enc),
        marker: Some(marker.as_deref().map(enc).unwrap_or_default()),
        max_keys: Some(max as i32),
        is_truncated: Some(page.next.is_some()),
        next_marker,
        encoding_type: input.encoding_type,
        contents: Some(objects),
        common_prefixes: Some(prefixes),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        for c in [
            ListCursor::Key("a b/ü+%".into()),
            ListCursor::Prefix("dir/".into()),
        ] {
            assert_eq!(decode_token(&encode_token(&c)).unwrap(), c);
        }
        assert!(decode_token("").is_err());
        assert!(decode_token("kzz").is_err());
        assert!(decode_token("x00").is_err());
    }

    #[test]
    fn url_encoding_keeps_slashes_and_escapes_plus_and_space() {
        assert_eq!(url_encode("a b+c/ü%"), "a%20b%2Bc/%C3%BC%25");
    }
}
