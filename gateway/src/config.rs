//! One `Config`: defaults, then a TOML file, then `S3SWARM_*` environment variables, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An access key / secret key pair, one S3 identity.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct KeyPair {
    pub access_key: String,
    pub secret_key: String,
}

/// Everything a node needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address for S3, `/metrics` and `/healthz`.
    pub listen: SocketAddr,
    /// Where objects and metadata live.
    pub data_dir: PathBuf,
    /// Region reported by GetBucketLocation and accepted in signatures (any region signs).
    pub region: String,
    /// Identities allowed in, from the config file and environment.
    pub keys: Vec<KeyPair>,
    /// Largest object a single PUT (or one part) may carry, in bytes.
    pub max_object_size: u64,
    /// How long unreferenced chunks are kept before collection, in seconds, so reads that
    /// began before an overwrite or delete can finish.
    pub gc_grace_secs: u64,
    /// Log filter (`info`, `debug`, `gateway=debug,info`, ...).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
    /// PEM certificate chain; with `tls_key`, S3 is served over HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Base domain for virtual-hosted-style requests (`bucket.<domain>`); path style always works.
    pub domain: Option<String>,
    /// Largest file a browser-form POST upload may carry, in bytes. s3s holds the whole file
    /// in memory before the policy is checked, so this bounds memory per POST.
    pub post_max_size: u64,
    /// Where the swarm's QUIC endpoint listens; `None`: a stand-alone node.
    pub swarm_listen: Option<SocketAddr>,
    /// The swarm address peers dial (needed when `swarm_listen` is 0.0.0.0).
    pub swarm_advertise: Option<SocketAddr>,
    /// Swarm members to join through (IPs or DNS names, resolved on every attempt).
    pub peers: Vec<swarm::PeerAddr>,
    /// File holding the cluster secret every member shares.
    pub cluster_secret_file: Option<PathBuf>,
    /// Copies of each chunk kept across the swarm.
    pub replicas: usize,
    /// Cache-only node: bytes of chunk data kept at most (no placed copies).
    pub capacity: Option<u64>,
    /// Found the swarm's registry once this many storage members are live (every node given
    /// the same peers); unset, a node started without peers founds it.
    pub bootstrap_expect: Option<usize>,
    /// Peers' swarm connections this node accepts at most (proved ones; handshakes have
    /// their own, fixed cap). Past it a peer is refused as busy.
    pub swarm_max_connections: usize,
    /// Test-only fault switch: serve corrupted chunks to peers.
    pub fault_corrupt_chunks: bool,
    /// Open S3 connections at most; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Seconds a connection has to send a request head once ready for one (idle keep-alive
    /// included).
    pub header_timeout_secs: u64,
    /// Seconds a response write may make no progress (the client stopped reading).
    pub send_timeout_secs: u64,
    /// Seconds a request body may deliver nothing (400 RequestTimeout).
    pub body_timeout_secs: u64,
    /// Free bytes uploads leave on the data directory's file system; `None`: 1% of it, at
    /// least 64 MiB, at most 4 GiB.
    pub disk_reserve_bytes: Option<u64>,
    /// Incomplete multipart uploads older than this many seconds are aborted.
    pub multipart_expiry_secs: u64,
    /// Seconds between passes that drop superseded namespace journal entries.
    pub journal_prune_secs: u64,
    /// Bytes per second the scrub re-hashes held chunks at; 0: no scrub.
    pub scrub_rate: u64,
    /// Seconds from the start of one scrub pass to the start of the next.
    pub scrub_every_secs: u64,
    /// Local buckets that front an upstream bucket.
    pub origins: Vec<crate::origin::OriginSpec>,
    /// Settings shared by every origin.
    pub origin: crate::origin::OriginSettings,
    /// The bucket the Hugging Face Hub façade reads repositories from; `None`: no façade.
    pub hf_bucket: Option<String>,
    /// The bearer token the façade requires; `None`: it answers without one.
    pub hf_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            data_dir: PathBuf::from("./s3swarm-data"),
            region: "us-east-1".into(),
            keys: Vec::new(),
            max_object_size: 5 * 1024 * 1024 * 1024,
            gc_grace_secs: 300,
            // s3s logs every client error (NoSuchKey, AccessDenied) at ERROR; our own code logs
            // the failures that matter, so the protocol layer is quiet unless asked.
            log_level: "info,s3s=off".into(),
            log_format: "text".into(),
            tls_cert: None,
            tls_key: None,
            domain: None,
            post_max_size: 64 * 1024 * 1024,
            swarm_listen: None,
            swarm_advertise: None,
            peers: Vec::new(),
            cluster_secret_file: None,
            replicas: 2,
            capacity: None,
            bootstrap_expect: None,
            swarm_max_connections: 1024,
            fault_corrupt_chunks: false,
            max_connections: 10_000,
            header_timeout_secs: 30,
            send_timeout_secs: 60,
            body_timeout_secs: 30,
            disk_reserve_bytes: None,
            multipart_expiry_secs: 7 * 24 * 3600,
            journal_prune_secs: 300,
            scrub_rate: 32 * 1024 * 1024,
            scrub_every_secs: 7 * 24 * 3600,
            origins: Vec::new(),
            origin: crate::origin::OriginSettings::default(),
            hf_bucket: None,
            hf_token: None,
        }
    }
}

