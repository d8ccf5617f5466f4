//! The replicated namespace: every node holds every bucket and object record, so any node
//! can list and resolve any key locally. Each name is a last-writer-wins register ordered by
//! [`Hlc`]; a delete is a write of "nothing" (a tombstone), so it wins over older writes that
//! arrive late. Each node keeps the log of writes it accepted, numbered from 1; peers pull
//! what they have not seen (`since`), so nodes converge after any partition, whatever order
//! writes arrive in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
use crate::node::NodeId;

/// One write to a name: a value, or `None` for a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write<K, V> {
    pub key: K,
    pub at: Hlc,
    pub value: Option<V>,
}

/// A node's own writes, in the order it accepted them.
#[derive(Clone, Debug, Default)]
pub struct WriteLog<K, V> {
    entries: Vec<Write<K, V>>,
}

impl<K: Clone, V: Clone> WriteLog<K, V> {
    pub fn append(&mut self, w: Write<K, V>) -> u64 {
        self.entries.push(w);
        self.entries.len() as u64
    }

    /// Writes after number `since` (what a peer that has seen `since` pulls), at most `max`.
    pub fn since(&self, since: u64, max: usize) -> &[Write<K, V>] {
        let from = usize::try_from(since)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let to = from.saturating_add(max).min(self.entries.len());
        &self.entries[from..to]
    }

    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The merged view of every node's writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace<K: Ord, V> {
    names: BTreeMap<K, (Hlc, Option<V>)>,
    /// How far into each node's log this replica has applied.
    seen: BTreeMap<NodeId, u64>,
}

impl<K: Ord, V> Default for Namespace<K, V> {
    fn default() -> Self {
        Self {
            names: BTreeMap::new(),
            seen: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Namespace<K, V> {
    /// Applies one write; returns whether it changed what the name resolves to (a write
    /// older than the one held loses).
    pub fn apply(&mut self, w: &Write<K, V>) -> bool {
        match self.names.get(&w.key) {
            Some((at, _)) if *at >= w.at => false,
            _ => {
                self.names.insert(w.key.clone(), (w.at, w.value.clone()));
                true
            }
        }
    }

    /// Applies writes `since+1 ..` pulled from `node`'s log; entries this replica already
    /// applied (a retransmission, an overlap) are skipped. Returns the new high-water mark.
    pub fn apply_pulled(&mut self, node: NodeId, since: u64, writes: &[Write<K, V>]) -> u64 {
        let seen = self.seen.entry(node).or_default();
        let mut next = since;
        for w in writes {
            next += 1;
            if next <= *seen {
                continue;
            }
            if next != *seen + 1 {
                // A gap: what comes after it must wait until the gap is pulled.
                break;
            }
            *seen = next;
            match self.names.get(&w.key) {
                Some((at, _)) if *at >= w.at => {}
                _ => {
                    self.names.insert(w.key.clone(), (w.at, w.value.clone()));
                }
            }
        }
        *seen
    }

    /// How far into `node`'s log this replica has applied: what to pull `since`.
    pub fn seen(&self, node: &NodeId) -> u64 {
        self.seen.get(node).copied().unwrap_or(0)
    }

    /// What `key` resolves to (deleted names resolve to nothing).
    pub fn get(&self, key: &K) -> Option<&V> {
        self.names.get(key).and_then(|(_, v)| v.as_ref())
    }

    /// Live names in order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.names
            .iter()
            .filter_map(|(k, (_, v))| v.as_ref().map(|v| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Clock;
    use proptest::prelude::*;

    fn node(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    #[test]
    fn a_late_old_write_does_not_resurrect_a_delete() {
        let mut c = Clock::new(node(1), 60_000);
        let put = Write {
            key: "k",
            at: c.now(10),
            value: Some(1),
        };
        let del = Write {
            key: "k",
            at: c.now(20),
            value: None,
        };
        let mut ns = Namespace::default();
        assert!(ns.apply(&del));
        assert!(!ns.apply(&put), "the older put arrives late and loses");
        assert_eq!(ns.get(&"k"), None);
    }

    #[test]
    fn pulls_skip_overlaps_and_stop_at_gaps() {
        let mut c = Clock::new(node(1), 60_000);
        let mut log = WriteLog::default();
        for i in 0..5 {
            log.append(Write {
                key: i,
                at: c.now(i as u64),
                value: Some(i),
            });
        }
        let mut ns = Namespace::default();
        assert_eq!(ns.apply_pulled(node(1), 0, log.since(0, 3)), 3);
        // An overlapping pull (from 1) applies only what is new.
        assert_eq!(ns.apply_pulled(node(1), 1, log.since(1, 10)), 5);
        assert_eq!(ns.iter().count(), 5);
        // A pull that starts past what was seen (a gap) applies nothing.
        let mut other = Namespace::default();
        assert_eq!(other.apply_pulled(node(1), 2, log.since(2, 10)), 0);
    }

    proptest! {
        /// Three nodes write and delete overlapping keys; replicas that pull the logs in any
        /// order, in any chunk sizes, with repeats, end in the same state.
        #[test]
        fn replicas_converge_whatever_the_delivery_order(
            ops in proptest::collection::vec((0u8..3, 0u8..6, proptest::option::of(0u32..100), 0u64..50), 1..80),
            pulls_a in proptest::collection::vec((0u8..3, 1usize..6), 0..60),
            pulls_b in proptest::collection::vec((0u8..3, 1usize..6), 0..60),
        ) {
            let mut clocks: Vec<Clock> = (0..3).map(|i| Clock::new(node(i), 1_000_000)).collect();
            let mut logs: Vec<WriteLog<u8, u32>> = vec![WriteLog::default(); 3];
            let mut wall = 0u64;
            for (n, key, value, dt) in ops {
                wall += dt;
                let at = clocks[n as usize].now(wall);
                logs[n as usize].append(Write { key, at, value });
            }
            let replay = |pulls: &[(u8, usize)]| {
                let mut ns: Namespace<u8, u32> = Namespace::default();
                for (n, max) in pulls {
                    let id = node(*n);
                    let since = ns.seen(&id);
                    let w = logs[*n as usize].since(since, *max);
                    ns.apply_pulled(id, since, w);
                }
                // Anti-entropy finishes the job: pull everything still missing.
                for n in 0..3u8 {
                    let id = node(n);
                    let since = ns.seen(&id);
                    ns.apply_pulled(id, since, logs[n as usize].since(since, usize::MAX));
                }
                ns
            };
            let a = replay(&pulls_a);
            let b = replay(&pulls_b);
            prop_assert_eq!(&a, &b);
            // And both equal applying every write directly, in any order.
            let mut direct: Namespace<u8, u32> = Namespace::default();
            for log in logs.iter().rev() {
                for w in log.since(0, usize::MAX) {
                    direct.apply(w);
                }
            }
            let live_a: Vec<_> = a.iter().collect();
            let live_d: Vec<_> = direct.iter().collect();
            prop_assert_eq!(live_a, live_d);
        }
    }
}
