//! Multipart uploads through aws-sdk-s3.

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use md5::{Digest, Md5};
use s3swarm_tests::{Node, code, pseudo_random};

const MIB: usize = 1024 * 1024;

async fn upload_part(
    s3: &aws_sdk_s3::Client,
    key: &str,
    id: &str,
    n: i32,
    data: &[u8],
) -> CompletedPart {
    let r = s3
        .upload_part()
        .bucket("mpu")
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(data.to_vec().into())
        .send()
        .await
        .unwrap();
    CompletedPart::builder()
        .part_number(n)
        .e_tag(r.e_tag().unwrap())
        .build()
}

#[tokio::test]
async fn multipart_upload_assembles_parts_with_the_s3_etag() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let data = pseudo_random(12 * MIB + 333, 9);
    let parts: Vec<&[u8]> = vec![
        &data[..5 * MIB],
        &data[5 * MIB..10 * MIB],
        &data[10 * MIB..],
    ];
    let up = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("big")
        .content_type("text/x-big")
        .metadata("k", "v")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();

    // Parts may arrive out of order and be replaced.
    let p3 = upload_part(&s3, "big", id, 3, parts[2]).await;
    let _stale = upload_part(&s3, "big", id, 1, b"to be replaced").await;
    let p1 = upload_part(&s3, "big", id, 1, parts[0]).await;
    let p2 = upload_part(&s3, "big", id, 2, parts[1]).await;

    let listed = s3
        .list_parts()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    let nums: Vec<_> = listed
        .parts()
        .iter()
        .filter_map(|p| p.part_number())
        .collect();
    assert_eq!(nums, [1, 2, 3]);
    assert_eq!(listed.parts()[0].size(), Some(5 * MIB as i64));
    let page = s3
        .list_parts()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .max_parts(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(page.next_part_number_marker(), Some("2"));

    let uploads = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .send()
        .await
        .unwrap();
    assert_eq!(uploads.uploads().len(), 1);
    assert_eq!(uploads.uploads()[0].upload_id(), Some(id));

    let done = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(vec![p1, p2, p3]))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut md5s = Vec::new();
    for p in &parts {
        md5s.extend_from_slice(&Md5::digest(p));
    }
    let want = format!("\"{}-3\"", hex::encode(Md5::digest(&md5s)));
    assert_eq!(done.e_tag(), Some(want.as_str()));

    let got = s3
        .get_object()
        .bucket("mpu")
        .key("big")
        .send()
        .await
        .unwrap();
    assert_eq!(got.e_tag(), Some(want.as_str()));
    assert_eq!(got.content_type(), Some("text/x-big"));
    assert_eq!(
        got.metadata().and_then(|m| m.get("k")).map(String::as_str),
        Some("v")
    );
    let body = got.body.collect().await.unwrap().into_bytes();
    assert!(body.as_ref() == data.as_slice());
    let b3 = blake3::hash(&data).to_hex().to_string();
    let head = node.signed("HEAD", "/mpu/big", vec![]).await;
    assert_eq!(
        head.headers()
            .get("x-s3swarm-blake3")
            .and_then(|v| v.to_str().ok()),
        Some(b3.as_str())
    );
    assert!(
        s3.list_multipart_uploads()
            .bucket("mpu")
            .send()
            .await
            .unwrap()
            .uploads()
            .is_empty()
    );
    let e = s3
        .list_parts()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchUpload");
}

#[tokio::test]
async fn completion_enforces_part_rules() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let up = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("k")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let small1 = upload_part(&s3, "k", id, 1, &pseudo_random(1024, 1)).await;
    let small2 = upload_part(&s3, "k", id, 2, &pseudo_random(1024, 2)).await;
    let complete = |parts: Vec<CompletedPart>| {
        s3.complete_multipart_upload()
            .bucket("mpu")
            .key("k")
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
    };
    let e = complete(vec![small1.clone(), small2.clone()])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "EntityTooSmall");
    let e = complete(vec![small2.clone(), small1.clone()])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidPartOrder");
    let wrong = CompletedPart::builder()
        .part_number(1)
        .e_tag("\"00000000000000000000000000000000\"")
        .build();
    let e = complete(vec![wrong]).await.unwrap_err();
    assert_eq!(code(&e), "InvalidPart");
    let missing = CompletedPart::builder()
        .part_number(7)
        .e_tag(small1.e_tag().unwrap())
        .build();
    let e = complete(vec![missing]).await.unwrap_err();
    assert_eq!(code(&e), "InvalidPart");
    let e = s3
        .upload_part()
        .bucket("mpu")
        .key("k")
        .upload_id(id)
        .part_number(10001)
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");
    // A single small part is fine: the last part has no minimum.
    complete(vec![small1]).await.unwrap();
    assert_eq!(
        s3.head_object()
            .bucket("mpu")
            .key("k")
            .send()
            .await
            .unwrap()
            .content_length(),
        Some(1024)
    );
}

