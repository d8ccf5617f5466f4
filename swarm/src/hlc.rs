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
            std::sync::Arc::new(move || me.now())
        })
    }

    fn wall_ms() -> u64 {
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
