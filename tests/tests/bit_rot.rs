//! Bit rot: a byte flipped in a pack file on disk (as a failing disk or a stray write would)
//! is never served. Tried: a GET of the damaged object on a node alone, the same object written
//! again, a GET through a swarm node whose copy rotted, rot nobody reads found by the scrub
//! and repaired from a peer, and a pack cut short under a running node (as a disk whose reads
//! fail: the node keeps running).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use s3swarm_tests::*;

const SECRET: &str = "bit-rot-test-secret-0123456789abcdef";

/// The largest pack file under a node's data directory.
fn largest_pack(data_dir: &Path) -> PathBuf {
    files_under(&data_dir.join("packs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pack file")
}

/// Inverts one byte in the middle of `pack`, through the file system (the page cache sees it,
/// as it would see a bad sector re-read).
fn flip_byte(pack: &Path) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(pack)
        .expect("open pack");
    let at = f.metadata().expect("pack size").len() / 2;
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).expect("read byte");
    b[0] ^= 0xff;
    f.write_all_at(&b, at).expect("write byte");
    f.sync_all().expect("sync pack");
}

/// Streams a GET of the whole object with a plain HTTP client and returns what arrived
/// before the body ended or broke, and whether it broke.
async fn get_raw(n: &Node, path: &str) -> (Vec<u8>, bool) {
    let mut resp = n.signed("GET", path, Vec::new()).await;
    let mut got = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return (got, false),
            Err(_) => return (got, true),
        }
    }
}

