//! Test support: start real `s3swarm` processes and talk to them with real clients.
//!
//! The binary is `$S3SWARM_BIN`, or `target/release/s3swarm` of this workspace (README's test
//! command builds it first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};

pub const ACCESS_KEY: &str = "TESTACCESSKEY";
pub const SECRET_KEY: &str = "test-secret-key-0123456789";

/// Path of the binary under test.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("S3SWARM_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release/s3swarm")
}

/// HTTP statuses the AWS SDKs retry by default.
const RETRIED: [u16; 4] = [500, 502, 503, 504];

/// One running node with its own data directory.
pub struct Node {
    child: Option<Child>,
    pub endpoint: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    /// Everything the process printed on stdout before it was ready.
    pub banner: String,
    /// The self-signed certificate the node serves HTTPS with, when it does.
    pub tls: Option<TestCert>,
    /// The loopback address it listens on.
    pub host: String,
    /// Whether the test provokes server errors (5xx) on purpose; otherwise any 5xx the node
    /// answered fails the test when the node is stopped or dropped (see
    /// [`Node::expect_server_errors`]).
    server_errors_expected: std::sync::atomic::AtomicBool,
}

/// The swarm address of node `i` in test network `net`: `127.0.<net>.<i>:7400`. Each test
/// takes its own `net`, so tests running at once never share addresses.
pub fn swarm_addr(net: u8, i: u8) -> String {
    format!("127.0.{net}.{i}:7400")
}

/// A cluster secret file for swarm tests.
pub struct SecretFile {
    pub path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SecretFile {
    pub fn new(secret: &str) -> SecretFile {
        let tmp = tempfile::tempdir().expect("temp dir");
        let path = tmp.path().join("secret");
        std::fs::write(&path, secret).expect("write secret");
        SecretFile { path, _tmp: tmp }
    }
}

/// A self-signed certificate and its key, made at test time with the `openssl` CLI, valid for
/// `localhost`, `127.0.0.1`, `s3.test` and `*.s3.test` (the virtual-host tests' domain).
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pem: Vec<u8>,
}

impl TestCert {
    /// Writes `cert.pem` and `key.pem` into `dir`.
    pub fn generate(dir: &Path) -> TestCert {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext"])
            .arg("subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:s3.test,DNS:*.s3.test")
            // openssl marks a self-signed certificate as a CA by default, and webpki (rustls)
            // refuses a CA certificate as a server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("the openssl CLI is needed to make test certificates");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = std::fs::read(&cert).expect("read cert");
        TestCert { cert, key, pem }
    }
}

/// reqwest is built without a crypto provider of its own (the workspace links aws-lc-rs for
/// rustls already), so the process default is installed once, before any client is built.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// A rustls client configuration trusting only `pem`.
pub fn trusting(pem: &[u8]) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        roots.add(c.expect("PEM certificate")).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

impl Node {
    /// A node on a fresh data directory with the test identity configured by environment.
    /// Unreferenced chunks are collected at once (`--gc-grace-secs 0`), so tests can observe it.
    pub fn start() -> Node {
        Self::start_with(
            &["--gc-grace-secs", "0"],
            &[
                ("S3SWARM_ACCESS_KEY", ACCESS_KEY),
                ("S3SWARM_SECRET_KEY", SECRET_KEY),
            ],
        )
    }

    /// Pack files currently on disk.
    pub fn packs(&self) -> usize {
        files_under(&self.data_dir.join("packs")).len()
    }