#[tokio::test]
async fn abort_discards_parts_and_frees_their_chunks() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let up = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("k")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    upload_part(&s3, "k", id, 1, &pseudo_random(6 * MIB, 5)).await;
    assert!(!s3swarm_tests::files_under(&node.data_dir.join("packs")).is_empty());
    s3.abort_multipart_upload()
        .bucket("mpu")
        .key("k")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    s3swarm_tests::eventually("aborted parts are collected", || node.packs() == 0).await;
    let e = s3
        .upload_part()
        .bucket("mpu")
        .key("k")
        .upload_id(id)
        .part_number(1)
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchUpload");
    let e = s3
        .abort_multipart_upload()
        .bucket("mpu")
        .key("k")
        .upload_id("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchUpload");
    assert!(
        s3.head_object()
            .bucket("mpu")
            .key("k")
            .send()
            .await
            .is_err(),
        "nothing became visible"
    );
}

#[tokio::test]
async fn a_completed_single_part_upload_is_addressable_by_hash() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let data = pseudo_random(2 * MIB, 77);
    let up = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("one")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let p = upload_part(&s3, "one", id, 1, &data).await;
    s3.complete_multipart_upload()
        .bucket("mpu")
        .key("one")
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().parts(p).build())
        .send()
        .await
        .unwrap();
    let b3 = blake3::hash(&data).to_hex().to_string();
    for _ in 0..4 {
        let r = node.signed("GET", &format!("/_blob/{b3}"), vec![]).await;
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap().as_ref() == data.as_slice());
    }
}

#[tokio::test]
async fn listing_uploads_with_a_delimiter_pages_to_the_end() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    for k in ["a", "b/x", "b/y", "c/z", "d"] {
        s3.create_multipart_upload()
            .bucket("mpu")
            .key(k)
            .send()
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let (mut km, mut um): (Option<String>, Option<String>) = (None, None);
    for _ in 0..20 {
        let r = s3
            .list_multipart_uploads()
            .bucket("mpu")
            .delimiter("/")
            .max_uploads(1)
            .set_key_marker(km.clone())
            .set_upload_id_marker(um.clone())
            .send()
            .await
            .unwrap();
        seen.extend(
            r.uploads()
                .iter()
                .filter_map(|u| u.key().map(str::to_owned)),
        );
        seen.extend(
            r.common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_owned)),
        );
        if r.is_truncated() != Some(true) {
            break;
        }
        km = r.next_key_marker().map(str::to_owned);
        um = r.next_upload_id_marker().map(str::to_owned);
    }
    assert_eq!(seen, ["a", "b/", "c/", "d"]);
    let e = s3
        .upload_part()
        .bucket("mpu")
        .key("a")
        .upload_id("not-an-upload-id")
        .part_number(1)
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchUpload");
}

