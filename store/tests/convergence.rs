//! The namespace merge, tested as production runs it: real stores write (buckets created,
//! deleted and created again by other identities, versioning switched, objects put, deleted,
//! deleted by version id, retagged), exchanging journals now and then so later writes depend
//! on earlier ones made elsewhere. Then fresh stores are fed every entry in random
//! interleavings, in random batches, with repeats and premature entries (gaps), and every one
//! of them, and every writer after a full exchange, must hold the same namespace.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store::journal::Pulled;
use store::{
    Applied, BucketName, NewObject, NodeId, ObjectKey, Store, Version, VersionId, Versioning,
};
use tempfile::TempDir;

const BUCKETS: [&str; 2] = ["data-a", "data-b"];
const OWNERS: [&str; 2] = ["alice", "bob"];
const KEYS: [&str; 3] = ["k1", "dir/k2", "k3"];

struct Node {
    store: Arc<Store>,
    _dir: TempDir,
}

fn node() -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open store");
    Node { store, _dir: dir }
}

/// One write, on one store; failures (no such bucket, not empty, ...) are part of the mix.
fn write(s: &Store, rng: &mut StdRng) {
    let bucket = BUCKETS[rng.random_range(0..BUCKETS.len())];
    let key = KEYS[rng.random_range(0..KEYS.len())];
    match rng.random_range(0..100) {
        0..8 => {
            let owner = OWNERS[rng.random_range(0..OWNERS.len())];
            let _ = s.create_bucket(&BucketName::new(bucket).unwrap(), owner, None);
        }
        8..12 => {
            let _ = s.delete_bucket(bucket);
        }
        12..18 => {
            let v = if rng.random_bool(0.7) {
                Versioning::Enabled
            } else {
                Versioning::Suspended
            };
            let _ = s.set_versioning(bucket, v);
        }
        18..60 => {
            let mut w = s.writer();
            let data: Vec<u8> = (0..rng.random_range(1..200))
                .map(|_| rng.random())
                .collect();
            w.write(&data).unwrap();
            let staged = w.finish().unwrap();
            let new = NewObject {
                etag: format!("{:x}", rng.random::<u64>()),
                ..Default::default()
            };
            let _ = s.put_object(bucket, &ObjectKey::new(key).unwrap(), staged, new);
        }
        60..72 => {
            let _ = s.delete_object(bucket, key, None);
        }
        72..90 => {
            // By version id: one of the versions this store holds of the key.
            if let Ok(page) = s.list_versions(bucket, key, None, None, None, 100) {
                let ids: Vec<VersionId> = page
                    .versions
                    .iter()
                    .filter(|(k, _, _)| k == key)
                    .map(|(_, v, _)| v.version_id())
                    .collect();
                if !ids.is_empty() {
                    let id = ids[rng.random_range(0..ids.len())];
                    let _ = s.delete_object(bucket, key, Some(id));
                }
            }
        }
        _ => {
            let mut tags = BTreeMap::new();
            tags.insert("t".to_owned(), format!("{}", rng.random::<u8>()));
            let version = s
                .list_versions(bucket, key, None, None, None, 100)
                .ok()
                .and_then(|p| p.versions.last().map(|(_, v, _)| v.version_id()));
            let _ = s.set_tags(bucket, key, version, tags);
        }
    }
}

/// Pulls everything `from` has that `to` lacks, as the sync loop does.
fn pull(to: &Store, from: &Store) {
    loop {
        let seen = to.journal_seen().unwrap();
        let page = from.journal_since(&seen, 64 << 10).unwrap();
        if page.is_empty() {
            return;
        }
        // Manifests the entries name travel beside them, from the same peer.
        let batch = page
            .into_iter()
            .map(|(o, n, b)| {
                let mut p = Pulled::new(o, n, b);
                if let Some(h) = p.named_manifest() {
                    let m = from
                        .manifest_blob(&h)
                        .unwrap()
                        .expect("the sender holds it");
                    assert!(p.attach_manifest(m));
                }
                p
            })
            .collect();
        let out = to.apply_journal_batch(batch).unwrap();
        assert!(
            out.applied
                .iter()
                .all(|a| !matches!(a, Applied::Refused(_))),
            "an entry a real store wrote was refused: {:?}",
            out.applied
        );
    }
}

