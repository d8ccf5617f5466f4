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
//! `MAX_DEFERRAL` once its copy has arrived, so if the first recipient never passes it on
//! (it died), the asker's next request after that is served. A send under way ends when its
//! recipient has every byte, stops it, or does not confirm within the transport's call
//! timeout.
//!
//! Only a busy holder points elsewhere. A holder whose uplink is otherwise idle sends a
//! second copy at once: sending it costs nothing anyone else wanted, while the first
//! recipient may be the busiest uplink in the swarm. At the end of a distribution every
//! chunk has been sent once, the original holder idles, and the last pieces were held by one
//! reader each, which could serve only a few askers at a time (measured at 4 readers of 64 MiB
//! on 50 Mbit/s links with 2 upload slots: the original was idle for the last 4 s of 17.5 s
//! while one reader was asked 27 times in 1.9 s for the same three chunks and answered
//! "busy" each time). It costs the original a little more upload (1.10-1.15 F instead of
//! 1.03 F in those runs) and took 14.2-15.1 s against 15.5-16.2 s without it, at 4 slots.
//!
//! A busy holder never sends a chunk twice at once: while its copy is still on the way to
//! one peer, another asker, even one insisting, is pointed there. The second copy would
//! leave by the same uplink, no sooner than the first arrives, and take the turn of a chunk
//! nobody has yet. Measured at 16 readers of 64 MiB on 12 Mbit/s links: single chunks took
//! up to 10 s to reach their first recipient (its downlink shared with other chunks), readers
//! insisted after 4 s, and one chunk left the original 8 times; it sent 1.49-1.53 F in all,
//! 23 of its 81 sends on insistence.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use store::ChunkHash;

use crate::node::NodeId;
use crate::runtime::lock;

/// Chunks a node sends at once, to all peers together; further requests wait their turn.
/// Few, so each goes out at a good share of the uplink and its recipient can pass it on
/// early; not too few, because a slot lasts as long as its recipient takes, and a recipient
/// fed by other peers too takes a while: with 2 slots, uplinks ran at half rate while their
/// two recipients' links were full and other readers' links idled (4 readers of 64 MiB on
/// 50 Mbit/s links: a reader had at most one chunk coming in for half of its download).
/// Time until the last reader was done there, with idle holders sending second copies (see
/// the module doc): 2 slots 16.2-17.3 s (3 runs), 3 slots 15.0-15.8 s, 4 slots 14.2-15.1 s (3
/// runs), 6 and 8 slots 15.5 and 15.2 s; at 16 readers, 2 slots 20.5 s, 4 slots 18.1-18.4 s
/// (3 runs), 6 slots 18.1 and 18.5 s. Far more overshoots: at 16 readers of 64 MiB on
/// 25 Mbit/s links, 8 slots took 87 s and the original sent 1.97 F (chunks finished so late
/// that readers insisted on copies).
pub const UPLOAD_SLOTS: usize = 4;
/// Requests that may wait for an upload slot; beyond them a holder answers "busy" at once, so
/// the asker turns to another holder instead of queueing behind a saturated one while other
/// holders sit idle (measured: at the tail of a 16-reader download most holders idled while
/// a few had long queues). Two: enough that a slot coming free has its next request already
/// here (a request crosses the asker's uplink, itself busy uploading), few enough that a
/// reader's requests wait only where they will be served soon.
/// Measured at 16 readers of 64 MiB on 50 Mbit/s links (with 2 slots): 2 took 19.9-20.7 s
/// (5 runs) against 20.8-22.6 s (9 runs) for 6; of 32 MiB on 25 Mbit/s, 20.0 s against
/// 23.0-24.8 s.
pub const UPLOAD_QUEUE: usize = 2;
/// A chunk sent this recently to a member still alive is being passed on by it.
const PASSING_ON: Duration = Duration::from_secs(30);
/// An asker is pointed elsewhere for one chunk for at most this long, then served: its
/// first recipient may be alive but slow to pass it on (or have evicted it). Measured at 16
/// readers on 50 Mbit/s links, a 3 s limit had the original holder send 1.66 F: passing a
/// chunk on to fifteen peers takes its recipient longer than that.
const MAX_DEFERRAL: Duration = Duration::from_secs(10);