/// Multipart checksums: full-object CRCs combined from the parts (equal to the CRC of the
/// whole content), composite SHA-256 (`-N`), returned with checksum mode and by
/// GetObjectAttributes; a wrong claimed value at completion is refused.
#[tokio::test]
async fn multipart_checksums_are_full_object_or_composite() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType, ObjectAttributes};
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("mpck").send().await.unwrap();
    let data = pseudo_random(11 * MIB + 333, 5);
    let (a, b) = data.split_at(6 * MIB);
    // The CRC32 of the whole content, as a single PUT reports it.
    let whole = s3
        .put_object()
        .bucket("mpck")
        .key("single")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(data.clone().into())
        .send()
        .await
        .unwrap()
        .checksum_crc32()
        .unwrap()
        .to_owned();

    for (alg, kind) in [
        (ChecksumAlgorithm::Crc32, ChecksumType::FullObject),
        (ChecksumAlgorithm::Sha256, ChecksumType::Composite),
    ] {
        let key = format!("mp-{}", alg.as_str());
        let up = s3
            .create_multipart_upload()
            .bucket("mpck")
            .key(&key)
            .checksum_algorithm(alg.clone())
            .checksum_type(kind.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(up.checksum_type(), Some(&kind));
        let id = up.upload_id().unwrap();
        let mut parts = Vec::new();
        for (n, chunk) in [a, b].iter().enumerate() {
            let r = s3
                .upload_part()
                .bucket("mpck")
                .key(&key)
                .upload_id(id)
                .part_number(n as i32 + 1)
                .checksum_algorithm(alg.clone())
                .body(chunk.to_vec().into())
                .send()
                .await
                .unwrap();
            parts.push(
                CompletedPart::builder()
                    .part_number(n as i32 + 1)
                    .e_tag(r.e_tag().unwrap())
                    .set_checksum_crc32(r.checksum_crc32().map(str::to_owned))
                    .set_checksum_sha256(r.checksum_sha256().map(str::to_owned))
                    .build(),
            );
        }
        let mut complete = s3
            .complete_multipart_upload()
            .bucket("mpck")
            .key(&key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts.clone()))
                    .build(),
            );
        if kind == ChecksumType::FullObject {
            // A wrong whole-object value first: refused, the upload stays completable.
            let e = s3
                .complete_multipart_upload()
                .bucket("mpck")
                .key(&key)
                .upload_id(id)
                .checksum_crc32("AAAAAA==")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts.clone()))
                        .build(),
                )
                .send()
                .await
                .unwrap_err();
            assert_eq!(code(&e), "BadDigest");
            complete = complete.checksum_crc32(&whole);
        }
        let done = complete.send().await.unwrap();
        let h = s3
            .head_object()
            .bucket("mpck")
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(h.checksum_type(), Some(&kind));
        if kind == ChecksumType::FullObject {
            assert_eq!(
                h.checksum_crc32(),
                Some(whole.as_str()),
                "combined CRC = CRC of the whole"
            );
            assert_eq!(done.checksum_crc32(), Some(whole.as_str()));
        } else {
            assert!(h.checksum_sha256().unwrap().ends_with("-2"));
        }
        let attrs = s3
            .get_object_attributes()
            .bucket("mpck")
            .key(&key)
            .object_attributes(ObjectAttributes::Checksum)
            .object_attributes(ObjectAttributes::ObjectParts)
            .object_attributes(ObjectAttributes::ObjectSize)
            .send()
            .await
            .unwrap();
        assert_eq!(attrs.object_size(), Some(data.len() as i64));
        assert_eq!(attrs.object_parts().unwrap().total_parts_count(), Some(2));
        let ck = attrs.checksum().unwrap();
        assert_eq!(ck.checksum_type(), Some(&kind));
        assert_eq!(
            ck.checksum_crc32().or(ck.checksum_sha256()),
            h.checksum_crc32().or(h.checksum_sha256())
        );
    }

    // Combinations S3 refuses.
    let e = s3
        .create_multipart_upload()
        .bucket("mpck")
        .key("x")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .checksum_type(ChecksumType::FullObject)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest");
    // A part whose checksum is of another algorithm than the upload's.
    let up = s3
        .create_multipart_upload()
        .bucket("mpck")
        .key("mismatch")
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .send()
        .await
        .unwrap();
    let e = s3
        .upload_part()
        .bucket("mpck")
        .key("mismatch")
        .upload_id(up.upload_id().unwrap())
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Sha1)
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest");
}

/// GET and HEAD by `partNumber` (how the Java SDK's and CRT's multipart downloads read):
/// exactly that part's bytes as a 206 with its Content-Range and the part count; out of
/// range is 416 InvalidPartNumber; with a Range header it is a bad request. A copy (which
/// shares the manifest) has the same parts.
#[tokio::test]
async fn reads_by_part_number_return_exactly_that_part() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let data = pseudo_random(11 * MIB + 1024, 21);
    let bounds = [0, 5 * MIB, 11 * MIB, data.len()];
    let up = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("parts")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = Vec::new();
    for n in 0..3 {
        parts.push(
            upload_part(
                &s3,
                "parts",
                id,
                n as i32 + 1,
                &data[bounds[n]..bounds[n + 1]],
            )
            .await,
        );
    }
    s3.complete_multipart_upload()
        .bucket("mpu")
        .key("parts")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    s3.copy_object()
        .bucket("mpu")
        .key("parts-copy")
        .copy_source("mpu/parts")
        .send()
        .await
        .unwrap();
    for key in ["parts", "parts-copy"] {
        for n in 0..3 {
            let r = s3
                .get_object()
                .bucket("mpu")
                .key(key)
                .part_number(n as i32 + 1)
                .send()
                .await
                .unwrap();
            assert_eq!(r.parts_count(), Some(3));
            assert_eq!(
                r.content_range(),
                Some(format!("bytes {}-{}/{}", bounds[n], bounds[n + 1] - 1, data.len()).as_str())
            );
            let got = r.body.collect().await.unwrap().into_bytes();
            assert!(
                got.as_ref() == &data[bounds[n]..bounds[n + 1]],
                "{key} part {}",
                n + 1
            );
        }
    }
    let h = s3
        .head_object()
        .bucket("mpu")
        .key("parts")
        .part_number(3)
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_length(), Some(1024));
    let e = s3
        .get_object()
        .bucket("mpu")
        .key("parts")
        .part_number(4)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidPartNumber");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(416));
    let e = s3
        .get_object()
        .bucket("mpu")
        .key("parts")
        .part_number(1)
        .range("bytes=0-9")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest");

    // A single-part object is its own part 1.
    s3.put_object()
        .bucket("mpu")
        .key("single")
        .body(b"0123456789".to_vec().into())
        .send()
        .await
        .unwrap();
    let r = s3
        .get_object()
        .bucket("mpu")
        .key("single")
        .part_number(1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.body.collect().await.unwrap().into_bytes().as_ref(),
        b"0123456789"
    );
    let e = s3
        .get_object()
        .bucket("mpu")
        .key("single")
        .part_number(2)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidPartNumber");
}
