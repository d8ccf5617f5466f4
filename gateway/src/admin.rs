//! Admin routes and the commands that call them, SigV4-checked like any S3 call (the member
//! list is not for anonymous eyes); the commands sign with the same keys as an S3 client.
//!
//! - `GET /_admin/cluster`, `s3swarm cluster status`: the swarm's members, their state and
//!   what they hold.
//! - `POST /_admin/prefetch?bucket=B&key=K`, `s3swarm cluster prefetch B K`: fetches the
//!   chunks of an object this node lacks from its peers, without serving it, and answers
//!   once all are verified and stored (warming a node before a job reads; also the swarm's
//!   transfer rate without an HTTP client in the way).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use http::{HeaderValue, StatusCode};
use s3s::{Body, S3Response, S3Result, s3_error};

/// The route's path.
pub const CLUSTER_PATH: &str = "/_admin/cluster";
/// Its first segment, which must pass bucket-name validation to reach the route.
pub const ADMIN_PREFIX: &str = "_admin";
/// The prefetch route's path (bucket and key in the query).
pub const PREFETCH_PATH: &str = "/_admin/prefetch";

pub(crate) async fn cluster_status(swarm: Option<&swarm::Swarm>) -> S3Result<S3Response<Body>> {
    let Some(swarm) = swarm else {
        return Err(s3_error!(
            NotImplemented,
            "This node is not part of a swarm (start it with --swarm-listen)."
        ));
    };
    json_response(&swarm.status().await)
}

/// What a prefetch did, as the route answers it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Prefetched {
    pub bucket: String,
    pub key: String,
    /// The object's size in bytes.
    pub size: u64,
    /// Distinct chunks in the object.
    pub chunks: usize,
    /// Chunks this node lacked and fetched from peers.
    pub fetched_chunks: usize,
    pub fetched_bytes: u64,
    /// From the first request to peers to the last chunk stored.
    pub seconds: f64,
}

/// Fetches the chunks of `bucket/key` this node lacks. Only the bucket's owner may; the
/// copies are cached ones (a `--capacity` node may evict them again under pressure).
pub(crate) async fn prefetch(
    store: &std::sync::Arc<store::Store>,
    swarm: Option<&swarm::Swarm>,
    owner: &str,
    query: Option<&str>,
) -> S3Result<S3Response<Body>> {
    use crate::s3::error::{join_err, s3_err};
    let Some(swarm) = swarm else {
        return Err(s3_error!(
            NotImplemented,
            "This node is not part of a swarm (start it with --swarm-listen)."
        ));
    };
    let (mut bucket, mut key) = (None, None);
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "bucket" => bucket = Some(v.into_owned()),
            "key" => key = Some(v.into_owned()),
            _ => {}
        }
    }
    let (Some(bucket), Some(key)) = (bucket, key) else {
        return Err(s3_error!(
            InvalidArgument,
            "prefetch needs both ?bucket= and &key= in the query"
        ));
    };
    let st = store.clone();
    let (b, k, who) = (bucket.clone(), key.clone(), owner.to_owned());
    let (size, chunks, missing) = tokio::task::spawn_blocking(move || {
        if st.bucket(&b)?.owner != who {
            return Ok(None);
        }
        let (_, manifest) = st.object_with_manifest(&b, &k, None)?;
        let mut seen = std::collections::HashSet::new();
        let mut missing = Vec::new();
        for c in manifest.chunks() {
            if seen.insert(c.hash) && !st.has_chunk(&c.hash)? {
                missing.push((c.hash, u64::from(c.len)));
            }
        }
        Ok(Some((manifest.size(), seen.len(), missing)))
    })
    .await
    .map_err(join_err)?
    .map_err(s3_err)?
    .ok_or_else(|| s3_error!(AccessDenied, "Access Denied"))?;
    let started = std::time::Instant::now();
    if !missing.is_empty() {
        let download = swarm.fetch(missing.iter().map(|(h, _)| *h).collect());
        for (h, _) in &missing {
            download.wait(h).await.map_err(|e| {
                s3_error!(
                    ServiceUnavailable,
                    "chunk {h} could not be fetched from any peer: {e}"
                )
            })?;
        }
    }
    let done = Prefetched {
        bucket,
        key,
        size,
        chunks,
        fetched_chunks: missing.len(),
        fetched_bytes: missing.iter().map(|(_, n)| n).sum(),
        seconds: started.elapsed().as_secs_f64(),
    };
    json_response(&done)
}

