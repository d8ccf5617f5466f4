//! What an operator configures for an origin: the local bucket, the upstream bucket and prefix
//! it fronts, and how to reach it (`--origin LOCAL=s3://BUCKET[/PREFIX]` with the node-wide
//! `--origin-*` flags, or `[[origins]]` tables in the TOML with per-origin settings).

use serde::Deserialize;

/// How a node reaches one upstream bucket, and which local bucket answers for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginSpec {
    /// The local bucket name clients use.
    pub bucket: String,
    /// The upstream bucket ("" for a plain HTTP origin).
    pub upstream_bucket: String,
    /// Key prefix inside the upstream bucket ("" or ending in '/' as given); local keys are
    /// upstream keys with it removed.
    pub prefix: String,
    /// S3 endpoint URL; `None`: AWS's endpoint for `region`.
    pub endpoint: Option<String>,
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), as MinIO and most S3-compatible servers
    /// want; default: on when an endpoint is given, off for AWS.
    pub path_style: bool,
    /// Static credentials; `None`: `S3SWARM_ORIGIN_ACCESS_KEY`/`_SECRET_KEY`, else the AWS
    /// chain (environment, profile, web identity, instance metadata).
    pub credentials: Option<(String, String)>,
    /// The local identity that owns the bucket; `None`: the node's first configured key.
    pub owner: Option<String>,
    /// What writes to the bucket do.
    pub write: super::WriteMode,
    /// A plain HTTP(S) origin's base URL, ending in '/' (`None`: an S3 origin): keys are
    /// paths under it, read with HEAD and ranged GETs.
    pub http: Option<String>,
}

/// Node-wide settings of every origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginSettings {
    /// Seconds an object's upstream metadata is trusted before it is asked again.
    pub revalidate_secs: u64,
    /// Bytes per piece: the unit fetched from the origin with one ranged GET.
    pub piece_size: u64,
    /// Requests to origins this node has open at once.
    pub max_connections: usize,
    /// Bytes per second this node reads from origins at most; 0: no cap.
    pub max_rate: u64,
}

impl Default for OriginSettings {
    fn default() -> Self {
        Self {
            revalidate_secs: 60,
            piece_size: 8 << 20,
            max_connections: 32,
            max_rate: 0,
        }
    }
}

/// One `[[origins]]` table of the TOML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginTable {
    pub bucket: String,
    /// `s3://BUCKET[/PREFIX]`, or `http(s)://HOST/PATH/` for a plain HTTP origin.
    pub upstream: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub owner: Option<String>,
    /// `through` (default), `back` or `none`.
    pub write: Option<String>,
}

/// The node-wide `--origin-*` values an `--origin` flag is completed with.
#[derive(Clone, Debug, Default)]
pub struct OriginDefaults {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub write: Option<String>,
}

