//! Hybrid logical clocks (Kulkarni et al.): timestamps that follow wall time closely but never
//! go backwards and always order a write after every write its node has seen, even when node
//! clocks disagree. Namespace writes are ordered by them (last writer wins).

use crate::node::NodeId;

/// One timestamp (defined in `store`, whose journal records them).
pub use store::Hlc;

/// A node's clock. Time is passed in (`now_ms`), never read here.
#[derive(Clone, Debug)]
pub struct Clock {
    node: NodeId,
    last: (u64, u32),
    /// Remote timestamps further ahead of our wall clock than this are refused: one node
    /// with a wild clock must not drag every other node's timestamps into the future.
    max_drift_ms: u64,
    /// Each peer's wall clock as last measured: (its clock minus ours in ms, when measured).
    peers: std::collections::BTreeMap<NodeId, (i64, u64)>,
}

/// Peer clock measurements older than this are not trusted (the peer may be gone).
const PEER_CLOCK_TTL_MS: u64 = 30_000;

/// This node's clock runs ahead of its peers' by more than the allowed drift: its writes
/// would be stamped so far ahead that peers hold them back, so it takes none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockAhead {
    pub ahead_ms: u64,
    pub allowed_ms: u64,
}

impl std::fmt::Display for ClockAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this node's clock is {:.1} s ahead of its swarm peers' (more than the {} s allowed): \
             writes are refused until its time is fixed (NTP)",
            self.ahead_ms as f64 / 1000.0,
            self.allowed_ms / 1000
        )
    }
}

/// A remote timestamp too far ahead of local time.
#[derive(Debug, PartialEq, Eq)]
pub struct TooFarAhead {
    pub remote_ms: u64,
    pub local_ms: u64,
}

impl Clock {
    pub fn new(node: NodeId, max_drift_ms: u64) -> Self {
        Self {
            node,
            last: (0, 0),
            max_drift_ms,
            peers: std::collections::BTreeMap::new(),
        }
    }

    /// Records a measurement of a peer's wall clock: `offset_ms` is its clock minus ours.
    pub fn peer_clock(&mut self, peer: NodeId, offset_ms: i64, now_ms: u64) {
        self.peers.insert(peer, (offset_ms, now_ms));
    }

    /// How far this node's clock runs ahead of the median of its peers' recent measurements,
    /// if that is more than the allowed drift. With no recent measurement, nothing is known
    /// and nothing is refused.
    pub fn ahead_of_peers(&mut self, now_ms: u64) -> Option<ClockAhead> {
        self.peers
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) <= PEER_CLOCK_TTL_MS);
        let mut offsets: Vec<i64> = self.peers.values().map(|(o, _)| *o).collect();
        if offsets.is_empty() {
            return None;
        }
        offsets.sort_unstable();
        let median = offsets[offsets.len() / 2];
        let ahead = u64::try_from(-median).unwrap_or(0);
        (ahead > self.max_drift_ms).then_some(ClockAhead {
            ahead_ms: ahead,
            allowed_ms: self.max_drift_ms,
        })
    }

    /// A stamp for a local write, unless this node's clock runs too far ahead of its peers'.
    pub fn stamp_write(&mut self, now_ms: u64) -> Result<Hlc, ClockAhead> {
        match self.ahead_of_peers(now_ms) {
            Some(a) => Err(a),
            None => Ok(self.now(now_ms)),
        }
    }

    /// A timestamp for a local event at wall time `now_ms`, later than every one before.
    pub fn now(&mut self, now_ms: u64) -> Hlc {
        self.last = if now_ms > self.last.0 {
            (now_ms, 0)
        } else {
            (self.last.0, self.last.1.saturating_add(1))
        };
        self.stamp()
    }

    /// Takes in a timestamp seen in a message, so the next local one orders after it.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), TooFarAhead> {
        if remote.wall_ms > now_ms.saturating_add(self.max_drift_ms) {
            return Err(TooFarAhead {
                remote_ms: remote.wall_ms,
                local_ms: now_ms,
            });
        }
        let wall = self.last.0.max(remote.wall_ms).max(now_ms);
        let logical = if wall == self.last.0 && wall == remote.wall_ms {
            self.last.1.max(remote.logical).saturating_add(1)
        } else if wall == self.last.0 {
            self.last.1.saturating_add(1)
        } else if wall == remote.wall_ms {
            remote.logical.saturating_add(1)
        } else {
            0
        };
        self.last = (wall, logical);
        Ok(())
    }

    fn stamp(&self) -> Hlc {
        Hlc {
            wall_ms: self.last.0,
            logical: self.last.1,
            node: self.node,
        }
    }
}

/// Remote stamps further ahead than this are refused (a node with a wild clock).
pub const MAX_DRIFT_MS: u64 = 60_000;

/// The node's clock as the running process shares it: the store stamps its writes with it,
/// the namespace sync feeds it the stamps it receives. This is where wall time is read.
#[derive(Clone, Default)]
pub struct SharedClock(std::sync::Arc<std::sync::OnceLock<std::sync::Mutex<Clock>>>);

impl SharedClock {
    /// What to give the store (`StoreOptions::clock`): the store passes its node id.
    pub fn for_store(&self) -> std::sync::Arc<dyn Fn(NodeId) -> store::StampSource + Send + Sync> {
        let me = self.clone();
        std::sync::Arc::new(move |node| {
            let _ =
                me.0.set(std::sync::Mutex::new(Clock::new(node, MAX_DRIFT_MS)));
            let me = me.clone();
            std::sync::Arc::new(move || me.stamp_write().map_err(|a| a.to_string()))
        })
    }

