//! What a signature must cover, checked on every S3 request before s3s verifies it.
//!
//! s3s 0.14.1 verifies a signature over the headers the client chose to sign, and that is all
//! (`ops/signature.rs` in s3s marks the check of unsigned headers as still to be written).
//! Left alone it would take:
//! - `x-amz-*` headers the signature does not cover: a presigned PUT URL sent with an added
//!   `x-amz-copy-source` becomes a copy of any of the signer's objects, and unsigned
//!   `x-amz-meta-*` or `x-amz-tagging` headers are stored as if the signer sent them;
//! - presigned SigV4 URLs valid for any length of time (AWS caps them at 7 days);
//! - SigV2 header-signed requests of any age (replayable forever), and SigV2 query URLs
//!   expiring at any future time; SigV2 signatures compared with `!=`, not in constant time;
//! - a credential scope whose region is not a region name (s3cmd's stock `US`), refused only
//!   after the signature check with a 400 no client can act on.
//!
//! So this screen runs first. It verifies SigV2 signatures itself (in constant time, with
//! `hmac`'s `verify_slice`): a request whose SigV2 signature is wrong never reaches the `!=` in
//! s3s, and one that is right is checked there again at no risk. SigV4 signatures are left to
//! s3s, which compares them in constant time. The screen is pure: the server hands it the
//! request's parts and the time, and turns a [`Refusal`] into S3's error.
//!
//! A form upload (POST Object) carries its signature in its body, not its headers; its screen
//! is [`super::form`], which also verifies SigV2 form signatures in constant time.

use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Uri};
use time::OffsetDateTime;

use crate::credentials::KeyStore;

/// The longest a presigned URL may be valid: AWS's limit, 7 days.
pub const MAX_PRESIGNED_SECS: i64 = 604_800;
/// How far a SigV2 request's Date may be from this node's clock (SigV4's limit in s3s too).
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a request is refused before its signature is verified by s3s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `x-amz-*` headers present but not covered by the signature (names, comma-separated).
    HeadersNotSigned(String),
    /// A presigned URL valid for longer than [`MAX_PRESIGNED_SECS`].
    ExpiresTooLong,
    /// A presigned query string whose fields do not parse.
    MalformedQuery(&'static str),
    /// A SigV2 query URL past its `Expires`.
    Expired,
    /// A SigV2 header-signed request without a Date or `x-amz-date`, or with one that does
    /// not parse.
    MissingDate,
    /// A SigV2 request's date more than [`MAX_SKEW_SECS`] away from now.
    TooSkewed,
    /// A SigV4 credential scope whose region is not a region name (`[a-z0-9-]+`); the answer
    /// names the node's region, as AWS does, so clients that follow it (s3cmd) retry there.
    WrongRegion { given: String },
    /// SigV2: the access key is unknown.
    UnknownAccessKey,
    /// SigV2: the signature does not match.
    SignatureDoesNotMatch,
}

impl Refusal {
    /// Status, S3 error code, message, and the extra XML element AWS adds to the error.
    pub fn as_s3(&self, node_region: &str) -> (http::StatusCode, &'static str, String, String) {
        use http::StatusCode as S;
        match self {
            Self::HeadersNotSigned(names) => (
                S::FORBIDDEN,
                "AccessDenied",
                "There were headers present in the request which were not signed".into(),
                format!("<HeadersNotSigned>{}</HeadersNotSigned>", xml_escape(names)),
            ),
            Self::ExpiresTooLong => (
                S::BAD_REQUEST,
                "AuthorizationQueryParametersError",
                format!(
                    "X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGNED_SECS}"
                ),
                String::new(),
            ),
            Self::MalformedQuery(what) => (
                S::BAD_REQUEST,
                "AuthorizationQueryParametersError",
                format!("Query-string authentication requires {what}"),
                String::new(),
            ),
            Self::Expired => (
                S::FORBIDDEN,
                "AccessDenied",
                "Request has expired".into(),
                String::new(),
            ),
            Self::MissingDate => (
                S::FORBIDDEN,
                "AccessDenied",
                "AWS authentication requires a valid Date or x-amz-date header".into(),
                String::new(),
            ),
            Self::TooSkewed => (
                S::FORBIDDEN,
                "RequestTimeTooSkewed",
                format!(
                    "The difference between the request time and the server's time is too large (more than {MAX_SKEW_SECS} s)"
                ),
                String::new(),
            ),
            Self::WrongRegion { given } => (
                S::BAD_REQUEST,
                "AuthorizationHeaderMalformed",
                format!(
                    "The authorization header is malformed; the region '{}' is wrong; expecting '{}'",
                    xml_escape(given),
                    xml_escape(node_region)
                ),
                format!("<Region>{}</Region>", xml_escape(node_region)),
            ),
            Self::UnknownAccessKey => (
                S::FORBIDDEN,
                "InvalidAccessKeyId",
                "The AWS access key Id you provided does not exist in our records.".into(),
                String::new(),
            ),
            Self::SignatureDoesNotMatch => (
                S::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.".into(),
                String::new(),
            ),
        }
    }
}

