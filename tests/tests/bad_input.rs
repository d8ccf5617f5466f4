//! Bad input gets the S3 error a client expects and leaves nothing behind.
//! Each test says what was tried.

use std::io::Write;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::PresigningConfig;
use s3swarm_tests::{
    ACCESS_KEY, Node, SECRET_KEY, code, files_under, in_flight, pseudo_random, until,
};

fn xml_code(body: &str) -> String {
    body.split("<Code>")
        .nth(1)
        .and_then(|s| s.split("</Code>").next())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn unsigned_and_badly_signed_requests_get_no_data() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("sec").send().await.unwrap();
    s3.put_object()
        .bucket("sec")
        .key("k")
        .body(b"secret bytes".to_vec().into())
        .send()
        .await
        .unwrap();

    // No signature at all.
    let r = reqwest::get(format!("{}/sec/k", node.endpoint))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert_eq!(xml_code(&body), "AccessDenied");
    assert!(!body.contains("secret bytes"));

    // Right key, wrong secret.
    let r = node
        .signed_with(
            "GET",
            "/sec/k",
            &[],
            vec![],
            ACCESS_KEY,
            "wrong-secret-value",
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(xml_code(&r.text().await.unwrap()), "SignatureDoesNotMatch");

    // A key nobody configured.
    let r = node
        .signed_with("GET", "/sec/k", &[], vec![], "NOSUCHKEY", SECRET_KEY)
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(xml_code(&r.text().await.unwrap()), "InvalidAccessKeyId");

    // A PUT with a bad signature stores nothing.
    let r = node
        .signed_with(
            "PUT",
            "/sec/k2",
            &[],
            b"x".to_vec(),
            ACCESS_KEY,
            "wrong-secret-value",
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        code(
            &s3.head_object()
                .bucket("sec")
                .key("k2")
                .send()
                .await
                .unwrap_err()
        ),
        "NotFound"
    );
}

#[tokio::test]
async fn presigned_urls_work_with_plain_http_and_tampering_fails() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("pre").send().await.unwrap();
    s3.put_object()
        .bucket("pre")
        .key("file.txt")
        .body(b"presigned!".to_vec().into())
        .send()
        .await
        .unwrap();
    let cfg = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let url = s3
        .get_object()
        .bucket("pre")
        .key("file.txt")
        .presigned(cfg.clone())
        .await
        .unwrap()
        .uri()
        .to_owned();
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "presigned!");

    let tampered = url.replace("file.txt", "other.txt");
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 403);

    let put_url = s3
        .put_object()
        .bucket("pre")
        .key("up.txt")
        .presigned(cfg)
        .await
        .unwrap()
        .uri()
        .to_owned();
    let r = reqwest::Client::new()
        .put(&put_url)
        .body("uploaded")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b = s3
        .get_object()
        .bucket("pre")
        .key("up.txt")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(b.as_ref(), b"uploaded");
}

