//! Which chunk to request from which peer next, for one download (BitTorrent's piece
//! picking): rarest first among the peers that have it, at most `per_peer` requests in flight
//! per peer, never the same chunk twice until only in-flight chunks remain (the endgame),
//! when a straggler's chunks are also asked of other peers.

use std::collections::{BTreeMap, BTreeSet};

use crate::node::NodeId;

/// How many peers one piece is asked of at most, in the endgame.
const ENDGAME_COPIES: usize = 2;

/// A chunk of the download, by index in its manifest.
pub type Piece = usize;

/// One request to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub piece: Piece,
    pub peer: NodeId,
}

/// The state of one download.
#[derive(Debug)]
pub struct Scheduler {
    missing: BTreeSet<Piece>,
    /// Who has which piece, as peers announce it.
    have: BTreeMap<NodeId, BTreeSet<Piece>>,
    /// The same, by piece: a piece's rarity and its candidate peers without walking every
    /// peer's set (walking them on every request round was 7 % of a 16-reader swarm's CPU,
    /// 256 MiB at 50 Mbit/s).
    holders_of: Vec<Vec<NodeId>>,
    /// Peers that held every piece they were last asked about (the original holder, readers
    /// that are done).
    complete: BTreeSet<NodeId>,
    /// Peers not asked for anything for now (their upload queue was full).
    paused: BTreeSet<NodeId>,
    /// Requests sent and not answered, per piece.
    in_flight: BTreeMap<Piece, BTreeSet<NodeId>>,
    /// Pieces whose bytes arrived and verified, being stored (and from whom): asked of no
    /// one, but no longer holding a request slot of their peer (storing ends in an fsync:
    /// see [`Scheduler::arrived`]).
    storing: BTreeMap<Piece, NodeId>,
    per_peer: usize,
    /// Only the first `window` missing pieces are requested (a streaming read needs its
    /// next bytes soon; rarest-first applies inside the window).
    window: usize,
    /// Breaks ties between equally rare pieces: nodes downloading the same object at once
    /// start on different pieces, so they have something to trade (BitTorrent's random
    /// first pieces).
    tie_break: u64,
}

impl Scheduler {
    /// A download of `pieces` chunks, none of them held yet.
    pub fn new(pieces: usize, per_peer: usize) -> Self {
        Self {
            missing: (0..pieces).collect(),
            have: BTreeMap::new(),
            holders_of: vec![Vec::new(); pieces],
            complete: BTreeSet::new(),
            paused: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            storing: BTreeMap::new(),
            per_peer: per_peer.max(1),
            window: usize::MAX,
            tie_break: 0,
        }
    }

    /// Orders equally rare pieces by `seed` (a per-node value) instead of by position.
    pub fn tie_break(mut self, seed: u64) -> Self {
        self.tie_break = seed;
        self
    }

