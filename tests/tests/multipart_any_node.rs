//! Multipart uploads through any node, as behind a load balancer (issue 20), with three real
//! nodes on 127.0.47.x and the AWS SDK: parts, listings, copies, completion and abort of one
//! upload each sent to a different node; what a client gets while the upload's home node is
//! down (503, nothing lost) and once it is back; and no relay copy left behind anywhere.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use md5::{Digest, Md5};
use s3swarm_tests::*;
use std::time::Duration;

const NET: u8 = 47;
const SECRET: &str = "multipart-any-node-secret-0123456";
const MIB: usize = 1 << 20;

async fn create(c: &Client, bucket: &str, key: &str) -> String {
    c.create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {key}: {e:?}"))
        .upload_id()
        .expect("an upload id")
        .to_owned()
}

async fn part(c: &Client, bucket: &str, key: &str, id: &str, n: i32, data: &[u8]) -> CompletedPart {
    let out = c
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("part {n} of {key}: {e:?}"));
    let etag = out.e_tag().expect("a part ETag");
    let md5 = format!("\"{}\"", hex::encode(Md5::digest(data)));
    assert_eq!(
        etag, md5,
        "part {n}'s ETag is its MD5, wherever it was sent"
    );
    CompletedPart::builder().part_number(n).e_tag(etag).build()
}

fn listed(parts: &[CompletedPart]) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder()
        .set_parts(Some(parts.to_vec()))
        .build()
}

