//! Versioning: history, delete markers, deletes by version, suspended mode, paging, and
//! versions sharing chunks on disk.

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{BucketVersioningStatus, Delete, ObjectIdentifier};
use s3swarm_tests::{Node, code, pseudo_random, set_versioning};

async fn get(s3: &Client, bucket: &str, key: &str, version: Option<&str>) -> Vec<u8> {
    let r = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_owned))
        .send()
        .await
        .unwrap();
    r.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn put(s3: &Client, bucket: &str, key: &str, body: Vec<u8>) -> Option<String> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap()
        .version_id()
        .map(str::to_owned)
}

/// (key, version id, is latest, is delete marker), in listing order per kind.
async fn versions(
    s3: &Client,
    bucket: &str,
) -> (Vec<(String, String, bool)>, Vec<(String, String, bool)>) {
    let r = s3
        .list_object_versions()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let v = r
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap().to_owned(),
                v.version_id().unwrap().to_owned(),
                v.is_latest().unwrap(),
            )
        })
        .collect();
    let m = r
        .delete_markers()
        .iter()
        .map(|m| {
            (
                m.key().unwrap().to_owned(),
                m.version_id().unwrap().to_owned(),
                m.is_latest().unwrap(),
            )
        })
        .collect();
    (v, m)
}