/// Whether to send a requested chunk or point the asker elsewhere.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Send it; the send counts as under way while this lives.
    Send(Sending<'a>),
    /// Get it from this member, which was sent it or is being sent it.
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
    /// Sends under way, chunk -> recipients.
    sending: HashMap<ChunkHash, Vec<NodeId>>,
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

    /// A live member other than `asker` that `chunk` is being sent to right now, if any.
    fn under_way(
        &self,
        chunk: ChunkHash,
        asker: NodeId,
        alive: impl Fn(&NodeId) -> bool,
    ) -> Option<NodeId> {
        self.sending
            .get(&chunk)?
            .iter()
            .find(|to| **to != asker && alive(to))
            .copied()
    }

    /// Whom a busy holder points `asker` to for `chunk` (see [`Seeding::decide`]).
    fn pointed(
        &self,
        chunk: ChunkHash,
        asker: NodeId,
        now: Instant,
        insist: bool,
        alive: impl Fn(&NodeId) -> bool,
    ) -> Option<NodeId> {
        if let Some(to) = self.under_way(chunk, asker, &alive) {
            return Some(to);
        }
        if insist {
            return None;
        }
        let to = self.passing_on(chunk, asker, now, alive)?;
        self.deferred
            .get(&(chunk, asker))
            .is_none_or(|since| now.duration_since(*since) < MAX_DEFERRAL)
            .then_some(to)
    }
}

/// The upload policy of one node.
#[derive(Default)]
pub struct Seeding {
    book: Mutex<Book>,
}

impl Seeding {
    /// Whom `asker` would be pointed to for `chunk` now, if anyone, without recording
    /// anything: such a request need not wait for an upload slot. `idle`: nothing else is
    /// being sent or waiting to be; `insist`: the asker was pointed elsewhere before and
    /// still knows no other holder.
    pub fn would_defer(
        &self,
        chunk: ChunkHash,
        asker: NodeId,
        now: Instant,
        idle: bool,
        insist: bool,
        alive: impl Fn(&NodeId) -> bool,
    ) -> Option<NodeId> {
        if idle {
            return None;
        }
        lock(&self.book).pointed(chunk, asker, now, insist, alive)
    }

    /// `asker` wants `chunk` (which this node holds), at `now`; `idle`: nothing else is being
    /// sent or waiting to be; `insist`: the asker was pointed elsewhere before and still knows
    /// no other holder; `alive` says whether a member is still alive (a chunk's recipient that
    /// died passes nothing on).
    ///
    /// An idle holder sends. A busy one points the asker to a peer the chunk is on its way
    /// to; failing that, unless the asker insists, to the peer it was last sent to, for at
    /// most `MAX_DEFERRAL` per asker.
    pub fn decide(
        &self,
        chunk: ChunkHash,
        asker: NodeId,
        now: Instant,
        idle: bool,
        insist: bool,
        alive: impl Fn(&NodeId) -> bool,
    ) -> Decision<'_> {
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
        if !idle && let Some(to) = b.pointed(chunk, asker, now, insist, alive) {
            b.deferred.entry((chunk, asker)).or_insert(now);
            return Decision::Elsewhere(to);
        }
        b.deferred.remove(&(chunk, asker));
        b.sent.insert(chunk, (now, asker));
        b.sending.entry(chunk).or_default().push(asker);
        Decision::Send(Sending {
            seeding: self,
            chunk,
            to: asker,
        })
    }
}

/// A send under way, from [`Seeding::decide`]: dropped when the send ends, delivered or not.
#[must_use = "the send counts as under way until this is dropped"]
pub struct Sending<'a> {
    seeding: &'a Seeding,
    chunk: ChunkHash,
    to: NodeId,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let mut b = lock(&self.seeding.book);
        if let Some(to) = b.sending.get_mut(&self.chunk) {
            if let Some(i) = to.iter().position(|n| *n == self.to) {
                to.swap_remove(i);
            }
            if to.is_empty() {
                b.sending.remove(&self.chunk);
            }
        }
    }
}