/// The upload ids every node lists for `bucket`: each must list all of them.
async fn uploads_everywhere(nodes: &[&Node], bucket: &str) -> Vec<String> {
    let mut seen: Option<Vec<String>> = None;
    for n in nodes {
        let out = n
            .client()
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .expect("ListMultipartUploads");
        let ids: Vec<String> = out
            .uploads()
            .iter()
            .filter_map(|u| u.upload_id().map(str::to_owned))
            .collect();
        if let Some(s) = &seen {
            assert_eq!(&ids, s, "every node lists the same uploads");
        }
        seen = Some(ids);
    }
    seen.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multipart_upload_goes_through_any_node() {
    let secret = SecretFile::new(SECRET);
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let peers: Vec<u8> = (1..i).collect();
            Node::start_swarm(NET, i, &secret, &peers, &[])
        })
        .collect();
    all_alive(&nodes.iter().collect::<Vec<_>>(), 3.0).await;
    let c: Vec<Client> = nodes.iter().map(Node::client).collect();
    c[0].create_bucket()
        .bucket("balanced")
        .send()
        .await
        .unwrap();
    for n in &nodes {
        let c = n.client();
        until("the bucket on every node", 20, || {
            let c = c.clone();
            async move { c.head_bucket().bucket("balanced").send().await.is_ok() }
        })
        .await;
    }

    // One upload, created through node 1; each part through another node, round robin as a
    // load balancer would; listed and completed through others again.
    let data = pseudo_random(11 * MIB + 12345, 47);
    let id = create(&c[0], "balanced", "ckpt/step-100.pt").await;
    let pieces = [
        &data[..5 * MIB],
        &data[5 * MIB..10 * MIB],
        &data[10 * MIB..],
    ];
    let mut done = Vec::new();
    for (i, bytes) in pieces.iter().enumerate() {
        done.push(
            part(
                &c[(i + 1) % 3],
                "balanced",
                "ckpt/step-100.pt",
                &id,
                i as i32 + 1,
                bytes,
            )
            .await,
        );
    }
    // Part 2 sent again through yet another node replaces the first copy.
    done[1] = part(&c[0], "balanced", "ckpt/step-100.pt", &id, 2, pieces[1]).await;
    for (i, cl) in c.iter().enumerate() {
        let lp = cl
            .list_parts()
            .bucket("balanced")
            .key("ckpt/step-100.pt")
            .upload_id(&id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListParts through node {}: {e:?}", i + 1));
        let got: Vec<(i32, String, i64)> = lp
            .parts()
            .iter()
            .map(|p| {
                (
                    p.part_number().unwrap_or(0),
                    p.e_tag().unwrap_or("").to_owned(),
                    p.size().unwrap_or(0),
                )
            })
            .collect();
        let want: Vec<(i32, String, i64)> = done
            .iter()
            .zip(pieces)
            .map(|(p, b)| {
                (
                    p.part_number().unwrap_or(0),
                    p.e_tag().unwrap_or("").to_owned(),
                    b.len() as i64,
                )
            })
            .collect();
        assert_eq!(got, want, "ListParts through node {}", i + 1);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    assert_eq!(
        uploads_everywhere(&refs, "balanced").await,
        vec![id.clone()],
        "the upload is listed once, through every node, and no relay copy is"
    );
    let out = c[2]
        .complete_multipart_upload()
        .bucket("balanced")
        .key("ckpt/step-100.pt")
        .upload_id(&id)
        .multipart_upload(listed(&done))
        .send()
        .await
        .expect("complete through a node that is not the upload's home");
    assert!(
        out.e_tag().unwrap_or("").ends_with("-3\""),
        "a multipart ETag: {:?}",
        out.e_tag()
    );
    // Read straight after the answer, through the node that answered, and through the others.
    for (i, cl) in [&c[2], &c[0], &c[1]].into_iter().enumerate() {
        assert!(
            get_bytes(cl, "balanced", "ckpt/step-100.pt").await == data,
            "the completed object reads back whole (reader {i})"
        );
    }
    assert!(uploads_everywhere(&refs, "balanced").await.is_empty());

    // A completion that names an unknown part fails where it is sent, as at home.
    let id2 = create(&c[1], "balanced", "bad").await;
    let p = part(&c[2], "balanced", "bad", &id2, 1, b"tiny").await;
    let wrong = CompletedPart::builder()
        .part_number(2)
        .e_tag(p.e_tag().unwrap_or(""))
        .build();
    let e = c[0]
        .complete_multipart_upload()
        .bucket("balanced")
        .key("bad")
        .upload_id(&id2)
        .multipart_upload(listed(&[wrong]))
        .send()
        .await
        .expect_err("part 2 was never uploaded");
    assert_eq!(code(&e), "InvalidPart");
    // An abort through a third node ends it everywhere.
    c[0].abort_multipart_upload()
        .bucket("balanced")
        .key("bad")
        .upload_id(&id2)
        .send()
        .await
        .expect("abort through another node");
    let e = c[2]
        .upload_part()
        .bucket("balanced")
        .key("bad")
        .upload_id(&id2)
        .part_number(3)
        .body(ByteStream::from_static(b"late"))
        .send()
        .await
        .expect_err("the upload was aborted");
    assert_eq!(code(&e), "NoSuchUpload");

    // UploadPartCopy through a node that is neither the upload's home nor a writer of the
    // source: whole chunks are shared, the cut ones at the range's ends fetched.
    let src = pseudo_random(9 * MIB, 4701);
    put(&c[1], "balanced", "source.bin", &src).await;
    until("the source on node 1", 20, || async {
        c[0].head_object()
            .bucket("balanced")
            .key("source.bin")
            .send()
            .await
            .is_ok()
    })
    .await;
    let id3 = create(&c[2], "balanced", "copied.bin").await;
    let copy = c[0]
        .upload_part_copy()
        .bucket("balanced")
        .key("copied.bin")
        .upload_id(&id3)
        .part_number(1)
        .copy_source("balanced/source.bin")
        .copy_source_range(format!("bytes=1000-{}", 1000 + 6 * MIB - 1))
        .send()
        .await
        .expect("UploadPartCopy through a third node");
    let copy_etag = copy
        .copy_part_result()
        .and_then(|r| r.e_tag())
        .expect("a copied part's ETag")
        .to_owned();
    let tail = part(&c[1], "balanced", "copied.bin", &id3, 2, b"and a tail").await;
    let first = CompletedPart::builder()
        .part_number(1)
        .e_tag(copy_etag)
        .build();
    c[1].complete_multipart_upload()
        .bucket("balanced")
        .key("copied.bin")
        .upload_id(&id3)
        .multipart_upload(listed(&[first, tail]))
        .send()
        .await
        .expect("complete a copied upload");
    let mut want = src[1000..1000 + 6 * MIB].to_vec();
    want.extend_from_slice(b"and a tail");
    assert!(get_bytes(&c[0], "balanced", "copied.bin").await == want);

    // A part checksum declared at creation is kept through the hand-over.
    let id4 = c[1]
        .create_multipart_upload()
        .bucket("balanced")
        .key("summed.bin")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let summed = c[0]
        .upload_part()
        .bucket("balanced")
        .key("summed.bin")
        .upload_id(&id4)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(ByteStream::from_static(b"checksummed part"))
        .send()
        .await
        .expect("a part with a CRC32 through another node");
    let crc = summed
        .checksum_crc32()
        .expect("the part's CRC32")
        .to_owned();
    let lp = c[2]
        .list_parts()
        .bucket("balanced")
        .key("summed.bin")
        .upload_id(&id4)
        .send()
        .await
        .unwrap();
    assert_eq!(lp.parts()[0].checksum_crc32(), Some(crc.as_str()));
    c[2].complete_multipart_upload()
        .bucket("balanced")
        .key("summed.bin")
        .upload_id(&id4)
        .multipart_upload(listed(&[CompletedPart::builder()
            .part_number(1)
            .e_tag(summed.e_tag().unwrap_or(""))
            .checksum_crc32(crc)
            .build()]))
        .send()
        .await
        .expect("complete with the parts' checksums");

    // `If-None-Match: *` through a node that is not the home: the key exists, so 412.
    let id5 = create(&c[0], "balanced", "ckpt/step-100.pt").await;
    let p = part(
        &c[1],
        "balanced",
        "ckpt/step-100.pt",
        &id5,
        1,
        b"would overwrite",
    )
    .await;
    let e = c[2]
        .complete_multipart_upload()
        .bucket("balanced")
        .key("ckpt/step-100.pt")
        .upload_id(&id5)
        .if_none_match("*")
        .multipart_upload(listed(&[p]))
        .send()
        .await
        .expect_err("the key exists");
    assert_eq!(code(&e), "PreconditionFailed");
    assert!(get_bytes(&c[1], "balanced", "ckpt/step-100.pt").await == data);

    // The upload's home goes down: a part sent elsewhere gets 503 and loses nothing; once
    // the home is back the same upload goes on and completes through yet another node.
    let id6 = create(&c[2], "balanced", "while-down.bin").await;
    let before = part(
        &c[0],
        "balanced",
        "while-down.bin",
        &id6,
        1,
        &data[..5 * MIB],
    )
    .await;
    nodes[2].kill9();
    let once = nodes[0].client_once(ACCESS_KEY, SECRET_KEY, Duration::from_secs(30));
    let e = once
        .upload_part()
        .bucket("balanced")
        .key("while-down.bin")
        .upload_id(&id6)
        .part_number(2)
        .body(ByteStream::from_static(b"while the home is down"))
        .send()
        .await
        .expect_err("the upload's home is down");
    assert_eq!(code(&e), "ServiceUnavailable", "{e:?}");
    nodes[0].expect_server_errors();
    nodes[2].restart();
    all_alive(&nodes.iter().collect::<Vec<_>>(), 3.0).await;
    let after = part(
        &nodes[1].client(),
        "balanced",
        "while-down.bin",
        &id6,
        2,
        b"after",
    )
    .await;
    nodes[0]
        .client()
        .complete_multipart_upload()
        .bucket("balanced")
        .key("while-down.bin")
        .upload_id(&id6)
        .multipart_upload(listed(&[before, after]))
        .send()
        .await
        .expect("complete once the home is back");
    let mut want = data[..5 * MIB].to_vec();
    want.extend_from_slice(b"after");
    assert!(get_bytes(&nodes[1].client(), "balanced", "while-down.bin").await == want);

    // No relay copy is left behind: no node holds an upload but the one still open (id4 was
    // completed, id5 is still open at node 1), counted by each node's census.
    let refs: Vec<&Node> = nodes.iter().collect();
    assert_eq!(
        uploads_everywhere(&refs, "balanced").await,
        vec![id5.clone()]
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut homes = 0.0;
    for n in &nodes {
        until("a census after the uploads", 60, || async {
            n.metric_or_zero("s3swarm_store_census_timestamp_seconds")
                .await
                > now
        })
        .await;
        assert_eq!(
            n.metric_or_zero("s3swarm_store_multipart_uploads{kind=\"relay\"}")
                .await,
            0.0,
            "relay uploads left on {}",
            n.endpoint
        );
        homes += n
            .metric_or_zero("s3swarm_store_multipart_uploads{kind=\"home\"}")
            .await;
    }
    assert_eq!(homes, 1.0, "one upload is still open, on its home only");
}
