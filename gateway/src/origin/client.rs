//! The upstream S3 API, through the AWS SDK for Rust: its credential chain, signing, retries
//! with backoff and jitter (throttling included), and timeouts. Every request holds a permit
//! of the node's origin connection budget while it runs (a ranged GET until its body is read).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_types::byte_stream::ByteStream;
use store::ObjectMeta;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::OriginError;
use super::http::HttpOrigin;
use super::spec::OriginSpec;

/// What the origin says about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamObject {
    pub size: u64,
    /// Without quotes, as the origin gave it.
    pub etag: String,
    pub last_modified_ms: i64,
    pub meta: ObjectMeta,
}

/// One entry of an upstream listing, its key already local.
#[derive(Clone, Debug)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
    pub storage_class: Option<String>,
}

/// One page of an upstream listing.
#[derive(Clone, Debug, Default)]
pub struct ListedPage {
    pub objects: Vec<Listed>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    /// V2: the upstream's continuation token, passed through as ours.
    pub next_token: Option<String>,
    /// V1: the upstream's next marker, as a local key.
    pub next_marker: Option<String>,
}

/// What a listing asks for, in local keys.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_keys: Option<i32>,
    /// V2 continuation token (the upstream's own).
    pub token: Option<String>,
    /// V2 start-after or V1 marker, a local key.
    pub after: Option<String>,
}

/// What a write through to the origin carries besides its bytes.
#[derive(Clone, Debug, Default)]
pub struct WriteMeta {
    pub meta: ObjectMeta,
    /// Base64 MD5 the client sent: the origin checks it too.
    pub content_md5: Option<String>,
    /// `If-None-Match` / `If-Match` of a conditional write, as the client sent them.
    pub if_none_match: Option<String>,
    pub if_match: Option<String>,
}

/// A request body passed through to the origin as it arrives.
pub type Upload = ByteStream;

/// A ranged GET's body, still holding its connection permit.
pub struct Body {
    pub stream: ByteStream,
    _permit: OwnedSemaphorePermit,
}

/// One upstream bucket.
pub struct OriginClient {
    s3: aws_sdk_s3::Client,
    /// Set for a plain HTTP(S) origin: reads go there, the S3 API is not available.
    http: Option<HttpOrigin>,
    spec: OriginSpec,
    permits: Arc<Semaphore>,
}