fn json_response<T: serde::Serialize>(v: &T) -> S3Result<S3Response<Body>> {
    let body = serde_json::to_vec_pretty(v).map_err(|_| s3_error!(InternalError))?;
    let mut resp = S3Response::new(Body::from(body));
    resp.status = Some(StatusCode::OK);
    resp.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Why `cluster status` failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "set S3SWARM_ACCESS_KEY and S3SWARM_SECRET_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    )]
    NoKeys,
    #[error("signing: {0}")]
    Sign(String),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{endpoint} answered {status}: {body}")]
    Refused {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("unexpected answer: {0}")]
    Parse(#[from] serde_json::Error),
}

fn env_key(names: [&str; 2]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// Sends a signed, bodiless admin request to `endpoint`; returns the answer's body.
async fn call(endpoint: &str, method: &str, path_and_query: &str) -> Result<String, AdminError> {
    let access = env_key(["S3SWARM_ACCESS_KEY", "AWS_ACCESS_KEY_ID"]).ok_or(AdminError::NoKeys)?;
    let secret =
        env_key(["S3SWARM_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"]).ok_or(AdminError::NoKeys)?;
    let region = env_key(["S3SWARM_REGION", "AWS_DEFAULT_REGION"]).unwrap_or("us-east-1".into());
    let url = format!("{}{path_and_query}", endpoint.trim_end_matches('/'));
    let identity = Credentials::new(access, secret, None, None, "s3swarm").into();
    let mut settings = SigningSettings::default();
    // S3 wants the payload hash as a header too.
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| AdminError::Sign(e.to_string()))?
        .into();
    let signable = SignableRequest::new(method, &url, std::iter::empty(), SignableBody::Bytes(b""))
        .map_err(|e| AdminError::Sign(e.to_string()))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| AdminError::Sign(e.to_string()))?
        .into_parts();
    let mut req = http::Request::builder()
        .method(method)
        .uri(&url)
        .body(())
        .map_err(|e| AdminError::Sign(e.to_string()))?;
    instructions.apply_to_request_http1x(&mut req);
    // reqwest is built without a default crypto provider (the workspace uses aws-lc-rs).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder().build()?;
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| AdminError::Sign(e.to_string()))?;
    let mut r = client.request(method, &url);
    for (k, v) in req.headers() {
        r = r.header(k.as_str(), v.as_bytes());
    }
    let resp = r.send().await?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    if status != 200 {
        return Err(AdminError::Refused {
            endpoint: endpoint.into(),
            status,
            body,
        });
    }
    Ok(body)
}

/// Asks the node at `endpoint` to prefetch `bucket/key` and prints what it fetched.
pub async fn prefetch_object(
    endpoint: &str,
    bucket: &str,
    key: &str,
    json: bool,
) -> Result<(), AdminError> {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("bucket", bucket)
        .append_pair("key", key)
        .finish();
    let body = call(endpoint, "POST", &format!("{PREFETCH_PATH}?{query}")).await?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let p: Prefetched = serde_json::from_str(&body)?;
    let mib = p.fetched_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{}/{}: fetched {} of {} chunks ({mib:.1} MiB) in {:.2} s ({:.1} MiB/s)",
        p.bucket,
        p.key,
        p.fetched_chunks,
        p.chunks,
        p.seconds,
        if p.seconds > 0.0 {
            mib / p.seconds
        } else {
            0.0
        }
    );
    Ok(())
}

/// Fetches the status from the node at `endpoint` and prints it (a table, or JSON).
pub async fn print_status(endpoint: &str, json: bool) -> Result<(), AdminError> {
    let body = call(endpoint, "GET", CLUSTER_PATH).await?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    println!(
        "node {} (replicas: {})",
        v["node"].as_str().unwrap_or("?"),
        v["replicas"]
    );
    println!(
        "{:<34} {:<22} {:<22} {:<8} {:<8} {:>8} {:>12} {:>8}",
        "MEMBER", "SWARM", "S3", "STATE", "ROLE", "CHUNKS", "BYTES", "MISSING"
    );
    for m in v["members"].as_array().into_iter().flatten() {
        let num = |k: &str| m[k].as_u64().map_or("-".to_string(), |n| n.to_string());
        println!(
            "{:<34} {:<22} {:<22} {:<8} {:<8} {:>8} {:>12} {:>8}{}",
            format!(
                "{}{}",
                m["id"].as_str().unwrap_or("?"),
                if m["is_self"].as_bool() == Some(true) {
                    "*"
                } else {
                    ""
                }
            ),
            m["swarm_addr"].as_str().unwrap_or("-"),
            m["http_addr"].as_str().unwrap_or("-"),
            m["state"].as_str().unwrap_or("?"),
            m["role"].as_str().unwrap_or("?"),
            num("chunks_held"),
            num("bytes_held"),
            num("chunks_missing"),
            m["error"]
                .as_str()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}