#[tokio::test]
async fn wrong_checksums_are_bad_digest_and_store_nothing() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("cks").send().await.unwrap();
    // A CRC32 header that does not match the body.
    let e = s3
        .put_object()
        .bucket("cks")
        .key("crc")
        .body(b"hello".to_vec().into())
        .checksum_crc32("AAAAAA==")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "BadDigest");
    // A SHA256 checksum header that does not match a large (streamed) body.
    let big = pseudo_random(3 * 1024 * 1024, 4);
    let e = s3
        .put_object()
        .bucket("cks")
        .key("sha")
        .body(big.into())
        .checksum_sha256("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "BadDigest");
    // A Content-MD5 that does not match.
    let r = node
        .signed_with(
            "PUT",
            "/cks/md5",
            &[("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")],
            b"not empty".to_vec(),
            ACCESS_KEY,
            SECRET_KEY,
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(xml_code(&r.text().await.unwrap()), "BadDigest");
    // A Content-MD5 that is not base64 of 16 bytes.
    let r = node
        .signed_with(
            "PUT",
            "/cks/md5",
            &[("content-md5", "zzz")],
            b"x".to_vec(),
            ACCESS_KEY,
            SECRET_KEY,
        )
        .await;
    assert_eq!(xml_code(&r.text().await.unwrap()), "InvalidDigest");

    assert!(
        s3.list_objects_v2()
            .bucket("cks")
            .send()
            .await
            .unwrap()
            .contents()
            .is_empty()
    );
    assert!(
        files_under(&node.data_dir.join("packs")).is_empty(),
        "rejected bodies leave no pack"
    );
    assert!(files_under(&node.data_dir.join("tmp")).is_empty());

    // And the SDK's own default checksum (CRC32 in an aws-chunked trailer) is accepted.
    s3.put_object()
        .bucket("cks")
        .key("ok")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn oversized_keys_metadata_and_bodies_are_refused() {
    let node = Node::start_with(
        &["--max-object-size", "1048576"],
        &[
            ("S3SWARM_ACCESS_KEY", ACCESS_KEY),
            ("S3SWARM_SECRET_KEY", SECRET_KEY),
        ],
    );
    let s3 = node.client();
    s3.create_bucket().bucket("big").send().await.unwrap();
    // A key of 1025 bytes.
    let e = s3
        .put_object()
        .bucket("big")
        .key("k".repeat(1025))
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "KeyTooLongError");
    // 3 KiB of user metadata (S3 allows 2 KiB).
    let e = s3
        .put_object()
        .bucket("big")
        .key("m")
        .metadata("big", "v".repeat(3000))
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MetadataTooLarge");
    // A body over the configured limit, declared up front and streamed.
    let e = s3
        .put_object()
        .bucket("big")
        .key("b")
        .body(pseudo_random(2 * 1024 * 1024, 1).into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "EntityTooLarge");
    assert!(
        s3.list_objects_v2()
            .bucket("big")
            .send()
            .await
            .unwrap()
            .contents()
            .is_empty()
    );
}

#[tokio::test]
async fn malformed_xml_is_malformed_xml() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("xml").send().await.unwrap();
    let up = s3
        .create_multipart_upload()
        .bucket("xml")
        .key("k")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let r = node
        .signed(
            "POST",
            &format!("/xml/k?uploadId={id}"),
            b"<CompleteMultipartUpload><Part>".to_vec(),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(xml_code(&r.text().await.unwrap()), "MalformedXML");
    let r = node
        .signed("PUT", "/newbucket", b"this is not xml".to_vec())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(xml_code(&r.text().await.unwrap()), "MalformedXML");
}

/// Sends the headers of a signed PUT with UNSIGNED-PAYLOAD and `len` bytes declared, then
/// `sent` bytes of body, then drops the connection. Returns the status line when the whole
/// body was sent.
pub fn abandoned_put(node: &Node, path: &str, len: usize, sent: usize) -> String {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    let host = node.endpoint.trim_start_matches("http://").to_owned();
    let url = format!("{}{}", node.endpoint, path);
    let identity =
        aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "t").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let len_s = len.to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-length", len_s.as_str()),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
    ];
    let signable = SignableRequest::new(
        "PUT",
        &url,
        headers.iter().copied(),
        SignableBody::UnsignedPayload,
    )
    .unwrap();
    let (instr, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = format!("PUT {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    for (k, v) in instr.headers() {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut sock = std::net::TcpStream::connect(&host).unwrap();
    sock.write_all(req.as_bytes()).unwrap();
    let body = pseudo_random(sent, 11);
    for piece in body.chunks(64 * 1024) {
        if sock.write_all(piece).is_err() {
            break;
        }
    }
    if sent < len {
        return String::new();
    }
    use std::io::Read;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("dcx").send().await.unwrap();
    // First prove the raw request is well-formed: sending everything succeeds.
    let answer = abandoned_put(&node, "/dcx/complete", 1000, 1000);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s3
        .head_object()
        .bucket("dcx")
        .key("complete")
        .send()
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the full raw PUT never became visible"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Now 8 MiB of a declared 64 MiB, then the socket closes.
    abandoned_put(&node, "/dcx/partial", 64 << 20, 8 << 20);
    // The node has finished with the cut request (not merely been given time to).
    until("the abandoned PUT is over", 10, || async {
        in_flight(&node).await == 0.0
    })
    .await;
    assert_eq!(
        code(
            &s3.head_object()
                .bucket("dcx")
                .key("partial")
                .send()
                .await
                .unwrap_err()
        ),
        "NotFound"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !files_under(&node.data_dir.join("tmp")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "temp data of the abandoned upload was not removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn signed_aws_chunked_uploads_are_verified_chunk_by_chunk() {
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("chunked").send().await.unwrap();
    let data = pseudo_random(300_000, 21);
    // A correctly signed streaming upload in 64 KiB chunks.
    let (status, body) = node
        .put_signed_chunked("/chunked/good", &data, 64 * 1024, false)
        .await;
    assert_eq!(status, 200, "{body}");
    let got = s3
        .get_object()
        .bucket("chunked")
        .key("good")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(got.as_ref() == data.as_slice());
    // One byte flipped in flight: the chunk signature no longer matches, nothing is stored.
    let (status, body) = node
        .put_signed_chunked("/chunked/bad", &data, 64 * 1024, true)
        .await;
    assert!(status == 403 || status == 400, "{status} {body}");
    assert_eq!(
        code(
            &s3.head_object()
                .bucket("chunked")
                .key("bad")
                .send()
                .await
                .unwrap_err()
        ),
        "NotFound"
    );
    assert!(files_under(&node.data_dir.join("tmp")).is_empty());
}

/// A form upload announcing more than `--post-max-size` is refused from its headers, before
/// any of its body is buffered; one without a length is refused too.
#[tokio::test]
async fn oversized_form_uploads_are_refused_before_their_body() {
    use std::io::{Read, Write};
    let node = Node::start();
    let s3 = node.client();
    s3.create_bucket().bucket("form").send().await.unwrap();
    for (length, want) in [(Some(10u64 << 30), "400"), (None, "411")] {
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", node.port())).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let len = length.map_or(String::new(), |l| format!("Content-Length: {l}\r\n"));
        write!(
            sock,
            "POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xyz\r\n{len}\r\n--xyz\r\n"
        )
        .unwrap();
        let mut buf = [0u8; 512];
        let n = sock.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with(&format!("HTTP/1.1 {want}")), "{head}");
    }
}