#[tokio::test]
async fn versions_keep_history_and_share_unchanged_chunks() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("ver").send().await.unwrap();
    let status = s3
        .get_bucket_versioning()
        .bucket("ver")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), None, "a new bucket was never versioned");

    // Written before versioning: the `null` version.
    let v0 = put(&s3, "ver", "data.bin", b"before versioning".to_vec()).await;
    assert_eq!(v0, None, "no version id in a never-versioned bucket");
    set_versioning(&s3, "ver", BucketVersioningStatus::Enabled).await;
    let status = s3
        .get_bucket_versioning()
        .bucket("ver")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), Some(&BucketVersioningStatus::Enabled));

    let one = pseudo_random(16 * 1024 * 1024, 7);
    let v1 = put(&s3, "ver", "data.bin", one.clone()).await.unwrap();
    // A new version of a dataset file: 1 MiB changed in the middle.
    let mut two = one.clone();
    two[8 << 20..9 << 20].copy_from_slice(&pseudo_random(1 << 20, 8));
    let before = node.metric("s3swarm_store_written_bytes_total").await;
    let v2 = put(&s3, "ver", "data.bin", two.clone()).await.unwrap();
    let cost = node.metric("s3swarm_store_written_bytes_total").await - before;
    assert!(v1 != v2, "each write is a new version");
    assert!(
        cost < 8.0 * 1024.0 * 1024.0,
        "the new version wrote {cost} bytes; only the changed chunks (about 1-5 MiB) should be stored"
    );

    assert_eq!(get(&s3, "ver", "data.bin", None).await, two);
    assert_eq!(get(&s3, "ver", "data.bin", Some(&v1)).await, one);
    assert_eq!(get(&s3, "ver", "data.bin", Some(&v2)).await, two);
    assert_eq!(
        get(&s3, "ver", "data.bin", Some("null")).await,
        b"before versioning"
    );
    let h = s3
        .head_object()
        .bucket("ver")
        .key("data.bin")
        .version_id(&v1)
        .send()
        .await
        .unwrap();
    assert_eq!(h.version_id(), Some(v1.as_str()));
    assert_eq!(h.content_length(), Some(one.len() as i64));

    let (vs, ms) = versions(&s3, "ver").await;
    assert_eq!(
        vs,
        vec![
            ("data.bin".into(), v2.clone(), true),
            ("data.bin".into(), v1.clone(), false),
            ("data.bin".into(), "null".into(), false),
        ],
        "newest first, the latest marked"
    );
    assert!(ms.is_empty());

    // Bad and unknown version ids.
    let e = s3
        .get_object()
        .bucket("ver")
        .key("data.bin")
        .version_id("not-a-version")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");
    let e = s3
        .get_object()
        .bucket("ver")
        .key("data.bin")
        .version_id("00000000000000010000abcd")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchVersion");

    // Copy from an old version.
    let c = s3
        .copy_object()
        .bucket("ver")
        .key("restored.bin")
        .copy_source(format!("ver/data.bin?versionId={v1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(c.copy_source_version_id(), Some(v1.as_str()));
    assert!(c.version_id().is_some());
    assert_eq!(get(&s3, "ver", "restored.bin", None).await, one);

    // Deleting one version for good: the others stay.
    let d = s3
        .delete_object()
        .bucket("ver")
        .key("data.bin")
        .version_id(&v1)
        .send()
        .await
        .unwrap();
    assert_eq!(d.version_id(), Some(v1.as_str()));
    let e = s3
        .get_object()
        .bucket("ver")
        .key("data.bin")
        .version_id(&v1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchVersion");
    assert_eq!(get(&s3, "ver", "data.bin", None).await, two);

    // Deleting the current version by id makes the next newest current.
    s3.delete_object()
        .bucket("ver")
        .key("data.bin")
        .version_id(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        get(&s3, "ver", "data.bin", None).await,
        b"before versioning"
    );
}

#[tokio::test]
async fn delete_markers_hide_keys_until_removed() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("dmk").send().await.unwrap();
    set_versioning(&s3, "dmk", BucketVersioningStatus::Enabled).await;
    let v1 = put(&s3, "dmk", "a/k", b"one".to_vec()).await.unwrap();
    put(&s3, "dmk", "a/other", b"x".to_vec()).await.unwrap();

    let d = s3
        .delete_object()
        .bucket("dmk")
        .key("a/k")
        .send()
        .await
        .unwrap();
    assert_eq!(d.delete_marker(), Some(true));
    let marker = d.version_id().unwrap().to_owned();
    assert_ne!(marker, v1);

    // The key is gone from GET and listings, with the marker named in the 404.
    let r = node.signed("GET", "/dmk/a/k", Vec::new()).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-amz-delete-marker"], "true");
    assert_eq!(r.headers()["x-amz-version-id"], marker.as_str());
    assert!(r.text().await.unwrap().contains("<Code>NoSuchKey</Code>"));
    let l = s3.list_objects_v2().bucket("dmk").send().await.unwrap();
    let keys: Vec<_> = l.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a/other"]);
    // A prefix whose only key is deleted is not listed as a common prefix either.
    put(&s3, "dmk", "b/gone", b"x".to_vec()).await;
    s3.delete_object()
        .bucket("dmk")
        .key("b/gone")
        .send()
        .await
        .unwrap();
    let l = s3
        .list_objects_v2()
        .bucket("dmk")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<_> = l
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["a/"]);

    // Asking for the marker itself: 405, as S3 answers.
    let r = node
        .signed("GET", &format!("/dmk/a/k?versionId={marker}"), Vec::new())
        .await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["x-amz-delete-marker"], "true");
    // The old version is still readable by id.
    assert_eq!(get(&s3, "dmk", "a/k", Some(&v1)).await, b"one");

    let (vs, ms) = versions(&s3, "dmk").await;
    assert!(ms.contains(&("a/k".to_owned(), marker.clone(), true)));
    assert!(vs.contains(&("a/k".to_owned(), v1.clone(), false)));

    // A bucket holding only history is not empty.
    let e = s3.delete_bucket().bucket("dmk").send().await.unwrap_err();
    assert_eq!(code(&e), "BucketNotEmpty");

    // Removing the marker brings the object back.
    let d = s3
        .delete_object()
        .bucket("dmk")
        .key("a/k")
        .version_id(&marker)
        .send()
        .await
        .unwrap();
    assert_eq!(d.delete_marker(), Some(true));
    assert_eq!(get(&s3, "dmk", "a/k", None).await, b"one");

    // DeleteObjects by version, and a marker created in bulk.
    let r = s3
        .delete_objects()
        .bucket("dmk")
        .delete(
            Delete::builder()
                .objects(
                    ObjectIdentifier::builder()
                        .key("a/k")
                        .version_id(&v1)
                        .build()
                        .unwrap(),
                )
                .objects(ObjectIdentifier::builder().key("a/other").build().unwrap())
                .objects(
                    ObjectIdentifier::builder()
                        .key("a/x")
                        .version_id("garbage")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.deleted().len(), 2);
    let by_key = |k: &str| r.deleted().iter().find(|d| d.key() == Some(k)).unwrap();
    assert_eq!(by_key("a/k").version_id(), Some(v1.as_str()));
    assert_eq!(by_key("a/other").delete_marker(), Some(true));
    assert!(by_key("a/other").delete_marker_version_id().is_some());
    assert_eq!(r.errors().len(), 1);
    assert_eq!(r.errors()[0].code(), Some("InvalidArgument"));
    let e = s3
        .get_object()
        .bucket("dmk")
        .key("a/k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        "NoSuchKey",
        "its only version was deleted for good"
    );
}