impl std::fmt::Debug for Sending<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sending({} to {})", self.chunk, self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn sends(d: &Decision) -> bool {
        matches!(d, Decision::Send(_))
    }

    fn pointed(d: &Decision) -> Option<NodeId> {
        match d {
            Decision::Elsewhere(to) => Some(*to),
            Decision::Send(_) => None,
        }
    }

    const ALIVE: fn(&NodeId) -> bool = |_| true;

    #[test]
    fn a_chunk_goes_out_once_while_its_recipient_passes_it_on() {
        let s = Seeding::default();
        let c = ChunkHash::of(b"chunk");
        let t = Instant::now();
        // Each send below ends (its `Sending` dropped) before the next request.
        assert!(sends(&s.decide(c, node(1), t, false, false, ALIVE)));
        assert_eq!(
            pointed(&s.decide(c, node(2), t, false, false, ALIVE)),
            Some(node(1))
        );
        assert_eq!(
            pointed(&s.decide(c, node(3), t, false, false, ALIVE)),
            Some(node(1))
        );
        // Asking again soon: still elsewhere.
        let soon = t + Duration::from_millis(500);
        assert_eq!(
            pointed(&s.decide(c, node(2), soon, false, false, ALIVE)),
            Some(node(1))
        );
        // Still asking after the longest deferral (the first recipient never passed it on):
        // served.
        let later = t + MAX_DEFERRAL;
        assert!(sends(&s.decide(c, node(2), later, false, false, ALIVE)));
        // Asking again for a chunk it was sent itself (it lost it): served.
        assert!(sends(&s.decide(c, node(2), later, false, false, ALIVE)));
    }

    #[test]
    fn an_insisting_asker_is_served_once_the_first_copy_arrived() {
        let s = Seeding::default();
        let c = ChunkHash::of(b"chunk");
        let t = Instant::now();
        assert!(sends(&s.decide(c, node(1), t, false, false, ALIVE)));
        assert!(sends(&s.decide(c, node(2), t, false, true, ALIVE)));
    }

    #[test]
    fn a_busy_holder_never_sends_a_chunk_twice_at_once() {
        let s = Seeding::default();
        let c = ChunkHash::of(b"chunk");
        let t = Instant::now();
        let first = s.decide(c, node(1), t, false, false, ALIVE);
        assert!(sends(&first));
        // Insisting does not help while the first copy is on its way...
        assert_eq!(
            s.would_defer(c, node(2), t, false, true, ALIVE),
            Some(node(1))
        );
        assert_eq!(
            pointed(&s.decide(c, node(2), t, false, true, ALIVE)),
            Some(node(1))
        );
        // ...nor does a deferral running out.
        let later = t + MAX_DEFERRAL * 2;
        assert_eq!(
            pointed(&s.decide(c, node(3), t, false, false, ALIVE)),
            Some(node(1))
        );
        assert_eq!(
            pointed(&s.decide(c, node(3), later, false, false, ALIVE)),
            Some(node(1))
        );
        // The recipient itself asking again (it gave the transfer up) is served.
        assert!(sends(&s.decide(c, node(1), t, false, false, ALIVE)));
        // Once the first copy arrived, the insisting asker is served.
        drop(first);
        assert_eq!(s.would_defer(c, node(2), later, false, true, ALIVE), None);
        assert!(sends(&s.decide(c, node(2), later, false, true, ALIVE)));
    }

    #[test]
    fn the_same_chunk_to_the_same_peer_twice_at_once_is_counted_twice() {
        let s = Seeding::default();
        let c = ChunkHash::of(b"chunk");
        let t = Instant::now();
        let a = s.decide(c, node(1), t, false, false, ALIVE);
        let b = s.decide(c, node(1), t, false, false, ALIVE);
        assert!(sends(&a) && sends(&b));
        drop(a);
        // One of the two is still under way.
        assert_eq!(
            pointed(&s.decide(c, node(2), t, false, true, ALIVE)),
            Some(node(1))
        );
        drop(b);
        assert!(sends(&s.decide(c, node(2), t, false, true, ALIVE)));
    }

    #[test]
    fn an_idle_holder_sends_a_second_copy_at_once() {
        let s = Seeding::default();
        let c = ChunkHash::of(b"chunk");
        let t = Instant::now();
        let first = s.decide(c, node(1), t, false, false, ALIVE);
        assert!(sends(&first));
        // Even while the first copy is on its way.
        assert_eq!(s.would_defer(c, node(2), t, true, false, ALIVE), None);
        assert!(sends(&s.decide(c, node(2), t, true, false, ALIVE)));
        drop(first);
        // Busy again: the chunk is being passed on by its latest recipient.
        assert_eq!(
            s.would_defer(c, node(3), t, false, false, ALIVE),
            Some(node(2))
        );
        assert_eq!(
            pointed(&s.decide(c, node(3), t, false, false, ALIVE)),
            Some(node(2))
        );
    }

    #[test]
    fn a_chunk_whose_recipient_died_is_sent_again_at_once() {
        let s = Seeding::default();
        let c = ChunkHash::of(b"chunk");
        let t = Instant::now();
        let first = s.decide(c, node(1), t, false, false, ALIVE);
        assert!(sends(&first));
        // Dead while its copy was on the way: nothing to wait for, insisting or not.
        let dead = |n: &NodeId| *n != node(1);
        assert!(sends(&s.decide(c, node(3), t, false, false, dead)));
        assert!(sends(&s.decide(c, node(2), t, false, true, dead)));
    }

    #[test]
    fn after_a_while_the_chunk_is_sent_again() {
        let s = Seeding::default();
        let c = ChunkHash::of(b"chunk");
        let t = Instant::now();
        assert!(sends(&s.decide(c, node(1), t, false, false, ALIVE)));
        assert!(sends(&s.decide(
            c,
            node(2),
            t + PASSING_ON,
            false,
            false,
            ALIVE
        )));
    }

    #[test]
    fn different_chunks_do_not_interfere() {
        let s = Seeding::default();
        let t = Instant::now();
        let under_way: Vec<Decision> = (0..100u32)
            .map(|i| {
                let c = ChunkHash::of(&i.to_le_bytes());
                s.decide(c, node((i % 7) as u8), t, false, false, ALIVE)
            })
            .collect();
        assert!(under_way.iter().all(sends));
    }
}
