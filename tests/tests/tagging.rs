//! Object tagging: `x-amz-tagging` on writes, Put/Get/DeleteObjectTagging, per version, and
//! through copies.

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{BucketVersioningStatus, Tag, Tagging, TaggingDirective};
use s3swarm_tests::{Node, code, set_versioning};

async fn tags(
    s3: &Client,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> Vec<(String, String)> {
    let r = s3
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_owned))
        .send()
        .await
        .unwrap();
    r.tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect()
}

fn tagging(pairs: &[(&str, &str)]) -> Tagging {
    let mut b = Tagging::builder();
    for (k, v) in pairs {
        b = b.tag_set(Tag::builder().key(*k).value(*v).build().unwrap());
    }
    b.build().unwrap()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn tags_are_set_read_replaced_and_removed() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("tags").send().await.unwrap();
    s3.put_object()
        .bucket("tags")
        .key("k")
        .tagging("project=llm eval&stage=train")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags(&s3, "tags", "k", None).await,
        pairs(&[("project", "llm eval"), ("stage", "train")])
    );
    let g = s3
        .get_object()
        .bucket("tags")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(g.tag_count(), Some(2));

    s3.put_object_tagging()
        .bucket("tags")
        .key("k")
        .tagging(tagging(&[("owner", "data-team")]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags(&s3, "tags", "k", None).await,
        pairs(&[("owner", "data-team")])
    );

    // Copy keeps the tags by default and replaces them on request.
    s3.copy_object()
        .bucket("tags")
        .key("copy")
        .copy_source("tags/k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags(&s3, "tags", "copy", None).await,
        pairs(&[("owner", "data-team")])
    );
    s3.copy_object()
        .bucket("tags")
        .key("copy2")
        .copy_source("tags/k")
        .tagging_directive(TaggingDirective::Replace)
        .tagging("fresh=1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags(&s3, "tags", "copy2", None).await,
        pairs(&[("fresh", "1")])
    );

    s3.delete_object_tagging()
        .bucket("tags")
        .key("k")
        .send()
        .await
        .unwrap();
    assert!(tags(&s3, "tags", "k", None).await.is_empty());

    // Multipart uploads take their tags at creation.
    let up = s3
        .create_multipart_upload()
        .bucket("tags")
        .key("mp")
        .tagging("kind=checkpoint")
        .send()
        .await
        .unwrap();
    let part = s3
        .upload_part()
        .bucket("tags")
        .key("mp")
        .upload_id(up.upload_id().unwrap())
        .part_number(1)
        .body(b"part".to_vec().into())
        .send()
        .await
        .unwrap();
    s3.complete_multipart_upload()
        .bucket("tags")
        .key("mp")
        .upload_id(up.upload_id().unwrap())
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(1)
                        .e_tag(part.e_tag().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags(&s3, "tags", "mp", None).await,
        pairs(&[("kind", "checkpoint")])
    );

    let e = s3
        .get_object_tagging()
        .bucket("tags")
        .key("missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
}

#[tokio::test]
async fn tags_belong_to_versions() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("vtags").send().await.unwrap();
    set_versioning(&s3, "vtags", BucketVersioningStatus::Enabled).await;
    let v1 = s3
        .put_object()
        .bucket("vtags")
        .key("k")
        .tagging("gen=1")
        .body(b"1".to_vec().into())
        .send()
        .await
        .unwrap();
    let v1 = v1.version_id().unwrap();
    s3.put_object()
        .bucket("vtags")
        .key("k")
        .tagging("gen=2")
        .body(b"2".to_vec().into())
        .send()
        .await
        .unwrap();
    let r = s3
        .put_object_tagging()
        .bucket("vtags")
        .key("k")
        .version_id(v1)
        .tagging(tagging(&[("gen", "one")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version_id(), Some(v1));
    assert_eq!(
        tags(&s3, "vtags", "k", Some(v1)).await,
        pairs(&[("gen", "one")])
    );
    assert_eq!(tags(&s3, "vtags", "k", None).await, pairs(&[("gen", "2")]));
}

#[tokio::test]
async fn bad_tags_are_refused_and_change_nothing() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("badtags").send().await.unwrap();
    s3.put_object()
        .bucket("badtags")
        .key("k")
        .tagging("keep=me")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();

    // Tried: a reserved prefix, a duplicate key, eleven tags, an empty key, a 129-character key.
    let eleven: Vec<(String, String)> = (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
    let eleven: Vec<(&str, &str)> = eleven
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let long = "k".repeat(129);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("aws:owner", "x")],
        vec![("dup", "1"), ("dup", "2")],
        eleven,
        vec![("", "v")],
        vec![(long.as_str(), "v")],
    ];
    for case in cases {
        let e = s3
            .put_object_tagging()
            .bucket("badtags")
            .key("k")
            .tagging(tagging(&case))
            .send()
            .await
            .unwrap_err();
        let c = code(&e);
        assert!(c == "InvalidTag" || c == "BadRequest", "{case:?}: {c}");
    }
    let e = s3
        .put_object()
        .bucket("badtags")
        .key("k2")
        .tagging("aws:x=1")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidTag");
    let e = s3
        .head_object()
        .bucket("badtags")
        .key("k2")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.raw_response().map(|r| r.status().as_u16()),
        Some(404),
        "nothing stored"
    );

    // A malformed document.
    let r = node
        .signed(
            "PUT",
            "/badtags/k?tagging",
            b"<Tagging><TagSet><Tag>".to_vec(),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("MalformedXML"));
    assert_eq!(
        tags(&s3, "badtags", "k", None).await,
        pairs(&[("keep", "me")])
    );
}
