//! Where a chunk lives: rendezvous (highest-random-weight) hashing. Every node computes the
//! same k holders from the same member list, with no coordination, and when a member comes
//! or goes only the chunks it held (or now wins) move.

use store::ChunkHash;

use crate::node::NodeId;

fn weight(chunk: &ChunkHash, node: &NodeId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(chunk.as_bytes());
    h.update(&node.0);
    *h.finalize().as_bytes()
}

/// The `k` members that should hold `chunk`, best first (fewer if there are fewer members).
/// Duplicate members count once.
pub fn holders(chunk: &ChunkHash, members: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut scored: Vec<([u8; 32], NodeId)> =
        members.iter().map(|n| (weight(chunk, n), *n)).collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(k).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| NodeId([i as u8; 16])).collect()
    }

    proptest! {
        #[test]
        fn k_distinct_holders_in_any_member_order(seed in any::<u64>(), n in 1usize..20, k in 1usize..4) {
            let chunk = ChunkHash::of(&seed.to_le_bytes());
            let mut members = nodes(n);
            let a = holders(&chunk, &members, k);
            members.reverse();
            let b = holders(&chunk, &members, k);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.len(), k.min(n));
            let mut d = a.clone();
            d.sort();
            d.dedup();
            prop_assert_eq!(d.len(), a.len());
        }

        /// A member leaving moves only the chunks it held: every other holder stays, and
        /// one new holder takes its place.
        #[test]
        fn a_departure_disturbs_only_its_own_chunks(seed in any::<u64>(), n in 3usize..20, gone in 0usize..20) {
            let chunk = ChunkHash::of(&seed.to_le_bytes());
            let members = nodes(n);
            let gone = members[gone % n];
            let before = holders(&chunk, &members, 2);
            let rest: Vec<NodeId> = members.iter().copied().filter(|m| *m != gone).collect();
            let after = holders(&chunk, &rest, 2);
            if before.contains(&gone) {
                let kept: Vec<_> = before.iter().filter(|m| **m != gone).collect();
                for m in kept {
                    prop_assert!(after.contains(m));
                }
            } else {
                prop_assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn chunks_spread_over_members() {
        let members = nodes(8);
        let mut count = [0usize; 8];
        for i in 0..4000u32 {
            let h = holders(&ChunkHash::of(&i.to_le_bytes()), &members, 1)[0];
            count[h.0[0] as usize] += 1;
        }
        for c in count {
            assert!((350..650).contains(&c), "uneven spread: {count:?}");
        }
    }
}
