//! Admin routes and the commands that call them, SigV4-checked like any S3 call (the member
//! list is not for anonymous eyes); the commands sign with the same keys as an S3 client.
//!
//! - `GET /_admin/cluster`, `s3swarm cluster status`: the swarm's members, their state and
//!   what they hold.
//! - `POST /_admin/prefetch?bucket=B&key=K`, `s3swarm cluster prefetch B K`: fetches the
//!   chunks of an object this node lacks from its peers, without serving it, and answers
//!   once all are verified and stored (warming a node before a job reads; also the swarm's
//!   transfer rate without an HTTP client in the way). On a bucket that fronts an origin,
//!   `?bucket=B&prefix=P` (`s3swarm cluster prefetch s3://B/P`) warms every object under the
//!   prefix into the swarm instead, answering a line of JSON per object as it goes
//!   (`&local=1`: also onto this node; `--all-nodes` asks every member so).

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
    origins: &crate::origin::Origins,
    owner: &str,
    query: Option<&str>,
) -> S3Result<S3Response<Body>> {
    use crate::s3::error::{join_err, s3_err};
    let (mut bucket, mut key, mut prefix, mut local) = (None, None, None, false);
    let mut copies: Option<usize> = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "bucket" => bucket = Some(v.into_owned()),
            "key" => key = Some(v.into_owned()),
            "prefix" => prefix = Some(v.into_owned()),
            "local" => local = v == "1" || v == "true",
            "copies" => {
                copies = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (1..=16).contains(n))
                        .ok_or_else(|| {
                            s3_error!(InvalidArgument, "copies must be a number from 1 to 16")
                        })?,
                )
            }
            _ => {}
        }
    }
    if let Some(o) = bucket.as_deref().and_then(|b| origins.get(b)) {
        if o.owner != owner {
            return Err(s3_error!(AccessDenied, "Access Denied"));
        }
        use crate::origin::warm::{Hold, Scope, start};
        let scope = match key {
            Some(k) => Scope::Key(k),
            None => Scope::Prefix(prefix.unwrap_or_default()),
        };
        let hold = match (copies, local) {
            (Some(n), _) => Hold::Copies(n),
            (None, true) => Hold::Here,
            (None, false) => Hold::Owner,
        };
        let lines: s3s::stream::DynByteStream = Box::pin(start(o.clone(), scope, hold));
        let mut resp = S3Response::new(Body::from(lines));
        resp.status = Some(StatusCode::OK);
        resp.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        return Ok(resp);
    }
    let Some(swarm) = swarm else {
        return Err(s3_error!(
            NotImplemented,
            "This node is not part of a swarm (start it with --swarm-listen)."
        ));
    };
    if prefix.is_some() {
        return Err(s3_error!(
            InvalidArgument,
            "prefetch by prefix is for buckets that front an origin; name one key with &key="
        ));
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
    let resp = send(endpoint, method, path_and_query).await?;
    Ok(resp.text().await?)
}

/// Sends a signed, bodiless admin request; returns the response once its status is 200.
async fn send(
    endpoint: &str,
    method: &str,
    path_and_query: &str,
) -> Result<reqwest::Response, AdminError> {
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
    if status != 200 {
        return Err(AdminError::Refused {
            endpoint: endpoint.into(),
            status,
            body: resp.text().await?,
        });
    }
    Ok(resp)
}

/// Warms `prefix` of origin bucket `bucket` through the node at `endpoint` (or, with
/// `all_nodes`, onto every member at once), printing progress: a line updated in place on a
/// terminal (objects, bytes, rate, ETA), else the nodes' JSON lines. Fails if any object
/// could not be warmed.
pub async fn warm_origin(
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    all_nodes: bool,
    copies: Option<usize>,
    json: bool,
) -> Result<(), AdminError> {
    use crate::origin::warm::WarmLine;
    use futures::StreamExt;
    use std::io::{IsTerminal, Write};
    // Both ask every member: to keep all of it, or the pieces each ranks for.
    let endpoints = if all_nodes || copies.is_some() {
        let v: serde_json::Value =
            serde_json::from_str(&call(endpoint, "GET", CLUSTER_PATH).await?)?;
        let scheme = endpoint.split("://").next().unwrap_or("http");
        let list: Vec<String> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["state"].as_str() == Some("alive"))
            .filter_map(|m| m["http_addr"].as_str())
            .map(|a| format!("{scheme}://{a}"))
            .collect();
        if list.is_empty() {
            vec![endpoint.to_owned()]
        } else {
            list
        }
    } else {
        vec![endpoint.to_owned()]
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("bucket", bucket)
        .append_pair("prefix", prefix);
    if let Some(n) = copies {
        query.append_pair("copies", &n.to_string());
    } else if all_nodes {
        query.append_pair("local", "1");
    }
    let path = format!("{PREFETCH_PATH}?{}", query.finish());
    let mut streams = Vec::new();
    for e in &endpoints {
        let resp = send(e, "POST", &path).await?;
        let e = e.clone();
        streams.push(resp.bytes_stream().map(move |b| (e.clone(), b)).boxed());
    }
    let mut all = futures::stream::select_all(streams);
    let terminal = !json && std::io::stdout().is_terminal();
    let started = std::time::Instant::now();
    let (mut total_objects, mut total_bytes, mut done_objects, mut done_bytes) =
        (0u64, 0u64, 0u64, 0u64);
    let (mut failed, mut pending) = (0u64, std::collections::HashMap::<String, Vec<u8>>::new());
    while let Some((node, chunk)) = all.next().await {
        let buf = pending.entry(node.clone()).or_default();
        buf.extend_from_slice(&chunk?);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=end).collect();
            let l: WarmLine = serde_json::from_slice(&raw)?;
            match &l {
                WarmLine::Start { objects, bytes } => {
                    total_objects += objects;
                    total_bytes += bytes;
                }
                WarmLine::Object {
                    size, error, key, ..
                } => {
                    done_objects += 1;
                    if let Some(e) = error {
                        failed += 1;
                        eprintln!("{node}: {key}: {e}");
                    } else {
                        done_bytes += size;
                    }
                }
                WarmLine::Done { .. } => {}
            }
            if terminal {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let rate = done_bytes as f64 / secs;
                let eta = if rate > 0.0 {
                    format!(
                        "{:.0} s",
                        total_bytes.saturating_sub(done_bytes) as f64 / rate
                    )
                } else {
                    "-".into()
                };
                print!(
                    "\r{done_objects}/{total_objects} objects, {:.1}/{:.1} MiB, {:.1} MiB/s, ETA {eta}   ",
                    done_bytes as f64 / 1048576.0,
                    total_bytes as f64 / 1048576.0,
                    rate / 1048576.0
                );
                let _ = std::io::stdout().flush();
            } else {
                let mut v = serde_json::to_value(&l)?;
                v["node"] = serde_json::Value::String(node.clone());
                println!("{v}");
            }
        }
    }
    if terminal {
        println!(
            "\nwarmed {} objects ({:.1} MiB) on {} node(s) in {:.1} s",
            done_objects - failed,
            done_bytes as f64 / 1048576.0,
            endpoints.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if failed > 0 {
        return Err(AdminError::Refused {
            endpoint: endpoint.into(),
            status: 503,
            body: format!("{failed} object(s) could not be warmed"),
        });
    }
    Ok(())
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
