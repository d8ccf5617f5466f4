//! How a node spends its upload when many peers want the same chunks: each chunk once.
//!
//! When N readers start on one object at the same time, they all ask the node that holds it,
//! and a chunk sent to two of them uses the holder's upload twice, while the first recipient
//! could have passed it on. So a holder asked for a chunk it has just sent to another peer
//! answers "get it elsewhere" (once per asker and chunk): the asker waits for that peer's
//! have-announcement and fetches it there. BitTorrent's super-seeding does the same for the
//! same reason; what the original holder uploads is what bounds the swarm.
//!
//! Starvation is bounded: an asker is pointed elsewhere for one chunk for at most
//! `MAX_DEFERRAL`, so if the first recipient never passes it on (it died), the asker's next
//! request after that is served.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use store::ChunkHash;

use crate::node::NodeId;
use crate::runtime::lock;

/// Chunks a node sends at once, to all peers together; further requests wait their turn.
/// Few, so each goes out at the full uplink rate and its recipient can pass it on early;
/// more than one, so waiting for a recipient's acknowledgement does not idle the uplink.
/// Measured at 16 readers of 64 MiB on 25 Mbit/s links: 8 slots took 87 s and the original
/// sent 1.97 F (chunks finished so late that readers insisted on copies); 4 slots 40 s and
/// 1.15 F; 2 slots 40 s and 1.05 F.
pub const UPLOAD_SLOTS: usize = 2;
/// Requests that may wait for an upload slot; beyond them a holder answers "busy" at once, so
/// the asker turns to another holder instead of queueing behind a saturated one while other
/// holders sit idle (measured: at the tail of a 16-reader download most holders idled while
/// a few had long queues). As many as the slots: enough that a slot coming free has its next
/// request already here (a request crosses the asker's uplink, itself busy uploading), few
/// enough that a reader's requests wait only where they will be served soon.
/// Measured at 16 readers of 64 MiB on 50 Mbit/s links: 2 took 19.9-20.7 s (5 runs) against
/// 20.8-22.6 s (9 runs) for 6; of 32 MiB on 25 Mbit/s, 20.0 s against 23.0-24.8 s.
pub const UPLOAD_QUEUE: usize = 2;
/// A chunk sent this recently to a member still alive is being passed on by it.
const PASSING_ON: Duration = Duration::from_secs(30);
/// An asker is pointed elsewhere for one chunk for at most this long, then served: its
/// first recipient may be alive but slow to pass it on (or have evicted it). Measured at 16
/// readers on 50 Mbit/s links, a 3 s limit had the original holder send 1.66 F: passing a
/// chunk on to fifteen peers takes its recipient longer than that.
const MAX_DEFERRAL: Duration = Duration::from_secs(10);

/// Whether to send a requested chunk or point the asker elsewhere.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Get it from this member, which was sent it.
    Elsewhere(NodeId),
}

#[derive(Default)]
struct Book {
    /// When old entries were last dropped.
    pruned: Option<Instant>,
    /// Chunk -> when and to whom it was last sent.
    sent: HashMap<ChunkHash, (Instant, NodeId)>,
    /// Askers pointed elsewhere for a chunk, and since when.
    deferred: HashMap<(ChunkHash, NodeId), Instant>,
}

impl Book {
    /// The live member other than `asker` that `chunk` was sent to recently, if any: it is
    /// passing the chunk on.
    fn passing_on(
        &self,
        chunk: ChunkHash,
        asker: NodeId,
        now: Instant,
        alive: impl Fn(&NodeId) -> bool,
    ) -> Option<NodeId> {
        let (at, to) = self.sent.get(&chunk)?;
        (*to != asker && now.duration_since(*at) < PASSING_ON && alive(to)).then_some(*to)
    }
}

/// The upload policy of one node.
#[derive(Default)]
pub struct Seeding {
    book: Mutex<Book>,
}

