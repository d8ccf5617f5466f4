//! Slow and stalled clients cost a socket and a little memory, not a thread, and not for long.
//! Raw TCP sockets play the clients a node meets on a shared network: readers that stop
//! reading mid-response, uploads that trickle or stop, slowloris heads, idle keep-alives.

use std::time::{Duration, Instant};

use s3swarm_tests::{Node, in_flight, pseudo_random, put, until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The test opens thousands of sockets, and the node it starts inherits its limits: raise the
/// open-file limit (as root, the hard one too).
fn raise_fd_limit() {
    const WANTED: libc::rlim_t = 16_384;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let both = libc::rlimit {
            rlim_cur: lim.rlim_max.max(WANTED),
            rlim_max: lim.rlim_max.max(WANTED),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &both) != 0 {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
    }
    assert!(
        lim.rlim_cur >= 10_000,
        "this test needs 10,000 descriptors; the limit is {}",
        lim.rlim_cur
    );
}

async fn connect(node: &Node) -> TcpStream {
    let addr = node.endpoint.trim_start_matches("http://").to_owned();
    TcpStream::connect(addr).await.expect("connect")
}

/// A socket with a small receive buffer, so a reader that stops reading stalls the node's
/// writes after a few hundred KiB instead of after the kernel's autotuned megabytes.
async fn connect_small_window(node: &Node) -> TcpStream {
    let addr: std::net::SocketAddr = node
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(16 * 1024).expect("rcvbuf");
    sock.connect(addr).await.expect("connect")
}

/// Reads until the end of the response head; returns it.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.expect("read head");
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The worst of `tries` timings of /healthz, and of a 4 KiB PUT and GET through the SDK.
async fn worst_latency(node: &Node, tries: usize) -> (Duration, Duration) {
    let http = reqwest::Client::new();
    let s3 = node.client();
    let body = pseudo_random(4096, 7);
    let (mut health, mut io) = (Duration::ZERO, Duration::ZERO);
    for i in 0..tries {
        let t = Instant::now();
        let r = http
            .get(format!("{}/healthz", node.endpoint))
            .send()
            .await
            .expect("healthz");
        assert_eq!(r.status(), 200);
        health = health.max(t.elapsed());
        let t = Instant::now();
        let key = format!("small-{i}");
        put(&s3, "busy", &key, &body).await;
        let got = s3_get(&s3, "busy", &key).await;
        assert_eq!(got, body);
        io = io.max(t.elapsed());
    }
    (health, io)
}

async fn s3_get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let o = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("get");
    o.body.collect().await.expect("body").into_bytes().to_vec()
}

