//! Bucket CORS: Put/Get/DeleteBucketCors, and how a browser's request is matched against the
//! rules.
//!
//! The rules live in the bucket record, so answering a cross-origin request costs the one
//! bucket lookup the access check already makes; requests without an `Origin` header (every
//! SDK and CLI request) never look. Preflights (`OPTIONS`) are answered before s3s because S3
//! answers them unauthenticated: a browser never signs a preflight.

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::{BucketRecord, CorsRule};

use super::Gateway;
use super::error::{join_err, s3_err};

/// S3 accepts at most this many rules in one configuration.
const MAX_RULES: usize = 100;

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

pub(crate) async fn put_bucket_cors(
    g: &Gateway,
    req: S3Request<PutBucketCorsInput>,
) -> S3Result<S3Response<PutBucketCorsOutput>> {
    let rules = validate(req.input.cors_configuration)?;
    let store = g.store.clone();
    let bucket = req.input.bucket;
    tokio::task::spawn_blocking(move || store.set_bucket_cors(&bucket, Some(rules)))
        .await
        .map_err(join_err)?
        .map_err(s3_err)?;
    Ok(S3Response::new(PutBucketCorsOutput::default()))
}

pub(crate) async fn get_bucket_cors(
    g: &Gateway,
    req: S3Request<GetBucketCorsInput>,
) -> S3Result<S3Response<GetBucketCorsOutput>> {
    let rec = g.store.bucket(&req.input.bucket).map_err(s3_err)?;
    let Some(rules) = rec.cors else {
        return Err(s3_error!(
            NoSuchCORSConfiguration,
            "The CORS configuration does not exist"
        ));
    };
    let cors_rules = rules
        .into_iter()
        .map(|r| CORSRule {
            allowed_headers: (!r.allowed_headers.is_empty()).then_some(r.allowed_headers),
            allowed_methods: r.allowed_methods,
            allowed_origins: r.allowed_origins,
            expose_headers: (!r.expose_headers.is_empty()).then_some(r.expose_headers),
            id: r.id,
            max_age_seconds: r.max_age_seconds,
        })
        .collect();
    Ok(S3Response::new(GetBucketCorsOutput {
        cors_rules: Some(cors_rules),
    }))
}

pub(crate) async fn delete_bucket_cors(
    g: &Gateway,
    req: S3Request<DeleteBucketCorsInput>,
) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
    let store = g.store.clone();
    let bucket = req.input.bucket;
    tokio::task::spawn_blocking(move || store.set_bucket_cors(&bucket, None))
        .await
        .map_err(join_err)?
        .map_err(s3_err)?;
    Ok(S3Response::new(DeleteBucketCorsOutput::default()))
}

/// Checks a configuration the way S3 does: schema violations (no rules, a rule without an
/// origin or method) are MalformedXML, values S3 understands but refuses are InvalidRequest.
pub(crate) fn validate(cfg: CORSConfiguration) -> S3Result<Vec<CorsRule>> {
    let malformed = || {
        s3_error!(
            MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema"
        )
    };
    if cfg.cors_rules.is_empty() || cfg.cors_rules.len() > MAX_RULES {
        return Err(malformed());
    }
    let mut out = Vec::with_capacity(cfg.cors_rules.len());
    for r in cfg.cors_rules {
        if r.allowed_methods.is_empty() || r.allowed_origins.is_empty() {
            return Err(malformed());
        }
        if r.max_age_seconds.is_some_and(|s| s < 0) {
            return Err(malformed());
        }
        if r.id.as_ref().is_some_and(|id| id.len() > 255) {
            return Err(s3_error!(
                InvalidArgument,
                "The ID of a CORS rule cannot be longer than 255 characters."
            ));
        }
        for m in &r.allowed_methods {
            if !METHODS.contains(&m.as_str()) {
                return Err(s3_error!(
                    InvalidRequest,
                    "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
                ));
            }
        }
        for o in &r.allowed_origins {
            if o.is_empty() {
                return Err(malformed());
            }
            if o.matches('*').count() > 1 {
                return Err(s3_error!(
                    InvalidRequest,
                    "AllowedOrigin \"{o}\" can not have more than one wildcard."
                ));
            }
        }
        let allowed_headers = r.allowed_headers.unwrap_or_default();
        for h in &allowed_headers {
            if h.matches('*').count() > 1 {
                return Err(s3_error!(
                    InvalidRequest,
                    "AllowedHeader \"{h}\" can not have more than one wildcard."
                ));
            }
        }
        let expose_headers = r.expose_headers.unwrap_or_default();
        for h in &expose_headers {
            if h.contains('*') {
                return Err(s3_error!(
                    InvalidRequest,
                    "ExposeHeader \"{h}\" contains wildcard. We currently do not support wildcard for ExposeHeader."
                ));
            }
        }
        out.push(CorsRule {
            id: r.id,
            allowed_origins: r.allowed_origins,
            allowed_methods: r.allowed_methods,
            allowed_headers,
            expose_headers,
            max_age_seconds: r.max_age_seconds,
        });
    }
    Ok(out)
}

