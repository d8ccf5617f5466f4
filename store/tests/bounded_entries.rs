//! Journal entries do not grow with their object (issue 20): a long chunk list is named by
//! its hash and travels beside the entry. Tried here with real stores: the entry of an object
//! of many chunks is as small as a small object's; a store that is handed the entry without
//! the manifest does not record it (nothing is marked seen that was not applied), records and
//! applies it once the manifest comes, and passes both on to a third store; a manifest that
//! does not match its name is not taken.

use std::collections::BTreeMap;
use std::sync::Arc;

use store::journal::{INLINE_MANIFEST_CHUNKS, Pulled};
use store::{Applied, BucketName, ManifestHash, NewObject, ObjectKey, Store};
use tempfile::TempDir;

fn open() -> (Arc<Store>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    (Store::open(dir.path()).expect("open store"), dir)
}

fn put(s: &Store, key: &str, data: &[u8]) -> String {
    let mut w = s.writer();
    w.write(data).unwrap();
    let new = NewObject {
        etag: format!("etag-of-{key}"),
        ..Default::default()
    };
    s.put_object(
        "big",
        &ObjectKey::new(key).unwrap(),
        w.finish().unwrap(),
        new,
    )
    .unwrap()
    .etag
}

/// Every entry `from` has, as pulled by a store that has seen nothing.
fn everything(from: &Store) -> Vec<Pulled> {
    from.journal_since(&BTreeMap::new(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(o, n, b)| Pulled::new(o, n, b))
        .collect()
}

/// Incompressible bytes, different per seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn a_long_chunk_list_travels_beside_its_entry() {
    let (a, _da) = open();
    a.create_bucket(&BucketName::new("big").unwrap(), "alice", None)
        .unwrap();
    let big = noise(48 << 20, 1);
    put(&a, "many-chunks", &big);
    put(&a, "few-chunks", b"small");
    let (_, m) = a.object_with_manifest("big", "many-chunks", None).unwrap();
    assert!(
        m.chunks().len() > INLINE_MANIFEST_CHUNKS,
        "{} chunks: the test needs more than the inline limit",
        m.chunks().len()
    );

    let pulled = everything(&a);
    assert_eq!(pulled.len(), 3, "bucket, two objects");
    let sizes: Vec<usize> = a
        .journal_since(&BTreeMap::new(), usize::MAX)
        .unwrap()
        .iter()
        .map(|(_, _, b)| b.len())
        .collect();
    assert!(
        sizes[1] < 4096 && sizes[1] < sizes[2] + 512,
        "the entry of {} chunks takes {} bytes; a one-chunk object's takes {}",
        m.chunks().len(),
        sizes[1],
        sizes[2]
    );
    let named = pulled[1]
        .named_manifest()
        .expect("the big object's entry names its manifest");
    assert!(
        pulled[2].named_manifest().is_none(),
        "a short list is carried"
    );
    assert_eq!(
        a.manifest_blob(&named)
            .unwrap()
            .map(|b| ManifestHash::of(&b)),
        Some(named),
        "the writer keeps the manifest it named"
    );

    // Handed without the manifest: the entry is not recorded, and neither is anything of its
    // origin after it (they would be a gap).
    let (b, _db) = open();
    let out = b.apply_journal_batch(everything(&a)).unwrap();
    assert_eq!(
        out.applied,
        vec![Applied::Newer, Applied::NoManifest, Applied::Gap]
    );
    assert_eq!(b.journal_seen().unwrap().get(&a.node_id()), Some(&1));
    assert!(b.object("big", "many-chunks").is_err());

    // A wrong manifest is not taken.
    let mut wrong = everything(&a).remove(1);
    assert!(!wrong.attach_manifest(b"not the manifest".to_vec()));

    // With it, both are applied; the object is whole.
    let mut again = everything(&a);
    let blob = a.manifest_blob(&named).unwrap().unwrap();
    assert!(again[1].attach_manifest(blob));
    let out = b.apply_journal_batch(again).unwrap();
    assert_eq!(
        out.applied,
        vec![Applied::Duplicate, Applied::Newer, Applied::Newer]
    );
    let (rec, got) = b.object_with_manifest("big", "many-chunks", None).unwrap();
    assert_eq!(rec.size, big.len() as u64);
    assert_eq!(got.chunks(), m.chunks());

    // B passes the entry on with the manifest it recorded: C fetches it from B alone.
    let (c, _dc) = open();
    let mut from_b = everything(&b);
    let i = from_b
        .iter()
        .position(|p| p.named_manifest().is_some())
        .expect("B passes the entry on");
    let blob = b
        .manifest_blob(&named)
        .unwrap()
        .expect("B holds the manifest");
    assert!(from_b[i].attach_manifest(blob));
    let out = c.apply_journal_batch(from_b).unwrap();
    assert!(out.applied.iter().all(|a| *a == Applied::Newer), "{out:?}");
    assert_eq!(
        c.object_with_manifest("big", "many-chunks", None)
            .unwrap()
            .1
            .chunks(),
        m.chunks()
    );
}

/// A skip marker after an entry that was not recorded (its manifest missing) must not pass
/// over it: the origin stops there for the batch, and nothing of it is marked seen.
#[test]
fn a_skip_marker_never_passes_over_an_entry_left_unrecorded() {
    let (a, _da) = open();
    a.create_bucket(&BucketName::new("big").unwrap(), "alice", None)
        .unwrap();
    put(&a, "many-chunks", &noise(48 << 20, 2));
    put(&a, "k", b"first");
    put(&a, "k", b"second");
    let p = a.prune_journal().unwrap();
    assert_eq!(p.dropped, 1, "the first write of k is superseded");
    let page = everything(&a);
    let shape: Vec<(u64, bool)> = page
        .iter()
        .map(|p| (p.seq, p.named_manifest().is_some()))
        .collect();
    assert_eq!(shape, vec![(1, false), (2, true), (3, false), (4, false)]);
    let (b, _db) = open();
    let out = b.apply_journal_batch(page).unwrap();
    assert_eq!(
        out.applied,
        vec![
            Applied::Newer,
            Applied::NoManifest,
            Applied::Gap,
            Applied::Gap
        ]
    );
    assert_eq!(b.journal_seen().unwrap().get(&a.node_id()), Some(&1));
    // With the manifest, everything lands, the marker included.
    let mut page = everything(&a);
    let blob = a
        .manifest_blob(&page[1].named_manifest().unwrap())
        .unwrap()
        .unwrap();
    assert!(page[1].attach_manifest(blob));
    let out = b.apply_journal_batch(page).unwrap();
    assert_eq!(
        out.applied,
        vec![
            Applied::Duplicate,
            Applied::Newer,
            Applied::Pruned,
            Applied::Newer
        ]
    );
    assert_eq!(b.journal_seen().unwrap().get(&a.node_id()), Some(&4));
    assert!(b.object("big", "many-chunks").is_ok());
    assert_eq!(b.object("big", "k").unwrap().etag, "etag-of-k");
}
