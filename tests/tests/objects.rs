//! Object reads and writes through aws-sdk-s3: bodies, ranges, metadata, BLAKE3 addressing.

use aws_sdk_s3::primitives::ByteStream;
use s3swarm_tests::{Node, code, pseudo_random};

async fn get_bytes(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    range: Option<&str>,
) -> Vec<u8> {
    let mut req = s3.get_object().bucket(bucket).key(key);
    if let Some(r) = range {
        req = req.range(r);
    }
    req.send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

#[tokio::test]
async fn put_get_round_trips_bytes_metadata_and_blake3() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("data").send().await.unwrap();
    let body = pseudo_random(3 * 1024 * 1024 + 17, 1);
    let put = s3
        .put_object()
        .bucket("data")
        .key("dir/file.bin")
        .body(body.clone().into())
        .content_type("application/x-test")
        .content_encoding("identity")
        .content_disposition("attachment; filename=\"f.bin\"")
        .cache_control("max-age=60")
        .metadata("Owner", "team-ml")
        .metadata("epoch", "7")
        .send()
        .await
        .unwrap();
    let md5 = format!(
        "\"{}\"",
        hex::encode(<md5::Md5 as md5::Digest>::digest(&body))
    );
    assert_eq!(put.e_tag(), Some(md5.as_str()));

    let got = s3
        .get_object()
        .bucket("data")
        .key("dir/file.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("application/x-test"));
    assert_eq!(got.content_encoding(), Some("identity"));
    assert_eq!(
        got.content_disposition(),
        Some("attachment; filename=\"f.bin\"")
    );
    assert_eq!(got.cache_control(), Some("max-age=60"));
    assert_eq!(
        got.metadata()
            .and_then(|m| m.get("owner"))
            .map(String::as_str),
        Some("team-ml")
    );
    assert_eq!(
        got.metadata()
            .and_then(|m| m.get("epoch"))
            .map(String::as_str),
        Some("7")
    );
    assert_eq!(got.e_tag(), Some(md5.as_str()));
    assert_eq!(got.content_length(), Some(body.len() as i64));
    let bytes = got.body.collect().await.unwrap().into_bytes();
    assert!(bytes.as_ref() == body.as_slice(), "body differs");

    // The whole-content BLAKE3, as b3sum prints it, on GET and HEAD.
    let b3 = blake3::hash(&body).to_hex().to_string();
    let resp = node.signed("HEAD", "/data/dir/file.bin", vec![]).await;
    assert_eq!(
        resp.headers()
            .get("x-s3swarm-blake3")
            .and_then(|v| v.to_str().ok()),
        Some(b3.as_str())
    );
    let resp = node.signed("GET", "/data/dir/file.bin", vec![]).await;
    assert_eq!(
        resp.headers()
            .get("x-s3swarm-blake3")
            .and_then(|v| v.to_str().ok()),
        Some(b3.as_str())
    );

    // ... and the same bytes by hash.
    let resp = node.signed("GET", &format!("/_blob/{b3}"), vec![]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().as_ref() == body.as_slice());
    let missing = blake3::hash(b"nope").to_hex().to_string();
    assert_eq!(
        node.signed("GET", &format!("/_blob/{missing}"), vec![])
            .await
            .status(),
        404
    );
    assert_eq!(
        node.signed("GET", "/_blob/not-a-hash", vec![])
            .await
            .status(),
        400
    );
    let unsigned = reqwest::get(format!("{}/_blob/{b3}", node.endpoint))
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 403, "blobs need a signature too");
}