    /// A node with extra flags and environment, on a fresh data directory.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Node {
        Self::launch(
            args.iter().map(|s| s.to_string()).collect(),
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            "127.0.0.1",
            |_| None,
        )
    }

    /// A node with the test identity and `args` whose data directory is `dir` (for a file
    /// system a test prepared, such as a small tmpfs); `dir` is not removed afterwards.
    pub fn start_on(dir: &Path, args: &[&str]) -> Node {
        let mut node = Node {
            child: None,
            endpoint: String::new(),
            data_dir: dir.to_path_buf(),
            _tmp: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            env: Self::identity(),
            banner: String::new(),
            tls: None,
            host: "127.0.0.1".into(),
            server_errors_expected: Default::default(),
        };
        node.spawn(None);
        node
    }

    /// The test identity, as environment.
    fn identity() -> Vec<(String, String)> {
        vec![
            ("S3SWARM_ACCESS_KEY".into(), ACCESS_KEY.into()),
            ("S3SWARM_SECRET_KEY".into(), SECRET_KEY.into()),
        ]
    }

    /// Starts a node on a fresh temporary data directory listening on `host`; `tls` may make
    /// a certificate in that directory (its flags are added).
    fn launch(
        mut args: Vec<String>,
        env: Vec<(String, String)>,
        host: &str,
        tls: impl FnOnce(&Path) -> Option<TestCert>,
    ) -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("s3swarm-test-")
            .tempdir()
            .expect("temp dir");
        let tls = tls(tmp.path());
        if let Some(cert) = &tls {
            args.extend([
                "--tls-cert".into(),
                cert.cert.display().to_string(),
                "--tls-key".into(),
                cert.key.display().to_string(),
            ]);
        }
        let mut node = Node {
            child: None,
            endpoint: String::new(),
            data_dir: tmp.path().join("data"),
            _tmp: Some(tmp),
            extra_args: args,
            env,
            banner: String::new(),
            tls,
            host: host.into(),
            server_errors_expected: Default::default(),
        };
        node.spawn(None);
        node
    }

    /// Swarm node `i` of test network `net` (see [`swarm_addr`]), joining through the nodes
    /// in `peers`, with the test identity and `extra` flags.
    pub fn start_swarm(net: u8, i: u8, secret: &SecretFile, peers: &[u8], extra: &[&str]) -> Node {
        let mut args: Vec<String> = vec![
            "--swarm-listen".into(),
            swarm_addr(net, i),
            "--cluster-secret-file".into(),
            secret.path.display().to_string(),
        ];
        for p in peers {
            args.push("--peer".into());
            args.push(swarm_addr(net, *p));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::launch(args, Self::identity(), &format!("127.0.{net}.{i}"), |_| {
            None
        })
    }

    /// A node serving HTTPS with a fresh self-signed certificate (see [`TestCert`]), with the
    /// test identity and `extra` flags.
    pub fn start_tls(extra: &[&str]) -> Node {
        let mut args: Vec<String> = vec!["--gc-grace-secs".into(), "0".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::launch(args, Self::identity(), "127.0.0.1", |dir| {
            Some(TestCert::generate(dir))
        })
    }

    /// A reqwest client for this node: it trusts the node's certificate when it has one.
    pub fn http(&self) -> reqwest::Client {
        install_crypto_provider();
        let b = reqwest::Client::builder();
        let b = match &self.tls {
            Some(t) => b.use_preconfigured_tls(trusting(&t.pem)),
            None => b,
        };
        b.build().expect("http client")
    }

    /// The value of a metric from `/metrics`, e.g. `name` or `name{label="v"}` (panics if it
    /// is missing).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_value(name)
            .await
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// A metric's value, or 0 if the node does not export it (yet) or does not answer.
    pub async fn metric_or_zero(&self, name: &str) -> f64 {
        self.metric_value(name).await.unwrap_or(0.0)
    }

    async fn metric_value(&self, name: &str) -> Option<f64> {
        let text = self
            .http()
            .get(format!("{}/metrics", self.endpoint))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    fn spawn(&mut self, port: Option<u16>) {
        install_crypto_provider();
        let listen = format!("{}:{}", self.host, port.unwrap_or(0));
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env_remove("S3SWARM_ACCESS_KEY")
            .env_remove("S3SWARM_SECRET_KEY")
            .env(
                "S3SWARM_LOG",
                std::env::var("S3SWARM_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(node_log(&self.host));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut banner = String::new();
        let mut endpoint = None;
        while endpoint.is_none() {
            assert!(
                Instant::now() < deadline,
                "node did not start; it printed:\n{banner}"
            );
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().ok();
                panic!("node exited ({status:?}) before it was ready; it printed:\n{banner}");
            };
            banner.push_str(&line);
            banner.push('\n');
            if let Some(i) = line.find("http://").or_else(|| line.find("https://")) {
                let ep: String = line[i..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                endpoint = Some(ep);
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.endpoint = endpoint.unwrap_or_default();
        self.banner = banner;
        self.child = Some(child);
    }

    /// Port the node listens on.
    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Declares that this test makes the node answer 5xx on purpose (a full disk, a lost
    /// quorum, a killed peer), so they do not fail it.
    pub fn expect_server_errors(&self) {
        self.server_errors_expected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The server errors SDKs retry (500, 502, 503, 504) the node answered, as its request
    /// metrics count them; `None` when it cannot be asked (not running, or HTTPS only). 501
    /// (an operation not implemented) and 507 (disk full) are final answers, not retried.
    pub fn server_errors(&self) -> Option<Vec<String>> {
        use std::io::{Read, Write};
        if self.child.is_none() || self.tls.is_some() {
            return None;
        }
        let addr = self.endpoint.strip_prefix("http://")?;
        let mut sock = std::net::TcpStream::connect(addr).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        sock.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .ok()?;
        let mut text = String::new();
        sock.read_to_string(&mut text).ok()?;
        Some(
            text.lines()
                .filter(|l| l.starts_with("s3swarm_s3_requests_total{"))
                // Readiness answers 503 while not ready: that is its job.
                .filter(|l| !l.contains("operation=\"Readyz\""))
                .filter(|l| {
                    RETRIED
                        .iter()
                        .any(|s| l.contains(&format!("status=\"{s}\"")))
                })
                .filter(|l| l.rsplit(' ').next().is_some_and(|v| v != "0"))
                .map(str::to_owned)
                .collect(),
        )
    }

    /// What to fail the test with if the node answered a retried 5xx it was not expected
    /// to: a test that passes only because a client retried a server error has found a bug,
    /// not passed. Read before the node is stopped; the test fails after it is.
    fn unexpected_server_errors(&self) -> Option<String> {
        if std::thread::panicking()
            || self
                .server_errors_expected
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let errors = self.server_errors()?;
        (!errors.is_empty()).then(|| {
            format!(
                "node {} answered server errors the test did not expect (a retrying client \
                 hides them; call expect_server_errors() where they are provoked):\n{}",
                self.endpoint,
                errors.join("\n")
            )
        })
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        let unexpected = self.unexpected_server_errors();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(m) = unexpected {
            panic!("{m}");
        }
    }

    /// SIGTERM, as a service manager stops a node; waits up to `secs` for it to exit and
    /// returns how it exited (`None`: it had to be killed).
    pub fn stop(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        if let Some(m) = self.unexpected_server_errors() {
            self.kill9();
            panic!("{m}");
        }
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// The node's resident memory now and its peak so far, in MiB (`VmRSS`, `VmHWM`).
    pub fn rss_mib(&self) -> (u64, u64) {
        let pid = self.child.as_ref().expect("a running node").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
                .expect("a memory figure")
                / 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// How the node's process ended, if it has (a crash shows here as a signal or an exit code).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGSTOP: the process is frozen (its sockets stay open, nothing answers), as a node
    /// stalled by its host or a long GC pause looks to its peers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status();
        }
    }

    /// Starts the process again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill9();
        let port = self.port();
        self.spawn(Some(port));
    }

    /// An SDK client with the test identity.
    pub fn client(&self) -> Client {
        self.client_as(ACCESS_KEY, SECRET_KEY)
    }

    /// An SDK client signing as another identity.
    pub fn client_as(&self, access: &str, secret: &str) -> Client {
        let creds = Credentials::new(access, secret, None, None, "s3swarm-tests");
        let mut conf = aws_sdk_s3::Config::builder();
        if let Some(t) = &self.tls {
            conf = conf.http_client(sdk_https_client(&t.pem));
        }
        let conf = conf
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        Client::from_conf(conf)
    }

    /// An SDK client for recording a history: no retries (an attempt that timed out and was
    /// sent again could succeed twice or be reported as failed after it succeeded) and a
    /// `timeout` per attempt (a frozen node must not hang its caller).
    pub fn client_once(&self, access: &str, secret: &str, timeout: Duration) -> Client {
        let creds = Credentials::new(access, secret, None, None, "s3swarm-tests");
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(creds)
            .force_path_style(true)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(timeout)
                    .connect_timeout(timeout)
                    .build(),
            )
            .build();
        Client::from_conf(conf)
    }

    /// A raw HTTP request signed with SigV4 for the test identity.
    pub async fn signed(
        &self,
        method: &str,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.signed_with(method, path_and_query, &[], body, ACCESS_KEY, SECRET_KEY)
            .await
    }

    /// The head of an HTTP/1.1 request for raw sockets (ending in the blank line), signed with
    /// SigV4 for the test identity over `headers` and an unsigned payload, so a test can send
    /// the body as slowly as it likes (or not at all).
    pub fn signed_head(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> String {
        let host = self.endpoint.trim_start_matches("http://");
        let url = format!("{}{}", self.endpoint, path_and_query);
        let mut all: Vec<(String, String)> = vec![("host".into(), host.into())];
        all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let signed = sigv4_headers(
            method,
            &url,
            &all,
            aws_sigv4::http_request::SignableBody::UnsignedPayload,
            ACCESS_KEY,
            SECRET_KEY,
        );
        let mut head = format!("{method} {path_and_query} HTTP/1.1\r\n");
        for (k, v) in all.iter().chain(&signed) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        head
    }

    /// A raw HTTP request with extra headers, signed with SigV4 for the given identity.
    pub async fn signed_with(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        access: &str,
        secret: &str,
    ) -> reqwest::Response {
        let url = format!("{}{}", self.endpoint, path_and_query);
        let mut req = http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(body).expect("request");
        let hdrs: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let signed = sigv4_headers(
            method,
            &url,
            &hdrs,
            aws_sigv4::http_request::SignableBody::Bytes(req.body()),
            access,
            secret,
        );
        for (k, v) in signed {
            let name = http::HeaderName::from_bytes(k.as_bytes()).expect("header name");
            req.headers_mut()
                .insert(name, v.parse().expect("header value"));
        }
        let client = self.http();
        let mut rb = client.request(req.method().clone(), url);
        for (k, v) in req.headers() {
            rb = rb.header(k, v);
        }
        rb.body(req.into_body()).send().await.expect("send")
    }
}

impl Node {
    /// PUT with signed aws-chunked encoding (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`): a seed
    /// signature over the headers, then one signature per chunk chained from it, as the Java
    /// and .NET SDKs send. With `tamper`, one body byte is flipped after signing.
    /// Returns the status and the response body.
    pub async fn put_signed_chunked(
        &self,
        path: &str,
        data: &[u8],
        chunk: usize,
        tamper: bool,
    ) -> (u16, String) {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        use aws_sigv4::sign::v4;
        use sha2::{Digest, Sha256};
        const MODE: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
        let now = SystemTime::now();
        let url = format!("{}{}", self.endpoint, path);
        let host = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, h)| h)
            .to_owned();

        let pieces: Vec<&[u8]> = data.chunks(chunk).chain(std::iter::once(&[][..])).collect();
        let encoded_len: usize = pieces
            .iter()
            .map(|p| format!("{:x}", p.len()).len() + 17 + 64 + 2 + p.len() + 2)
            .sum();
        let decoded = data.len().to_string();
        let encoded = encoded_len.to_string();
        let headers = [
            ("host", host.as_str()),
            ("x-amz-content-sha256", MODE),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", decoded.as_str()),
            ("content-length", encoded.as_str()),
        ];
        let identity = Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "s3swarm-tests").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .expect("signing params")
            .into();
        let signable = SignableRequest::new(
            "PUT",
            &url,
            headers.iter().copied(),
            SignableBody::Precomputed(MODE.into()),
        )
        .expect("signable");
        let (instructions, seed) = sign(signable, &params).expect("sign").into_parts();
        let amz_date = instructions
            .headers()
            .find(|(k, _)| *k == "x-amz-date")
            .map(|(_, v)| v.to_owned())
            .expect("x-amz-date");
        let scope = format!("{}/us-east-1/s3/aws4_request", &amz_date[..8]);
        let key = v4::generate_signing_key(SECRET_KEY, now, "us-east-1", "s3");
        let empty = hex::encode(Sha256::digest(b""));

        let mut body = Vec::with_capacity(encoded_len);
        let mut prev = seed;
        for p in &pieces {
            let sts = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{prev}\n{empty}\n{}",
                hex::encode(Sha256::digest(p))
            );
            let sig = v4::calculate_signature(key.as_ref(), sts.as_bytes());
            body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", p.len()).as_bytes());
            body.extend_from_slice(p);
            body.extend_from_slice(b"\r\n");
            prev = sig;
        }
        assert_eq!(body.len(), encoded_len);
        if tamper {
            let i = body.len() / 2;
            body[i] ^= 0x55;
        }
        let mut rb = self.http().put(&url);
        for (k, v) in headers
            .iter()
            .filter(|(k, _)| *k != "host" && *k != "content-length")
        {
            rb = rb.header(*k, *v);
        }
        for (k, v) in instructions.headers() {
            rb = rb.header(k, v);
        }
        let resp = rb.body(body).send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The SDK's own HTTP client (hyper + rustls on aws-lc) trusting only `pem`.
pub fn sdk_https_client(pem: &[u8]) -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    let trust = tls::TrustStore::empty().with_pem_certificate(pem.to_vec());
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(
            tls::TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .expect("tls context"),
        )
        .build_https()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Files (recursively) under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Where a node's log goes: the test's own stderr, or with `S3SWARM_TEST_LOG_DIR` set, a
/// file per node host (`127.0.1.2.log`, appended across restarts) so that one node's story
/// can be read apart from its peers'.
fn node_log(host: &str) -> Stdio {
    let Some(dir) = std::env::var_os("S3SWARM_TEST_LOG_DIR") else {
        return Stdio::inherit();
    };
    let path = std::path::Path::new(&dir).join(format!("{host}.log"));
    std::fs::create_dir_all(&dir)
        .and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        })
        .map(Stdio::from)
        .unwrap_or_else(|e| panic!("cannot open node log {}: {e}", path.display()))
}

/// A whole object's bytes (panics on any error).
pub async fn get_bytes(c: &Client, bucket: &str, key: &str) -> Vec<u8> {
    c.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e:?}"))
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

/// Waits for an async condition (checked every 100 ms), up to `secs`; panics naming `what`.
pub async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "never happened within {secs}s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Chunk bytes a swarm node holds, from its own `/_admin/cluster` status. Panics when the
/// route fails or the figure is missing: "held nothing" must never be a broken route.
pub async fn held_bytes(n: &Node) -> u64 {
    let resp = n.signed("GET", "/_admin/cluster", Vec::new()).await;
    let status = resp.status();
    let body = resp.bytes().await.expect("cluster status body");
    assert!(
        status.is_success(),
        "GET /_admin/cluster on {}: {status}: {}",
        n.endpoint,
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("cluster status is not JSON ({e}): {body:?}"));
    v["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["is_self"] == true))
        .and_then(|m| m["bytes_held"].as_u64())
        .unwrap_or_else(|| panic!("cluster status names no bytes_held for this node: {v}"))
}

/// Waits until the node's `/readyz` answers 200 (a swarm node refuses creates and
/// conditional writes with 503 until it can reach the registry), as a load balancer would.
/// Requests the node is handling now, not counting the scrape that asks.
pub async fn in_flight(n: &Node) -> f64 {
    n.metric("s3swarm_s3_requests_in_flight").await - 1.0
}

pub async fn ready(n: &Node) {
    let http = n.http();
    until("the node is ready", 30, || async {
        http.get(format!("{}/readyz", n.endpoint))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
}

/// Members this node sees alive, itself included (0 while it does not answer).
pub async fn alive(n: &Node) -> f64 {
    n.metric_or_zero("s3swarm_swarm_members{state=\"alive\"}")
        .await
}

/// Waits until every node in `nodes` sees `count` members alive, and is ready (reaches the
/// registry), so that what the test does next is not refused for a start still under way.
pub async fn all_alive(nodes: &[&Node], count: f64) {
    for n in nodes {
        until("every member alive", 20, || async {
            alive(n).await == count
        })
        .await;
    }
    for n in nodes {
        ready(n).await;
    }
}

/// PUTs `data` (panics on any error); returns the version id (`null` unversioned).
pub async fn put(c: &Client, bucket: &str, key: &str, data: &[u8]) -> String {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {bucket}/{key}: {e:?}"))
        .version_id()
        .unwrap_or("null")
        .to_owned()
}

pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The S3 error code of an SDK error, if the service answered with one.
pub fn code<E: aws_sdk_s3::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_s3::error::SdkError<E, R>,
) -> String {
    e.as_service_error()
        .and_then(|s| s.code())
        .unwrap_or("<no service error>")
        .to_owned()
}

/// Sets a bucket's versioning state through the SDK.
pub async fn set_versioning(
    s3: &Client,
    bucket: &str,
    status: aws_sdk_s3::types::BucketVersioningStatus,
) {
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(status)
                .build(),
        )
        .send()
        .await
        .expect("PutBucketVersioning");
}

/// The headers SigV4 adds to a request (`x-amz-date`, `x-amz-content-sha256`,
/// `authorization`), signed for `access`/`secret` in us-east-1 over `headers` and `body`.
fn sigv4_headers(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: aws_sigv4::http_request::SignableBody<'_>,
    access: &str,
    secret: &str,
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{PayloadChecksumKind, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    let identity = Credentials::new(access, secret, None, None, "s3swarm-tests").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