    /// Wall time, unix ms: the one place the process reads it for the namespace.
    pub fn wall_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Clock) -> T) -> Option<T> {
        let c = self.0.get()?;
        let mut g = c.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&mut g))
    }

    /// A stamp for a local write.
    pub fn now(&self) -> Hlc {
        let now = Self::wall_ms();
        self.with(|c| c.now(now)).unwrap_or(Hlc {
            wall_ms: now,
            logical: 0,
            node: NodeId([0; 16]),
        })
    }

    /// A stamp for a local write (see [`Clock::stamp_write`]).
    pub fn stamp_write(&self) -> Result<Hlc, ClockAhead> {
        let now = Self::wall_ms();
        self.with(|c| c.stamp_write(now))
            .unwrap_or_else(|| Ok(self.now()))
    }

    /// Records a measurement of a peer's clock: it answered at `their_ms`, between our
    /// `sent_ms` and `received_ms`.
    pub fn peer_clock(&self, peer: NodeId, their_ms: u64, sent_ms: u64, received_ms: u64) {
        let ours = sent_ms / 2 + received_ms / 2;
        let offset =
            i64::try_from(their_ms).unwrap_or(i64::MAX) - i64::try_from(ours).unwrap_or(i64::MAX);
        let now = Self::wall_ms();
        self.with(|c| c.peer_clock(peer, offset, now));
    }

    /// How far ahead of its peers this node's clock runs, beyond the allowed drift.
    pub fn ahead_of_peers(&self) -> Option<ClockAhead> {
        let now = Self::wall_ms();
        self.with(|c| c.ahead_of_peers(now)).flatten()
    }

    /// Takes in a stamp seen from a peer.
    pub fn observe(&self, remote: Hlc) -> Result<(), TooFarAhead> {
        let now = Self::wall_ms();
        self.with(|c| c.observe(remote, now)).unwrap_or(Ok(()))
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
    fn a_clock_that_steps_back_still_moves_forward() {
        let mut c = Clock::new(node(1), 60_000);
        let a = c.now(1_000);
        let b = c.now(900); // NTP stepped the clock back
        let d = c.now(1_000);
        assert!(a < b && b < d);
        assert_eq!(b.wall_ms, 1_000);
    }

    #[test]
    fn a_wild_remote_clock_is_refused() {
        let mut c = Clock::new(node(1), 60_000);
        let far = Hlc {
            wall_ms: 10_000_000,
            logical: 0,
            node: node(2),
        };
        assert!(c.observe(far, 1_000).is_err());
        assert_eq!(
            c.now(1_000).wall_ms,
            1_000,
            "the refused stamp left no trace"
        );
    }

    #[test]
    fn a_node_whose_clock_runs_ahead_of_most_peers_refuses_to_stamp_writes() {
        let mut c = Clock::new(node(1), 60_000);
        assert!(
            c.stamp_write(1_000_000).is_ok(),
            "no peer measured: nothing known"
        );
        // Two of three peers run 2 hours behind us, one agrees with us: we are ahead.
        c.peer_clock(node(2), -7_200_000, 1_000_000);
        c.peer_clock(node(3), -7_200_000, 1_000_000);
        c.peer_clock(node(4), 0, 1_000_000);
        let e = c.stamp_write(1_000_100).unwrap_err();
        assert_eq!(e.ahead_ms, 7_200_000);
        assert!(e.to_string().contains("7200.0 s ahead"), "{e}");
        // One peer ahead or behind by a lot is its problem, not ours.
        let mut d = Clock::new(node(1), 60_000);
        d.peer_clock(node(2), -7_200_000, 0);
        d.peer_clock(node(3), 10, 0);
        d.peer_clock(node(4), -20, 0);
        assert!(d.stamp_write(10).is_ok());
        // Measurements age out: the clock was fixed and the peers are measured again.
        assert!(c.stamp_write(1_000_000 + PEER_CLOCK_TTL_MS + 1).is_ok());
        c.peer_clock(node(2), 30, 2_000_000);
        assert!(c.stamp_write(2_000_000).is_ok());
    }

    proptest! {
        /// Whatever the wall clocks do, a local stamp is later than every stamp this node
        /// made or observed before it.
        #[test]
        fn stamps_follow_everything_seen(
            events in proptest::collection::vec((any::<bool>(), 0u64..5_000, 0u64..5_000, 0u32..3), 1..200)
        ) {
            let mut c = Clock::new(node(1), 10_000);
            let mut seen: Option<Hlc> = None;
            for (local, now, remote_ms, logical) in events {
                if local {
                    let t = c.now(now);
                    if let Some(s) = seen {
                        prop_assert!(t > s, "{t:?} not after {s:?}");
                    }
                    seen = Some(t);
                } else {
                    let r = Hlc { wall_ms: remote_ms, logical, node: node(2) };
                    if c.observe(r, now).is_ok() {
                        let t = c.now(now);
                        prop_assert!(t > r);
                        if let Some(s) = seen {
                            prop_assert!(t > s);
                        }
                        seen = Some(t);
                    }
                }
            }
        }
    }
}