impl OriginClient {
    pub async fn new(spec: &OriginSpec, permits: Arc<Semaphore>) -> Result<Self, String> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(spec.region.clone()));
        let keys = spec.credentials.clone().or_else(|| {
            match (
                std::env::var("S3SWARM_ORIGIN_ACCESS_KEY"),
                std::env::var("S3SWARM_ORIGIN_SECRET_KEY"),
            ) {
                (Ok(a), Ok(s)) => Some((a, s)),
                _ => None,
            }
        });
        if let Some((a, s)) = keys {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                a,
                s,
                None,
                None,
                "s3swarm-origin",
            ));
        }
        let shared = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(spec.path_style)
            // A dead origin must answer within seconds (the client gets 503), not hang.
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .read_timeout(Duration::from_secs(20))
                    .build(),
            )
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3))
            // Plain requests: some S3-compatible origins do not take the SDK's default
            // checksum trailers.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        if let Some(e) = &spec.endpoint {
            conf = conf.endpoint_url(e);
        }
        let http = match &spec.http {
            Some(base) => Some(HttpOrigin::new(base)?),
            None => None,
        };
        Ok(Self {
            s3: aws_sdk_s3::Client::from_conf(conf.build()),
            http,
            spec: spec.clone(),
            permits,
        })
    }

    /// The S3 API of the upstream; a plain HTTP origin has none.
    fn s3(&self) -> Result<&aws_sdk_s3::Client, OriginError> {
        match &self.http {
            None => Ok(&self.s3),
            Some(_) => Err(OriginError::Rejected {
                status: 501,
                code: "NotImplemented".into(),
                message: format!(
                    "bucket {} fronts the plain HTTP origin {}, which can only be read by key",
                    self.spec.bucket,
                    self.spec.upstream_url()
                ),
            }),
        }
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, OriginError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| OriginError::Unavailable("the node is shutting down".into()))
    }

    /// Whether the upstream bucket answers with these credentials (checked at start).
    pub async fn check_bucket(&self) -> Result<(), OriginError> {
        let _p = self.permit().await?;
        if let Some(h) = &self.http {
            return h.check().await;
        }
        self.s3()?
            .head_bucket()
            .bucket(&self.spec.upstream_bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub async fn head(&self, key: &str) -> Result<UpstreamObject, OriginError> {
        let _p = self.permit().await?;
        if let Some(h) = &self.http {
            return h.head(key).await;
        }
        let out = self
            .s3()?
            .head_object()
            .bucket(&self.spec.upstream_bucket)
            .key(self.spec.upstream_key(key))
            .send()
            .await
            .map_err(classify)?;
        let size = out
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| OriginError::Unavailable("HEAD answered without a length".into()))?;
        let etag = out
            .e_tag()
            .map(unquote)
            .ok_or_else(|| OriginError::Unavailable("HEAD answered without an ETag".into()))?;
        Ok(UpstreamObject {
            size,
            etag,
            last_modified_ms: out.last_modified().map_or(0, millis),
            meta: ObjectMeta {
                content_type: out.content_type().map(str::to_owned),
                content_encoding: out.content_encoding().map(str::to_owned),
                content_disposition: out.content_disposition().map(str::to_owned),
                content_language: out.content_language().map(str::to_owned),
                cache_control: out.cache_control().map(str::to_owned),
                expires: out.expires_string().map(str::to_owned),
                user: out
                    .metadata()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
        })
    }

    /// Bytes `start..end` of the version whose ETag is `etag`: the origin answers 412 (and we
    /// [`OriginError::Changed`]) if the object was replaced, so no piece mixes two versions.
    pub async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        etag: &str,
    ) -> Result<Body, OriginError> {
        let permit = self.permit().await?;
        if let Some(h) = &self.http {
            return Ok(Body {
                stream: h.get_range(key, start, end, etag).await?,
                _permit: permit,
            });
        }
        let out = self
            .s3()?
            .get_object()
            .bucket(&self.spec.upstream_bucket)
            .key(self.spec.upstream_key(key))
            .range(format!("bytes={start}-{}", end.saturating_sub(1)))
            .if_match(format!("\"{etag}\""))
            .send()
            .await
            .map_err(classify)?;
        Ok(Body {
            stream: out.body,
            _permit: permit,
        })
    }

    /// Writes an object through to the origin; returns its ETag there (unquoted).
    pub async fn put(
        &self,
        key: &str,
        body: Upload,
        len: u64,
        w: WriteMeta,
    ) -> Result<String, OriginError> {
        let _p = self.permit().await?;
        let m = w.meta;
        let out = self
            .s3()?
            .put_object()
            .bucket(&self.spec.upstream_bucket)
            .key(self.spec.upstream_key(key))
            .body(body)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .set_content_md5(w.content_md5)
            .set_content_type(m.content_type)
            .set_content_encoding(m.content_encoding)
            .set_content_disposition(m.content_disposition)
            .set_content_language(m.content_language)
            .set_cache_control(m.cache_control)
            .set_metadata((!m.user.is_empty()).then(|| m.user.into_iter().collect()))
            .set_if_none_match(w.if_none_match)
            .set_if_match(w.if_match)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.e_tag().map(unquote).unwrap_or_default())
    }

    pub async fn delete(&self, key: &str) -> Result<(), OriginError> {
        let _p = self.permit().await?;
        self.s3()?
            .delete_object()
            .bucket(&self.spec.upstream_bucket)
            .key(self.spec.upstream_key(key))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// Starts a multipart upload at the origin; its upload id is the one clients use here.
    pub async fn create_upload(&self, key: &str, m: ObjectMeta) -> Result<String, OriginError> {
        let _p = self.permit().await?;
        let out = self
            .s3()?
            .create_multipart_upload()
            .bucket(&self.spec.upstream_bucket)
            .key(self.spec.upstream_key(key))
            .set_content_type(m.content_type)
            .set_content_encoding(m.content_encoding)
            .set_content_disposition(m.content_disposition)
            .set_content_language(m.content_language)
            .set_cache_control(m.cache_control)
            .set_metadata((!m.user.is_empty()).then(|| m.user.into_iter().collect()))
            .send()
            .await
            .map_err(classify)?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| OriginError::Unavailable("the origin gave no upload id".into()))
    }

    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Upload,
        len: u64,
        content_md5: Option<String>,
    ) -> Result<String, OriginError> {
        let _p = self.permit().await?;
        let out = self
            .s3()?
            .upload_part()
            .bucket(&self.spec.upstream_bucket)
            .key(self.spec.upstream_key(key))
            .upload_id(upload_id)
            .part_number(number)
            .body(body)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .set_content_md5(content_md5)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.e_tag().map(unquote).unwrap_or_default())
    }

    /// Completes an upload from (part number, ETag) pairs; returns the object's ETag.
    pub async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
    ) -> Result<String, OriginError> {
        let _p = self.permit().await?;
        let parts = parts
            .into_iter()
            .map(|(n, etag)| {
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(n)
                    .e_tag(format!("\"{}\"", etag.trim_matches('"')))
                    .build()
            })
            .collect();
        let out = self
            .s3()?
            .complete_multipart_upload()
            .bucket(&self.spec.upstream_bucket)
            .key(self.spec.upstream_key(key))
            .upload_id(upload_id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(classify)?;
        Ok(out.e_tag().map(unquote).unwrap_or_default())
    }

    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), OriginError> {
        let _p = self.permit().await?;
        self.s3()?
            .abort_multipart_upload()
            .bucket(&self.spec.upstream_bucket)
            .key(self.spec.upstream_key(key))
            .upload_id(upload_id)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub async fn list_v2(&self, q: &ListQuery) -> Result<ListedPage, OriginError> {
        let _p = self.permit().await?;
        let out = self
            .s3()?
            .list_objects_v2()
            .bucket(&self.spec.upstream_bucket)
            .prefix(self.spec.upstream_key(&q.prefix))
            .set_delimiter(q.delimiter.clone())
            .set_max_keys(q.max_keys)
            .set_continuation_token(q.token.clone())
            .set_start_after(q.after.as_deref().map(|a| self.spec.upstream_key(a)))
            .send()
            .await
            .map_err(classify)?;
        Ok(ListedPage {
            next_token: out.next_continuation_token().map(str::to_owned),
            ..self.page(out.contents(), out.common_prefixes(), out.is_truncated())
        })
    }

    pub async fn list_v1(&self, q: &ListQuery) -> Result<ListedPage, OriginError> {
        let _p = self.permit().await?;
        let out = self
            .s3()?
            .list_objects()
            .bucket(&self.spec.upstream_bucket)
            .prefix(self.spec.upstream_key(&q.prefix))
            .set_delimiter(q.delimiter.clone())
            .set_max_keys(q.max_keys)
            .set_marker(q.after.as_deref().map(|a| self.spec.upstream_key(a)))
            .send()
            .await
            .map_err(classify)?;
        Ok(ListedPage {
            next_marker: out
                .next_marker()
                .and_then(|m| self.spec.local_key(m))
                .map(str::to_owned),
            ..self.page(out.contents(), out.common_prefixes(), out.is_truncated())
        })
    }

    /// A listing page in local keys (V1 and V2 list the same types).
    fn page(
        &self,
        contents: &[aws_sdk_s3::types::Object],
        prefixes: &[aws_sdk_s3::types::CommonPrefix],
        truncated: Option<bool>,
    ) -> ListedPage {
        ListedPage {
            objects: contents
                .iter()
                .filter_map(|o| {
                    self.listed(
                        o.key()?,
                        o.size(),
                        o.e_tag(),
                        o.last_modified(),
                        o.storage_class().map(|s| s.as_str().to_owned()),
                    )
                })
                .collect(),
            prefixes: self.prefixes(prefixes.iter().filter_map(|p| p.prefix())),
            truncated: truncated.unwrap_or(false),
            next_token: None,
            next_marker: None,
        }
    }

    fn listed(
        &self,
        key: &str,
        size: Option<i64>,
        etag: Option<&str>,
        modified: Option<&aws_smithy_types::DateTime>,
        storage_class: Option<String>,
    ) -> Option<Listed> {
        Some(Listed {
            key: self.spec.local_key(key)?.to_owned(),
            size: size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            etag: etag.map(unquote).unwrap_or_default(),
            last_modified_ms: modified.map_or(0, millis),
            storage_class,
        })
    }

    fn prefixes<'a>(&self, upstream: impl Iterator<Item = &'a str>) -> Vec<String> {
        upstream
            .filter_map(|p| self.spec.local_key(p))
            .map(str::to_owned)
            .collect()
    }
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').to_owned()
}