/// Everything a client could see, by bucket: record and every version in listing order.
type Dump = BTreeMap<String, (String, String, Vec<String>)>;

fn dump(s: &Store) -> Dump {
    let mut out = BTreeMap::new();
    for (name, rec) in s.buckets().unwrap() {
        let page = s
            .list_versions(name.as_str(), "", None, None, None, 10_000)
            .unwrap();
        let versions = page
            .versions
            .iter()
            .map(|(k, v, latest)| match v {
                Version::Object(o) => format!(
                    "{k} {} obj etag={} size={} tags={:?} latest={latest}",
                    o.version_id, o.etag, o.size, o.tags
                ),
                Version::DeleteMarker(m) => format!("{k} {} marker latest={latest}", m.version_id),
            })
            .collect();
        out.insert(
            name.as_str().to_owned(),
            (
                format!("{} {}", rec.id, rec.owner),
                format!("{:?}", rec.versioning),
                versions,
            ),
        );
    }
    out
}

/// Every origin's own entries, in order.
fn journals(writers: &[Node]) -> Vec<Vec<(NodeId, u64, Vec<u8>)>> {
    writers
        .iter()
        .map(|w| {
            let me = w.store.node_id();
            w.store
                .journal_since(&BTreeMap::new(), usize::MAX)
                .unwrap()
                .into_iter()
                .filter(|(o, _, _)| *o == me)
                .collect()
        })
        .collect()
}

/// Feeds `journals` to `to` in a random interleaving: random origin, random batch size,
/// sometimes an entry already sent again, sometimes one from further ahead (a gap).
fn deliver_shuffled(to: &Store, journals: &[Vec<(NodeId, u64, Vec<u8>)>], rng: &mut StdRng) {
    let mut next = vec![0usize; journals.len()];
    while next.iter().zip(journals).any(|(n, j)| *n < j.len()) {
        let o = rng.random_range(0..journals.len());
        let j = &journals[o];
        if next[o] >= j.len() {
            continue;
        }
        let mut batch = Vec::new();
        if next[o] > 0 && rng.random_bool(0.2) {
            let again = rng.random_range(0..next[o]);
            let (a, n, b) = &j[again];
            batch.push(Pulled::new(*a, *n, b.clone()));
        }
        let take = rng.random_range(1..=4).min(j.len() - next[o]);
        if rng.random_bool(0.1)
            && next[o] + take + 1 < j.len()
            && !j[next[o] + take + 1].2.is_empty()
        {
            // A premature entry: refused as a gap, not recorded, delivered again later.
            let (a, n, b) = &j[next[o] + take + 1];
            let out = to
                .apply_journal_batch(vec![Pulled::new(*a, *n, b.clone())])
                .unwrap();
            assert_eq!(out.applied, vec![Applied::Gap]);
        }
        for (a, n, b) in &j[next[o]..next[o] + take] {
            batch.push(Pulled::new(*a, *n, b.clone()));
        }
        next[o] += take;
        let out = to.apply_journal_batch(batch).unwrap();
        assert!(
            !out.applied.contains(&Applied::Gap),
            "in-order delivery met a gap"
        );
    }
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let writers: Vec<Node> = (0..3).map(|_| node()).collect();
    for _ in 0..rng.random_range(20..60) {
        let w = rng.random_range(0..writers.len());
        write(&writers[w].store, &mut rng);
        if rng.random_bool(0.1) {
            // Pruning at any moment changes nothing a reader ends up with.
            let p = rng.random_range(0..writers.len());
            writers[p].store.prune_journal().unwrap();
        }
        if rng.random_bool(0.15) {
            // Some writers catch up with some others: later writes depend on earlier ones.
            let a = rng.random_range(0..writers.len());
            let b = rng.random_range(0..writers.len());
            if a != b {
                pull(&writers[a].store, &writers[b].store);
            }
        }
    }
    if rng.random_bool(0.5) {
        for w in &writers {
            w.store.prune_journal().unwrap();
        }
    }
    let journals = journals(&writers);
    let readers: Vec<Node> = (0..3).map(|_| node()).collect();
    for r in &readers {
        deliver_shuffled(&r.store, &journals, &mut rng);
    }
    for r in &readers {
        assert_eq!(
            r.store.journal_parked().unwrap(),
            0,
            "seed {seed}: entries still wait after every entry was delivered"
        );
    }
    // Delivery order alone changes nothing: readers that resolved no conflict of their own
    // (journaled nothing) hold the same namespace before they talk to anyone.
    let quiet: Vec<&Node> = readers
        .iter()
        .filter(|r| r.store.journal_head().unwrap() == 0)
        .collect();
    if let Some(first) = quiet.first() {
        let want = dump(&first.store);
        for r in &quiet {
            assert_eq!(
                dump(&r.store),
                want,
                "seed {seed}: delivery order changed the namespace"
            );
        }
    }
    // Then everyone exchanges everything (conflict resolutions a reader journaled included)
    // until nothing new moves.
    let all: Vec<&Node> = writers.iter().chain(&readers).collect();
    loop {
        let before: u64 = all
            .iter()
            .map(|n| n.store.journal_seen().unwrap().values().sum::<u64>())
            .sum();
        for a in &all {
            if rng.random_bool(0.3) {
                a.store.prune_journal().unwrap();
            }
            for b in &all {
                if !Arc::ptr_eq(&a.store, &b.store) {
                    pull(&a.store, &b.store);
                }
            }
        }
        let after: u64 = all
            .iter()
            .map(|n| n.store.journal_seen().unwrap().values().sum::<u64>())
            .sum();
        if after == before {
            break;
        }
    }
    let want = dump(&all[0].store);
    for (i, n) in all.iter().enumerate() {
        assert_eq!(
            dump(&n.store),
            want,
            "seed {seed}: node {i} differs from node 0"
        );
        assert_eq!(n.store.journal_parked().unwrap(), 0, "seed {seed}");
    }
}