/// `pattern` with at most one `*` standing for any run of characters.
fn wildcard_match(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match pattern.split_once('*') {
        None => eq(pattern, value),
        Some((pre, post)) => {
            value.len() >= pre.len() + post.len()
                && value.is_char_boundary(pre.len())
                && value.is_char_boundary(value.len() - post.len())
                && eq(&value[..pre.len()], pre)
                && eq(&value[value.len() - post.len()..], post)
        }
    }
}

/// The first rule (S3 evaluates them in order) that allows `origin` to use `method` with
/// every one of `request_headers`.
fn matching_rule<'a>(
    rules: &'a [CorsRule],
    origin: &str,
    method: &str,
    request_headers: &[&str],
) -> Option<(&'a CorsRule, &'a str)> {
    rules.iter().find_map(|r| {
        let allowed_origin = r
            .allowed_origins
            .iter()
            .find(|o| wildcard_match(o, origin, false))?;
        if !r.allowed_methods.iter().any(|m| m == method) {
            return None;
        }
        let headers_ok = request_headers.iter().all(|h| {
            r.allowed_headers
                .iter()
                .any(|pat| wildcard_match(pat, h, true))
        });
        headers_ok.then_some((r, allowed_origin.as_str()))
    })
}

/// What a request addresses, as far as CORS needs to know.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target<'a> {
    pub bucket: &'a str,
    /// Whether a key follows the bucket (S3 names the resource type in its CORS errors).
    pub object: bool,
}