#[tokio::test]
async fn ranges_read_exact_slices() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("rng").send().await.unwrap();
    let body = pseudo_random(9 * 1024 * 1024 + 5, 2);
    s3.put_object()
        .bucket("rng")
        .key("k")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let n = body.len();
    assert_eq!(
        get_bytes(&s3, "rng", "k", Some("bytes=0-0")).await,
        &body[..1]
    );
    assert_eq!(
        get_bytes(&s3, "rng", "k", Some("bytes=1048570-5000000")).await,
        &body[1048570..=5000000]
    );
    assert_eq!(
        get_bytes(&s3, "rng", "k", Some("bytes=-100")).await,
        &body[n - 100..]
    );
    assert_eq!(
        get_bytes(&s3, "rng", "k", Some(&format!("bytes={}-", n - 3))).await,
        &body[n - 3..]
    );
    assert_eq!(
        get_bytes(&s3, "rng", "k", Some(&format!("bytes=5-{}", n + 100))).await,
        &body[5..],
        "end is clamped"
    );
    let r = s3
        .get_object()
        .bucket("rng")
        .key("k")
        .range("bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.content_range(), Some(format!("bytes 10-19/{n}").as_str()));
    assert_eq!(r.content_length(), Some(10));
    let h = node
        .signed_with(
            "HEAD",
            "/rng/k",
            &[("range", "bytes=10-19")],
            vec![],
            s3swarm_tests::ACCESS_KEY,
            s3swarm_tests::SECRET_KEY,
        )
        .await;
    assert_eq!(h.status(), 206, "HEAD with a range answers like GET");
    assert_eq!(
        h.headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok()),
        Some(format!("bytes 10-19/{n}").as_str())
    );
    let e = s3
        .get_object()
        .bucket("rng")
        .key("k")
        .range(format!("bytes={n}-"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRange");
}

#[tokio::test]
async fn empty_and_overwritten_and_deleted_objects() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("obj").send().await.unwrap();
    s3.put_object()
        .bucket("obj")
        .key("empty")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .unwrap();
    assert!(get_bytes(&s3, "obj", "empty", None).await.is_empty());
    let head = s3
        .head_object()
        .bucket("obj")
        .key("empty")
        .send()
        .await
        .unwrap();
    assert_eq!(head.e_tag(), Some("\"d41d8cd98f00b204e9800998ecf8427e\""));

    s3.put_object()
        .bucket("obj")
        .key("k")
        .body(b"first".to_vec().into())
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("obj")
        .key("k")
        .body(b"second".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(get_bytes(&s3, "obj", "k", None).await, b"second");

    s3.delete_object()
        .bucket("obj")
        .key("k")
        .send()
        .await
        .unwrap();
    let e = s3
        .get_object()
        .bucket("obj")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
    let e = s3
        .head_object()
        .bucket("obj")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(404));
    // Deleting again is not an error in S3.
    s3.delete_object()
        .bucket("obj")
        .key("k")
        .send()
        .await
        .unwrap();
    let e = s3
        .get_object()
        .bucket("nobucket")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchBucket");
}

#[tokio::test]
async fn identical_content_is_stored_once_and_freed_when_unreferenced() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("dedup").send().await.unwrap();
    let body = pseudo_random(8 * 1024 * 1024, 3);
    let written = || node.metric("s3swarm_store_written_bytes_total");
    s3.put_object()
        .bucket("dedup")
        .key("a")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let after_one = written().await;
    assert!(after_one >= body.len() as f64);
    s3.put_object()
        .bucket("dedup")
        .key("b")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    assert_eq!(
        written().await,
        after_one,
        "the second copy wrote no chunk bytes"
    );

    assert!(node.packs() >= 1);
    s3.delete_object()
        .bucket("dedup")
        .key("a")
        .send()
        .await
        .unwrap();
    // A canary written and deleted after `a`: once its pack is gone, the collector has run
    // since `a` went, and whatever it would take of `a`'s chunks it has taken.
    let packs_before = node.packs();
    s3.put_object()
        .bucket("dedup")
        .key("canary")
        .body(ByteStream::from(vec![9u8; 300_000]))
        .send()
        .await
        .unwrap();
    assert_eq!(node.packs(), packs_before + 1);
    s3.delete_object()
        .bucket("dedup")
        .key("canary")
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while node.packs() > packs_before {
        assert!(
            std::time::Instant::now() < deadline,
            "the canary was never collected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(node.packs() >= 1, "still referenced by b");
    assert_eq!(get_bytes(&s3, "dedup", "b", None).await, body);
    s3.delete_object()
        .bucket("dedup")
        .key("b")
        .send()
        .await
        .unwrap();
    s3swarm_tests::eventually("unreferenced chunks are collected", || node.packs() == 0).await;
}

#[tokio::test]
async fn a_read_in_progress_survives_an_overwrite_and_a_delete() {
    // Default grace period: chunks released by the overwrite stay readable for a while.
    let node = Node::start_with(
        &[],
        &[
            ("S3SWARM_ACCESS_KEY", s3swarm_tests::ACCESS_KEY),
            ("S3SWARM_SECRET_KEY", s3swarm_tests::SECRET_KEY),
        ],
    );
    let s3 = node.client();
    s3.create_bucket().bucket("live").send().await.unwrap();
    let old = pseudo_random(40 * 1024 * 1024, 31);
    s3.put_object()
        .bucket("live")
        .key("k")
        .body(old.clone().into())
        .send()
        .await
        .unwrap();
    let mut body = s3
        .get_object()
        .bucket("live")
        .key("k")
        .send()
        .await
        .unwrap()
        .body;
    let mut got = Vec::new();
    let first = body.next().await.unwrap().unwrap();
    got.extend_from_slice(&first);
    // While the reader is paused: replace the object, then delete it.
    s3.put_object()
        .bucket("live")
        .key("k")
        .body(pseudo_random(1024 * 1024, 32).into())
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket("live")
        .key("k")
        .send()
        .await
        .unwrap();
    while let Some(piece) = body.next().await {
        got.extend_from_slice(&piece.unwrap());
    }
    assert!(got == old, "the reader got the complete old version");
}

/// How many of these requests succeeded.
async fn successes(tasks: Vec<tokio::task::JoinHandle<bool>>) -> usize {
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    wins
}

#[tokio::test]
async fn conditional_writes_are_enforced_and_race_free() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("cond").send().await.unwrap();
    let first = s3
        .put_object()
        .bucket("cond")
        .key("k")
        .if_none_match("*")
        .body(b"v1".to_vec().into())
        .send()
        .await
        .unwrap();
    let e = s3
        .put_object()
        .bucket("cond")
        .key("k")
        .if_none_match("*")
        .body(b"v2".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    let e = s3
        .put_object()
        .bucket("cond")
        .key("k")
        .if_match("\"0000\"")
        .body(b"v2".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "PreconditionFailed");
    s3.put_object()
        .bucket("cond")
        .key("k")
        .if_match(first.e_tag().unwrap())
        .body(b"v3".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(get_bytes(&s3, "cond", "k", None).await, b"v3");
    let e = s3
        .put_object()
        .bucket("cond")
        .key("absent")
        .if_match(first.e_tag().unwrap())
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");

    // Sixteen writers race to create the same key: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let s3 = s3.clone();
        tasks.push(tokio::spawn(async move {
            s3.put_object()
                .bucket("cond")
                .key("race")
                .if_none_match("*")
                .body(vec![i; 100].into())
                .send()
                .await
                .is_ok()
        }));
    }
    let wins = successes(tasks).await;
    assert_eq!(wins, 1);

    // CopyObject takes the same conditions on its destination (a lone node: the store's
    // commit decides): onto an existing key with If-None-Match: *, 412; onto a new one, 200;
    // If-Match with a stale ETag 412, with the current one 200; and sixteen racing copies
    // onto one new key, one winner.
    let copy = |key: &'static str| {
        s3.copy_object()
            .bucket("cond")
            .key(key)
            .copy_source("cond/k")
    };
    let e = copy("race").if_none_match("*").send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    copy("copied").if_none_match("*").send().await.unwrap();
    let e = copy("copied")
        .if_match("\"0000\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "PreconditionFailed");
    let current = s3
        .head_object()
        .bucket("cond")
        .key("copied")
        .send()
        .await
        .unwrap();
    copy("copied")
        .if_match(current.e_tag().unwrap())
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .content_type("text/x-again")
        .send()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s3 = s3.clone();
        tasks.push(tokio::spawn(async move {
            s3.copy_object()
                .bucket("cond")
                .key("copy-race")
                .copy_source("cond/k")
                .if_none_match("*")
                .send()
                .await
                .is_ok()
        }));
    }
    let wins = successes(tasks).await;
    assert_eq!(wins, 1, "racing conditional copies");
}

