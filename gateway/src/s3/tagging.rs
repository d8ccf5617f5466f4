//! Object tagging: `x-amz-tagging` on writes and Put/Get/DeleteObjectTagging.
//!
//! Tags are part of a version's record, so they follow the version through copies and
//! overwrites exactly as S3 has it, and cost nothing on the data path.

use std::collections::BTreeMap;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::Gateway;
use super::error::{join_err, s3_err, version_arg};

/// S3's limits on object tags.
const MAX_TAGS: usize = 10;
const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_CHARS: usize = 256;

/// Checks one tag against S3's rules (length, characters, reserved prefix).
fn check_tag(key: &str, value: &str) -> S3Result<()> {
    let allowed = |c: char| {
        c.is_alphanumeric()
            || c.is_whitespace()
            || matches!(c, '+' | '-' | '=' | '.' | '_' | ':' | '/' | '@')
    };
    let n = key.chars().count();
    if n == 0 || n > MAX_KEY_CHARS {
        return Err(s3_error!(
            InvalidTag,
            "The TagKey you have provided is invalid: a key has 1 to {MAX_KEY_CHARS} characters"
        ));
    }
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(s3_error!(
            InvalidTag,
            "The TagValue you have provided is invalid: a value has at most {MAX_VALUE_CHARS} characters"
        ));
    }
    if !key.chars().all(allowed) || !value.chars().all(allowed) {
        return Err(s3_error!(
            InvalidTag,
            "The TagKey or TagValue you have provided has characters S3 does not allow in tags"
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(s3_error!(
            InvalidTag,
            "Your TagKey cannot be prefixed with aws:"
        ));
    }
    Ok(())
}

fn collect(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> S3Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    for (k, v) in pairs {
        check_tag(&k, &v)?;
        if tags.insert(k, v).is_some() {
            return Err(s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key"
            ));
        }
        if tags.len() > MAX_TAGS {
            return Err(s3_error!(
                InvalidTag,
                "Object tags cannot be greater than {MAX_TAGS}"
            ));
        }
    }
    Ok(tags)
}

/// Tags from an `x-amz-tagging` header (URL query encoding: `k1=v1&k2=v2`).
pub(crate) fn from_header(header: Option<&str>) -> S3Result<BTreeMap<String, String>> {
    match header {
        None | Some("") => Ok(BTreeMap::new()),
        Some(h) => collect(form_urlencoded::parse(h.as_bytes()).into_owned()),
    }
}

pub(crate) fn from_document(t: Tagging) -> S3Result<BTreeMap<String, String>> {
    collect(
        t.tag_set
            .into_iter()
            .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default())),
    )
}

fn to_tag_set(tags: &BTreeMap<String, String>) -> TagSet {
    tags.iter()
        .map(|(k, v)| Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

pub(crate) async fn put(
    g: &Gateway,
    req: S3Request<PutObjectTaggingInput>,
) -> S3Result<S3Response<PutObjectTaggingOutput>> {
    let input = req.input;
    let tags = from_document(input.tagging)?;
    let version = version_arg(input.version_id.as_deref())?;
    let store = g.store.clone();
    let id = tokio::task::spawn_blocking(move || {
        store.set_tags(&input.bucket, &input.key, version, tags)
    })
    .await
    .map_err(join_err)?
    .map_err(s3_err)?;
    Ok(S3Response::new(PutObjectTaggingOutput {
        version_id: (!id.is_null()).then(|| id.to_string()),
    }))
}

pub(crate) async fn get(
    g: &Gateway,
    req: S3Request<GetObjectTaggingInput>,
) -> S3Result<S3Response<GetObjectTaggingOutput>> {
    let input = req.input;
    let version = version_arg(input.version_id.as_deref())?;
    let store = g.store.clone();
    let rec = tokio::task::spawn_blocking(move || {
        store.object_version(&input.bucket, &input.key, version)
    })
    .await
    .map_err(join_err)?
    .map_err(s3_err)?;
    Ok(S3Response::new(GetObjectTaggingOutput {
        tag_set: to_tag_set(&rec.tags),
        version_id: (!rec.version_id.is_null()).then(|| rec.version_id.to_string()),
    }))
}

pub(crate) async fn delete(
    g: &Gateway,
    req: S3Request<DeleteObjectTaggingInput>,
) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
    let input = req.input;
    let version = version_arg(input.version_id.as_deref())?;
    let store = g.store.clone();
    let id = tokio::task::spawn_blocking(move || {
        store.set_tags(&input.bucket, &input.key, version, BTreeMap::new())
    })
    .await
    .map_err(join_err)?
    .map_err(s3_err)?;
    Ok(S3Response::new(DeleteObjectTaggingOutput {
        version_id: (!id.is_null()).then(|| id.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tags_decode_and_bad_ones_are_refused() {
        let t = from_header(Some("project=llm%20eval&stage=train+v2")).unwrap();
        assert_eq!(t["project"], "llm eval");
        assert_eq!(t["stage"], "train v2");
        assert!(from_header(Some("a=1&a=2")).is_err(), "duplicate key");
        assert!(from_header(Some("aws:x=1")).is_err(), "reserved prefix");
        assert!(from_header(Some("=1")).is_err(), "empty key");
        assert!(
            from_header(Some("k=%3Cscript%3E")).is_err(),
            "bad characters"
        );
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert!(from_header(Some(&eleven.join("&"))).is_err(), "11 tags");
        assert!(from_header(Some(&format!("{}=v", "k".repeat(129)))).is_err());
    }
}