/// Splits `s3://BUCKET[/PREFIX]`.
pub fn parse_upstream(s: &str) -> Result<(String, String), String> {
    let rest = s
        .strip_prefix("s3://")
        .ok_or_else(|| format!("origin {s:?} must be s3://BUCKET[/PREFIX] or an http(s):// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.len() < 3
        || bucket.len() > 63
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(format!(
            "origin {s:?}: {bucket:?} is not an S3 bucket name (3-63 lowercase letters, digits, '-' or '.')"
        ));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

impl OriginSpec {
    /// From `LOCAL=s3://BUCKET[/PREFIX]` and the node-wide defaults.
    pub fn from_flag(flag: &str, d: &OriginDefaults) -> Result<Self, String> {
        let (local, upstream) = flag.split_once('=').ok_or_else(|| {
            format!("--origin {flag:?} must be LOCAL_BUCKET=s3://BUCKET[/PREFIX] or LOCAL_BUCKET=https://HOST/PATH/")
        })?;
        Self::from_table(
            OriginTable {
                bucket: local.to_owned(),
                upstream: upstream.to_owned(),
                ..Default::default()
            },
            d,
        )
    }

    pub fn from_table(t: OriginTable, d: &OriginDefaults) -> Result<Self, String> {
        if t.upstream.starts_with("http://") || t.upstream.starts_with("https://") {
            return Self::http_from_table(t);
        }
        let (upstream_bucket, prefix) = parse_upstream(&t.upstream)?;
        if store::BucketName::new(&t.bucket).is_err() {
            return Err(format!(
                "origin bucket {:?} is not a valid local bucket name",
                t.bucket
            ));
        }
        let endpoint = t.endpoint.or_else(|| d.endpoint.clone());
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(format!(
                "origin endpoint {e:?} must be an http:// or https:// URL"
            ));
        }
        let credentials = match (t.access_key, t.secret_key) {
            (Some(a), Some(s)) => Some((a, s)),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "origin {:?}: access_key and secret_key must be given together",
                    t.bucket
                ));
            }
        };
        let write = match t.write.or_else(|| d.write.clone()) {
            Some(w) => w
                .parse()
                .map_err(|e| format!("origin {:?}: {e}", t.bucket))?,
            None => super::WriteMode::default(),
        };
        Ok(Self {
            write,
            bucket: t.bucket,
            upstream_bucket,
            prefix,
            path_style: t.path_style.or(d.path_style).unwrap_or(endpoint.is_some()),
            endpoint,
            region: t
                .region
                .or_else(|| d.region.clone())
                .unwrap_or_else(|| "us-east-1".into()),
            credentials,
            owner: t.owner,
            http: None,
        })
    }

    /// A plain HTTP(S) origin: read-only (a node-wide `--origin-write` does not apply to it;
    /// its own table may only say `none`), no endpoint, region or keys.
    fn http_from_table(t: OriginTable) -> Result<Self, String> {
        if store::BucketName::new(&t.bucket).is_err() {
            return Err(format!(
                "origin bucket {:?} is not a valid local bucket name",
                t.bucket
            ));
        }
        let rest = t.upstream.split_once("://").map_or("", |(_, r)| r);
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty()
            || t.upstream.contains(['?', '#'])
            || t.upstream.contains(char::is_whitespace)
        {
            return Err(format!(
                "origin {:?} must be an http(s)://HOST[:PORT]/PATH/ URL without query or fragment",
                t.upstream
            ));
        }
        if let Some(w) = t.write.as_deref().filter(|w| *w != "none") {
            return Err(format!(
                "origin {:?}: write = {w:?}, but a plain HTTP origin can only be read (write = \"none\")",
                t.bucket
            ));
        }
        if t.endpoint.is_some() || t.access_key.is_some() || t.secret_key.is_some() {
            return Err(format!(
                "origin {:?}: endpoint and keys are for S3 origins, not for {}",
                t.bucket, t.upstream
            ));
        }
        let mut base = t.upstream;
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(Self {
            bucket: t.bucket,
            upstream_bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            credentials: None,
            owner: t.owner,
            write: super::WriteMode::None,
            http: Some(base),
        })
    }

    /// Where the origin is, for people: `s3://BUCKET/PREFIX` or the HTTP base URL.
    pub fn upstream_url(&self) -> String {
        match &self.http {
            Some(base) => base.clone(),
            None => format!("s3://{}/{}", self.upstream_bucket, self.prefix),
        }
    }

    /// The upstream key of a local key.
    pub fn upstream_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The local key of an upstream key (`None`: outside the prefix).
    pub fn local_key<'a>(&self, upstream: &'a str) -> Option<&'a str> {
        upstream.strip_prefix(self.prefix.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_a_bucket_a_prefix_and_take_the_node_defaults() {
        let d = OriginDefaults {
            endpoint: Some("http://127.0.0.1:5000".into()),
            region: Some("eu-west-1".into()),
            path_style: None,
            write: Some("none".into()),
        };
        let s = OriginSpec::from_flag("datasets=s3://ml-data/imagenet/", &d).unwrap();
        assert_eq!(s.bucket, "datasets");
        assert_eq!(s.upstream_bucket, "ml-data");
        assert_eq!(s.prefix, "imagenet/");
        assert_eq!(s.region, "eu-west-1");
        assert!(s.path_style, "an endpoint means path style unless told");
        assert_eq!(s.write, crate::origin::WriteMode::None);
        assert_eq!(s.upstream_key("a/b"), "imagenet/a/b");
        assert_eq!(s.local_key("imagenet/x"), Some("x"));
        assert_eq!(s.local_key("other/x"), None);
        let s = OriginSpec::from_flag("d22=s3://ml-data", &OriginDefaults::default()).unwrap();
        assert_eq!(s.prefix, "");
        assert!(!s.path_style);
        assert_eq!(s.write, crate::origin::WriteMode::Through);
        let back = OriginDefaults {
            write: Some("back".into()),
            ..Default::default()
        };
        let s = OriginSpec::from_flag("d22=s3://ml-data", &back).unwrap();
        assert_eq!(s.write, crate::origin::WriteMode::Back);
        let sideways = OriginDefaults {
            write: Some("sideways".into()),
            ..Default::default()
        };
        let e = OriginSpec::from_flag("d22=s3://ml-data", &sideways).unwrap_err();
        assert!(e.contains("\"back\""), "{e}");
        let h = OriginSpec::from_flag("models=https://mirror.example/models", &d).unwrap();
        assert_eq!(h.http.as_deref(), Some("https://mirror.example/models/"));
        assert_eq!(
            h.write,
            crate::origin::WriteMode::None,
            "HTTP origins are read-only"
        );
        assert_eq!(h.upstream_url(), "https://mirror.example/models/");
        let t = OriginTable {
            bucket: "models".into(),
            upstream: "http://10.0.0.1:8080/".into(),
            write: Some("through".into()),
            ..Default::default()
        };
        assert!(
            OriginSpec::from_table(t, &d)
                .unwrap_err()
                .contains("can only be read")
        );
        for bad in [
            "datasets",
            "datasets=ml-data",
            "datasets=https://",
            "datasets=https://example.com/x?y=1",
            "datasets=s3://ML",
            "Bad_Name=s3://ml-data",
        ] {
            assert!(OriginSpec::from_flag(bad, &d).is_err(), "{bad}");
        }
    }
}