impl<'a> Target<'a> {
    /// The bucket is the `bucket.<domain>` host label when virtual-hosted, else the first
    /// path segment. `None` for the service root or a segment no bucket name can be.
    pub(crate) fn of(domain: Option<&str>, headers: &'a HeaderMap, path: &'a str) -> Option<Self> {
        let path = path.trim_start_matches('/');
        if let Some(domain) = domain
            && let Some(host) = headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        {
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            if let Some(bucket) = host
                .strip_suffix(domain)
                .and_then(|h| h.strip_suffix('.'))
                .filter(|b| !b.is_empty())
            {
                return Some(Self {
                    bucket,
                    object: !path.is_empty(),
                });
            }
        }
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        let plausible = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        plausible.then_some(Self {
            bucket,
            object: !key.is_empty(),
        })
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Headers S3 adds to every answer that a rule allowed: the origin, the rule's methods,
/// exposed headers and max age. `Vary` tells caches the answer depends on those request
/// headers even when they are absent.
fn allow_headers(out: &mut HeaderMap, rule: &CorsRule, allowed_origin: &str, origin: &str) {
    let wildcard_origin = allowed_origin == "*";
    let origin_value = if wildcard_origin { "*" } else { origin };
    if let Ok(v) = HeaderValue::from_str(origin_value) {
        out.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if let Ok(v) = HeaderValue::from_str(&rule.allowed_methods.join(", ")) {
        out.insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if !wildcard_origin {
        // Browsers only send cookies/credentials to an origin echoed by name.
        out.insert(
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !rule.expose_headers.is_empty()
        && let Ok(v) = HeaderValue::from_str(&rule.expose_headers.join(", "))
    {
        out.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    if let Some(age) = rule.max_age_seconds {
        out.insert(http::header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
    }
    out.insert(
        http::header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
        ),
    );
}

/// A preflight's answer: 200 with the allowed origin, methods and headers, or 403 with the
/// error S3 sends. `bucket` is the looked-up record (`None` when the bucket does not exist).
pub(crate) fn preflight(
    bucket: Option<&BucketRecord>,
    headers: &HeaderMap,
    is_object: bool,
) -> (StatusCode, HeaderMap, String) {
    let mut out = HeaderMap::new();
    let Some(origin) = header_str(headers, "origin") else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
        );
    };
    let Some(method) = header_str(headers, "access-control-request-method") else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid Access-Control-Request-Method: null",
        );
    };
    let requested: Vec<&str> = headers
        .get_all("access-control-request-headers")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let resource = if is_object { "OBJECT" } else { "BUCKET" };
    let rules = bucket.and_then(|b| b.cors.as_deref());
    let Some(rules) = rules else {
        return forbidden(
            "CORSResponse: CORS is not enabled for this bucket.",
            method,
            resource,
        );
    };
    let Some((rule, allowed_origin)) = matching_rule(rules, origin, method, &requested) else {
        return forbidden(
            "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
            method,
            resource,
        );
    };
    allow_headers(&mut out, rule, allowed_origin, origin);
    if !requested.is_empty()
        && let Ok(v) = HeaderValue::from_str(&requested.join(", "))
    {
        out.insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    (StatusCode::OK, out, String::new())
}

/// The CORS headers for an actual (non-preflight) request from `origin`, if a rule allows it.
pub(crate) fn actual_response_headers(
    bucket: &BucketRecord,
    origin: &str,
    method: &Method,
) -> Option<HeaderMap> {
    let rules = bucket.cors.as_deref()?;
    let (rule, allowed_origin) = matching_rule(rules, origin, method.as_str(), &[])?;
    let mut out = HeaderMap::new();
    allow_headers(&mut out, rule, allowed_origin, origin);
    Some(out)
}

fn forbidden(message: &str, method: &str, resource: &str) -> (StatusCode, HeaderMap, String) {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessForbidden</Code><Message>{}</Message><Method>{}</Method><ResourceType>{resource}</ResourceType></Error>",
        xml_escape(message),
        xml_escape(method),
    );
    (StatusCode::FORBIDDEN, xml_headers(), body)
}

fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
) -> (StatusCode, HeaderMap, String) {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message></Error>",
        xml_escape(message)
    );
    (status, xml_headers(), body)
}

fn xml_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    h
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn wildcards_match_one_run_of_characters() {
        assert!(wildcard_match(
            "https://*.example.com",
            "https://a.b.example.com",
            false
        ));
        assert!(!wildcard_match(
            "https://*.example.com",
            "https://example.com",
            false
        ));
        assert!(!wildcard_match(
            "https://*.example.com",
            "http://a.example.com",
            false
        ));
        assert!(wildcard_match("*", "null", false));
        assert!(wildcard_match("x-amz-*", "X-Amz-Date", true));
        assert!(!wildcard_match("x-amz-*", "X-Amz-Date", false));
        assert!(
            !wildcard_match("ab*ba", "aba", false),
            "prefix and suffix may not overlap"
        );
    }

    #[test]
    fn first_rule_allowing_origin_method_and_every_header_wins() {
        let rules = vec![
            rule(&["https://a.test"], &["GET"], &[]),
            rule(
                &["https://*.test"],
                &["GET", "PUT"],
                &["content-type", "x-amz-*"],
            ),
        ];
        let (r, _) = matching_rule(&rules, "https://a.test", "GET", &[]).unwrap();
        assert_eq!(r.allowed_methods, ["GET"]);
        let (r, _) = matching_rule(&rules, "https://a.test", "GET", &["Content-Type"]).unwrap();
        assert_eq!(
            r.allowed_methods,
            ["GET", "PUT"],
            "rule 1 allows no headers"
        );
        assert!(matching_rule(&rules, "https://a.test", "PUT", &["authorization"]).is_none());
        assert!(matching_rule(&rules, "https://a.test", "DELETE", &[]).is_none());
        assert!(matching_rule(&rules, "https://a.other", "GET", &[]).is_none());
    }

    #[test]
    fn bucket_comes_from_host_under_the_domain_or_from_the_path() {
        let t = |bucket, object| Some(Target { bucket, object });
        let mut h = HeaderMap::new();
        h.insert(
            http::header::HOST,
            HeaderValue::from_static("photos.s3.test:9000"),
        );
        assert_eq!(Target::of(Some("s3.test"), &h, "/k"), t("photos", true));
        assert_eq!(Target::of(Some("s3.test"), &h, "/"), t("photos", false));
        assert_eq!(Target::of(None, &h, "/data/k"), t("data", true));
        h.insert(http::header::HOST, HeaderValue::from_static("s3.test:9000"));
        assert_eq!(Target::of(Some("s3.test"), &h, "/data/k"), t("data", true));
        assert_eq!(Target::of(Some("s3.test"), &h, "/data"), t("data", false));
        assert_eq!(Target::of(None, &h, "/"), None);
        assert_eq!(Target::of(None, &h, "/Not_A_Bucket/x"), None);
    }
}