/// A request the screen lets through, and how s3s must see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    AsSent,
    /// A SigV2 signature over `/bucket/` for a request sent to `/bucket`: botocore signs
    /// bucket requests that way (its path-style URLs drop the slash after signing). Same
    /// resource; s3s, which verifies over the path as sent, must be given the slash.
    WithBucketSlash,
}

/// The parts of a request the screen reads.
pub struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The bucket named by the Host header (virtual-hosted style), if any.
    pub host_bucket: Option<&'a str>,
}

/// Passes a request whose signature, once s3s verifies it, covers everything it carries; see
/// the module documentation for what is refused.
pub fn screen(req: &Request<'_>, now: OffsetDateTime, keys: &KeyStore) -> Result<Passed, Refusal> {
    let query: Vec<(String, String)> = req
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let q = |name: &str| param(&query, name);
    let authorization = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());

    if q("X-Amz-Signature").is_some() {
        let expires = q("X-Amz-Expires")
            .ok_or(Refusal::MalformedQuery("X-Amz-Expires"))?
            .parse::<i64>()
            .map_err(|_| Refusal::MalformedQuery("X-Amz-Expires as a number of seconds"))?;
        if !(0..=MAX_PRESIGNED_SECS).contains(&expires) {
            return Err(Refusal::ExpiresTooLong);
        }
        if let Some(region) = q("X-Amz-Credential").and_then(scope_region) {
            check_region(region)?;
        }
        let signed = q("X-Amz-SignedHeaders").unwrap_or_default();
        return all_amz_headers_signed(req.headers, signed).map(|()| Passed::AsSent);
    }
    if q("Signature").is_some() {
        return v2_query(req, &query, now, keys);
    }
    match authorization {
        Some(a) if a.starts_with("AWS4-") => {
            let fields = v4_fields(a);
            let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
            if let Some(region) = field("Credential").and_then(scope_region) {
                check_region(region)?;
            }
            all_amz_headers_signed(req.headers, field("SignedHeaders").unwrap_or_default())
                .map(|()| Passed::AsSent)
        }
        Some(a) if a.starts_with("AWS ") => v2_header(req, &a[4..], &query, now, keys),
        // Anonymous, or a scheme s3s refuses itself.
        _ => Ok(Passed::AsSent),
    }
}