#[tokio::test]
async fn suspended_versioning_writes_null_versions() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("sus").send().await.unwrap();
    set_versioning(&s3, "sus", BucketVersioningStatus::Enabled).await;
    put(&s3, "sus", "k", b"null-before".to_vec()).await;
    let kept = put(&s3, "sus", "k", b"kept".to_vec()).await.unwrap();
    set_versioning(&s3, "sus", BucketVersioningStatus::Suspended).await;
    let status = s3
        .get_bucket_versioning()
        .bucket("sus")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), Some(&BucketVersioningStatus::Suspended));

    // While suspended, a write is the `null` version, and overwrites the previous null one.
    assert_eq!(put(&s3, "sus", "k", b"n1".to_vec()).await, None);
    assert_eq!(put(&s3, "sus", "k", b"n2".to_vec()).await, None);
    let (vs, _) = versions(&s3, "sus").await;
    let ids: Vec<_> = vs.iter().map(|v| v.1.as_str()).collect();
    assert_eq!(ids.len(), 3, "{vs:?}");
    assert_eq!(ids[0], "null");
    assert!(ids.contains(&kept.as_str()));
    assert_eq!(get(&s3, "sus", "k", Some("null")).await, b"n2");
    assert_eq!(get(&s3, "sus", "k", Some(&kept)).await, b"kept");

    // A delete while suspended: a null marker replaces the null version.
    let d = s3
        .delete_object()
        .bucket("sus")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(d.delete_marker(), Some(true));
    assert_eq!(d.version_id(), Some("null"));
    let (vs, ms) = versions(&s3, "sus").await;
    assert_eq!(
        vs.len(),
        2,
        "the null version was replaced by the marker: {vs:?}"
    );
    assert_eq!(ms, vec![("k".to_owned(), "null".to_owned(), true)]);

    // Bad configuration documents.
    let r = node
        .signed(
            "PUT",
            "/sus?versioning",
            b"<VersioningConfiguration><Status>Maybe</Status></VersioningConfiguration>".to_vec(),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = node
        .signed("PUT", "/sus?versioning", b"<Versioning".to_vec())
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn version_listing_pages_through_every_version() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("page").send().await.unwrap();
    set_versioning(&s3, "page", BucketVersioningStatus::Enabled).await;
    for k in ["a", "b/1", "b/2", "c"] {
        for i in 0..3u8 {
            put(&s3, "page", k, vec![i; 10]).await;
        }
    }
    s3.delete_object()
        .bucket("page")
        .key("c")
        .send()
        .await
        .unwrap();
    let (all_v, all_m) = versions(&s3, "page").await;
    assert_eq!((all_v.len(), all_m.len()), (12, 1));

    for max in [1, 2, 4, 5] {
        let mut seen = Vec::new();
        let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
        for _ in 0..100 {
            let r = s3
                .list_object_versions()
                .bucket("page")
                .max_keys(max)
                .set_key_marker(km.clone())
                .set_version_id_marker(vm.clone())
                .send()
                .await
                .unwrap();
            let n = r.versions().len() + r.delete_markers().len();
            assert!(n <= max as usize);
            for v in r.versions() {
                seen.push((
                    v.key().unwrap().to_owned(),
                    v.version_id().unwrap().to_owned(),
                ));
            }
            for m in r.delete_markers() {
                seen.push((
                    m.key().unwrap().to_owned(),
                    m.version_id().unwrap().to_owned(),
                ));
            }
            if !r.is_truncated().unwrap() {
                break;
            }
            km = r.next_key_marker().map(str::to_owned);
            vm = r.next_version_id_marker().map(str::to_owned);
        }
        let mut want: Vec<_> = all_v
            .iter()
            .chain(all_m.iter())
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        want.sort();
        seen.sort();
        assert_eq!(seen, want, "max-keys {max}: every version exactly once");
    }

    // With a delimiter, b/ is one common prefix.
    let r = s3
        .list_object_versions()
        .bucket("page")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<_> = r
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["b/"]);
    assert_eq!(r.versions().len(), 6);

    let r = node
        .signed("GET", "/page?versions&version-id-marker=null", Vec::new())
        .await;
    assert_eq!(r.status(), 400, "a version marker needs a key marker");

    // The version a marker names is deleted between two pages: the next page still starts
    // right after it (by stamp) and loses nothing.
    let first = s3
        .list_object_versions()
        .bucket("page")
        .prefix("a")
        .max_keys(2)
        .send()
        .await
        .unwrap();
    let marker = first.next_version_id_marker().unwrap().to_owned();
    s3.delete_object()
        .bucket("page")
        .key("a")
        .version_id(&marker)
        .send()
        .await
        .unwrap();
    let rest = s3
        .list_object_versions()
        .bucket("page")
        .prefix("a")
        .key_marker("a")
        .version_id_marker(&marker)
        .send()
        .await
        .unwrap();
    assert_eq!(
        rest.versions().len(),
        1,
        "the oldest version of a is still listed"
    );
    assert_eq!(
        rest.versions()[0].version_id(),
        all_v.iter().rfind(|v| v.0 == "a").map(|v| v.1.as_str())
    );
}

