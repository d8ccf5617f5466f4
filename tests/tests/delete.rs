//! DeleteObjects: many keys, one request, per-key results.

use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use s3swarm_tests::{Node, code};

fn ident(key: &str) -> ObjectIdentifier {
    ObjectIdentifier::builder().key(key).build().unwrap()
}

#[tokio::test]
async fn delete_objects_reports_each_key() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("multi").send().await.unwrap();
    for k in ["a", "b", "c", "keep"] {
        s3.put_object()
            .bucket("multi")
            .key(k)
            .body(k.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    // Verbose: every key is reported, including one that never existed.
    let del = Delete::builder()
        .objects(ident("a"))
        .objects(ident("b"))
        .objects(ident("never"))
        .build()
        .unwrap();
    let r = s3
        .delete_objects()
        .bucket("multi")
        .delete(del)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<_> = r.deleted().iter().filter_map(|d| d.key()).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "never"]);
    assert!(r.errors().is_empty());

    // An ETag condition that does not hold is a per-key error; the others still go.
    let wrong = ObjectIdentifier::builder()
        .key("keep")
        .e_tag("\"00000000000000000000000000000000\"")
        .build()
        .unwrap();
    let del = Delete::builder()
        .objects(ident("c"))
        .objects(wrong)
        .quiet(true)
        .build()
        .unwrap();
    let r = s3
        .delete_objects()
        .bucket("multi")
        .delete(del)
        .send()
        .await
        .unwrap();
    assert!(r.deleted().is_empty(), "quiet mode reports only errors");
    assert_eq!(r.errors().len(), 1);
    assert_eq!(r.errors()[0].key(), Some("keep"));
    assert_eq!(r.errors()[0].code(), Some("PreconditionFailed"));

    let left: Vec<_> = s3
        .list_objects_v2()
        .bucket("multi")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    assert_eq!(left, ["keep"]);

    // More than 1000 keys is refused as a whole.
    let mut many = Delete::builder();
    for i in 0..1001 {
        many = many.objects(ident(&format!("k{i}")));
    }
    let e = s3
        .delete_objects()
        .bucket("multi")
        .delete(many.build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MalformedXML");
}
