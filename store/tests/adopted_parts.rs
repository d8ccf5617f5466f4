//! A part handed over by the node that received it (multipart uploads through any node):
//! pending until its chunks are all here, so a hand-over that fails leaves the part uploaded
//! earlier under that number as it was, and one that succeeds replaces it.

use std::sync::Arc;

use store::{BucketName, Manifest, NewObject, ObjectKey, Store, UploadRecord, UploadRef};
use tempfile::TempDir;

fn open() -> (Arc<Store>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Store::open(dir.path()).unwrap(), dir)
}

/// Stores `data` as object `key` of bucket `bucket` (made if needed); its chunk list.
fn stored(s: &Store, bucket: &str, key: &str, data: &[u8]) -> Manifest {
    let _ = s.create_bucket(&BucketName::new(bucket).unwrap(), "alice", None);
    let mut w = s.writer();
    w.write(data).unwrap();
    s.put_object(
        bucket,
        &ObjectKey::new(key).unwrap(),
        w.finish().unwrap(),
        NewObject::default(),
    )
    .unwrap();
    s.object_with_manifest(bucket, key, None).unwrap().1
}

fn etags(s: &Store, id: &str) -> Vec<(u32, String)> {
    s.parts(id)
        .unwrap()
        .into_iter()
        .map(|(n, p)| (n, p.etag))
        .collect()
}

#[test]
fn a_failed_hand_over_keeps_the_earlier_part_and_a_settled_one_replaces_it() {
    let (s, _d) = open();
    s.create_bucket(&BucketName::new("parts").unwrap(), "alice", None)
        .unwrap();
    let rec = UploadRecord {
        owner: "alice".into(),
        initiated_ms: 0,
        meta: Default::default(),
        checksum_algorithm: None,
        checksum_composite: false,
        tags: Default::default(),
        relay: false,
    };
    let id = s
        .create_upload("parts", &ObjectKey::new("obj").unwrap(), rec, None)
        .unwrap();
    let up = UploadRef {
        bucket: "parts",
        key: "obj",
        upload_id: &id,
    };
    let mut w = s.writer();
    w.write(b"the part uploaded first").unwrap();
    s.put_part(&up, 1, w.finish().unwrap(), "first".into(), None)
        .unwrap();

    // Chunks only another node holds: the hand-over is pending, not listed, then given up.
    let (t, _dt) = open();
    let foreign = stored(&t, "elsewhere", "o", b"bytes only the relaying node holds");
    let (pending, absent) = s
        .adopt_part(&up, 1, foreign.clone(), "second".into(), None)
        .unwrap();
    assert_eq!(absent.len(), foreign.chunks().len());
    assert_eq!(etags(&s, &id), vec![(1, "first".to_owned())]);
    s.abandon_part(&id, 1, &pending).unwrap();
    assert_eq!(
        etags(&s, &id),
        vec![(1, "first".to_owned())],
        "the earlier part is untouched"
    );

    // Chunks held here already: settles at once and replaces it.
    let held = stored(&s, "parts", "held", b"content this node holds");
    let (pending, absent) = s.adopt_part(&up, 1, held, "third".into(), None).unwrap();
    assert!(absent.is_empty());
    s.settle_part(&up, 1, &pending).unwrap();
    assert_eq!(etags(&s, &id), vec![(1, "third".to_owned())]);
    assert!(
        s.settle_part(&up, 1, &pending).is_err(),
        "it is no longer pending"
    );

    // An abort releases a pending hand-over with the parts.
    s.adopt_part(&up, 2, foreign, "fourth".into(), None)
        .unwrap();
    s.abort_upload("parts", "obj", &id).unwrap();
    assert!(s.parts(&id).unwrap().is_empty());
}