#[test]
fn every_delivery_order_repeat_and_gap_converges_to_one_namespace() {
    let seeds: u64 = std::env::var("MERGE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for seed in 0..seeds {
        run(seed);
    }
}

/// A writer's own journal, in order.
fn own_journal(s: &Store) -> Vec<(NodeId, u64, Vec<u8>)> {
    let me = s.node_id();
    s.journal_since(&BTreeMap::new(), usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|(o, _, _)| *o == me)
        .collect()
}

fn put_bytes(s: &Store, bucket: &str, key: &str, data: &[u8]) {
    let mut w = s.writer();
    w.write(data).unwrap();
    let staged = w.finish().unwrap();
    let new = NewObject {
        etag: "e".into(),
        ..Default::default()
    };
    s.put_object(bucket, &ObjectKey::new(key).unwrap(), staged, new)
        .unwrap();
}

#[test]
fn an_entry_that_cannot_be_read_or_is_invalid_is_refused_and_holds_nothing_up() {
    let w = node();
    w.store
        .create_bucket(&BucketName::new("data").unwrap(), "alice", None)
        .unwrap();
    for k in ["first", "second", "third", "fourth"] {
        put_bytes(&w.store, "data", k, k.as_bytes());
    }
    let mut j = own_journal(&w.store);
    assert_eq!(j.len(), 5);
    // Entry 2 arrives mangled; entry 3 names a key no client could write; entry 4 claims a
    // size its chunk list does not have.
    j[1].2 = b"{\"not\": \"an entry\"".to_vec();
    let mut e: serde_json::Value = serde_json::from_slice(&j[2].2).unwrap();
    e["change"]["Version"]["key"] = serde_json::Value::String(String::new());
    j[2].2 = serde_json::to_vec(&e).unwrap();
    let mut e: serde_json::Value = serde_json::from_slice(&j[3].2).unwrap();
    e["change"]["Version"]["state"]["version"]["size"] = serde_json::json!(999);
    j[3].2 = serde_json::to_vec(&e).unwrap();

    let r = node();
    let out = r
        .store
        .apply_journal_batch(
            j.iter()
                .map(|(o, n, b)| Pulled::new(*o, *n, b.clone()))
                .collect(),
        )
        .unwrap();
    assert_eq!(
        out.applied,
        vec![
            Applied::Newer,
            Applied::Refused(store::merge::Refusal::Undecodable),
            Applied::Refused(store::merge::Refusal::Key),
            Applied::Refused(store::merge::Refusal::Record),
            Applied::Newer,
        ]
    );
    // The entry after them applied, and all five are recorded (passed on, never asked again).
    assert!(r.store.object("data", "fourth").is_ok());
    assert!(r.store.object("data", "first").is_err());
    assert_eq!(r.store.journal_seen().unwrap()[&w.store.node_id()], 5);
}

