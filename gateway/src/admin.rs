//! `GET /_admin/cluster` and `s3swarm cluster status`: the swarm's members, their state and
//! what they hold. The route is SigV4-checked like any S3 call (the member list is not for
//! anonymous eyes); the command signs its request with the same keys as an S3 client.

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

pub(crate) async fn cluster_status(swarm: Option<&swarm::Swarm>) -> S3Result<S3Response<Body>> {
    let Some(swarm) = swarm else {
        return Err(s3_error!(
            NotImplemented,
            "This node is not part of a swarm (start it with --swarm-listen)."
        ));
    };
    let status = swarm.status().await;
    let body = serde_json::to_vec_pretty(&status).map_err(|_| s3_error!(InternalError))?;
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

/// Fetches the status from the node at `endpoint` and prints it (a table, or JSON).
pub async fn print_status(endpoint: &str, json: bool) -> Result<(), AdminError> {
    let access = env_key(["S3SWARM_ACCESS_KEY", "AWS_ACCESS_KEY_ID"]).ok_or(AdminError::NoKeys)?;
    let secret =
        env_key(["S3SWARM_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"]).ok_or(AdminError::NoKeys)?;
    let region = env_key(["S3SWARM_REGION", "AWS_DEFAULT_REGION"]).unwrap_or("us-east-1".into());
    let url = format!("{}{CLUSTER_PATH}", endpoint.trim_end_matches('/'));
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
    let signable = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(b""))
        .map_err(|e| AdminError::Sign(e.to_string()))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| AdminError::Sign(e.to_string()))?
        .into_parts();
    let mut req = http::Request::builder()
        .method("GET")
        .uri(&url)
        .body(())
        .map_err(|e| AdminError::Sign(e.to_string()))?;
    instructions.apply_to_request_http1x(&mut req);
    // reqwest is built without a default crypto provider (the workspace uses aws-lc-rs).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder().build()?;
    let mut r = client.get(&url);
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