/// The TOML file's shape: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub region: Option<String>,
    #[serde(default)]
    pub keys: Vec<KeyPair>,
    pub max_object_size: Option<u64>,
    pub gc_grace_secs: Option<u64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub domain: Option<String>,
    pub post_max_size: Option<u64>,
    pub swarm_listen: Option<SocketAddr>,
    pub swarm_advertise: Option<SocketAddr>,
    #[serde(default)]
    pub peers: Vec<swarm::PeerAddr>,
    pub cluster_secret_file: Option<PathBuf>,
    pub replicas: Option<usize>,
    pub capacity: Option<u64>,
    pub bootstrap_expect: Option<usize>,
    pub swarm_max_connections: Option<usize>,
    pub max_connections: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub send_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub disk_reserve_bytes: Option<u64>,
    pub multipart_expiry_secs: Option<u64>,
    pub journal_prune_secs: Option<u64>,
    pub scrub_rate: Option<u64>,
    pub scrub_every_secs: Option<u64>,
    #[serde(default)]
    pub origins: Vec<crate::origin::spec::OriginTable>,
    pub origin_endpoint: Option<String>,
    pub origin_region: Option<String>,
    pub origin_path_style: Option<bool>,
    pub origin_write: Option<String>,
    pub origin_revalidate_secs: Option<u64>,
    pub origin_piece_size: Option<u64>,
    pub origin_max_connections: Option<usize>,
    pub origin_max_rate: Option<u64>,
    pub hf_bucket: Option<String>,
    pub hf_token: Option<String>,
}

