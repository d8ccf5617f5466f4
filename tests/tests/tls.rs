//! HTTPS: the same S3 API over rustls, with a certificate made at test time.

use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use s3swarm_tests::{ACCESS_KEY, Node, SECRET_KEY, TestCert, binary, pseudo_random};

#[tokio::test]
async fn sdk_round_trips_objects_over_https_with_a_trusted_certificate() {
    let node = Node::start_tls(&[]);
    assert!(
        node.endpoint.starts_with("https://127.0.0.1:"),
        "the startup line names an https endpoint: {}",
        node.banner
    );
    let s3 = node.client();
    s3.create_bucket().bucket("secure").send().await.unwrap();
    // Large enough to stream through several TLS records and the chunked ingest path.
    let body = pseudo_random(3 * 1024 * 1024 + 17, 7);
    s3.put_object()
        .bucket("secure")
        .key("blob")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("secure")
        .key("blob")
        .send()
        .await
        .unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes(), body);
    // Signed aws-chunked uploads sign the Host header, port included, over TLS as well.
    let (status, text) = node
        .put_signed_chunked("/secure/chunked", b"hello over tls", 5, false)
        .await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn one_tls_connection_serves_many_requests() {
    let node = Node::start_tls(&[]);
    let http = node.http();
    // A server that closed the connection after each response would force a new socket
    // (a new local port) per request: collect the client ports seen across all requests.
    let mut client_ports = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r = http
            .get(format!("{}/healthz", node.endpoint))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), http::Version::HTTP_11);
        r.bytes().await.unwrap();
        client_ports.extend(client_ports_connected_to(node.port()));
    }
    assert_eq!(
        client_ports.len(),
        1,
        "twenty requests share one kept-alive connection: {client_ports:?}"
    );
}

/// Local ports of established loopback TCP connections whose remote end is `port`.
fn client_ports_connected_to(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_hex = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // cols[1] local address, cols[2] remote address, cols[3] state (01 = ESTABLISHED).
            (cols.len() > 3 && cols[2].ends_with(&port_hex) && cols[3] == "01")
                .then(|| cols[1].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn clients_that_do_not_trust_the_certificate_or_speak_plain_http_are_refused() {
    let node = Node::start_tls(&[]);
    // The SDK with only the system roots: the self-signed certificate is not trusted.
    let creds = aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "tests");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&node.endpoint)
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    let err = aws_sdk_s3::Client::from_conf(conf)
        .list_buckets()
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(err, aws_sdk_s3::error::SdkError::DispatchFailure(_)),
        "{err:?}"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = node.endpoint.replacen("https://", "http://", 1);
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(r.is_err(), "plain http answered: {r:?}");
    // And the node is still fine afterwards.
    node.client().list_buckets().send().await.unwrap();
}

/// Runs `s3swarm serve` with `args` and returns its exit status and stderr; it must exit.
fn serve_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(args)
        .env("S3SWARM_ACCESS_KEY", ACCESS_KEY)
        .env("S3SWARM_SECRET_KEY", SECRET_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "serve {args:?} should fail");
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return err;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_certificates_and_keys_stop_the_node_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestCert::generate(&dir.path().join("a").tap_mkdir());
    let b = TestCert::generate(&dir.path().join("b").tap_mkdir());
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let (ca, ka) = (a.cert.to_str().unwrap(), a.key.to_str().unwrap());
    let (kb, j) = (b.key.to_str().unwrap(), junk.to_str().unwrap());

    let e = serve_fails(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", ka]);
    assert!(
        e.contains("cannot read TLS certificate /nonexistent/cert.pem"),
        "{e}"
    );
    let e = serve_fails(&["--tls-cert", ca, "--tls-key", "/nonexistent/key.pem"]);
    assert!(
        e.contains("cannot read TLS key /nonexistent/key.pem"),
        "{e}"
    );
    let e = serve_fails(&["--tls-cert", j, "--tls-key", ka]);
    assert!(e.contains("holds no CERTIFICATE block"), "{e}");
    let e = serve_fails(&["--tls-cert", ca, "--tls-key", j]);
    assert!(e.contains("holds no usable private key"), "{e}");
    let e = serve_fails(&["--tls-cert", ca, "--tls-key", kb]);
    assert!(e.contains("do not go together"), "{e}");
    let e = serve_fails(&["--tls-cert", ca]);
    assert!(e.contains("tls_cert is set without tls_key"), "{e}");
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[tokio::test]
async fn connections_that_never_finish_a_handshake_do_not_hold_up_others() {
    let node = Node::start_tls(&[]);
    let addr = node.endpoint.trim_start_matches("https://").to_owned();
    // Sockets that connect and say nothing: a listener that handshakes inline in its accept
    // loop would wait on the first of these (up to its handshake timeout) before serving
    // anyone else.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let started = std::time::Instant::now();
    node.client().list_buckets().send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a request waited {:?} behind silent connections",
        started.elapsed()
    );
    drop(silent);
}