#[test]
fn an_object_that_arrives_before_its_bucket_waits_for_it() {
    let a = node();
    let b = node();
    a.store
        .create_bucket(&BucketName::new("made-on-a").unwrap(), "alice", None)
        .unwrap();
    pull(&b.store, &a.store);
    put_bytes(&b.store, "made-on-a", "obj", b"written through b");
    // A third node hears b's entry first.
    let c = node();
    let from_b = own_journal(&b.store);
    let out = c
        .store
        .apply_journal_batch(
            from_b
                .iter()
                .map(|(o, n, x)| Pulled::new(*o, *n, x.clone()))
                .collect(),
        )
        .unwrap();
    assert_eq!(out.applied, vec![Applied::Parked]);
    assert_eq!(c.store.journal_parked().unwrap(), 1);
    assert!(c.store.object("made-on-a", "obj").is_err());
    let out = c
        .store
        .apply_journal_batch(
            own_journal(&a.store)
                .iter()
                .map(|(o, n, x)| Pulled::new(*o, *n, x.clone()))
                .collect(),
        )
        .unwrap();
    assert_eq!(out.applied, vec![Applied::Newer]);
    assert_eq!(out.released, 1);
    assert_eq!(c.store.journal_parked().unwrap(), 0);
    assert_eq!(c.store.object("made-on-a", "obj").unwrap().size, 17);
}

/// Two nodes can mint the same seq for one key (each process bumps its own clock, and
/// seq is a microsecond stamp): the two versions differ by their ids' salt. Both must be
/// kept, on every node, whatever arrives first; a slot keyed by the seq alone let the one
/// written second overwrite the other (a version lost without a delete, and nodes holding
/// different survivors).
#[test]
fn versions_minted_with_the_same_seq_on_two_nodes_are_both_kept() {
    use store::journal::{Change, Entry};
    let (a, b, c) = (node(), node(), node());
    let name = BucketName::new("same-seq").unwrap();
    a.store.create_bucket(&name, "alice", None).unwrap();
    a.store
        .set_versioning("same-seq", Versioning::Enabled)
        .unwrap();
    pull(&b.store, &a.store);
    let key = ObjectKey::new("k").unwrap();
    let put = |s: &Store, data: &[u8]| {
        let mut w = s.writer();
        w.write(data).unwrap();
        s.put_object("same-seq", &key, w.finish().unwrap(), NewObject::default())
            .unwrap()
    };
    put(&a.store, b"from a");
    let on_b = put(&b.store, b"from b");
    let VersionId::Stamped { seq, salt } = on_b.version_id else {
        panic!("a versioned bucket minted a null version");
    };
    // A's version, as if A had minted B's seq: the same seq, another salt.
    let mut journal = own_journal(&a.store);
    let (_, _, last) = journal.pop().unwrap();
    let mut entry = Entry::decode(&last).unwrap();
    let twin = VersionId::Stamped {
        seq,
        salt: salt.wrapping_add(1),
    };
    if let Change::Version {
        version_id, state, ..
    } = &mut entry.change
    {
        *version_id = twin;
        if let Some(Version::Object(o)) = state.as_mut().map(|s| &mut s.version) {
            o.version_id = twin;
            o.seq = seq;
        }
    }
    let n = journal.len() as u64 + 1;
    journal.push((a.store.node_id(), n, entry.encode()));
    let feed = |to: &Store, entries: &[(NodeId, u64, Vec<u8>)]| {
        let batch = entries
            .iter()
            .map(|(o, n, bytes)| Pulled::new(*o, *n, bytes.clone()))
            .collect();
        to.apply_journal_batch(batch).unwrap();
    };
    // B holds its own version and gets the twin; C gets the twin first, then B's.
    feed(&b.store, &journal);
    feed(&c.store, &journal);
    feed(&c.store, &own_journal(&b.store));
    // A later version demotes whichever is current into the noncurrent slots.
    put(&b.store, b"later");
    feed(&c.store, &own_journal(&b.store));
    for s in [&b.store, &c.store] {
        let page = s
            .list_versions("same-seq", "", None, None, None, 100)
            .unwrap();
        let mut ids: Vec<VersionId> = page
            .versions
            .iter()
            .map(|(_, v, _)| v.version_id())
            .collect();
        ids.sort();
        assert_eq!(ids.len(), 3, "versions kept: {ids:?}");
        assert!(ids.contains(&twin) && ids.contains(&on_b.version_id));
    }
}