/// The first value of query parameter `name`.
fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=a;b, Signature=...` as (name, value) pairs.
fn v4_fields(authorization: &str) -> Vec<(&str, &str)> {
    let rest = authorization
        .split_once(' ')
        .map(|(_, r)| r)
        .unwrap_or_default();
    rest.split(',')
        .filter_map(|f| f.trim().split_once('='))
        .collect()
}

/// The region of `AKID/20130524/us-east-1/s3/aws4_request` (read from the right: the last
/// three fields are fixed, the access key may hold anything).
fn scope_region(credential: &str) -> Option<&str> {
    let mut parts = credential.rsplitn(4, '/');
    let (_terminator, _service, region) = (parts.next()?, parts.next()?, parts.next()?);
    Some(region)
}

fn check_region(region: &str) -> Result<(), Refusal> {
    let valid = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Refusal::WrongRegion {
            given: region.to_owned(),
        })
    }
}

fn all_amz_headers_signed(headers: &HeaderMap, signed: &str) -> Result<(), Refusal> {
    let signed: Vec<&str> = signed.split(';').map(str::trim).collect();
    let mut missing: Vec<&str> = headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|name| name.starts_with("x-amz-"))
        .filter(|name| !signed.iter().any(|s| s.eq_ignore_ascii_case(name)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_unstable();
    missing.dedup();
    Err(Refusal::HeadersNotSigned(missing.join(",")))
}

/// `Authorization: AWS <access key>:<base64 signature>`.
fn v2_header(
    req: &Request<'_>,
    credential: &str,
    query: &[(String, String)],
    now: OffsetDateTime,
    keys: &KeyStore,
) -> Result<Passed, Refusal> {
    let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
    let date = header("x-amz-date")
        .or_else(|| header("date"))
        .and_then(parse_http_date)
        .ok_or(Refusal::MissingDate)?;
    if (now - date).whole_seconds().abs() > MAX_SKEW_SECS {
        return Err(Refusal::TooSkewed);
    }
    let (access_key, signature) = credential
        .split_once(':')
        .ok_or(Refusal::SignatureDoesNotMatch)?;
    v2_verify(req, query, V2Mode::Header, keys, access_key, signature)
}

/// `?AWSAccessKeyId=...&Expires=<unix seconds>&Signature=...`.
fn v2_query(
    req: &Request<'_>,
    query: &[(String, String)],
    now: OffsetDateTime,
    keys: &KeyStore,
) -> Result<Passed, Refusal> {
    let q = |name: &str| param(query, name);
    let expires = q("Expires")
        .ok_or(Refusal::MalformedQuery("Expires"))?
        .parse::<i64>()
        .map_err(|_| Refusal::MalformedQuery("Expires as Unix seconds"))?;
    let now = now.unix_timestamp();
    if expires < now {
        return Err(Refusal::Expired);
    }
    if expires - now > MAX_PRESIGNED_SECS {
        return Err(Refusal::ExpiresTooLong);
    }
    let access_key = q("AWSAccessKeyId").ok_or(Refusal::MalformedQuery("AWSAccessKeyId"))?;
    let signature = q("Signature").unwrap_or_default();
    v2_verify(req, query, V2Mode::Query, keys, access_key, signature)
}

fn v2_verify(
    req: &Request<'_>,
    query: &[(String, String)],
    mode: V2Mode,
    keys: &KeyStore,
    access_key: &str,
    signature: &str,
) -> Result<Passed, Refusal> {
    use base64::Engine as _;
    let secret = keys.secret(access_key).ok_or(Refusal::UnknownAccessKey)?;
    let given = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| Refusal::SignatureDoesNotMatch)?;
    let matches = |path: &str| {
        let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(v2_string_to_sign(req, query, mode, path).as_bytes());
        // Constant time: the point of verifying here rather than in s3s.
        mac.verify_slice(&given).is_ok()
    };
    let path = req.uri.path();
    if matches(path) {
        return Ok(Passed::AsSent);
    }
    let bucket_only = req.host_bucket.is_none() && path.len() > 1 && !path[1..].contains('/');
    if bucket_only && matches(&format!("{path}/")) {
        return Ok(Passed::WithBucketSlash);
    }
    Err(Refusal::SignatureDoesNotMatch)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum V2Mode {
    Header,
    Query,
}

/// Subresources that are part of a SigV2 canonical resource, sorted (AWS's list, as s3s has it).
const V2_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// SigV2's StringToSign: verb, Content-MD5, Content-Type, Date (or Expires), the `x-amz-*`
/// headers (every one of them: SigV2 cannot leave one out), and the canonical resource.
fn v2_string_to_sign(
    req: &Request<'_>,
    query: &[(String, String)],
    mode: V2Mode,
    path: &str,
) -> String {
    let header = |n: &str| {
        req.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let mut s = String::with_capacity(256);
    s.push_str(req.method.as_str());
    s.push('\n');
    s.push_str(header("content-md5"));
    s.push('\n');
    s.push_str(header("content-type"));
    s.push('\n');
    match mode {
        // With x-amz-date, the Date line is empty (the x-amz-date header is signed below).
        V2Mode::Header if req.headers.contains_key("x-amz-date") => {}
        V2Mode::Header => s.push_str(header("date")),
        V2Mode::Query => s.push_str(param(query, "Expires").unwrap_or_default()),
    }
    s.push('\n');
    let mut names: Vec<&str> = req
        .headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|n| n.starts_with("x-amz-"))
        .collect();
    names.sort_unstable();
    for name in names {
        let values: Vec<&str> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().trim())
            .collect();
        s.push_str(name);
        s.push(':');
        s.push_str(&values.join(","));
        s.push('\n');
    }
    if let Some(bucket) = req.host_bucket {
        s.push('/');
        s.push_str(bucket);
    }
    s.push_str(path);
    let mut first = true;
    for name in V2_SUBRESOURCES {
        if let Some(v) = param(query, name) {
            s.push(if first { '?' } else { '&' });
            first = false;
            s.push_str(name);
            if !v.is_empty() {
                s.push('=');
                s.push_str(v);
            }
        }
    }
    s
}

/// RFC 2822 (`Tue, 27 Mar 2007 19:36:42 +0000`, as s3cmd sends) or HTTP-date (`... GMT`).
pub(crate) fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc2822;
    OffsetDateTime::parse(s.trim(), &Rfc2822).ok().or_else(|| {
        httpdate::parse_http_date(s.trim())
            .ok()
            .map(OffsetDateTime::from)
    })
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyPair;

    fn keys() -> KeyStore {
        KeyStore::from_pairs(&[KeyPair {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        }])
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    fn run(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        host_bucket: Option<&str>,
        now: i64,
    ) -> Result<(), Refusal> {
        let uri: Uri = uri.parse().unwrap();
        let method: Method = method.parse().unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        screen(
            &Request {
                method: &method,
                uri: &uri,
                headers: &h,
                host_bucket,
            },
            at(now),
            &keys(),
        )
        .map(|passed| assert_eq!(passed, Passed::AsSent))
    }

    const V4: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

    #[test]
    fn v4_header_auth_refuses_unsigned_amz_headers() {
        let base = [
            ("authorization", V4),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("x-amz-date", "20130524T000000Z"),
        ];
        assert_eq!(run("PUT", "/b/k", &base, None, 0), Ok(()));
        let mut extra = base.to_vec();
        extra.push(("x-amz-copy-source", "private/secrets.csv"));
        extra.push(("x-amz-meta-who", "mallory"));
        assert_eq!(
            run("PUT", "/b/k", &extra, None, 0),
            Err(Refusal::HeadersNotSigned(
                "x-amz-copy-source,x-amz-meta-who".into()
            ))
        );
        // Other headers need not be signed (AWS signs only what it must).
        let mut other = base.to_vec();
        other.push(("content-type", "text/plain"));
        assert_eq!(run("PUT", "/b/k", &other, None, 0), Ok(()));
    }

    #[test]
    fn presigned_v4_urls_cover_their_headers_and_last_at_most_a_week() {
        let url = |expires: &str, signed: &str| {
            format!(
                "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires={expires}&X-Amz-SignedHeaders={signed}&X-Amz-Signature=aa"
            )
        };
        assert_eq!(run("PUT", &url("604800", "host"), &[], None, 0), Ok(()));
        assert_eq!(
            run("PUT", &url("604801", "host"), &[], None, 0),
            Err(Refusal::ExpiresTooLong)
        );
        assert_eq!(
            run("PUT", &url("-1", "host"), &[], None, 0),
            Err(Refusal::ExpiresTooLong)
        );
        assert!(matches!(
            run("PUT", &url("soon", "host"), &[], None, 0),
            Err(Refusal::MalformedQuery(_))
        ));
        assert_eq!(
            run(
                "PUT",
                &url("60", "host"),
                &[("x-amz-copy-source", "private/secrets.csv")],
                None,
                0
            ),
            Err(Refusal::HeadersNotSigned("x-amz-copy-source".into()))
        );
        assert_eq!(
            run(
                "PUT",
                &url("60", "host%3Bx-amz-meta-a"),
                &[("x-amz-meta-a", "1")],
                None,
                0
            ),
            Ok(())
        );
    }

    #[test]
    fn a_region_that_is_not_a_region_name_is_answered_with_ours() {
        let auth = V4.replace("us-east-1", "US");
        assert_eq!(
            run("GET", "/", &[("authorization", &auth)], None, 0),
            Err(Refusal::WrongRegion { given: "US".into() })
        );
        let (status, code, msg, extra) =
            Refusal::WrongRegion { given: "US".into() }.as_s3("us-east-1");
        assert_eq!(status, 400);
        assert_eq!(code, "AuthorizationHeaderMalformed");
        assert!(msg.contains("expecting 'us-east-1'"), "{msg}");
        assert_eq!(extra, "<Region>us-east-1</Region>");
        // Any well-formed region is accepted, whatever this node's own is.
        let auth = V4.replace("us-east-1", "ap-south-2");
        assert_eq!(
            run(
                "GET",
                "/",
                &[
                    ("authorization", &auth),
                    ("x-amz-date", "x"),
                    ("x-amz-content-sha256", "x")
                ],
                None,
                0
            ),
            Ok(())
        );
    }

    /// AWS's own SigV2 examples (RESTAuthentication.html), with their key pair.
    #[test]
    fn v2_header_signatures_verify_as_aws_documents_them() {
        let now = parse_http_date("Tue, 27 Mar 2007 19:36:42 +0000")
            .unwrap()
            .unix_timestamp();
        let get = [
            (
                "authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:qgk2+6Sv9/oM7G3qLEjTH1a1l1g=",
            ),
            ("date", "Tue, 27 Mar 2007 19:36:42 +0000"),
        ];
        assert_eq!(
            run(
                "GET",
                "/photos/puppy.jpg",
                &get,
                Some("awsexamplebucket1"),
                now
            ),
            Ok(())
        );
        // One flipped character in the signature, or a request 16 minutes later.
        let mut bad = get;
        bad[0].1 = "AWS AKIAIOSFODNN7EXAMPLE:qgk2+6Sv9/oM7G3qLEjTH1a1l1G=";
        assert_eq!(
            run(
                "GET",
                "/photos/puppy.jpg",
                &bad,
                Some("awsexamplebucket1"),
                now
            ),
            Err(Refusal::SignatureDoesNotMatch)
        );
        assert_eq!(
            run(
                "GET",
                "/photos/puppy.jpg",
                &get,
                Some("awsexamplebucket1"),
                now + 16 * 60
            ),
            Err(Refusal::TooSkewed)
        );
        assert_eq!(
            run(
                "GET",
                "/photos/puppy.jpg",
                &get[..1],
                Some("awsexamplebucket1"),
                now
            ),
            Err(Refusal::MissingDate)
        );
        let mut stranger = get;
        stranger[0].1 = "AWS AKIDNOBODY:qgk2+6Sv9/oM7G3qLEjTH1a1l1g=";
        assert_eq!(
            run(
                "GET",
                "/photos/puppy.jpg",
                &stranger,
                Some("awsexamplebucket1"),
                now
            ),
            Err(Refusal::UnknownAccessKey)
        );
        // A PUT with Content-Type and Content-Length (the latter is not signed).
        let put = [
            (
                "authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:iqRzw+ileNPu1fhspnRs8nOjjIA=",
            ),
            ("date", "Tue, 27 Mar 2007 21:15:45 +0000"),
            ("content-type", "image/jpeg"),
            ("content-length", "94328"),
        ];
        let t = parse_http_date("Tue, 27 Mar 2007 21:15:45 +0000")
            .unwrap()
            .unix_timestamp();
        assert_eq!(
            run(
                "PUT",
                "/photos/puppy.jpg",
                &put,
                Some("awsexamplebucket1"),
                t
            ),
            Ok(())
        );
        // An unsigned-looking x-amz header breaks a SigV2 signature: it is always covered.
        let mut tagged = put.to_vec();
        tagged.push(("x-amz-meta-who", "mallory"));
        assert_eq!(
            run(
                "PUT",
                "/photos/puppy.jpg",
                &tagged,
                Some("awsexamplebucket1"),
                t
            ),
            Err(Refusal::SignatureDoesNotMatch)
        );
    }

    #[test]
    fn v2_query_urls_expire_and_last_at_most_a_week() {
        // AWS's original example (bucket johnsmith), Expires=1175139620.
        let url = |expires: i64, sig: &str| {
            format!(
                "/johnsmith/photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature={sig}&Expires={expires}"
            )
        };
        let sig = "NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D";
        assert_eq!(
            run("GET", &url(1_175_139_620, sig), &[], None, 1_175_139_000),
            Ok(())
        );
        assert_eq!(
            run("GET", &url(1_175_139_620, sig), &[], None, 1_175_139_621),
            Err(Refusal::Expired)
        );
        assert_eq!(
            run(
                "GET",
                &url(1_175_139_620, sig),
                &[],
                None,
                1_175_139_620 - MAX_PRESIGNED_SECS - 1
            ),
            Err(Refusal::ExpiresTooLong)
        );
        assert_eq!(
            run(
                "GET",
                &url(1_175_139_620, "NpgCjnDzrM%2BWFzoENXmpNDUsSn9%3D"),
                &[],
                None,
                1_175_139_000
            ),
            Err(Refusal::SignatureDoesNotMatch)
        );
    }

    #[test]
    fn dates_parse_in_both_forms_clients_send() {
        let a = parse_http_date("Tue, 27 Mar 2007 19:36:42 +0000").unwrap();
        let b = parse_http_date("Tue, 27 Mar 2007 19:36:42 GMT").unwrap();
        assert_eq!(a, b);
        assert!(parse_http_date("yesterday").is_none());
    }
}
