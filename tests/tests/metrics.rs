//! `/metrics` against a real node driven by aws-sdk-s3 and raw signed requests: S3 operations
//! by status and error code, latency and time-to-first-byte histograms, bytes both ways, the
//! store census (objects, logical vs stored bytes), fsync latency, RocksDB and process
//! figures, build info; and the JSON log format.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use s3swarm_tests::*;

/// One sample of the text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").expect("label");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("value"),
            }
        })
        .collect()
}

struct Scrape(Vec<Sample>);

impl Scrape {
    async fn of(n: &Node) -> Scrape {
        let text = n
            .http()
            .get(format!("{}/metrics", n.endpoint))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        Scrape(parse(&text))
    }

    /// The sum of the samples of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Like `sum`, but the series must exist.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        assert!(
            self.0.iter().any(|s| s.name == name),
            "no metric {name} in the exposition"
        );
        self.sum(name, labels)
    }

    fn labels_of(&self, name: &str) -> Vec<&BTreeMap<String, String>> {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .map(|s| &s.labels)
            .collect()
    }
}

#[tokio::test]
async fn s3_operations_store_and_process_are_measured() {
    let mut node = Node::start();
    let s3 = node.client();
    let size = 3 * 1024 * 1024;
    let body = pseudo_random(size, 7);
    s3.create_bucket().bucket("measured").send().await.unwrap();
    for key in ["a", "b"] {
        // The same bytes twice: the second copy is deduplicated.
        s3.put_object()
            .bucket("measured")
            .key(key)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(get_bytes(&s3, "measured", "a").await.len(), size);
    // Errors of three kinds: a missing key on GET (XML body) and on HEAD (no body on the
    // wire), and a request signed with the wrong secret.
    assert!(
        s3.get_object()
            .bucket("measured")
            .key("nope")
            .send()
            .await
            .is_err()
    );
    assert!(
        s3.head_object()
            .bucket("measured")
            .key("nope")
            .send()
            .await
            .is_err()
    );
    let forged = node
        .signed_with(
            "GET",
            "/measured?list-type=2",
            &[],
            Vec::new(),
            ACCESS_KEY,
            "not-the-secret-key-at-all",
        )
        .await;
    assert_eq!(forged.status(), 403);

    let m = Scrape::of(&node).await;
    let req = |op: &str, status: &str| {
        m.get(
            "s3swarm_s3_requests_total",
            &[("operation", op), ("status", status)],
        )
    };
    assert_eq!(req("CreateBucket", "200"), 1.0);
    assert_eq!(req("PutObject", "200"), 2.0);
    assert_eq!(req("GetObject", "200"), 1.0);
    assert_eq!(req("GetObject", "404"), 1.0);
    assert_eq!(req("HeadObject", "404"), 1.0);
    let err = |op: &str, code: &str| {
        m.get(
            "s3swarm_s3_errors_total",
            &[("operation", op), ("code", code)],
        )
    };
    assert_eq!(err("GetObject", "NoSuchKey"), 1.0);
    // s3s writes the error body for HEAD too; hyper drops it on the wire.
    assert_eq!(err("HeadObject", "NoSuchKey"), 1.0);
    // The signature is checked before s3s routes the request: no operation name yet.
    assert_eq!(err("Unknown", "SignatureDoesNotMatch"), 1.0);
    assert_eq!(
        m.sum("s3swarm_s3_errors_total", &[]),
        3.0,
        "{:?}",
        m.labels_of("s3swarm_s3_errors_total")
    );

    // Bytes both ways, at the HTTP layer.
    assert!(
        m.get(
            "s3swarm_s3_received_bytes_total",
            &[("operation", "PutObject")]
        ) >= 2.0 * size as f64
    );
    assert!(m.get("s3swarm_s3_sent_bytes_total", &[("operation", "GetObject")]) >= size as f64);
    assert_eq!(
        m.get("s3swarm_read_bytes_total", &[("source", "local")]),
        size as f64
    );
    assert_eq!(
        m.get("s3swarm_read_bytes_total", &[("source", "peer")]),
        0.0
    );
    // Latency and time to first byte, one observation per exchange.
    let ttfb_count = m.get(
        "s3swarm_s3_time_to_first_byte_seconds_count",
        &[("operation", "GetObject")],
    );
    let duration_count = m.get(
        "s3swarm_s3_request_duration_seconds_count",
        &[("operation", "GetObject")],
    );
    assert_eq!(
        ttfb_count, 2.0,
        "one GET with a body, one 404 with an error body"
    );
    assert_eq!(duration_count, 2.0);
    let ttfb = m.get(
        "s3swarm_s3_time_to_first_byte_seconds_sum",
        &[("operation", "GetObject")],
    );
    let whole = m.get(
        "s3swarm_s3_request_duration_seconds_sum",
        &[("operation", "GetObject")],
    );
    assert!(
        ttfb > 0.0 && ttfb <= whole,
        "ttfb {ttfb} vs duration {whole}"
    );
    // The scrape itself is the one exchange in flight.
    assert_eq!(m.get("s3swarm_s3_requests_in_flight", &[]), 1.0);

    // Store: the first object's pack was fsynced; RocksDB and the disk are visible.
    assert!(m.get("s3swarm_store_fsync_duration_seconds_count", &[]) >= 1.0);
    assert!(m.get("s3swarm_store_written_bytes_total", &[]) >= size as f64);
    assert!(m.get("s3swarm_rocksdb_memtable_bytes", &[]) > 0.0);
    assert_eq!(m.get("s3swarm_rocksdb_write_stopped", &[]), 0.0);
    let disk = m.get("s3swarm_store_disk_size_bytes", &[]);
    let free = m.get("s3swarm_store_disk_free_bytes", &[]);
    assert!(disk > 0.0 && free > 0.0 && free <= disk);
    // Process and build.
    assert!(m.get("process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.get("process_open_fds", &[]) > 3.0);
    let build = m.labels_of("s3swarm_build_info");
    assert_eq!(build.len(), 1);
    assert_eq!(build[0]["version"], env!("CARGO_PKG_VERSION"));
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert_eq!(
        build[0]["commit"], head,
        "the binary says which commit it is"
    );

    // The census counts in the background (at start, then every 15 s or more): a restart
    // shows the objects written above without waiting for the next round.
    node.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = Scrape::of(&node).await;
        if m.sum("s3swarm_store_census_timestamp_seconds", &[]) > 0.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "no census after restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(m.get("s3swarm_store_objects", &[("kind", "current")]), 2.0);
    assert_eq!(
        m.get("s3swarm_store_objects", &[("kind", "noncurrent")]),
        0.0
    );
    assert_eq!(m.get("s3swarm_store_logical_bytes", &[]), 2.0 * size as f64);
    let stored = m.get("s3swarm_store_stored_bytes", &[]);
    let referenced = m.get("s3swarm_store_referenced_bytes", &[]);
    assert_eq!(stored, size as f64, "one copy of the bytes is stored");
    assert_eq!(referenced, 2.0 * stored, "dedup ratio 2");
    assert!(m.get("s3swarm_store_chunks", &[("state", "held")]) >= 1.0);
    assert_eq!(m.get("s3swarm_store_chunks", &[("state", "absent")]), 0.0);
    assert!(m.get("s3swarm_store_pack_bytes", &[]) >= size as f64);
}

#[test]
fn logs_are_json_lines_when_asked_and_bad_filters_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(tmp.path().join("d"))
        .env("S3SWARM_ACCESS_KEY", ACCESS_KEY)
        .env("S3SWARM_SECRET_KEY", SECRET_KEY)
        .env("S3SWARM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("line");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        let done = v["message"] == "s3swarm listening";
        if done {
            // Fields sit beside the message, not nested.
            assert!(v["addr"].is_string(), "{line}");
        }
        seen.push(v);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|v| v["message"] == "s3swarm listening"),
        "{seen:?}"
    );

    let out = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("e"))
        .env("S3SWARM_ACCESS_KEY", ACCESS_KEY)
        .env("S3SWARM_SECRET_KEY", SECRET_KEY)
        .env("S3SWARM_LOG", "gateway=loud")
        .output()
        .expect("run");
    assert!(!out.status.success(), "an invalid log filter was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log filter"), "{err}");

    let out = Command::new(binary())
        .arg("--version")
        .output()
        .expect("run");
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.contains("commit "), "{v}");
}
