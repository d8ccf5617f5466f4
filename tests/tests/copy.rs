//! CopyObject: a metadata operation over shared chunks.

use s3swarm_tests::{Node, code, pseudo_random};

fn written_bytes(text: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix("s3swarm_store_written_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test]
async fn copy_shares_chunks_and_follows_the_metadata_directive() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("src").send().await.unwrap();
    s3.create_bucket().bucket("dst").send().await.unwrap();
    let body = pseudo_random(12 * 1024 * 1024, 41);
    s3.put_object()
        .bucket("src")
        .key("a")
        .content_type("text/x-a")
        .metadata("tag", "one")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let metrics = || async {
        reqwest::get(format!("{}/metrics", node.endpoint))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = written_bytes(&metrics().await);

    // Across buckets, metadata copied.
    let r = s3
        .copy_object()
        .copy_source("src/a")
        .bucket("dst")
        .key("b")
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("dst")
        .key("b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.copy_object_result().and_then(|c| c.e_tag()), head.e_tag());
    assert_eq!(head.content_type(), Some("text/x-a"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("tag"))
            .map(String::as_str),
        Some("one")
    );
    assert_eq!(
        written_bytes(&metrics().await),
        before,
        "a copy writes no chunk bytes"
    );

    // Within the bucket, metadata replaced.
    s3.copy_object()
        .copy_source("src/a")
        .bucket("src")
        .key("c")
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .content_type("text/x-c")
        .metadata("tag", "two")
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("src")
        .key("c")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/x-c"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("tag"))
            .map(String::as_str),
        Some("two")
    );

    // The copies outlive the source.
    s3.delete_object()
        .bucket("src")
        .key("a")
        .send()
        .await
        .unwrap();
    for (b, k) in [("dst", "b"), ("src", "c")] {
        let got = s3
            .get_object()
            .bucket(b)
            .key(k)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert!(got.as_ref() == body.as_slice(), "{b}/{k}");
    }
}

#[tokio::test]
async fn bad_copies_are_refused() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("cpy").send().await.unwrap();
    s3.put_object()
        .bucket("cpy")
        .key("k")
        .body(b"data".to_vec().into())
        .send()
        .await
        .unwrap();
    // A missing source key.
    let e = s3
        .copy_object()
        .copy_source("cpy/missing")
        .bucket("cpy")
        .key("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
    // Onto itself without changing anything.
    let e = s3
        .copy_object()
        .copy_source("cpy/k")
        .bucket("cpy")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest");
    // A source condition that does not hold.
    let e = s3
        .copy_object()
        .copy_source("cpy/k")
        .copy_source_if_match("\"0123\"")
        .bucket("cpy")
        .key("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "PreconditionFailed");
    assert!(
        s3.head_object()
            .bucket("cpy")
            .key("x")
            .send()
            .await
            .is_err(),
        "nothing was created"
    );
}
