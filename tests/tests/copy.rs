//! CopyObject: a metadata operation over shared chunks.

use s3swarm_tests::{Node, code, pseudo_random};

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
    let before = node.metric("s3swarm_store_written_bytes_total").await;

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
        node.metric("s3swarm_store_written_bytes_total").await,
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

#[tokio::test]
async fn upload_part_copy_assembles_ranges_without_rewriting_them() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("pcsrc").send().await.unwrap();
    s3.create_bucket().bucket("pcdst").send().await.unwrap();
    let body = pseudo_random(40 * 1024 * 1024, 77);
    s3.put_object()
        .bucket("pcsrc")
        .key("big")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let before = node.metric("s3swarm_store_written_bytes_total").await;
    let up = s3
        .create_multipart_upload()
        .bucket("pcdst")
        .key("assembled")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    // Three ranges that do not fall on chunk boundaries, the last one reordered from the
    // start of the source.
    let ranges = [
        (5_000_001u64, 20_000_000u64),
        (20_000_001, 39_999_999),
        (0, 1234),
    ];
    let mut parts = Vec::new();
    let mut want = Vec::new();
    for (i, (a, b)) in ranges.iter().enumerate() {
        let r = s3
            .upload_part_copy()
            .bucket("pcdst")
            .key("assembled")
            .upload_id(id)
            .part_number(i as i32 + 1)
            .copy_source("pcsrc/big")
            .copy_source_range(format!("bytes={a}-{b}"))
            .send()
            .await
            .unwrap();
        let etag = r.copy_part_result().unwrap().e_tag().unwrap().to_owned();
        parts.push(
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(etag)
                .build(),
        );
        want.extend_from_slice(&body[*a as usize..=*b as usize]);
    }
    let done = s3
        .complete_multipart_upload()
        .bucket("pcdst")
        .key("assembled")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(done.e_tag().unwrap().ends_with("-3\""));
    let written = node.metric("s3swarm_store_written_bytes_total").await - before;
    assert!(
        written < 5.0 * 4.0 * 1024.0 * 1024.0,
        "copying 35 MB of ranges wrote {written} bytes; only partial edge chunks should be"
    );
    let got = s3
        .get_object()
        .bucket("pcdst")
        .key("assembled")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(got.as_ref() == want.as_slice(), "assembled bytes differ");

    // Bad input: a range past the end, a malformed range, a missing source, a failed
    // source condition.
    let up = s3
        .create_multipart_upload()
        .bucket("pcdst")
        .key("bad")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let try_copy = |src: &'static str, range: Option<String>, if_match: Option<&'static str>| {
        s3.upload_part_copy()
            .bucket("pcdst")
            .key("bad")
            .upload_id(id)
            .part_number(1)
            .copy_source(src)
            .set_copy_source_range(range)
            .set_copy_source_if_match(if_match.map(str::to_owned))
            .send()
    };
    let e = try_copy("pcsrc/big", Some(format!("bytes=0-{}", body.len())), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRange");
    let e = try_copy("pcsrc/big", Some("bytes=5-".into()), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");
    let e = try_copy("pcsrc/missing", None, None).await.unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
    let e = try_copy("pcsrc/big", None, Some("\"nope\""))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "PreconditionFailed");
    let parts = s3
        .list_parts()
        .bucket("pcdst")
        .key("bad")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    assert!(
        parts.parts().is_empty(),
        "no part was stored by a refused copy"
    );
}