/// A conditional PUT whose condition held when it started but not when it commits (another
/// write landed while its body was arriving) gets 409 ConditionalRequestConflict; one whose
/// condition fails up front gets 412 at once.
#[tokio::test]
async fn a_conditional_write_that_loses_a_race_gets_409() {
    use aws_sdk_s3::presigning::PresigningConfig;
    use std::time::Duration;
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("race409").send().await.unwrap();
    let presigned = s3
        .put_object()
        .bucket("race409")
        .key("k")
        .if_none_match("*")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(600)).unwrap())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let mut req = reqwest::Client::new().put(presigned.uri());
    for (k, v) in presigned.headers() {
        req = req.header(k, v);
    }
    const FIRST: usize = 16 << 20;
    let slow = tokio::spawn(
        req.header("content-length", (FIRST + 2 + (1 << 20)).to_string())
            .body(reqwest::Body::wrap_stream(tokio_stream_of(rx)))
            .send(),
    );
    // The client takes the first piece at once; the third send returns only once the client
    // has written all 16 MiB of it, which loopback's socket buffers (a few MiB) allow only
    // once the node reads the body: the slow writer is past its up-front check.
    tx.send(Ok(vec![1u8; FIRST])).await.unwrap();
    tx.send(Ok(vec![2u8; 1])).await.unwrap();
    tx.send(Ok(vec![3u8; 1])).await.unwrap();
    // Then another writer creates the key.
    s3.put_object()
        .bucket("race409")
        .key("k")
        .body(b"winner".to_vec().into())
        .send()
        .await
        .unwrap();
    tx.send(Ok(vec![4u8; 1 << 20])).await.unwrap();
    drop(tx);
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 409);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("ConditionalRequestConflict")
    );
    let got = s3
        .get_object()
        .bucket("race409")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"winner"
    );

    // The key exists now: the same conditional PUT fails before its body matters.
    let e = s3
        .put_object()
        .bucket("race409")
        .key("k")
        .if_none_match("*")
        .body(vec![0u8; 1024].into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