#[test]
fn a_pruned_journal_hands_a_new_node_the_namespace_not_its_history() {
    let w = node();
    w.store
        .create_bucket(&BucketName::new("kept").unwrap(), "alice", None)
        .unwrap();
    w.store
        .create_bucket(&BucketName::new("gone").unwrap(), "alice", None)
        .unwrap();
    for round in 0..20 {
        for k in ["a", "b", "c"] {
            put_bytes(&w.store, "kept", k, format!("{k} {round}").as_bytes());
        }
        put_bytes(&w.store, "gone", "x", b"in a bucket deleted later");
    }
    // One object of many chunks, overwritten: its first manifest is released with its entry.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..48 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    put_bytes(&w.store, "kept", "big", &big);
    let first_big = own_journal(&w.store)
        .last()
        .map(|(o, n, b)| Pulled::new(*o, *n, b.clone()))
        .and_then(|p| p.named_manifest())
        .expect("the big object's entry names its manifest");
    put_bytes(&w.store, "kept", "big", &big[1..]);
    w.store.delete_object("gone", "x", None).unwrap();
    w.store.delete_bucket("gone").unwrap();
    let history = own_journal(&w.store).len();
    assert_eq!(history, 2 + 20 * 4 + 2 + 2);

    // Before pruning, a joining node is handed every entry; after, one per live name.
    let before = node();
    pull(&before.store, &w.store);
    let p = w.store.prune_journal().unwrap();
    assert_eq!(p.examined as usize, history);
    let left: Vec<_> = own_journal(&w.store)
        .into_iter()
        .filter(|(_, _, b)| !b.is_empty())
        .collect();
    // kept's create, the last versions of a, b, c and big, gone's deletion.
    assert_eq!(
        left.len(),
        6,
        "{} of {history} entries left: {:?}",
        left.len(),
        left.iter()
            .map(|(_, _, b)| String::from_utf8_lossy(b)
                .chars()
                .take(160)
                .collect::<String>())
            .collect::<Vec<_>>()
    );
    assert_eq!(p.dropped as usize, history - 6);
    assert!(
        w.store.manifest_blob(&first_big).unwrap().is_none(),
        "the overwritten manifest is released"
    );
    let after = node();
    pull(&after.store, &w.store);
    assert_eq!(dump(&after.store), dump(&w.store));
    assert_eq!(dump(&before.store), dump(&w.store));
    assert_eq!(
        after.store.journal_seen().unwrap()[&w.store.node_id()],
        history as u64,
        "the joining node has seen every number, pruned ones included"
    );
    // It passes on what it holds: a third node pulling from it gets the same namespace.
    let third = node();
    pull(&third.store, &after.store);
    assert_eq!(dump(&third.store), dump(&w.store));
    // A node that had the whole history and pulls again moves nothing.
    pull(&before.store, &w.store);
    assert_eq!(dump(&before.store), dump(&w.store));
}