fn millis(t: &aws_smithy_types::DateTime) -> i64 {
    t.to_millis().unwrap_or(0)
}

/// What an SDK failure means for our client: the upstream's 404 and 403 are theirs, a 412 is
/// a version change, other 4xx a request the origin would not take, and the rest (5xx after
/// the SDK's retries, timeouts, refused connections) an unavailable origin.
fn classify<E>(e: SdkError<E, aws_smithy_runtime_api::http::Response>) -> OriginError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (status, code, message) = match &e {
        SdkError::ServiceError(se) => (
            Some(se.raw().status().as_u16()),
            se.err().code().unwrap_or("").to_owned(),
            se.err().message().unwrap_or("").to_owned(),
        ),
        _ => (None, String::new(), String::new()),
    };
    let why = DisplayErrorContext(&e).to_string();
    match status {
        Some(404) if code == "NoSuchUpload" => OriginError::Rejected {
            status: 404,
            code,
            message,
        },
        Some(404) => OriginError::NotFound,
        Some(403) => OriginError::AccessDenied(why),
        Some(412) => OriginError::Changed,
        Some(s) if (400..500).contains(&s) && s != 429 && s != 408 => OriginError::Rejected {
            status: s,
            code: if code.is_empty() {
                "InvalidRequest".into()
            } else {
                code
            },
            message: if message.is_empty() { why } else { message },
        },
        _ => OriginError::Unavailable(why),
    }
}
