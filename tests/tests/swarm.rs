//! Swarm tests: several real `s3swarm` processes on 127.0.<net>.x, joined over QUIC with a
//! cluster secret, driven with aws-sdk-s3. Each test has its own `net` so they can run at once.

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use s3swarm_tests::*;

const SECRET: &str = "swarm-test-secret-0123456789abcdef";

async fn keys(c: &Client, bucket: &str) -> Vec<String> {
    c.list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .map(|r| {
            r.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn exists(c: &Client, bucket: &str, key: &str) -> bool {
    c.head_object().bucket(bucket).key(key).send().await.is_ok()
}

/// A swarm counter, `s3swarm_swarm_<name>_total`.
async fn event(n: &Node, name: &str) -> f64 {
    n.metric(&format!("s3swarm_swarm_{name}_total")).await
}

/// A swarm backlog gauge, `s3swarm_swarm_<kind>`.
async fn backlog(n: &Node, kind: &str) -> f64 {
    n.metric(&format!("s3swarm_swarm_{kind}")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_share_one_namespace_and_fetch_what_they_lack() {
    let secret = SecretFile::new(SECRET);
    let a = Node::start_swarm(1, 1, &secret, &[], &[]);
    let b = Node::start_swarm(1, 2, &secret, &[1], &[]);
    let c = Node::start_swarm(1, 3, &secret, &[1], &[]);
    // A cache-only node: no placed copies, so every chunk it holds it fetched for a read.
    let d = Node::start_swarm(1, 4, &secret, &[2], &["--capacity", "1000000000"]);
    all_alive(&[&a, &b, &c, &d], 4.0).await;
    let (ca, cb, cc, cd) = (a.client(), b.client(), c.client(), d.client());

    ca.create_bucket()
        .bucket("shared")
        .send()
        .await
        .expect("create");
    let big = pseudo_random(24 << 20, 41);
    let small = b"hello from a".to_vec();
    put(&ca, "shared", "big.bin", &big).await;
    put(&ca, "shared", "dir/small.txt", &small).await;
    let written = Instant::now();
    for n in [&cb, &cc, &cd] {
        until("the write is visible on every node", 5, || async {
            exists(n, "shared", "big.bin").await && exists(n, "shared", "dir/small.txt").await
        })
        .await;
    }
    let visible_after = written.elapsed();
    assert!(
        visible_after < Duration::from_secs(2),
        "replication took {visible_after:?}"
    );
    // Every entry B applied took under a second from its origin's stamp (the histogram's
    // `le="1"` bucket holds them all), and the lag gauge says so too.
    let applied = b
        .metric("s3swarm_swarm_namespace_apply_delay_seconds_count")
        .await;
    let within_1s = b
        .metric("s3swarm_swarm_namespace_apply_delay_seconds_bucket{le=\"1\"}")
        .await;
    assert!(
        applied >= 3.0,
        "B applied {applied} entries (bucket, two objects)"
    );
    assert_eq!(within_1s, applied, "some entries took over a second");
    let lag = b.metric("s3swarm_swarm_namespace_lag_seconds").await;
    assert!(lag < 1.0, "namespace lag reported as {lag}s");

    // Reads through nodes that did not take the write.
    assert_eq!(get_bytes(&cb, "shared", "big.bin").await, big);
    assert_eq!(get_bytes(&cc, "shared", "dir/small.txt").await, small);
    let head = cc
        .head_object()
        .bucket("shared")
        .key("big.bin")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(big.len() as i64));
    let listed_a = keys(&ca, "shared").await;
    assert_eq!(
        listed_a,
        vec!["big.bin".to_string(), "dir/small.txt".into()]
    );
    for n in [&cb, &cc, &cd] {
        assert_eq!(keys(n, "shared").await, listed_a, "listings agree");
    }

    // A ranged GET through the cache-only node fetches only the chunks it covers (chunks
    // average 1 MiB, at most 4 MiB: 1 MiB in the middle spans at most 3 of ~24).
    let before = event(&d, "chunks_fetched").await;
    let part = cd
        .get_object()
        .bucket("shared")
        .key("big.bin")
        .range("bytes=12000000-13048575")
        .send()
        .await
        .expect("ranged get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_eq!(&part[..], &big[12_000_000..13_048_576]);
    let fetched = event(&d, "chunks_fetched").await - before;
    assert!(
        (1.0..=3.0).contains(&fetched),
        "a 1 MiB range fetched {fetched} chunks"
    );
    // The whole object through it: every chunk verified, bytes exact.
    assert_eq!(get_bytes(&cd, "shared", "big.bin").await, big);
    assert!(
        d.metric_or_zero("s3swarm_chunks_read_total{source=\"peer\"}")
            .await
            >= 1.0
    );

    // Placement: with k = 2 over three storage nodes, every chunk ends on two of them.
    for n in [&a, &b, &c] {
        until("placed copies made", 20, || async {
            backlog(n, "under_replicated_chunks").await == 0.0
        })
        .await;
    }
    let status: serde_json::Value = b
        .signed("GET", "/_admin/cluster", Vec::new())
        .await
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).expect("status json"))
        .expect("status body");
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 4, "{status}");
    assert!(members.iter().all(|m| m["state"] == "alive"), "{status}");
    let storage: Vec<&serde_json::Value> =
        members.iter().filter(|m| m["role"] == "storage").collect();
    assert_eq!(storage.len(), 3);
    let held: u64 = storage
        .iter()
        .map(|m| m["bytes_held"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        held >= 2 * big.len() as u64,
        "storage nodes hold {held} bytes of a {}-byte object",
        big.len()
    );
    // An unsigned status request is refused.
    let anon = b
        .http()
        .get(format!("{}/_admin/cluster", b.endpoint))
        .send()
        .await
        .expect("anonymous status");
    assert_eq!(anon.status(), 403);
    // The CLI shows the same members.
    let out = Command::new(binary())
        .args(["cluster", "status", "--endpoint", &c.endpoint])
        .env("S3SWARM_ACCESS_KEY", ACCESS_KEY)
        .env("S3SWARM_SECRET_KEY", SECRET_KEY)
        .output()
        .expect("cluster status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches(" alive ").count(), 4, "{text}");
    assert_eq!(text.matches(" cache ").count(), 1, "{text}");

    // A delete through one node propagates everywhere.
    cb.delete_object()
        .bucket("shared")
        .key("dir/small.txt")
        .send()
        .await
        .expect("delete");
    for n in [&ca, &cc, &cd] {
        until("the delete is visible", 5, || async {
            !exists(n, "shared", "dir/small.txt").await
        })
        .await;
    }

    // A multipart completion on one node is an object on the others.
    let up = cc
        .create_multipart_upload()
        .bucket("shared")
        .key("mp.bin")
        .send()
        .await
        .expect("create upload");
    let id = up.upload_id().expect("id");
    let p1 = pseudo_random(5 << 20, 1);
    let p2 = pseudo_random(1 << 20, 2);
    let mut parts = Vec::new();
    for (n, data) in [(1, &p1), (2, &p2)] {
        let r = cc
            .upload_part()
            .bucket("shared")
            .key("mp.bin")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("part");
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().unwrap_or_default())
                .build(),
        );
    }
    cc.complete_multipart_upload()
        .bucket("shared")
        .key("mp.bin")
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    until("the completed upload is visible on a", 5, || async {
        exists(&ca, "shared", "mp.bin").await
    })
    .await;
    let mut whole = p1.clone();
    whole.extend_from_slice(&p2);
    assert_eq!(get_bytes(&ca, "shared", "mp.bin").await, whole);
    // Nothing arrived corrupt, nobody was refused.
    for n in [&a, &b, &c, &d] {
        assert_eq!(event(n, "verification_failures").await, 0.0);
        assert_eq!(event(n, "auth_failures").await, 0.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_killed_mid_download_and_a_node_that_comes_back() {
    let secret = SecretFile::new(SECRET);
    let a = Node::start_swarm(2, 1, &secret, &[], &[]);
    let mut b = Node::start_swarm(2, 2, &secret, &[1], &[]);
    let c = Node::start_swarm(2, 3, &secret, &[1], &[]);
    let reader = Node::start_swarm(2, 4, &secret, &[1], &["--capacity", "1000000000"]);
    all_alive(&[&a, &b, &c, &reader], 4.0).await;
    let ca = a.client();
    ca.create_bucket()
        .bucket("data")
        .send()
        .await
        .expect("create");
    let data = pseudo_random(48 << 20, 7);
    put(&ca, "data", "ckpt.bin", &data).await;
    until(
        "two copies of every chunk on the storage nodes",
        30,
        || async {
            let (hb, hc) = (held_bytes(&b).await, held_bytes(&c).await);
            hb > 0
                && hc > 0
                && backlog(&b, "under_replicated_chunks").await == 0.0
                && backlog(&c, "under_replicated_chunks").await == 0.0
                && held_bytes(&a).await + hb + hc >= 2 * data.len() as u64
        },
    )
    .await;
    // The reader streams the object; at its first bytes, b (a holder of about two thirds of
    // the chunks, each also on a or c) is killed without warning. The reader must still have
    // lacked chunks then (what it holds just after the kill is at least what it held at it).
    let mut body = reader
        .client()
        .get_object()
        .bucket("data")
        .key("ckpt.bin")
        .send()
        .await
        .expect("get")
        .body;
    let mut got = Vec::with_capacity(data.len());
    let mut killed = false;
    while let Some(bytes) = body.try_next().await.expect("the GET completes") {
        got.extend_from_slice(&bytes);
        if !killed {
            b.kill9();
            killed = true;
            let held = held_bytes(&reader).await;
            assert!(
                held < data.len() as u64,
                "the reader held all {held} bytes when b died: the kill was not mid-download"
            );
        }
    }
    assert!(killed);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ after a holder died mid-download");

    // b is declared down; the copies it held are re-made on the survivors.
    until("b declared down", 20, || async {
        a.metric_or_zero("s3swarm_swarm_members{state=\"down\"}")
            .await
            == 1.0
    })
    .await;
    for n in [&a, &c] {
        until("copies re-made after b left", 30, || async {
            backlog(n, "under_replicated_chunks").await == 0.0
        })
        .await;
    }
    assert!(
        event(&a, "repaired_chunks").await + event(&c, "repaired_chunks").await > 0.0,
        "nothing was re-replicated"
    );
    // Writes b misses while it is down.
    put(&ca, "data", "while-b-was-down.txt", b"news").await;
    ca.delete_object()
        .bucket("data")
        .key("ckpt.bin")
        .send()
        .await
        .expect("delete");
    b.restart();
    let cb = b.client();
    until("b catches up on the namespace", 20, || async {
        exists(&cb, "data", "while-b-was-down.txt").await && !exists(&cb, "data", "ckpt.bin").await
    })
    .await;
    assert_eq!(
        get_bytes(&cb, "data", "while-b-was-down.txt").await,
        b"news".to_vec()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_serving_corrupt_chunks_is_dropped_and_no_bad_byte_reaches_a_client() {
    let secret = SecretFile::new(SECRET);
    let good = Node::start_swarm(3, 1, &secret, &[], &[]);
    let bad = Node::start_swarm(3, 2, &secret, &[1], &["--fault-corrupt-chunks"]);
    let reader = Node::start_swarm(3, 3, &secret, &[1], &["--capacity", "1000000000"]);
    all_alive(&[&good, &bad, &reader], 3.0).await;
    let cg = good.client();
    cg.create_bucket()
        .bucket("bkt")
        .send()
        .await
        .expect("create");
    let data = pseudo_random(24 << 20, 9);
    put(&cg, "bkt", "obj", &data).await;
    // With k = 2 and two storage nodes, the faulty node fetches (from the good one) every
    // chunk; it then offers all of them.
    until("the faulty node holds its copies", 30, || async {
        held_bytes(&bad).await >= data.len() as u64
    })
    .await;
    let got = get_bytes(&reader.client(), "bkt", "obj").await;
    assert!(got == data, "a corrupted byte reached the client");
    assert!(
        event(&reader, "verification_failures").await >= 1.0,
        "the reader never asked the faulty peer: the test proved nothing"
    );
    assert!(event(&reader, "peers_dropped").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_the_secret_is_refused() {
    let secret = SecretFile::new(SECRET);
    let wrong = SecretFile::new("another-secret-entirely-0123456789");
    let a = Node::start_swarm(4, 1, &secret, &[], &[]);
    ready(&a).await;
    a.client()
        .create_bucket()
        .bucket("private")
        .send()
        .await
        .expect("create");
    let intruder = Node::start_swarm(4, 2, &wrong, &[1], &[]);
    until("the intruder was refused", 10, || async {
        event(&a, "auth_failures").await >= 1.0
    })
    .await;
    // The intruder keeps trying (it retries its peer): three refusals, not a fixed wait.
    until("the intruder was refused three times", 20, || async {
        event(&a, "auth_failures").await >= 3.0
    })
    .await;
    assert_eq!(alive(&a).await, 1.0, "the intruder became a member");
    assert_eq!(
        alive(&intruder).await,
        1.0,
        "the intruder learned of a member"
    );
    let seen = intruder.client().list_buckets().send().await.expect("list");
    assert!(seen.buckets().is_empty(), "the namespace leaked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_only_node_evicts_beyond_its_capacity() {
    let secret = SecretFile::new(SECRET);
    let a = Node::start_swarm(5, 1, &secret, &[], &[]);
    let cache = Node::start_swarm(5, 2, &secret, &[1], &["--capacity", "8000000"]);
    all_alive(&[&a, &cache], 2.0).await;
    a.client()
        .create_bucket()
        .bucket("bkt")
        .send()
        .await
        .expect("create");
    let data = pseudo_random(24 << 20, 3);
    put(&a.client(), "bkt", "obj", &data).await;
    let cc = cache.client();
    until("visible", 5, || async { exists(&cc, "bkt", "obj").await }).await;
    assert_eq!(get_bytes(&cc, "bkt", "obj").await, data);
    until("cached chunks evicted down to the capacity", 30, || async {
        event(&cache, "evicted_bytes").await > 0.0 && held_bytes(&cache).await <= 8_000_000
    })
    .await;
    // Evicted chunks are fetched again when read.
    assert_eq!(get_bytes(&cc, "bkt", "obj").await, data);
}

#[test]
fn swarm_misconfiguration_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = |args: &[&str]| {
        Command::new(binary())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("d"))
            .args(args)
            .env("S3SWARM_ACCESS_KEY", ACCESS_KEY)
            .env("S3SWARM_SECRET_KEY", SECRET_KEY)
            .output()
            .expect("run")
    };
    let out = run(&["--swarm-listen", "127.0.6.1:7400"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cluster-secret-file"));
    let short = SecretFile::new("short");
    let out = run(&[
        "--swarm-listen",
        "127.0.6.1:7400",
        "--cluster-secret-file",
        &short.path.display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("too short"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--peer", "127.0.6.2:7400"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--swarm-listen"));
    let secret = SecretFile::new(SECRET);
    let secret_path = secret.path.display().to_string();
    let refused = |args: &[&str], says: &str| {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(says), "{args:?}: {err}");
    };
    // Bound to every interface, a node cannot tell peers where to dial it.
    refused(
        &[
            "--swarm-listen",
            "0.0.0.0:7400",
            "--cluster-secret-file",
            &secret_path,
        ],
        "--swarm-advertise",
    );
    refused(
        &[
            "--swarm-listen",
            "0.0.0.0:7400",
            "--swarm-advertise",
            "0.0.0.0:7400",
            "--cluster-secret-file",
            &secret_path,
        ],
        "specific IP",
    );
    refused(&["--swarm-advertise", "127.0.6.1:7400"], "--swarm-listen");
    // A peer must be HOST:PORT; a URL or a name without a port is a typo, said at once.
    for bad in ["http://node1:7400", "node1", "node_1:7400", "node1:0"] {
        refused(
            &[
                "--swarm-listen",
                "127.0.6.1:7400",
                "--cluster-secret-file",
                &secret_path,
                "--peer",
                bad,
            ],
            "HOST:PORT",
        );
    }
}

/// As in Kubernetes: one node binds every interface and advertises one address, the other
/// joins through a DNS name (`localhost`, resolving to a different address of the first).
#[tokio::test(flavor = "multi_thread")]
async fn nodes_join_through_a_dns_name_and_dial_the_advertised_address() {
    let secret = SecretFile::new(SECRET);
    let secret_path = secret.path.display().to_string();
    let identity = [
        ("S3SWARM_ACCESS_KEY", ACCESS_KEY),
        ("S3SWARM_SECRET_KEY", SECRET_KEY),
    ];
    let a = Node::start_with(
        &[
            "--swarm-listen",
            "0.0.0.0:7460",
            "--swarm-advertise",
            "127.0.6.1:7460",
            "--cluster-secret-file",
            &secret_path,
        ],
        &identity,
    );
    let b = Node::start_with(
        &[
            "--swarm-listen",
            "127.0.6.2:7400",
            "--peer",
            "localhost:7460",
            "--cluster-secret-file",
            &secret_path,
        ],
        &identity,
    );
    until("both nodes see two live members", 20, || async {
        alive(&a).await == 2.0 && alive(&b).await == 2.0
    })
    .await;
    // B knows A by the address A advertised, not the one the name resolved to.
    let status = b
        .signed("GET", "/_admin/cluster", Vec::new())
        .await
        .bytes()
        .await
        .expect("status body");
    let status: serde_json::Value = serde_json::from_slice(&status).expect("status json");
    let addrs: Vec<&str> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["swarm_addr"].as_str())
        .collect();
    assert!(addrs.contains(&"127.0.6.1:7460"), "{status}");
    assert!(!addrs.contains(&"127.0.0.1:7460"), "{status}");

    let body = pseudo_random(6 * 1024 * 1024, 66);
    let (ca, cb) = (a.client(), b.client());
    ca.create_bucket().bucket("dns").send().await.unwrap();
    ca.put_object()
        .bucket("dns")
        .key("k")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    until("the object is visible on B", 10, || async {
        exists(&cb, "dns", "k").await
    })
    .await;
    assert!(get_bytes(&cb, "dns", "k").await == body, "bytes differ");
    // The bytes came over the swarm, and the metrics say so: B either fetched them for the
    // read or already held its placed copies (k=2 of 2 nodes), fetched from A either way.
    let received = b
        .metric("s3swarm_swarm_peer_bytes_total{class=\"storage\",direction=\"received\"}")
        .await;
    assert!(
        received >= body.len() as f64,
        "B received {received} chunk bytes from A for a {} byte object",
        body.len()
    );
    assert!(
        b.metric("s3swarm_swarm_chunk_fetch_duration_seconds_count")
            .await
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_fills_a_node_before_anyone_reads_and_refuses_what_it_should() {
    let secret = SecretFile::new(SECRET);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("s3swarm.toml");
    std::fs::write(
        &cfg,
        "[[keys]]\naccess_key = \"BOBKEY\"\nsecret_key = \"bob-secret-key-1\"\n",
    )
    .expect("config");
    let mut a = Node::start_swarm(7, 1, &secret, &[], &[]);
    let cache = Node::start_swarm(
        7,
        2,
        &secret,
        &[1],
        &[
            "--capacity",
            "100000000",
            "--config",
            cfg.to_str().expect("utf-8 path"),
        ],
    );
    all_alive(&[&a, &cache], 2.0).await;
    let ca = a.client();
    ca.create_bucket()
        .bucket("bkt")
        .send()
        .await
        .expect("create");
    let data = pseudo_random(12 << 20, 21);
    put(&ca, "bkt", "data/part 1.bin", &data).await;
    let cc = cache.client();
    until("visible", 5, || async {
        exists(&cc, "bkt", "data/part 1.bin").await
    })
    .await;
    assert_eq!(
        held_bytes(&cache).await,
        0,
        "the cache node held chunks already"
    );

    // Through the command, as an operator would (a key with a space and a slash).
    let prefetch = |json: bool| {
        let mut cmd = Command::new(binary());
        cmd.args([
            "cluster",
            "prefetch",
            "bkt",
            "data/part 1.bin",
            "--endpoint",
        ])
        .arg(&cache.endpoint)
        .env("S3SWARM_ACCESS_KEY", ACCESS_KEY)
        .env("S3SWARM_SECRET_KEY", SECRET_KEY);
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("run s3swarm cluster prefetch")
    };
    let out = prefetch(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["chunks"].as_u64().unwrap_or(0) >= 2, "{v}");
    assert_eq!(v["fetched_chunks"], v["chunks"], "{v}");
    assert_eq!(v["fetched_bytes"].as_u64(), Some(data.len() as u64), "{v}");
    assert!(held_bytes(&cache).await >= data.len() as u64);
    // Nothing is left to fetch; the table form says so.
    let out = prefetch(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fetched 0 of"), "{text}");

    // What was fetched is served with its only other holder gone.
    a.kill9();
    assert_eq!(get_bytes(&cc, "bkt", "data/part 1.bin").await, data);

    // Refusals: no such key, no key at all, another identity's bucket, unsigned.
    let r = cache
        .signed("POST", "/_admin/prefetch?bucket=bkt&key=nope", Vec::new())
        .await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap_or_default().contains("NoSuchKey"));
    let r = cache
        .signed("POST", "/_admin/prefetch?bucket=bkt", Vec::new())
        .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap_or_default()
            .contains("InvalidArgument")
    );
    let r = cache
        .signed_with(
            "POST",
            "/_admin/prefetch?bucket=bkt&key=data%2Fpart%201.bin",
            &[],
            Vec::new(),
            "BOBKEY",
            "bob-secret-key-1",
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap_or_default().contains("AccessDenied"));
    let r = cache
        .http()
        .post(format!(
            "{}/_admin/prefetch?bucket=bkt&key=data%2Fpart%201.bin",
            cache.endpoint
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);
}

#[test]
fn prefetch_on_a_node_outside_a_swarm_says_so() {
    let node = Node::start();
    let out = Command::new(binary())
        .args(["cluster", "prefetch", "bkt", "k", "--endpoint"])
        .arg(&node.endpoint)
        .env("S3SWARM_ACCESS_KEY", ACCESS_KEY)
        .env("S3SWARM_SECRET_KEY", SECRET_KEY)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("501") && err.contains("not part of a swarm"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_stopped_with_sigterm_exit_cleanly_and_keep_what_they_hold() {
    // A node stopped by its service manager (SIGTERM) after it wrote, served and fetched
    // chunks must exit with status 0: RocksDB used to abort the process ("pthread lock:
    // Invalid argument") when its database was still being closed as the process exited.
    let secret = SecretFile::new(SECRET);
    let mut a = Node::start_swarm(8, 1, &secret, &[], &[]);
    let mut b = Node::start_swarm(8, 2, &secret, &[1], &["--capacity", "1000000000"]);
    all_alive(&[&a, &b], 2.0).await;
    ready(&a).await;
    let ca = a.client();
    ca.create_bucket()
        .bucket("keep")
        .send()
        .await
        .expect("create");
    let data = pseudo_random(24 << 20, 8);
    put(&ca, "keep", "obj.bin", &data).await;
    until("b sees the object", 20, || async {
        exists(&b.client(), "keep", "obj.bin").await
    })
    .await;
    for round in 0..2 {
        // b reads (fetching what it lacks from a, storing it); then both are stopped.
        assert!(
            get_bytes(&b.client(), "keep", "obj.bin").await == data,
            "round {round}: bytes differ"
        );
        // b leaves first: it tells a it is going, so a marks it down at once. Failure
        // detection alone takes longer than the limit below (a missed probe, then 3 s of
        // suspicion).
        let status = b.stop(20);
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: node b did not exit cleanly on SIGTERM: {status:?}"
        );
        let left = Instant::now();
        until("a marks b down", 10, || async {
            a.metric_or_zero("s3swarm_swarm_members{state=\"down\"}")
                .await
                == 1.0
        })
        .await;
        eprintln!(
            "round {round}: a learned that b left in {:?}",
            left.elapsed()
        );
        assert!(
            left.elapsed() < Duration::from_millis(2500),
            "round {round}: a took {:?} to learn that b left",
            left.elapsed()
        );
        let status = a.stop(20);
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: node a did not exit cleanly on SIGTERM: {status:?}"
        );
        a.restart();
        b.restart();
        all_alive(&[&a, &b], 2.0).await;
    }
    // What b fetched before it stopped is still there: it serves the object with a gone.
    a.kill9();
    assert!(get_bytes(&b.client(), "keep", "obj.bin").await == data);
}