/// Values given on the command line or in the environment (clap merges those two).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub max_object_size: Option<u64>,
    pub gc_grace_secs: Option<u64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub domain: Option<String>,
    pub post_max_size: Option<u64>,
    pub swarm_listen: Option<SocketAddr>,
    pub swarm_advertise: Option<SocketAddr>,
    pub peers: Vec<swarm::PeerAddr>,
    pub cluster_secret_file: Option<PathBuf>,
    pub replicas: Option<usize>,
    pub capacity: Option<u64>,
    pub bootstrap_expect: Option<usize>,
    pub swarm_max_connections: Option<usize>,
    pub fault_corrupt_chunks: bool,
    pub max_connections: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub send_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub disk_reserve_bytes: Option<u64>,
    pub multipart_expiry_secs: Option<u64>,
    pub journal_prune_secs: Option<u64>,
    pub scrub_rate: Option<u64>,
    pub scrub_every_secs: Option<u64>,
    /// `--origin LOCAL=s3://BUCKET[/PREFIX]` flags.
    pub origins: Vec<String>,
    pub origin_endpoint: Option<String>,
    pub origin_region: Option<String>,
    pub origin_path_style: Option<bool>,
    pub origin_write: Option<String>,
    pub origin_revalidate_secs: Option<u64>,
    pub origin_piece_size: Option<u64>,
    pub origin_max_connections: Option<usize>,
    pub origin_max_rate: Option<u64>,
    pub hf_bucket: Option<String>,
    pub hf_token: Option<String>,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Builds the configuration: defaults < `file` < environment/flags.
    pub fn load(file: Option<&Path>, over: Overrides) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        let mut tables = Vec::new();
        let mut defaults = crate::origin::spec::OriginDefaults::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            let f: FileConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.into(),
                source: Box::new(source),
            })?;
            c.listen = f.listen.unwrap_or(c.listen);
            c.data_dir = f.data_dir.unwrap_or(c.data_dir);
            c.region = f.region.unwrap_or(c.region);
            c.keys = f.keys;
            c.max_object_size = f.max_object_size.unwrap_or(c.max_object_size);
            c.gc_grace_secs = f.gc_grace_secs.unwrap_or(c.gc_grace_secs);
            c.log_level = f.log_level.unwrap_or(c.log_level);
            c.log_format = f.log_format.unwrap_or(c.log_format);
            c.tls_cert = f.tls_cert.or(c.tls_cert);
            c.tls_key = f.tls_key.or(c.tls_key);
            c.domain = f.domain.or(c.domain);
            c.post_max_size = f.post_max_size.unwrap_or(c.post_max_size);
            c.swarm_listen = f.swarm_listen.or(c.swarm_listen);
            c.swarm_advertise = f.swarm_advertise.or(c.swarm_advertise);
            c.peers = f.peers;
            c.cluster_secret_file = f.cluster_secret_file.or(c.cluster_secret_file);
            c.replicas = f.replicas.unwrap_or(c.replicas);
            c.capacity = f.capacity.or(c.capacity);
            c.bootstrap_expect = f.bootstrap_expect.or(c.bootstrap_expect);
            c.swarm_max_connections = f.swarm_max_connections.unwrap_or(c.swarm_max_connections);
            c.max_connections = f.max_connections.unwrap_or(c.max_connections);
            c.header_timeout_secs = f.header_timeout_secs.unwrap_or(c.header_timeout_secs);
            c.send_timeout_secs = f.send_timeout_secs.unwrap_or(c.send_timeout_secs);
            c.body_timeout_secs = f.body_timeout_secs.unwrap_or(c.body_timeout_secs);
            c.disk_reserve_bytes = f.disk_reserve_bytes.or(c.disk_reserve_bytes);
            c.multipart_expiry_secs = f.multipart_expiry_secs.unwrap_or(c.multipart_expiry_secs);
            c.journal_prune_secs = f.journal_prune_secs.unwrap_or(c.journal_prune_secs);
            c.scrub_rate = f.scrub_rate.unwrap_or(c.scrub_rate);
            c.scrub_every_secs = f.scrub_every_secs.unwrap_or(c.scrub_every_secs);
            tables = f.origins;
            defaults.endpoint = f.origin_endpoint;
            defaults.region = f.origin_region;
            defaults.path_style = f.origin_path_style;
            defaults.write = f.origin_write;
            c.origin.revalidate_secs = f.origin_revalidate_secs.unwrap_or(c.origin.revalidate_secs);
            c.origin.piece_size = f.origin_piece_size.unwrap_or(c.origin.piece_size);
            c.origin.max_connections = f.origin_max_connections.unwrap_or(c.origin.max_connections);
            c.hf_bucket = f.hf_bucket;
            c.hf_token = f.hf_token;
        }
        c.listen = over.listen.unwrap_or(c.listen);
        c.data_dir = over.data_dir.unwrap_or(c.data_dir);
        c.region = over.region.unwrap_or(c.region);
        c.max_object_size = over.max_object_size.unwrap_or(c.max_object_size);
        c.gc_grace_secs = over.gc_grace_secs.unwrap_or(c.gc_grace_secs);
        c.log_level = over.log_level.unwrap_or(c.log_level);
        c.log_format = over.log_format.unwrap_or(c.log_format);
        c.tls_cert = over.tls_cert.or(c.tls_cert);
        c.tls_key = over.tls_key.or(c.tls_key);
        c.domain = over.domain.or(c.domain);
        c.post_max_size = over.post_max_size.unwrap_or(c.post_max_size);
        c.swarm_listen = over.swarm_listen.or(c.swarm_listen);
        c.swarm_advertise = over.swarm_advertise.or(c.swarm_advertise);
        if !over.peers.is_empty() {
            c.peers = over.peers;
        }
        c.cluster_secret_file = over.cluster_secret_file.or(c.cluster_secret_file);
        c.replicas = over.replicas.unwrap_or(c.replicas);
        c.capacity = over.capacity.or(c.capacity);
        c.bootstrap_expect = over.bootstrap_expect.or(c.bootstrap_expect);
        c.swarm_max_connections = over
            .swarm_max_connections
            .unwrap_or(c.swarm_max_connections);
        c.fault_corrupt_chunks = over.fault_corrupt_chunks;
        c.max_connections = over.max_connections.unwrap_or(c.max_connections);
        c.header_timeout_secs = over.header_timeout_secs.unwrap_or(c.header_timeout_secs);
        c.send_timeout_secs = over.send_timeout_secs.unwrap_or(c.send_timeout_secs);
        c.body_timeout_secs = over.body_timeout_secs.unwrap_or(c.body_timeout_secs);
        c.disk_reserve_bytes = over.disk_reserve_bytes.or(c.disk_reserve_bytes);
        c.multipart_expiry_secs = over
            .multipart_expiry_secs
            .unwrap_or(c.multipart_expiry_secs);
        c.journal_prune_secs = over.journal_prune_secs.unwrap_or(c.journal_prune_secs);
        c.scrub_rate = over.scrub_rate.unwrap_or(c.scrub_rate);
        c.scrub_every_secs = over.scrub_every_secs.unwrap_or(c.scrub_every_secs);
        defaults.endpoint = over.origin_endpoint.or(defaults.endpoint);
        defaults.region = over.origin_region.or(defaults.region);
        defaults.path_style = over.origin_path_style.or(defaults.path_style);
        defaults.write = over.origin_write.or(defaults.write);
        c.origin.revalidate_secs = over
            .origin_revalidate_secs
            .unwrap_or(c.origin.revalidate_secs);
        c.origin.piece_size = over.origin_piece_size.unwrap_or(c.origin.piece_size);
        c.origin.max_connections = over
            .origin_max_connections
            .unwrap_or(c.origin.max_connections);
        c.origin.max_rate = over.origin_max_rate.unwrap_or(c.origin.max_rate);
        c.hf_bucket = over.hf_bucket.or(c.hf_bucket);
        c.hf_token = over.hf_token.or(c.hf_token);
        for t in tables {
            c.origins.push(
                crate::origin::OriginSpec::from_table(t, &defaults)
                    .map_err(ConfigError::Invalid)?,
            );
        }
        for f in &over.origins {
            c.origins.push(
                crate::origin::OriginSpec::from_flag(f, &defaults).map_err(ConfigError::Invalid)?,
            );
        }
        match (over.access_key, over.secret_key) {
            (Some(access_key), Some(secret_key)) => {
                c.keys.retain(|k| k.access_key != access_key);
                c.keys.insert(
                    0,
                    KeyPair {
                        access_key,
                        secret_key,
                    },
                );
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "S3SWARM_ACCESS_KEY and S3SWARM_SECRET_KEY must be set together".into(),
                ));
            }
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.swarm_listen.is_some() && self.cluster_secret_file.is_none() {
            return Err(ConfigError::Invalid(
                "--swarm-listen needs --cluster-secret-file: peers must prove the cluster secret"
                    .into(),
            ));
        }
        if self.swarm_listen.is_none() && self.swarm_advertise.is_some() {
            return Err(ConfigError::Invalid(
                "--swarm-advertise needs --swarm-listen".into(),
            ));
        }
        if let Some(listen) = self.swarm_listen
            && listen.ip().is_unspecified()
            && self.swarm_advertise.is_none()
        {
            return Err(ConfigError::Invalid(format!(
                "--swarm-listen {listen} binds every interface: peers need --swarm-advertise \
                 IP:PORT, the address they should dial"
            )));
        }
        if let Some(a) = self.swarm_advertise
            && (a.ip().is_unspecified() || a.port() == 0)
        {
            return Err(ConfigError::Invalid(format!(
                "--swarm-advertise {a} must be a specific IP and port that peers can dial"
            )));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(ConfigError::Invalid(format!(
                "log filter {:?} is invalid: {e}",
                self.log_level
            )));
        }
        if self.swarm_listen.is_none() && !self.peers.is_empty() {
            return Err(ConfigError::Invalid(
                "--peer needs --swarm-listen (the address this node's swarm endpoint binds)".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "--max-connections must be at least 1".into(),
            ));
        }
        if self.swarm_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "--swarm-max-connections must be at least 1".into(),
            ));
        }
        for (flag, v) in [
            ("--header-timeout-secs", self.header_timeout_secs),
            ("--send-timeout-secs", self.send_timeout_secs),
            ("--body-timeout-secs", self.body_timeout_secs),
            ("--multipart-expiry-secs", self.multipart_expiry_secs),
            ("--journal-prune-secs", self.journal_prune_secs),
            ("--scrub-every-secs", self.scrub_every_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("{flag} must be at least 1")));
            }
        }
        if !(256 << 10..=1 << 30).contains(&self.origin.piece_size) {
            return Err(ConfigError::Invalid(format!(
                "--origin-piece-size {} must be between 256 KiB and 1 GiB",
                self.origin.piece_size
            )));
        }
        if self.origin.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "--origin-max-connections must be at least 1".into(),
            ));
        }
        if self.bootstrap_expect == Some(0) {
            return Err(ConfigError::Invalid(
                "--bootstrap-expect must be at least 1".into(),
            ));
        }
        if self.replicas == 0 || self.replicas > 16 {
            return Err(ConfigError::Invalid(format!(
                "--replicas {} must be between 1 and 16",
                self.replicas
            )));
        }
        for k in &self.keys {
            if k.access_key.len() < 3
                || k.access_key.len() > 128
                || !k.access_key.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(ConfigError::Invalid(format!(
                    "access key {:?} must be 3 to 128 printable ASCII characters",
                    k.access_key
                )));
            }
            if k.secret_key.len() < 8 {
                return Err(ConfigError::Invalid(format!(
                    "the secret key of {:?} is shorter than 8 characters",
                    k.access_key
                )));
            }
        }
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "log format {:?} is not `text` or `json`",
                self.log_format
            )));
        }
        if self.max_object_size == 0 {
            return Err(ConfigError::Invalid(
                "max_object_size must be positive".into(),
            ));
        }
        if self.post_max_size == 0 {
            return Err(ConfigError::Invalid(
                "post_max_size must be positive".into(),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), Some(_)) | (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::Invalid(
                    "tls_cert is set without tls_key; give both or neither".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "tls_key is set without tls_cert; give both or neither".into(),
                ));
            }
        }
        if let Some(d) = &self.domain {
            // The Host header is matched against `bucket.<domain>` with the port stripped,
            // so a port or uppercase here could never match.
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            };
            if !d.split('.').all(label_ok) {
                return Err(ConfigError::Invalid(format!(
                    "domain {d:?} must be a lowercase host name without a port (e.g. s3.example.com)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("s3swarm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9100\"\nregion = \"eu-west-1\"\n[[keys]]\naccess_key = \"alice\"\nsecret_key = \"alicesecret\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            Overrides {
                region: Some("ap-south-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.region, "ap-south-1");
        assert_eq!(c.keys.len(), 1);
        std::fs::write(&path, "lisen = 1\n").unwrap();
        assert!(matches!(
            Config::load(Some(&path), Overrides::default()),
            Err(ConfigError::Parse { .. })
        ));
        let half = Overrides {
            access_key: Some("abc".into()),
            ..Default::default()
        };
        assert!(Config::load(None, half).is_err());
    }

    #[test]
    fn tls_domain_and_post_limit_layer_like_every_other_field() {
        let dir = std::env::temp_dir().join(format!("s3swarm-cfg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "tls_cert = \"/f/cert.pem\"\ntls_key = \"/f/key.pem\"\ndomain = \"s3.file.test\"\npost_max_size = 1024\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), Overrides::default()).unwrap();
        assert_eq!(c.tls_cert.as_deref(), Some(Path::new("/f/cert.pem")));
        assert_eq!(c.domain.as_deref(), Some("s3.file.test"));
        assert_eq!(c.post_max_size, 1024);
        let c = Config::load(
            Some(&path),
            Overrides {
                tls_cert: Some("/o/cert.pem".into()),
                domain: Some("s3.flag.test".into()),
                post_max_size: Some(7),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.tls_cert.as_deref(), Some(Path::new("/o/cert.pem")));
        assert_eq!(c.tls_key.as_deref(), Some(Path::new("/f/key.pem")));
        assert_eq!(c.domain.as_deref(), Some("s3.flag.test"));
        assert_eq!(c.post_max_size, 7);
        assert_eq!(Config::default().post_max_size, 64 << 20);

        for bad in [
            Overrides {
                tls_key: Some("/k.pem".into()),
                ..Default::default()
            },
            Overrides {
                domain: Some("S3.Example.com".into()),
                ..Default::default()
            },
            Overrides {
                domain: Some("s3.test:9000".into()),
                ..Default::default()
            },
            Overrides {
                post_max_size: Some(0),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(
                    Config::load(None, bad.clone()),
                    Err(ConfigError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
    }
}