impl Seeding {
    /// Whom `asker` would be pointed to for `chunk` now, if anyone, without recording
    /// anything: such a request need not wait for an upload slot.
    pub fn would_defer(
        &self,
        chunk: ChunkHash,
        asker: NodeId,
        now: Instant,
        alive: impl Fn(&NodeId) -> bool,
    ) -> Option<NodeId> {
        let b = lock(&self.book);
        let to = b.passing_on(chunk, asker, now, alive)?;
        b.deferred
            .get(&(chunk, asker))
            .is_none_or(|since| now.duration_since(*since) < MAX_DEFERRAL)
            .then_some(to)
    }

    /// `asker` wants `chunk` (which this node holds), at `now`; `alive` says whether a member
    /// is still alive (a chunk's recipient that died passes nothing on).
    pub fn decide(
        &self,
        chunk: ChunkHash,
        asker: NodeId,
        now: Instant,
        alive: impl Fn(&NodeId) -> bool,
    ) -> Decision {
        let mut b = lock(&self.book);
        // Entries matter for PASSING_ON only: drop stale ones once per such period, so a
        // busy holder does not rescan the book on every request.
        if b.pruned.is_none_or(|t| now.duration_since(t) >= PASSING_ON) {
            b.sent
                .retain(|_, (at, _)| now.duration_since(*at) < PASSING_ON);
            b.deferred
                .retain(|_, since| now.duration_since(*since) < PASSING_ON);
            b.pruned = Some(now);
        }
        if let Some(to) = b.passing_on(chunk, asker, now, alive) {
            let since = *b.deferred.entry((chunk, asker)).or_insert(now);
            if now.duration_since(since) < MAX_DEFERRAL {
                return Decision::Elsewhere(to);
            }
        }
        b.deferred.remove(&(chunk, asker));
        b.sent.insert(chunk, (now, asker));
        Decision::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    #[test]
    fn a_chunk_goes_out_once_while_its_recipient_passes_it_on() {
        let s = Seeding::default();
        let c = ChunkHash::of(b"chunk");
        let t = Instant::now();
        assert_eq!(s.decide(c, node(1), t, |_| true), Decision::Send);
        assert_eq!(
            s.decide(c, node(2), t, |_| true),
            Decision::Elsewhere(node(1))
        );
        assert_eq!(
            s.decide(c, node(3), t, |_| true),
            Decision::Elsewhere(node(1))
        );
        // Asking again soon: still elsewhere.
        let soon = t + Duration::from_millis(500);
        assert_eq!(
            s.decide(c, node(2), soon, |_| true),
            Decision::Elsewhere(node(1))
        );
        // Still asking after the longest deferral (the first recipient never passed it on):
        // served.
        let later = t + MAX_DEFERRAL;
        assert_eq!(s.decide(c, node(2), later, |_| true), Decision::Send);
        // Asking again for a chunk it was sent itself (it lost it): served.
        assert_eq!(s.decide(c, node(2), later, |_| true), Decision::Send);
    }

    #[test]
    fn a_chunk_whose_recipient_died_is_sent_again_at_once() {
        let s = Seeding::default();
        let c = ChunkHash::of(b"chunk");
        let t = Instant::now();
        assert_eq!(s.decide(c, node(1), t, |_| true), Decision::Send);
        assert_eq!(s.decide(c, node(2), t, |n| *n != node(1)), Decision::Send);
    }

    #[test]
    fn after_a_while_the_chunk_is_sent_again() {
        let s = Seeding::default();
        let c = ChunkHash::of(b"chunk");
        let t = Instant::now();
        assert_eq!(s.decide(c, node(1), t, |_| true), Decision::Send);
        assert_eq!(
            s.decide(c, node(2), t + PASSING_ON, |_| true),
            Decision::Send
        );
    }

    #[test]
    fn different_chunks_do_not_interfere() {
        let s = Seeding::default();
        let t = Instant::now();
        for i in 0..100u32 {
            let c = ChunkHash::of(&i.to_le_bytes());
            assert_eq!(
                s.decide(c, node((i % 7) as u8), t, |_| true),
                Decision::Send
            );
        }
    }
}
