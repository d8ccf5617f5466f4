//! A plain HTTP(S) server as an origin (`--origin models=https://mirror.example/models/`):
//! objects are files under a base URL, read with HEAD and ranged GETs (nginx, Apache, a CDN,
//! a model mirror). No listing and no writes: those need the S3 API.
//!
//! A version is the server's strong ETag when it gives one (ranged GETs then carry
//! `If-Match`, so a piece never mixes two versions); without one, its Last-Modified and size
//! (each ranged answer is checked against them). Connection failures, 5xx, 429 and 408 are
//! retried twice with backoff and jitter.

use std::time::Duration;

use aws_smithy_types::byte_stream::ByteStream;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use store::ObjectMeta;

use super::OriginError;
use super::client::UpstreamObject;

/// Attempts per request (the first and two retries).
const ATTEMPTS: u32 = 3;
/// The prefix of a version made up from Last-Modified and size (no usable ETag).
const MADE_UP: &str = "s3swarm-lm-";

pub struct HttpOrigin {
    client: reqwest::Client,
    /// Ends in '/'.
    base: String,
}

/// What a path segment keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `key` as a URL path under the base: each segment percent-encoded, '/' kept.
fn path_of(key: &str) -> String {
    key.split('/')
        .map(|seg| percent_encoding::utf8_percent_encode(seg, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The `Last-Modified` of an answer, in unix ms (0 when absent or unreadable).
fn last_modified_ms(h: &HeaderMap) -> i64 {
    header(h, header::LAST_MODIFIED)
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

fn header(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// What a status that is not the expected success means.
fn status_err(s: StatusCode, what: &str) -> OriginError {
    match s.as_u16() {
        404 | 410 => OriginError::NotFound,
        401 | 403 => OriginError::AccessDenied(format!("{what}: HTTP {s}")),
        412 | 416 => OriginError::Changed,
        408 | 429 => OriginError::Unavailable(format!("{what}: HTTP {s}")),
        n @ 400..=499 => OriginError::Rejected {
            status: n,
            code: "InvalidRequest".into(),
            message: format!("the origin answered {what} with HTTP {s}"),
        },
        _ => OriginError::Unavailable(format!("{what}: HTTP {s}")),
    }
}

fn retried(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

impl HttpOrigin {
    pub fn new(base: &str) -> Result<Self, String> {
        // reqwest is built without a default crypto provider (the workspace uses aws-lc-rs).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .read_timeout(Duration::from_secs(20))
            // Bytes are hashed as they are: no transparent decompression.
            .no_gzip()
            .redirect(reqwest::redirect::Policy::limited(5));
        if base.starts_with("https://") {
            // The system's trust store (SSL_CERT_FILE / SSL_CERT_DIR override it).
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                return Err(format!(
                    "no trusted CA certificates found for {base} ({:?})",
                    found.errors
                ));
            }
            for c in found.certs {
                if let Ok(cert) = reqwest::Certificate::from_der(&c) {
                    b = b.add_root_certificate(cert);
                }
            }
        }
        Ok(Self {
            client: b.build().map_err(|e| e.to_string())?,
            base: base.to_owned(),
        })
    }

    pub fn url(&self, key: &str) -> String {
        format!("{}{}", self.base, path_of(key))
    }

    /// Sends the request `make` builds, again after connection failures and retried statuses.
    async fn send(
        &self,
        what: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OriginError> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let backoff = 200u64 << attempt;
                let jitter = rand::random::<u64>() % backoff;
                tokio::time::sleep(Duration::from_millis(backoff + jitter)).await;
            }
            match make().send().await {
                Ok(r) if retried(r.status()) => last = format!("{what}: HTTP {}", r.status()),
                Ok(r) => return Ok(r),
                Err(e) => last = format!("{what}: {e}"),
            }
        }
        Err(OriginError::Unavailable(last))
    }

    /// Whether the server answers at all (any HTTP answer counts: a directory may be 403).
    pub async fn check(&self) -> Result<(), OriginError> {
        self.send("HEAD of the base URL", || self.client.head(&self.base))
            .await
            .map(drop)
    }

    pub async fn head(&self, key: &str) -> Result<UpstreamObject, OriginError> {
        let url = self.url(key);
        let r = self.send("HEAD", || self.client.head(&url)).await?;
        if r.status() != StatusCode::OK {
            return Err(status_err(r.status(), "HEAD"));
        }
        let h = r.headers();
        let size = header(h, header::CONTENT_LENGTH)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                OriginError::Unavailable(format!("HEAD of {url} answered without a length"))
            })?;
        let last_modified_ms = last_modified_ms(h);
        // A weak ETag (W/"...") names content loosely (it may change with compression):
        // not a version to read pieces of.
        let etag = match header(h, header::ETAG) {
            Some(e) if !e.starts_with("W/") => e.trim_matches('"').to_owned(),
            _ => format!("{MADE_UP}{last_modified_ms:x}-{size:x}"),
        };
        Ok(UpstreamObject {
            size,
            etag,
            last_modified_ms,
            meta: ObjectMeta {
                content_type: header(h, header::CONTENT_TYPE).map(str::to_owned),
                content_disposition: header(h, header::CONTENT_DISPOSITION).map(str::to_owned),
                content_language: header(h, header::CONTENT_LANGUAGE).map(str::to_owned),
                cache_control: header(h, header::CACHE_CONTROL).map(str::to_owned),
                ..Default::default()
            },
        })
    }

    /// Bytes `start..end` of the version `etag` names (see the module docs).
    pub async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        etag: &str,
    ) -> Result<ByteStream, OriginError> {
        let url = self.url(key);
        let range = format!("bytes={start}-{}", end.saturating_sub(1));
        let made_up = etag.strip_prefix(MADE_UP);
        let r = self
            .send("GET", || {
                let r = self.client.get(&url).header(header::RANGE, &range);
                match made_up {
                    Some(_) => r,
                    None => r.header(header::IF_MATCH, format!("\"{etag}\"")),
                }
            })
            .await?;
        let h = r.headers();
        match r.status() {
            StatusCode::PARTIAL_CONTENT => {
                let from = header(h, header::CONTENT_RANGE)
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if from != Some(start) {
                    return Err(OriginError::Unavailable(format!(
                        "GET of {url} answered another range than bytes {start}-"
                    )));
                }
            }
            // The whole object, when that is what was asked for (checked by its length).
            StatusCode::OK if start == 0 => {}
            StatusCode::OK => {
                return Err(OriginError::Rejected {
                    status: 501,
                    code: "NotImplemented".into(),
                    message: format!("the origin serving {url} does not answer ranged GETs"),
                });
            }
            s => return Err(status_err(s, "GET")),
        }
        // The version must be the one the pieces are of.
        let same = match made_up {
            None => header(h, header::ETAG).is_none_or(|e| e.trim_matches('"') == etag),
            Some(v) => v.starts_with(&format!("{:x}-", last_modified_ms(h))),
        };
        if !same {
            return Err(OriginError::Changed);
        }
        let body = r.bytes_stream().map(|b| b.map(http_body::Frame::data));
        Ok(ByteStream::from_body_1_x(http_body_util::StreamBody::new(
            body,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_url_paths_segment_by_segment() {
        assert_eq!(path_of("a/b c/ü+x.bin"), "a/b%20c/%C3%BC%2Bx.bin");
        assert_eq!(path_of("plain/file.safetensors"), "plain/file.safetensors");
    }

    #[test]
    fn statuses_mean_what_s3_clients_expect() {
        assert!(matches!(
            status_err(StatusCode::NOT_FOUND, "x"),
            OriginError::NotFound
        ));
        assert!(matches!(
            status_err(StatusCode::FORBIDDEN, "x"),
            OriginError::AccessDenied(_)
        ));
        assert!(matches!(
            status_err(StatusCode::PRECONDITION_FAILED, "x"),
            OriginError::Changed
        ));
        assert!(matches!(
            status_err(StatusCode::BAD_GATEWAY, "x"),
            OriginError::Unavailable(_)
        ));
        assert!(retried(StatusCode::TOO_MANY_REQUESTS) && !retried(StatusCode::NOT_FOUND));
    }
}