    fn tie(&self, piece: Piece) -> u64 {
        if self.tie_break == 0 {
            return piece as u64;
        }
        // A cheap mix (splitmix64) of seed and piece.
        let mut z = self.tie_break ^ (piece as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Requests only among the first `window` missing pieces (at least one).
    pub fn windowed(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// A piece that is already held: not wanted.
    pub fn have(&mut self, piece: Piece) {
        self.missing.remove(&piece);
        self.in_flight.remove(&piece);
        self.storing.remove(&piece);
    }

    /// The pieces requests are chosen among now (the window), in order.
    pub fn window_pieces(&self) -> Vec<Piece> {
        self.next_missing(self.window)
    }

    /// How many pieces the window holds now (without listing them).
    pub fn window_len(&self) -> usize {
        self.window.min(self.missing.len())
    }

    /// The first `n` missing pieces, in order: what a holdings poll asks about.
    pub fn next_missing(&self, n: usize) -> Vec<Piece> {
        self.missing.iter().take(n).copied().collect()
    }

    /// How many missing pieces come at or before `piece`.
    pub fn missing_through(&self, piece: Piece) -> usize {
        self.missing.range(..=piece).count()
    }

    /// How many known peers hold `piece`.
    pub fn holders(&self, piece: Piece) -> usize {
        self.holders_of.get(piece).map_or(0, Vec::len)
    }

    /// Requests sent and not yet answered, and pieces being stored.
    pub fn in_flight(&self) -> usize {
        self.in_flight.values().map(|p| p.len()).sum::<usize>() + self.storing.len()
    }

    /// Whether `piece` is still wanted: missing, and not already arrived and being stored.
    pub fn wants(&self, piece: Piece) -> bool {
        self.missing.contains(&piece) && !self.storing.contains_key(&piece)
    }

    /// A peer announced that it has `pieces` (any beyond the download's are ignored).
    pub fn peer_has(&mut self, peer: NodeId, pieces: impl IntoIterator<Item = Piece>) {
        let known = self.have.entry(peer).or_default();
        for piece in pieces {
            if let Some(holders) = self.holders_of.get_mut(piece)
                && known.insert(piece)
            {
                holders.push(peer);
            }
        }
    }

    /// Forgets that `peer` has `piece`.
    fn forget(&mut self, peer: NodeId, piece: Piece) {
        if let Some(holders) = self.holders_of.get_mut(piece) {
            holders.retain(|h| *h != peer);
        }
    }

    /// Whether `peer` held everything it was last asked about.
    pub fn peer_complete(&mut self, peer: NodeId, complete: bool) {
        if complete {
            self.complete.insert(peer);
        } else {
            self.complete.remove(&peer);
        }
    }

    /// Asks nothing of `peer` until [`Scheduler::resume`] (it said it is busy); what it holds
    /// is still known.
    pub fn pause(&mut self, peer: NodeId) {
        self.paused.insert(peer);
    }

    pub fn resume(&mut self, peer: NodeId) {
        self.paused.remove(&peer);
    }

    /// A peer left or was dropped (say, for sending a chunk that failed verification): its
    /// requests are forgotten so their pieces can be asked of others.
    pub fn peer_gone(&mut self, peer: NodeId) {
        for piece in self.have.remove(&peer).unwrap_or_default() {
            self.forget(peer, piece);
        }
        self.complete.remove(&peer);
        for peers in self.in_flight.values_mut() {
            peers.remove(&peer);
        }
        self.in_flight.retain(|_, p| !p.is_empty());
    }

    /// A piece's bytes arrived from `from` and verified; it is being stored. It is asked of
    /// no one any more, and its request no longer counts against `from`'s slots: the next
    /// request goes out while this one is written. (Held until stored, a request also waited
    /// out the store's fsync, 2.9 ms a chunk on average on the test machine, while the link
    /// could carry the next chunk.) Returns the other peers it was also requested from
    /// (endgame), whose requests can be cancelled. Then [`Scheduler::received`] once stored,
    /// or [`Scheduler::failed`].
    pub fn arrived(&mut self, piece: Piece, from: NodeId) -> Vec<NodeId> {
        self.storing.insert(piece, from);
        self.settle(piece, from)
    }

    /// A piece arrived and verified (and, if it was [`Scheduler::arrived`], is stored): no
    /// longer wanted. Returns the other peers it was also requested from (endgame), whose
    /// requests can be cancelled.
    pub fn received(&mut self, piece: Piece, from: NodeId) -> Vec<NodeId> {
        self.missing.remove(&piece);
        self.storing.remove(&piece);
        self.settle(piece, from)
    }

    /// Ends every request for `piece`; returns the peers other than `from` it was asked of.
    fn settle(&mut self, piece: Piece, from: NodeId) -> Vec<NodeId> {
        let mut others: Vec<NodeId> = self
            .in_flight
            .remove(&piece)
            .into_iter()
            .flatten()
            .collect();
        others.retain(|p| *p != from);
        others
    }

    /// `peer` will not send `piece` now (it pointed us to whoever it just sent it to): the
    /// piece is wanted from someone else, and from this peer again only once a poll says it
    /// holds it.
    pub fn not_from(&mut self, piece: Piece, peer: NodeId) {
        self.failed(piece, peer);
        if self.have.get_mut(&peer).is_some_and(|h| h.remove(&piece)) {
            self.forget(peer, piece);
        }
    }

    /// A request failed (timeout, bad bytes), or the piece it fetched could not be stored:
    /// the piece is wanted again.
    pub fn failed(&mut self, piece: Piece, peer: NodeId) {
        if self.storing.get(&piece) == Some(&peer) {
            self.storing.remove(&piece);
        }
        if let Some(p) = self.in_flight.get_mut(&piece) {
            p.remove(&peer);
            if p.is_empty() {
                self.in_flight.remove(&piece);
            }
        }
    }

    /// Pieces still missing.
    pub fn remaining(&self) -> usize {
        self.missing.len()
    }

    pub fn done(&self) -> bool {
        self.missing.is_empty()
    }

    #[cfg(test)]
    fn load(&self, peer: &NodeId) -> usize {
        self.in_flight.values().filter(|p| p.contains(peer)).count()
    }

    /// The requests to send now.
    pub fn requests(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        // Requests in flight per peer, counted once per call (this runs on every event of a
        // download; counting per candidate was a tenth of a 16-reader swarm's CPU).
        let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
        for peers in self.in_flight.values() {
            for p in peers {
                *load.entry(*p).or_default() += 1;
            }
        }
        let has_room = |load: &BTreeMap<NodeId, usize>, p: &NodeId| {
            load.get(p).copied().unwrap_or(0) < self.per_peer
        };
        // Free request slots among the peers that may be asked: the rounds below stop when
        // they are taken.
        let mut room: usize = self
            .have
            .keys()
            .filter(|p| !self.paused.contains(p))
            .map(|p| {
                self.per_peer
                    .saturating_sub(load.get(p).copied().unwrap_or(0))
            })
            .sum();
        if room == 0 {
            return out;
        }
        let endgame = self
            .missing
            .iter()
            .all(|p| self.in_flight.contains_key(p) || self.storing.contains_key(p));
        // Rarity of each wanted piece among the peers that have it.
        // The window counts pieces some peer has: one nobody has must not stall the rest.
        let mut wanted: Vec<(usize, Piece)> = self
            .missing
            .iter()
            .map(|p| (self.holders(*p), *p))
            .filter(|(n, _)| *n > 0)
            .take(self.window)
            // In the endgame a piece is asked of one more peer, not of every holder: each
            // extra copy is a holder's upload spent twice (measured: at 16 readers, endgame
            // duplicates from every holder had readers upload four times what they received).
            .filter(|(_, p)| {
                let asked = self.in_flight.get(p).map_or(0, BTreeSet::len);
                !self.storing.contains_key(p) && (asked == 0 || (endgame && asked < ENDGAME_COPIES))
            })
            .collect();
        // The piece the reader needs next goes first whatever its rarity (a streaming read
        // waits on it); rarest first for the rest of the window.
        let head = self.missing.first().copied();
        wanted.sort_unstable_by_key(|(rarity, piece)| {
            (Some(*piece) != head, *rarity, self.tie(*piece))
        });
        for (_, piece) in wanted {
            // Of the peers that have it, have a free slot, are not paused and are not already
            // asked for it: the least loaded, fellow downloaders before complete holders on a
            // tie. (Complete holders used to come last whatever their load; with the original
            // protected by seeding, that only left finished readers idle at the tail.)
            let asked = self.in_flight.get(&piece);
            let peer = self
                .holders_of
                .get(piece)
                .into_iter()
                .flatten()
                .filter(|peer| {
                    !self.paused.contains(peer)
                        && !asked.is_some_and(|f| f.contains(peer))
                        && has_room(&load, peer)
                })
                .map(|peer| {
                    let n = load.get(peer).copied().unwrap_or(0);
                    (n, self.complete.contains(peer), *peer)
                })
                .min();
            if let Some((_, _, peer)) = peer {
                *load.entry(peer).or_default() += 1;
                self.in_flight.entry(piece).or_default().insert(peer);
                out.push(Request { piece, peer });
                room -= 1;
                if room == 0 {
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    #[test]
    fn rarest_pieces_go_first() {
        let mut s = Scheduler::new(3, 4);
        s.peer_has(node(1), [0, 1, 2]);
        s.peer_has(node(2), [0, 1]);
        s.peer_has(node(3), [0]);
        let first = s.requests();
        // Piece 0 is what a streaming reader needs next: it goes first whatever its rarity.
        assert_eq!(first[0].piece, 0, "the head of the read");
        assert_eq!(first[1].piece, 2, "held by one peer only");
        assert_eq!(first[1].peer, node(1));
    }

    #[test]
    fn a_busy_peer_is_left_alone_until_resumed() {
        let mut s = Scheduler::new(2, 4);
        s.peer_has(node(1), [0, 1]);
        s.peer_has(node(2), [1]);
        s.pause(node(1));
        assert_eq!(
            s.requests(),
            vec![Request {
                piece: 1,
                peer: node(2)
            }]
        );
        assert!(
            s.requests().is_empty(),
            "piece 0 is held only by the paused peer"
        );
        s.resume(node(1));
        assert_eq!(
            s.requests(),
            vec![Request {
                piece: 0,
                peer: node(1)
            }]
        );
    }

    #[test]
    fn fellow_downloaders_are_asked_before_the_original_holder() {
        let mut s = Scheduler::new(2, 4);
        s.have(1);
        s.peer_has(node(1), [0, 1]); // the seed: holds everything
        s.peer_complete(node(1), true);
        s.peer_has(node(2), [0]); // another reader, part-way through
        let r = s.requests();
        assert_eq!(
            r,
            vec![Request {
                piece: 0,
                peer: node(2)
            }]
        );
    }

    #[test]
    fn the_endgame_asks_a_second_peer_and_cancels_the_loser() {
        let mut s = Scheduler::new(1, 4);
        s.peer_has(node(1), [0]);
        let a = s.requests();
        assert_eq!(a.len(), 1);
        s.peer_has(node(2), [0]);
        let b = s.requests();
        assert_eq!(
            b,
            vec![Request {
                piece: 0,
                peer: node(2)
            }],
            "endgame duplicate"
        );
        assert_eq!(s.received(0, node(2)), vec![node(1)]);
        assert!(s.done());
    }

    #[test]
    fn a_piece_being_stored_frees_its_peer_and_is_asked_of_no_one() {
        let mut s = Scheduler::new(3, 1);
        s.peer_has(node(1), [0, 1, 2]);
        let first = s.requests();
        assert_eq!(first.len(), 1, "one request per peer");
        let p = first[0].piece;
        assert!(s.arrived(p, node(1)).is_empty());
        assert!(!s.wants(p));
        // The peer's slot is free while the piece is written, and the piece is not asked
        // again, not even as an endgame duplicate.
        let second = s.requests();
        assert_eq!(second.len(), 1);
        assert_ne!(second[0].piece, p);
        s.peer_has(node(2), [0, 1, 2]);
        let third = s.requests();
        assert_eq!(third.len(), 1);
        assert_ne!(third[0].piece, p);
        assert_eq!(s.in_flight(), 3, "two requests and one piece being stored");
        s.received(third[0].piece, node(2));
        // Storing failed: wanted again.
        s.failed(p, node(1));
        assert!(s.wants(p));
        assert!(s.requests().iter().any(|r| r.piece == p));
        s.arrived(p, node(1));
        s.received(p, node(1));
        assert!(!s.wants(p));
        assert_eq!(s.remaining(), 1);
    }

    #[test]
    fn a_dropped_peer_s_pieces_are_asked_elsewhere() {
        let mut s = Scheduler::new(2, 4);
        s.peer_has(node(1), [0, 1]);
        s.peer_has(node(2), [0, 1]);
        let sent = s.requests();
        assert_eq!(sent.len(), 2);
        let bad = sent[0].peer;
        s.peer_gone(bad);
        let again = s.requests();
        assert!(again.iter().all(|r| r.peer != bad));
    }

    proptest! {
        /// The by-piece index agrees with what each peer is known to have, whatever the
        /// order of announcements, deferrals and departures (pieces out of range ignored).
        #[test]
        fn holder_index_matches_the_peers_holdings(
            ops in proptest::collection::vec((0u8..3, 0u8..5, 0usize..24), 0..200),
        ) {
            let mut s = Scheduler::new(20, 2);
            for (op, peer, piece) in ops {
                match op {
                    0 => s.peer_has(node(peer), [piece, (piece * 7) % 23]),
                    1 => s.not_from(piece, node(peer)),
                    _ => s.peer_gone(node(peer)),
                }
                for p in 0..24 {
                    let mut expected: Vec<NodeId> = s
                        .have
                        .iter()
                        .filter(|(_, h)| h.contains(&p))
                        .map(|(n, _)| *n)
                        .collect();
                    prop_assert_eq!(s.holders(p), expected.len());
                    if let Some(index) = s.holders_of.get(p) {
                        let mut index = index.clone();
                        index.sort();
                        expected.sort();
                        prop_assert_eq!(index, expected);
                    } else {
                        prop_assert!(expected.is_empty(), "piece {} is out of range", p);
                    }
                }
            }
        }

        /// Outside the endgame no piece is ever in flight at two peers, no peer carries
        /// more than `per_peer` requests, and the download finishes when peers answer.
        #[test]
        fn no_duplicates_outside_endgame(
            pieces in 1usize..40,
            holdings in proptest::collection::vec(proptest::collection::btree_set(0usize..40, 0..40), 1..6),
            per_peer in 1usize..5,
            window in 1usize..50,
            answer_order in proptest::collection::vec(any::<u16>(), 0..400),
        ) {
            let mut s = Scheduler::new(pieces, per_peer).windowed(window);
            let mut everyone_has = BTreeSet::new();
            for (i, h) in holdings.iter().enumerate() {
                let h: Vec<usize> = h.iter().copied().filter(|p| *p < pieces).collect();
                everyone_has.extend(h.iter().copied());
                s.peer_has(node(i as u8), h);
            }
            let mut outstanding: Vec<Request> = Vec::new();
            let mut storing: Vec<Request> = Vec::new();
            let mut failed_once = BTreeSet::new();
            let mut order = answer_order.into_iter();
            for _ in 0..10_000 {
                let endgame_before = s.missing.iter().all(|p| s.in_flight.contains_key(p) || s.storing.contains_key(p));
                let in_flight_before: BTreeSet<Piece> =
                    s.in_flight.keys().chain(s.storing.keys()).copied().collect();
                let win: BTreeSet<Piece> = s.missing.iter().copied()
                    .filter(|p| s.have.values().any(|h| h.contains(p))).take(window).collect();
                let sent = s.requests();
                if !endgame_before {
                    let mut seen = BTreeSet::new();
                    for r in &sent {
                        prop_assert!(seen.insert(r.piece), "piece {} requested twice in one round", r.piece);
                        prop_assert!(!in_flight_before.contains(&r.piece), "piece {} already in flight", r.piece);
                    }
                }
                for r in &sent {
                    prop_assert!(s.load(&r.peer) <= per_peer);
                    prop_assert!(win.contains(&r.piece), "piece {} outside the window", r.piece);
                }
                outstanding.extend(sent);
                if outstanding.is_empty() && storing.is_empty() {
                    break;
                }
                if outstanding.is_empty() {
                    let st = storing.remove(0);
                    s.received(st.piece, st.peer);
                    continue;
                }
                let i = order.next().map_or(0, |x| x as usize % outstanding.len());
                let r = outstanding.swap_remove(i);
                if s.wants(r.piece) {
                    // Arrives, and is stored (or its store fails) now or a few answers later.
                    let cancelled = s.arrived(r.piece, r.peer);
                    outstanding.retain(|o| !(o.piece == r.piece && cancelled.contains(&o.peer)));
                    storing.push(r);
                }
                outstanding.retain(|o| s.wants(o.piece));
                if storing.len() > 2 || (outstanding.is_empty() && !storing.is_empty()) {
                    let st = storing.remove(0);
                    if st.piece % 7 == 3 && failed_once.insert(st.piece) {
                        s.failed(st.piece, st.peer);
                    } else {
                        s.received(st.piece, st.peer);
                    }
                }
            }
            // Everything some peer has is fetched; what nobody has stays missing.
            for p in 0..pieces {
                prop_assert_eq!(s.missing.contains(&p), !everyone_has.contains(&p));
            }
        }
    }
}
