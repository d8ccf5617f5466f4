//! Writes the seed corpora of the fuzz targets under `tests/fuzz` from real values: journal
//! entries a store wrote, the frames peers exchange, a stored manifest, and requests and
//! documents as clients send them. Ids and clocks are fresh on every run; `tests/fuzz/run`
//! writes a set beside the committed one before fuzzing, so the seeds always have the
//! current encodings.
//!
//! fuzz_seeds <corpus-dir>

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use store::{BucketName, NewObject, ObjectKey, Store, StoreOptions, Versioning};
use swarm::registry::state::{Claim, Command, Expect, KeyView};
use swarm::wire::{Hello, Notice, Request, Response};

struct Corpus(PathBuf);

impl Corpus {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("seed");
    }
}

/// A frame as `swarm::wire::write_frame` puts it on a stream.
fn frame<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(msg).expect("encode");
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Journal entries as peers exchange them: (origin, number, entry bytes).
type Journal = Vec<(store::NodeId, u64, Vec<u8>)>;

/// Journal entries and a manifest written by a real store.
fn store_values(dir: &Path) -> (Journal, Vec<u8>) {
    let s = Store::open_with(dir, StoreOptions::default()).expect("store");
    s.create_bucket(
        &BucketName::new("datasets").expect("name"),
        "AKIDEXAMPLE",
        None,
    )
    .expect("bucket");
    s.set_versioning("datasets", Versioning::Enabled)
        .expect("versioning");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let body: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let put = |key: &str, data: &[u8]| {
        let mut w = s.writer();
        w.write(data).expect("write");
        let staged = w.finish().expect("finish");
        let mut tags = BTreeMap::new();
        tags.insert("team".to_owned(), "vision".to_owned());
        s.put_object(
            "datasets",
            &ObjectKey::new(key).expect("key"),
            staged,
            NewObject {
                etag: "\"e\"".into(),
                tags,
                ..Default::default()
            },
        )
        .expect("put")
    };
    put("train/shard-0000.tar", &body);
    put("train/small.json", b"{\"n\": 1}");
    put("train/small.json", b"{\"n\": 2}");
    s.delete_object("datasets", "train/small.json", None)
        .expect("delete");
    let entries = s
        .journal_since(&BTreeMap::new(), usize::MAX)
        .expect("journal");
    let (_, manifest) = s
        .object_with_manifest("datasets", "train/shard-0000.tar", None)
        .expect("manifest");
    (entries, manifest.encode())
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tests/fuzz/corpus"));
    let c = Corpus(out);
    let tmp = tempfile::tempdir().expect("temp dir");
    let (entries, manifest) = store_values(tmp.path());

    // journal_apply: (origin, length LE, bytes) records; the whole journal in one batch,
    // and each entry alone.
    let record = |origin: u8, bytes: &[u8]| {
        let mut r = vec![origin, 0, 0];
        r[1..3].copy_from_slice(&(bytes.len() as u16).to_le_bytes());
        r.extend_from_slice(bytes);
        r
    };
    let mut all = Vec::new();
    for (i, (_, _, bytes)) in entries.iter().enumerate() {
        all.extend(record(0, bytes));
        c.put("journal_apply", &format!("entry-{i}"), &record(1, bytes));
    }
    c.put("journal_apply", "whole-journal", &all);

    // manifest: a range (two u64 LE), then the encoded manifest.
    let mut m = 1000u64.to_le_bytes().to_vec();
    m.extend_from_slice(&2_500_000u64.to_le_bytes());
    m.extend_from_slice(&manifest);
    c.put("manifest", "shard", &m);

    // wire_frames: the selector byte, then frames of that message type.
    let node = store::NodeId([3; 16]);
    let member = swarm::member::Member {
        id: node,
        addr: "127.0.0.1:7400".parse().expect("addr"),
        http: Some("127.0.0.1:9000".parse().expect("addr")),
        storage: true,
        incarnation: 2,
    };
    let with = |sel: u8, frames: Vec<Vec<u8>>| {
        let mut v = vec![sel];
        for f in frames {
            v.extend(f);
        }
        v
    };
    c.put(
        "wire_frames",
        "requests",
        &with(
            0,
            vec![
                frame(&Request::Pull {
                    seen: vec![(node, 4)],
                }),
                frame(&Request::Have {
                    chunks: vec![[1; 32], [2; 32]],
                }),
                frame(&Request::Chunk {
                    hash: [1; 32],
                    insist: true,
                }),
                frame(&Request::Status),
                frame(&Request::Registry {
                    rpc: swarm::wire::RegistryRpc::Propose,
                    body: vec![1, 2, 3],
                }),
                frame(&Request::Service {
                    body: br#"{"bucket":"data","key":"k","etag":"e","size":9,"piece_size":8,"index":1}"#.to_vec(),
                }),
            ],
        ),
    );
    c.put(
        "wire_frames",
        "responses",
        &with(
            1,
            vec![
                frame(&Response::Entries {
                    entries: entries.clone(),
                    seen: vec![(node, 4)],
                    now_ms: 1_800_000_000_000,
                }),
                frame(&Response::Have(vec![true, false])),
                frame(&Response::Chunk { len: 1 << 20 }),
                frame(&Response::Elsewhere(node)),
                frame(&Response::Busy),
                frame(&Response::Error("no".into())),
            ],
        ),
    );
    c.put(
        "wire_frames",
        "hello",
        &with(
            2,
            vec![frame(&Hello {
                protocol: swarm::wire::PROTOCOL,
                member: member.clone(),
                proof: [9; 32],
            })],
        ),
    );
    c.put(
        "wire_frames",
        "notices",
        &with(
            3,
            vec![
                frame(&Notice::Gossip(vec![0; 40])),
                frame(&Notice::Poke),
                frame(&Notice::Have(vec![[5; 32]])),
            ],
        ),
    );
    let claim = Claim {
        id: [4; 16],
        owner: "AKIDEXAMPLE".into(),
        claimed_ms: 1_800_000_000_000,
        node: node.0,
    };
    let cmds = vec![
        Command::ClaimBucket {
            name: "datasets".into(),
            claim: claim.clone(),
            replaces: None,
        },
        Command::Write {
            bucket: [4; 16],
            key: "ckpt/step-100.pt".into(),
            expect: Expect::Absent,
            seen: KeyView {
                stamp: None,
                etag: None,
            },
            stamp: store::Hlc {
                wall_ms: 1_800_000_000_001,
                logical: 0,
                node,
            },
            etag: "abc".into(),
            writer: node.0,
        },
    ];
    let mut reg = vec![4];
    reg.extend(postcard::to_allocvec(&cmds).expect("commands"));
    c.put("wire_frames", "registry-commands", &reg);

    // s3_parsers: the selector byte, then the input.
    let parsers: [(u8, &str, &[u8]); 15] = [
        (0, "token-key", b"k747261696e2f"),
        (0, "token-prefix", b"p747261696e2f"),
        (1, "copy-range", b"bytes=0-99"),
        (2, "tagging-header", b"team=vision&stage=raw%20data"),
        (
            3,
            "tagging-xml",
            b"<Tagging><TagSet><Tag><Key>team</Key><Value>vision</Value></Tag></TagSet></Tagging>",
        ),
        (4, "host", b"s3.test\ndatasets.s3.test:9000"),
        (
            5,
            "cors",
            b"<CORSConfiguration><CORSRule><AllowedOrigin>https://*.example.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedHeader>x-amz-*</AllowedHeader><ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>600</MaxAgeSeconds></CORSRule></CORSConfiguration>\0https://a.example.com\nGET\nx-amz-date, content-type",
        ),
        (6, "version-null", b"null"),
        (6, "version", b"0000018c2b7e5f3a0000000000000001"),
        (7, "date-rfc2822", b"Tue, 27 Mar 2007 19:36:42 +0000"),
        (7, "date-http", b"Tue, 27 Mar 2007 19:36:42 GMT"),
        (2, "tagging-empty", b""),
        (8, "range-int", b"bytes=100-199"),
        (8, "range-open", b"bytes=4096-"),
        (8, "range-suffix", b"bytes=-500"),
    ];
    for (sel, name, input) in parsers {
        let mut v = vec![sel];
        v.extend_from_slice(input);
        c.put("s3_parsers", name, &v);
    }

    // signature_screen: a time (i64 LE seconds), then method, target and header lines.
    let now = 1_800_000_000i64.to_le_bytes();
    let requests: [(&str, &str); 4] = [
        (
            "presigned-put",
            "PUT\n/datasets/up.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20270115%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20270115T080000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=abcd\nhost: 127.0.0.1:9000\nx-amz-copy-source: datasets/secret.csv",
        ),
        (
            "header-v4",
            "GET\n/datasets/k\nhost: 127.0.0.1:9000\nx-amz-date: 20270115T080000Z\nx-amz-content-sha256: UNSIGNED-PAYLOAD\nauthorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20270115/US/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=abcd",
        ),
        (
            "header-v2",
            "GET\n/datasets/\nhost: 127.0.0.1:9000\ndate: Fri, 15 Jan 2027 08:00:00 +0000\nauthorization: AWS AKIDEXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
        ),
        (
            "query-v2",
            "GET\n/datasets/k?AWSAccessKeyId=AKIDEXAMPLE&Expires=1800000600&Signature=abcd\nhost: 127.0.0.1:9000",
        ),
    ];
    for (name, text) in requests {
        let mut v = now.to_vec();
        v.extend_from_slice(text.as_bytes());
        c.put("signature_screen", name, &v);
    }
    // aws_chunked: a flags byte (bit 0 signed, bit 1 trailer, bits 2-3 its algorithm, bit 4
    // damaged), then the content as length-prefixed chunks (or, damaged, the damage's bytes
    // first); see gateway::s3::fuzzing::Uploads.
    let content: Vec<u8> = [&[200u8][..], &[7u8; 200], &[55], &[9u8; 55], &[1], b"z"].concat();
    for (name, flags, prefix) in [
        ("signed", 0b0000_0001u8, &[][..]),
        ("signed-crc32c-trailer", 0b0000_0111, &[]),
        ("signed-sha256-trailer", 0b0000_1111, &[]),
        ("unsigned-crc32-trailer", 0b0000_0000, &[]),
        ("unsigned-sha1-trailer", 0b0000_1000, &[]),
        ("signed-flipped", 0b0001_0001, &[40, 0, 0x20]),
        ("signed-trailer-flipped", 0b0001_0011, &[0x30, 1, 0x01]),
    ] {
        let mut v = vec![flags];
        v.extend_from_slice(prefix);
        v.extend_from_slice(&content);
        c.put("aws_chunked", name, &v);
    }
    // Unsigned, as sent: a declared decoded length (LE u16), then the body.
    let raw = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
    let mut v = vec![0b0001_0000u8, 5, 0];
    v.extend_from_slice(raw);
    c.put("aws_chunked", "unsigned-raw", &v);
    let targets: BTreeSet<&str> = [
        "aws_chunked",
        "journal_apply",
        "manifest",
        "wire_frames",
        "s3_parsers",
        "signature_screen",
    ]
    .into();
    println!(
        "seeds written for {}",
        targets.into_iter().collect::<Vec<_>>().join(", ")
    );
}
