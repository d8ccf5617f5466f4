//! S3's size limits on what a request carries, checked before s3s reads it: user metadata at
//! most 2 KiB, a PUT's header section at most 8 KiB, a configuration document (CORS, tagging
//! and the other `PUT ?<subresource>` bodies) at most 64 KiB. Refused with S3's codes.

use http::{HeaderMap, Method, Uri};

/// User-defined metadata: the UTF-8 bytes of every key (after `x-amz-meta-`) and value.
pub const MAX_USER_METADATA: usize = 2 * 1024;
/// A PUT request's whole header section (names, values).
pub const MAX_PUT_HEADERS: usize = 8 * 1024;
/// A configuration document's body.
pub const MAX_CONFIG_BODY: u64 = 64 * 1024;

/// Subresources whose PUT body is a configuration document.
const CONFIGURATIONS: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "lifecycle",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "tagging",
    "versioning",
    "website",
];

/// A limit a request went past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exceeded {
    UserMetadata(usize),
    Headers(usize),
    Configuration(u64),
}

impl Exceeded {
    /// Status, S3 error code, message and the extra XML AWS adds.
    pub fn as_s3(&self) -> (http::StatusCode, &'static str, String, String) {
        let s = http::StatusCode::BAD_REQUEST;
        match self {
            Self::UserMetadata(n) => (
                s,
                "MetadataTooLarge",
                "Your metadata headers exceed the maximum allowed metadata size.".into(),
                format!("<Size>{n}</Size><MaxSizeAllowed>{MAX_USER_METADATA}</MaxSizeAllowed>"),
            ),
            Self::Headers(n) => (
                s,
                "RequestHeaderSectionTooLarge",
                "Your request header section exceeds the maximum allowed size.".into(),
                format!("<Size>{n}</Size><MaxSizeAllowed>{MAX_PUT_HEADERS}</MaxSizeAllowed>"),
            ),
            Self::Configuration(n) => (
                s,
                "MaxMessageLengthExceeded",
                format!(
                    "Your request was too big: a configuration document may be at most {MAX_CONFIG_BODY} bytes, this one is {n}."
                ),
                String::new(),
            ),
        }
    }
}

/// Passes a request within the limits above.
pub fn check(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Exceeded> {
    let writes = *method == Method::PUT || *method == Method::POST;
    if !writes {
        return Ok(());
    }
    let metadata: usize = headers
        .iter()
        .filter_map(|(k, v)| {
            k.as_str()
                .strip_prefix("x-amz-meta-")
                .map(|name| name.len() + v.len())
        })
        .sum();
    if metadata > MAX_USER_METADATA {
        return Err(Exceeded::UserMetadata(metadata));
    }
    if *method != Method::PUT {
        return Ok(());
    }
    let section: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if section > MAX_PUT_HEADERS {
        return Err(Exceeded::Headers(section));
    }
    let configuration = uri.query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, _)| CONFIGURATIONS.contains(&k.as_ref()))
    });
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if configuration && n > MAX_CONFIG_BODY => Err(Exceeded::Configuration(n)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(method: Method, uri: &str, headers: &[(&str, String)]) -> Result<(), Exceeded> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        check(&method, &uri.parse().unwrap(), &h)
    }

    #[test]
    fn user_metadata_counts_keys_without_the_prefix_and_values() {
        // 2 KiB exactly passes; one byte more is refused.
        let at = vec![("x-amz-meta-k", "v".repeat(MAX_USER_METADATA - 1))];
        assert_eq!(run(Method::PUT, "/b/o", &at), Ok(()));
        let over = vec![("x-amz-meta-k", "v".repeat(MAX_USER_METADATA))];
        assert_eq!(
            run(Method::PUT, "/b/o", &over),
            Err(Exceeded::UserMetadata(MAX_USER_METADATA + 1))
        );
        // CreateMultipartUpload (POST ?uploads) too; reads are never refused for it.
        assert!(run(Method::POST, "/b/o?uploads", &over).is_err());
        assert_eq!(run(Method::GET, "/b/o", &over), Ok(()));
    }

    #[test]
    fn a_put_header_section_is_at_most_8_kib() {
        let many: Vec<(&str, String)> = (0..9)
            .map(|i| {
                (
                    [
                        "x-a", "x-b", "x-c", "x-d", "x-e", "x-f", "x-g", "x-h", "x-i",
                    ][i],
                    "z".repeat(1000),
                )
            })
            .collect();
        assert!(matches!(
            run(Method::PUT, "/b/o", &many),
            Err(Exceeded::Headers(_))
        ));
        assert_eq!(run(Method::PUT, "/b/o", &many[..7]), Ok(()));
    }

    #[test]
    fn configuration_documents_are_at_most_64_kib() {
        let big = vec![("content-length", "65537".to_owned())];
        assert_eq!(
            run(Method::PUT, "/b?cors", &big),
            Err(Exceeded::Configuration(65537))
        );
        assert!(run(Method::PUT, "/b/o?tagging", &big).is_err());
        // An object body of any size is not a configuration.
        assert_eq!(run(Method::PUT, "/b/o", &big), Ok(()));
        let fits = vec![("content-length", "65536".to_owned())];
        assert_eq!(run(Method::PUT, "/b?cors", &fits), Ok(()));
    }
}
