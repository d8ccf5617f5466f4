//! ListObjectsV2 and ListObjects (V1): prefixes, delimiters, pages, odd keys.

use s3swarm_tests::Node;

async fn setup(node: &Node, keys: &[&str]) -> aws_sdk_s3::Client {
    let s3 = node.client();
    s3.create_bucket().bucket("lst").send().await.unwrap();
    for k in keys {
        s3.put_object()
            .bucket("lst")
            .key(*k)
            .body(k.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    s3
}

const KEYS: &[&str] = &[
    "a.txt",
    "dir/a",
    "dir/b",
    "dir/sub/c",
    "dir/sub/d",
    "dir2/x",
    "z",
    "ü nicode+plus%pct",
    "sp ace//double",
];

#[tokio::test]
async fn prefix_and_delimiter_group_common_prefixes() {
    let node = Node::start();
    let s3 = setup(&node, KEYS).await;
    let r = s3
        .list_objects_v2()
        .bucket("lst")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = r.contents().iter().filter_map(|o| o.key()).collect();
    let cps: Vec<_> = r
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(keys, ["a.txt", "z", "ü nicode+plus%pct"]);
    assert_eq!(cps, ["dir/", "dir2/", "sp ace/"]);

    let r = s3
        .list_objects_v2()
        .bucket("lst")
        .prefix("dir/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = r.contents().iter().filter_map(|o| o.key()).collect();
    let cps: Vec<_> = r
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(keys, ["dir/a", "dir/b"]);
    assert_eq!(cps, ["dir/sub/"]);
    assert_eq!(r.key_count(), Some(3));

    let all = s3.list_objects_v2().bucket("lst").send().await.unwrap();
    let keys: Vec<_> = all.contents().iter().filter_map(|o| o.key()).collect();
    let mut sorted = KEYS.to_vec();
    sorted.sort();
    assert_eq!(keys, sorted, "keys come back byte-sorted and unaltered");
    let o = &all.contents()[0];
    assert_eq!(o.size(), Some(5));
    assert!(o.e_tag().is_some() && o.last_modified().is_some());
}

#[tokio::test]
async fn pages_with_continuation_tokens_cover_every_entry_once() {
    let node = Node::start();
    let s3 = setup(&node, KEYS).await;
    for max in [1, 2, 3, 1000] {
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = s3
                .list_objects_v2()
                .bucket("lst")
                .delimiter("/")
                .max_keys(max)
                .set_continuation_token(token.clone())
                .send()
                .await
                .unwrap();
            assert!(r.key_count().unwrap_or(0) <= max);
            seen.extend(
                r.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            seen.extend(
                r.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
            if r.is_truncated() != Some(true) {
                break;
            }
            token = r.next_continuation_token().map(str::to_owned);
            assert!(token.is_some());
        }
        seen.sort();
        let mut want = vec![
            "a.txt",
            "dir/",
            "dir2/",
            "sp ace/",
            "z",
            "ü nicode+plus%pct",
        ];
        want.sort();
        assert_eq!(seen, want, "max-keys {max}");
    }
    let r = s3
        .list_objects_v2()
        .bucket("lst")
        .start_after("dir/sub/c")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = r.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys[0], "dir/sub/d");
    let r = s3
        .list_objects_v2()
        .bucket("lst")
        .max_keys(0)
        .send()
        .await
        .unwrap();
    assert!(r.contents().is_empty());
    let bad = s3
        .list_objects_v2()
        .bucket("lst")
        .continuation_token("garbage")
        .send()
        .await
        .unwrap_err();
    assert_eq!(s3swarm_tests::code(&bad), "InvalidArgument");
}

#[tokio::test]
async fn list_objects_v1_uses_markers() {
    let node = Node::start();
    let s3 = setup(&node, KEYS).await;
    let r = s3
        .list_objects()
        .bucket("lst")
        .max_keys(2)
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = r.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a.txt", "dir/a"]);
    assert_eq!(r.is_truncated(), Some(true));
    let r = s3
        .list_objects()
        .bucket("lst")
        .marker("dir/a")
        .max_keys(2)
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = r.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["dir/b", "dir/sub/c"]);
    let r = s3
        .list_objects()
        .bucket("lst")
        .delimiter("/")
        .max_keys(2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.next_marker(), Some("dir/"));
    let r = s3
        .list_objects()
        .bucket("lst")
        .delimiter("/")
        .marker("dir/")
        .max_keys(2)
        .send()
        .await
        .unwrap();
    let cps: Vec<_> = r
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(
        cps,
        ["dir2/", "sp ace/"],
        "a prefix marker skips everything under it"
    );
}

#[tokio::test]
async fn odd_keys_round_trip_through_get_and_delete() {
    let node = Node::start();
    let s3 = setup(&node, KEYS).await;
    for k in KEYS {
        let b = s3
            .get_object()
            .bucket("lst")
            .key(*k)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(b.as_ref(), k.as_bytes(), "{k}");
        s3.delete_object()
            .bucket("lst")
            .key(*k)
            .send()
            .await
            .unwrap();
    }
    assert!(
        s3.list_objects_v2()
            .bucket("lst")
            .send()
            .await
            .unwrap()
            .contents()
            .is_empty()
    );
}

#[tokio::test]
async fn an_unversioned_bucket_lists_one_null_version_per_key() {
    let node = Node::start();
    let s3 = setup(&node, KEYS).await;
    let r = s3
        .list_object_versions()
        .bucket("lst")
        .prefix("dir/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = r.versions().iter().filter_map(|v| v.key()).collect();
    assert_eq!(keys, ["dir/a", "dir/b"]);
    assert!(
        r.versions()
            .iter()
            .all(|v| v.version_id() == Some("null") && v.is_latest() == Some(true))
    );
    let cps: Vec<_> = r
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(cps, ["dir/sub/"]);
    // Paging with key markers visits every key once.
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let r = s3
            .list_object_versions()
            .bucket("lst")
            .max_keys(2)
            .set_key_marker(marker.clone())
            .send()
            .await
            .unwrap();
        seen.extend(
            r.versions()
                .iter()
                .filter_map(|v| v.key().map(str::to_owned)),
        );
        if r.is_truncated() != Some(true) {
            break;
        }
        marker = r.next_key_marker().map(str::to_owned);
    }
    let mut want: Vec<_> = KEYS.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(seen, want);
}

/// A V1 marker equal to the prefix (the key `dir/` itself) resumes after that key, not after
/// everything under it.
#[tokio::test]
async fn a_marker_equal_to_the_prefix_is_a_key() {
    let node = Node::start();
    let s3 = setup(&node, &["dir/", "dir/a", "dir/b"]).await;
    let r = s3
        .list_objects()
        .bucket("lst")
        .prefix("dir/")
        .delimiter("/")
        .marker("dir/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = r.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["dir/a", "dir/b"]);
}