async fn damaged(n: &Node, by: &str) -> f64 {
    n.metric_or_zero(&format!(
        "s3swarm_store_chunks_damaged_total{{found_by=\"{by}\"}}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_never_served_and_a_lone_node_reports_the_chunk_lost() {
    // No scrub: what is pinned here is that a read checks what it serves.
    let node = Node::start_with(
        &["--gc-grace-secs", "0", "--scrub-rate", "0"],
        &[
            ("S3SWARM_ACCESS_KEY", ACCESS_KEY),
            ("S3SWARM_SECRET_KEY", SECRET_KEY),
        ],
    );
    let s3 = node.client();
    s3.create_bucket()
        .bucket("rot")
        .send()
        .await
        .expect("bucket");
    let data = pseudo_random(6 << 20, 7);
    put(&s3, "rot", "weights.bin", &data).await;
    flip_byte(&largest_pack(&node.data_dir));

    let (got, broke) = get_raw(&node, "/rot/weights.bin").await;
    assert!(
        broke,
        "the GET ended cleanly, so it served the damaged chunk"
    );
    assert!(got.len() < data.len(), "a whole body arrived");
    assert_eq!(
        got[..],
        data[..got.len()],
        "bytes that do not match the object were served"
    );
    assert_eq!(damaged(&node, "read").await, 1.0);

    // Once dropped, the chunk stays lost on a node alone: every later GET fails the same way
    // (never serves the rot), and the census counts it.
    let (again, broke) = get_raw(&node, "/rot/weights.bin").await;
    assert!(broke && again[..] == data[..again.len()]);
    until("the census counts the damaged chunk", 40, || async {
        node.metric_or_zero("s3swarm_store_chunks{state=\"damaged\"}")
            .await
            == 1.0
    })
    .await;
    // The SDK sees a failed read too, not a short object.
    let resp = s3
        .get_object()
        .bucket("rot")
        .key("weights.bin")
        .send()
        .await
        .expect("the head of the GET is sent before the damaged chunk is reached");
    assert!(resp.body.collect().await.is_err());

    // A client writing the same content again brings the chunk back, and the damaged object
    // reads whole again.
    s3.put_object()
        .bucket("rot")
        .key("weights-again.bin")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("re-upload");
    assert_eq!(get_bytes(&s3, "rot", "weights.bin").await, data);
    until("the census sees no damaged chunk", 40, || async {
        node.metric_or_zero("s3swarm_store_chunks{state=\"damaged\"}")
            .await
            == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_cut_short_under_a_running_node_fails_one_read_and_the_node_keeps_serving() {
    // A node that read packs through a memory mapping died here with SIGBUS (the pages past
    // the new end cannot be read), as it would on a disk returning read errors; reads are
    // plain reads now, and the failure is one damaged chunk.
    let mut node = Node::start_with(
        &["--gc-grace-secs", "0", "--scrub-rate", "0"],
        &[
            ("S3SWARM_ACCESS_KEY", ACCESS_KEY),
            ("S3SWARM_SECRET_KEY", SECRET_KEY),
        ],
    );
    let s3 = node.client();
    s3.create_bucket()
        .bucket("cut")
        .send()
        .await
        .expect("bucket");
    let data = pseudo_random(12 << 20, 11);
    put(&s3, "cut", "shards.bin", &data).await;
    // Read the first byte, so the pack is open (and was mapped, before) when it is cut; only
    // the first chunk was checked, so the read below checks the rest.
    let first = s3
        .get_object()
        .bucket("cut")
        .key("shards.bin")
        .range("bytes=0-0")
        .send()
        .await
        .expect("ranged GET");
    let first = first.body.collect().await.expect("first byte").into_bytes();
    assert_eq!(first[..], data[..1]);
    let pack = largest_pack(&node.data_dir);
    let len = std::fs::metadata(&pack).expect("pack").len();
    OpenOptions::new()
        .write(true)
        .open(&pack)
        .expect("open pack")
        .set_len(len / 2)
        .expect("cut the pack");

    let (got, broke) = get_raw(&node, "/cut/shards.bin").await;
    assert_eq!(node.exited(), None, "the node died reading a cut pack");
    assert!(broke, "the GET ended cleanly without the missing bytes");
    assert!(got.len() < data.len() && got[..] == data[..got.len()]);
    assert!(damaged(&node, "read").await >= 1.0);
    // It goes on answering, reads and writes alike.
    put(&s3, "cut", "small.bin", b"still here").await;
    assert_eq!(get_bytes(&s3, "cut", "small.bin").await, b"still here");
    let health = node
        .http()
        .get(format!("{}/healthz", node.endpoint))
        .send()
        .await
        .expect("healthz");
    assert!(health.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rot_is_replaced_from_a_peer_whether_a_read_or_the_scrub_finds_it() {
    let secret = SecretFile::new(SECRET);
    // a reads without scrubbing (its rot is found by a GET); b scrubs continuously.
    let mut a = Node::start_swarm(41, 1, &secret, &[], &["--scrub-rate", "0"]);
    let b = Node::start_swarm(
        41,
        2,
        &secret,
        &[1],
        &["--scrub-rate", "1000000000", "--scrub-every-secs", "1"],
    );
    all_alive(&[&a, &b], 2.0).await;
    let (ca, cb) = (a.client(), b.client());
    ca.create_bucket()
        .bucket("rot")
        .send()
        .await
        .expect("bucket");
    let data = pseudo_random(6 << 20, 8);
    put(&ca, "rot", "ckpt.bin", &data).await;
    // Two replicas on two nodes: b fetches every chunk.
    until("b holds a copy of every chunk", 30, || async {
        held_bytes(&b).await >= data.len() as u64
    })
    .await;

    // a's copy rots; a GET through a still returns the object, with the bad chunk fetched
    // from b in its place. a served b's fetches from the copy it checked then; a chunk
    // checked in the last 10 s is served from the page cache without a second hash, so the
    // rot lands after that window (on a real disk the page cache keeps the good bytes).
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    flip_byte(&largest_pack(&a.data_dir));
    assert_eq!(get_bytes(&ca, "rot", "ckpt.bin").await, data);
    assert_eq!(damaged(&a, "read").await, 1.0);
    assert!(a.metric("s3swarm_store_chunks_repaired_total").await >= 1.0);

    // b's copy rots where nobody reads: the scrub finds it and fetches a good copy from a.
    let before = b.metric("s3swarm_store_scrub_passes_total").await;
    flip_byte(&largest_pack(&b.data_dir));
    until("b's scrub finds and repairs the rot", 30, || async {
        damaged(&b, "scrub").await == 1.0
            && b.metric_or_zero("s3swarm_store_chunks_repaired_total")
                .await
                == 1.0
    })
    .await;
    assert!(b.metric("s3swarm_store_scrub_passes_total").await > before);
    assert_eq!(damaged(&b, "read").await, 0.0, "no read touched b's copy");

    // With a gone, b serves the whole object from its own, repaired copy.
    a.stop(10);
    assert_eq!(get_bytes(&cb, "rot", "ckpt.bin").await, data);
    assert_eq!(damaged(&b, "read").await, 0.0);
}
