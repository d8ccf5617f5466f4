//! Re-replication: which chunks lack copies on the nodes placement wants, and where to copy
//! them from. Given who holds a chunk (as the trackers know it) and the membership, each
//! missing placement gets a source among the live holders; a chunk with no live holder is
//! reported lost rather than silently skipped.

use store::ChunkHash;

use crate::node::NodeId;
use crate::placement::holders;

/// One copy to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicate {
    pub chunk: ChunkHash,
    pub from: NodeId,
    pub to: NodeId,
}

/// What repair must do for a set of chunks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub copies: Vec<Replicate>,
    /// Chunks no live member holds.
    pub lost: Vec<ChunkHash>,
}

/// Plans the copies that bring every chunk to `k` holders among `members` (the placement
/// members: alive or suspected). `held` lists each chunk with the nodes that hold it now.
pub fn plan<'a>(
    held: impl IntoIterator<Item = (&'a ChunkHash, &'a [NodeId])>,
    members: &[NodeId],
    k: usize,
) -> Plan {
    let mut p = Plan::default();
    for (chunk, have) in held {
        let live: Vec<NodeId> = have
            .iter()
            .copied()
            .filter(|n| members.contains(n))
            .collect();
        if live.is_empty() {
            p.lost.push(*chunk);
            continue;
        }
        let want = holders(chunk, members, k);
        // Spread the reads: the i-th missing copy reads from the i-th live holder.
        for (i, to) in want.iter().filter(|n| !live.contains(n)).enumerate() {
            p.copies.push(Replicate {
                chunk: *chunk,
                from: live[i % live.len()],
                to: *to,
            });
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| NodeId([i as u8; 16])).collect()
    }

    #[test]
    fn a_departed_holder_is_replaced_from_the_survivor() {
        let members = nodes(5);
        let chunk = ChunkHash::of(b"weights shard 7");
        let want = holders(&chunk, &members, 2);
        // One of the two placed holders is gone.
        let survivors: Vec<NodeId> = members.iter().copied().filter(|m| *m != want[0]).collect();
        let have = vec![want[0], want[1]];
        let p = plan([(&chunk, have.as_slice())], &survivors, 2);
        assert!(p.lost.is_empty());
        assert_eq!(p.copies.len(), 1);
        assert_eq!(p.copies[0].from, want[1]);
        assert!(holders(&chunk, &survivors, 2).contains(&p.copies[0].to));
        assert_ne!(p.copies[0].to, want[1]);
    }

    #[test]
    fn fully_placed_chunks_need_nothing_and_orphans_are_reported() {
        let members = nodes(4);
        let a = ChunkHash::of(b"a");
        let b = ChunkHash::of(b"b");
        let placed = holders(&a, &members, 2);
        let gone = [NodeId([99; 16])];
        let p = plan(
            [(&a, placed.as_slice()), (&b, gone.as_slice())],
            &members,
            2,
        );
        assert!(p.copies.is_empty());
        assert_eq!(p.lost, vec![b]);
    }
}