/// The load: 2,000 readers that stopped reading a 16 MiB object, 300 uploads that
/// send a byte a second, and 2,000 sockets sending a request head a line at a time. Meanwhile
/// /healthz and a 4 KiB PUT and GET from another client each answer within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_under_thousands_of_stalled_and_trickling_clients_still_answers_within_a_second() {
    raise_fd_limit();
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("busy").send().await.unwrap();
    let big = pseudo_random(16 << 20, 1);
    put(&s3, "busy", "big", &big).await;
    let (quiet_health, quiet_io) = worst_latency(&node, 5).await;

    // Stalled readers: each sends a GET, reads the response head (so the response is under
    // way) and then nothing more.
    let get = node.signed_head("GET", "/busy/big", &[]);
    let mut readers = Vec::new();
    for _ in 0..2000 {
        let mut s = connect_small_window(&node).await;
        s.write_all(get.as_bytes()).await.unwrap();
        readers.push(s);
    }
    for s in &mut readers {
        let head = read_head(s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    // Trickling uploads: a 1 MiB PUT each, a byte per second, from one task.
    let mut uploads = Vec::new();
    for i in 0..300 {
        let path = format!("/busy/trickle-{i}");
        let head = node.signed_head("PUT", &path, &[("content-length", "1048576")]);
        let mut s = connect(&node).await;
        s.write_all(head.as_bytes()).await.unwrap();
        uploads.push(s);
    }
    // Slowloris: a request line and one header, and then one more header line now and then.
    let mut loris = Vec::new();
    for _ in 0..2000 {
        let mut s = connect(&node).await;
        s.write_all(b"GET /busy/big HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        loris.push(s);
    }
    let trickle = tokio::spawn(async move {
        for round in 0..30u32 {
            for s in &mut uploads {
                let _ = s.write_all(b"x").await;
            }
            for s in &mut loris {
                let _ = s
                    .write_all(format!("X-Slow-{round}: 1\r\n").as_bytes())
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (uploads, loris)
    });

    // Every stalled reader and trickling upload is a request the node is in the middle of.
    until("2,300 requests in flight", 20, || async {
        in_flight(&node).await >= 2300.0
    })
    .await;
    let (busy_health, busy_io) = worst_latency(&node, 10).await;
    println!(
        "quiet: healthz {quiet_health:?}, 4 KiB put+get {quiet_io:?}; \
         with 2000 stalled readers, 300 trickling uploads, 2000 slowloris: \
         healthz {busy_health:?}, 4 KiB put+get {busy_io:?}"
    );
    assert!(busy_health < Duration::from_secs(1), "{busy_health:?}");
    assert!(busy_io < Duration::from_secs(1), "{busy_io:?}");

    // The load was real to the end: every reader still has most of its object unread, and
    // the node still holds the trickling uploads open.
    assert!(
        !trickle.is_finished(),
        "the trickle must outlast the measurement"
    );
    trickle.abort();
    drop(readers);
}

/// Each timeout fires, with S3's answer where there is one, and nothing partial is left.
#[tokio::test]
async fn each_timeout_closes_what_it_is_for_and_leaves_nothing_behind() {
    let node = Node::start_with(
        &[
            "--header-timeout-secs",
            "2",
            "--send-timeout-secs",
            "3",
            "--body-timeout-secs",
            "2",
        ],
        &[
            ("S3SWARM_ACCESS_KEY", s3swarm_tests::ACCESS_KEY),
            ("S3SWARM_SECRET_KEY", s3swarm_tests::SECRET_KEY),
        ],
    );
    let s3 = node.client();
    s3.create_bucket().bucket("timeouts").send().await.unwrap();
    let big = pseudo_random(32 << 20, 2);
    put(&s3, "timeouts", "big", &big).await;

    // Slowloris: a head that never ends is cut after the header timeout.
    let mut s = connect(&node).await;
    s.write_all(b"GET /timeouts/big HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the node must close a head that never ends")
        .unwrap_or(0);
    let _ = n;
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "closed after {waited:?}"
    );

    // An idle keep-alive connection is closed after the same time.
    let mut s = connect(&node).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let _ = s.read(&mut buf).await; // the body, "ok\n"
    let t = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());

    // An upload that stops sending: 400 RequestTimeout after the body timeout; no object.
    let head = node.signed_head("PUT", "/timeouts/stalled", &[("content-length", "100000")]);
    let mut s = connect(&node).await;
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[7u8; 1000]).await.unwrap();
    let t = Instant::now();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("<Code>RequestTimeout</Code>"), "{resp}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    let missing = s3
        .head_object()
        .bucket("timeouts")
        .key("stalled")
        .send()
        .await;
    assert!(missing.is_err(), "a timed-out upload must leave no object");

    // A reader that stops reading: the node gives up after the send timeout; what the reader
    // then drains ends well short of the object.
    let head = node.signed_head("GET", "/timeouts/big", &[]);
    let mut s = connect_small_window(&node).await;
    s.write_all(head.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut got = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(
        drained.is_ok(),
        "the connection must have been closed by the node"
    );
    assert!(
        got.len() < big.len() / 2,
        "a stalled reader got {} of {} bytes: the node kept writing",
        got.len(),
        big.len()
    );
}

/// `--max-connections`: past the cap a new connection is not served until one closes.
#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let node = Node::start_with(
        &["--max-connections", "20"],
        &[
            ("S3SWARM_ACCESS_KEY", s3swarm_tests::ACCESS_KEY),
            ("S3SWARM_SECRET_KEY", s3swarm_tests::SECRET_KEY),
        ],
    );
    let probe = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // Twenty kept-alive connections, each having been served once.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = connect(&node).await;
        s.write_all(probe).await.unwrap();
        assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut extra = connect(&node).await; // the kernel completes the handshake
    extra.write_all(probe).await.unwrap();
    let mut buf = [0u8; 64];
    let waited = tokio::time::timeout(Duration::from_millis(1500), extra.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "the 21st connection was served past the cap"
    );
    drop(held.pop());
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut extra))
        .await
        .expect("served once a slot was free");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
