//! Entry points for the fuzz targets under `tests/fuzz`, compiled only with `--cfg fuzzing`
//! (as cargo-fuzz builds): the parsers of client input, reached without a server. Each one
//! checks what must hold of an accepted value, so a fuzzer finds wrong answers, not only
//! panics. `upload` drives a node's whole HTTP stack instead.

mod upload;

pub use upload::Uploads;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use s3s::host::S3Host;
use s3s::xml::Deserialize as _;
use store::{BucketRecord, ListCursor};

use crate::credentials::KeyStore;

/// A continuation token: whatever decodes must re-encode to a token decoding the same.
pub fn continuation_token(t: &str) {
    if let Ok(c) = super::list::decode_token(t) {
        let again = super::list::decode_token(&super::list::encode_token(&c))
            .expect("an encoded token decodes");
        assert!(
            matches!((&c, &again), (ListCursor::Key(a), ListCursor::Key(b)) | (ListCursor::Prefix(a), ListCursor::Prefix(b)) if a == b),
            "{t:?} decoded to {c:?}, re-encoded to {again:?}"
        );
    }
}

/// `x-amz-copy-source-range` against a source of `size` bytes: an accepted range lies inside.
pub fn copy_source_range(r: &str, size: u64) {
    if let Ok(range) = super::copy::copy_range(r, size) {
        assert!(
            range.start() < range.end() && range.end() <= size,
            "{r:?}: {range:?}"
        );
    }
}

/// `x-amz-tagging`: accepted tags are within S3's limits.
pub fn tagging_header(h: &str) {
    if let Ok(tags) = super::tagging::from_header(Some(h)) {
        assert!(tags.len() <= 10);
        for (k, v) in &tags {
            assert!(!k.is_empty() && k.chars().count() <= 128 && v.chars().count() <= 256);
        }
    }
}

/// A Tagging document (PutObjectTagging's body), as s3s parses it and we check it.
pub fn tagging_xml(xml: &[u8]) {
    let mut d = s3s::xml::Deserializer::new(xml);
    if let Ok(t) = s3s::dto::Tagging::deserialize(&mut d) {
        let _ = super::tagging::from_document(t);
    }
}

/// The Host header under a virtual-hosting domain: a bucket found is a label of the host.
pub fn host_header(domain: &str, host: &str) {
    let h = super::vhost::DomainHost::new(domain);
    if let Ok(v) = h.parse_host_header(host)
        && let Some(b) = v.bucket()
    {
        assert!(host.starts_with(b), "{host:?} gave bucket {b:?}");
    }
}

/// A CORS configuration document, validated, then matched against a preflight whose
/// origin, method and headers come from `request`.
pub fn cors(xml: &[u8], request: &str) {
    let mut d = s3s::xml::Deserializer::new(xml);
    let Ok(cfg) = s3s::dto::CORSConfiguration::deserialize(&mut d) else {
        return;
    };
    let Ok(rules) = super::cors::validate(cfg) else {
        return;
    };
    let bucket = BucketRecord {
        id: Default::default(),
        follows: None,
        owner: "owner".into(),
        created_ms: 0,
        region: None,
        versioning: None,
        cors: Some(rules),
    };
    let mut parts = request.splitn(3, '\n');
    let mut headers = HeaderMap::new();
    for name in [
        "origin",
        "access-control-request-method",
        "access-control-request-headers",
    ] {
        if let Some(v) = parts.next().and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    let _ = super::cors::preflight(Some(&bucket), &headers, true);
    if let Some(origin) = headers.get("origin").and_then(|o| o.to_str().ok()) {
        let _ = super::cors::actual_response_headers(&bucket, origin, &Method::GET);
    }
}

/// The signature screen over a request built from fuzz input: `method`, a request target,
/// then header lines `name: value`, one per line. Whatever it passes, every `x-amz-*`
/// header is named in the signed-headers list the request carries.
pub fn signature_screen(text: &str, now_secs: i64) {
    let mut lines = text.lines();
    let Some(method) = lines
        .next()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return;
    };
    let Some(uri) = lines.next().and_then(|u| u.parse::<Uri>().ok()) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for l in lines {
        if let Some((n, v)) = l.split_once(':')
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(n, v);
        }
    }
    let keys = KeyStore::from_pairs(&[crate::config::KeyPair {
        access_key: "AKIDEXAMPLE".into(),
        secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
    }]);
    let Ok(now) = time::OffsetDateTime::from_unix_timestamp(now_secs.rem_euclid(4_000_000_000))
    else {
        return;
    };
    let req = super::signature::Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        host_bucket: None,
    };
    let _ = super::signature::screen(&req, now, &keys);
}

/// A version id as a client sends it.
pub fn version_id(s: &str) {
    if let Ok(v) = s.parse::<store::VersionId>() {
        assert_eq!(v.to_string().parse::<store::VersionId>().ok(), Some(v));
    }
}

/// An HTTP date as SigV2 clients send it.
pub fn http_date(s: &str) {
    let _ = super::signature::parse_http_date(s);
}

/// A `Range` header (s3s parses it; this checks what we take from it) against an object of
/// `size` bytes: a satisfiable range lies inside the object, is not empty, and re-parses from
/// the header s3s writes for it to the same bytes.
pub fn range_header(h: &str, size: u64) {
    let Ok(r) = s3s::dto::Range::parse(h) else {
        return;
    };
    let Ok(bytes) = r.check(size) else {
        return;
    };
    assert!(
        bytes.start < bytes.end && bytes.end <= size,
        "{h:?} on {size} bytes: {bytes:?}"
    );
    let again = s3s::dto::Range::parse(&r.to_header_string())
        .ok()
        .and_then(|r| r.check(size).ok());
    assert_eq!(again, Some(bytes.clone()), "{h:?} re-parsed differently");
    let whole = store::ByteRange::new(bytes.start, bytes.end, size);
    assert!(
        whole.is_ok(),
        "{h:?}: {bytes:?} of {size} refused by the store"
    );
}