#[tokio::test]
async fn copying_an_old_version_onto_its_key_restores_it() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("restore").send().await.unwrap();
    set_versioning(&s3, "restore", BucketVersioningStatus::Enabled).await;
    let good = put(&s3, "restore", "model.ckpt", b"good weights".to_vec())
        .await
        .unwrap();
    put(&s3, "restore", "model.ckpt", b"diverged".to_vec())
        .await
        .unwrap();
    let r = s3
        .copy_object()
        .bucket("restore")
        .key("model.ckpt")
        .copy_source(format!("restore/model.ckpt?versionId={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.copy_source_version_id(), Some(good.as_str()));
    assert_eq!(
        get(&s3, "restore", "model.ckpt", None).await,
        b"good weights"
    );
    let (vs, _) = versions(&s3, "restore").await;
    assert_eq!(vs.len(), 3, "the restore is a new version; history is kept");
    // Without a version id, a copy onto itself that changes nothing is refused, as in S3.
    let e = s3
        .copy_object()
        .bucket("restore")
        .key("model.ckpt")
        .copy_source("restore/model.ckpt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest");
}

/// Review findings, each tried: a NUL key on delete, conditional deletes, copying a delete
/// marker by id, and the `null` version moving between current and noncurrent repeatedly.
#[tokio::test]
async fn awkward_version_sequences_keep_their_invariants() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("inv").send().await.unwrap();
    set_versioning(&s3, "inv", BucketVersioningStatus::Enabled).await;
    put(&s3, "inv", "a", b"a1".to_vec()).await.unwrap();

    // `a\0x` cannot name an object; it must not reach the store (where it would sort inside
    // key `a`'s versions).
    let e = s3
        .delete_object()
        .bucket("inv")
        .key("a\0x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");
    let (vs, ms) = versions(&s3, "inv").await;
    assert_eq!((vs.len(), ms.len()), (1, 0));

    // DeleteObject with If-Match.
    let e = s3
        .delete_object()
        .bucket("inv")
        .key("a")
        .if_match("\"0123\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    let e = s3
        .delete_object()
        .bucket("inv")
        .key("missing")
        .if_match("\"0123\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
    let etag = s3
        .head_object()
        .bucket("inv")
        .key("a")
        .send()
        .await
        .unwrap();
    let d = s3
        .delete_object()
        .bucket("inv")
        .key("a")
        .if_match(etag.e_tag().unwrap())
        .send()
        .await
        .unwrap();
    let marker = d.version_id().unwrap().to_owned();

    // A copy naming the marker is a bad request; one from the key (whose latest is the
    // marker) finds no object.
    let e = s3
        .copy_object()
        .bucket("inv")
        .key("b")
        .copy_source(format!("inv/a?versionId={marker}"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest");
    let e = s3
        .copy_object()
        .bucket("inv")
        .key("b")
        .copy_source("inv/a")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");

    // The null version: current (suspended), noncurrent (enabled), replaced (suspended).
    set_versioning(&s3, "inv", BucketVersioningStatus::Suspended).await;
    put(&s3, "inv", "n", b"null-1".to_vec()).await;
    set_versioning(&s3, "inv", BucketVersioningStatus::Enabled).await;
    let v = put(&s3, "inv", "n", b"stamped".to_vec()).await.unwrap();
    assert_eq!(get(&s3, "inv", "n", Some("null")).await, b"null-1");
    set_versioning(&s3, "inv", BucketVersioningStatus::Suspended).await;
    put(&s3, "inv", "n", b"null-2".to_vec()).await;
    let (vs, _) = versions(&s3, "inv").await;
    let ids: Vec<_> = vs
        .iter()
        .filter(|x| x.0 == "n")
        .map(|x| x.1.clone())
        .collect();
    assert_eq!(
        ids,
        vec!["null".to_owned(), v.clone()],
        "one null version, newest first"
    );
    assert_eq!(get(&s3, "inv", "n", Some("null")).await, b"null-2");
    // Deleting the current null version promotes the stamped one.
    s3.delete_object()
        .bucket("inv")
        .key("n")
        .version_id("null")
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, "inv", "n", None).await, b"stamped");
    let e = s3
        .get_object()
        .bucket("inv")
        .key("n")
        .version_id("null")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchVersion");
}

/// A read of a noncurrent version while the current one is deleted (so the read version is
/// promoted in between) must find it: reads take one snapshot of both places.
#[tokio::test]
async fn a_version_read_during_its_promotion_is_found() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("promo").send().await.unwrap();
    set_versioning(&s3, "promo", BucketVersioningStatus::Enabled).await;
    for round in 0..60u32 {
        let old = put(&s3, "promo", "k", round.to_be_bytes().to_vec())
            .await
            .unwrap();
        let top = put(&s3, "promo", "k", b"top".to_vec()).await.unwrap();
        let (s1, s2) = (s3.clone(), s3.clone());
        let old2 = old.clone();
        let reader = tokio::spawn(async move {
            let mut found = 0;
            for _ in 0..5 {
                let r = s1
                    .head_object()
                    .bucket("promo")
                    .key("k")
                    .version_id(&old2)
                    .send()
                    .await;
                assert!(
                    r.is_ok(),
                    "version {old2} vanished during its promotion: {r:?}"
                );
                found += 1;
            }
            found
        });
        s2.delete_object()
            .bucket("promo")
            .key("k")
            .version_id(&top)
            .send()
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap(), 5);
        assert_eq!(get(&s3, "promo", "k", None).await, round.to_be_bytes());
        s3.delete_object()
            .bucket("promo")
            .key("k")
            .version_id(&old)
            .send()
            .await
            .unwrap();
    }
}
