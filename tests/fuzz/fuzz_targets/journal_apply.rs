//! Journal entries as a peer sends them, recorded and carried out by a store on a temporary
//! directory (kept across inputs, as a node's store is: entries build on earlier ones).
//! Input: records of (origin: 1 byte, length: 2 bytes LE, entry bytes), applied as one batch
//! in order, each origin's sequence numbers continuing where its last batch stopped.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use store::journal::Pulled;
use store::{NodeId, Store, StoreOptions};

struct Node {
    store: Arc<Store>,
    seqs: Mutex<HashMap<u8, u64>>,
    runs: Mutex<u64>,
    _dir: tempfile::TempDir,
}

static NODE: LazyLock<Node> = LazyLock::new(|| {
    let dir = s3swarm_fuzz::store_dir("s3swarm-fuzz-journal-");
    let store = Store::open_with(dir.path(), StoreOptions::default()).expect("store");
    Node {
        store,
        seqs: Mutex::new(HashMap::new()),
        runs: Mutex::new(0),
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    let node = &*NODE;
    let mut seqs = node.seqs.lock().expect("seqs");
    let mut batch = Vec::new();
    let mut taken: HashMap<u8, u64> = HashMap::new();
    let mut rest = data;
    while rest.len() >= 3 {
        let origin = rest[0] % 4;
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let bytes = rest[3..3 + len].to_vec();
        rest = &rest[3 + len..];
        let seq = seqs.entry(origin).or_insert(0);
        *seq += 1;
        *taken.entry(origin).or_insert(0) += 1;
        let mut id = [0u8; 16];
        id[0] = origin + 1;
        batch.push(Pulled::new(NodeId(id), *seq, bytes));
    }
    if batch.is_empty() {
        return;
    }
    // Numbers continue from what the store recorded: a batch refused as a whole (a commit
    // error) records nothing, and an entry not recorded (one naming a manifest it was not
    // handed) stops its origin there; the next batch uses those numbers again.
    let _ = node.store.apply_journal_batch(batch);
    let seen = node.store.journal_seen().expect("journal_seen");
    for origin in taken.keys() {
        let mut id = [0u8; 16];
        id[0] = origin + 1;
        seqs.insert(*origin, seen.get(&NodeId(id)).copied().unwrap_or(0));
    }
    let mut runs = node.runs.lock().expect("runs");
    *runs += 1;
    // Now and then, read everything back: whatever was recorded must decode.
    if (*runs).is_multiple_of(256) {
        node.store
            .census()
            .expect("census over what the entries left");
    }
});
