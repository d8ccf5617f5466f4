//! Whether a node has caught up with the swarm since it started: until it has, it does not
//! know every bucket and object the others hold, so it must not decide what depends on that
//! (a bucket name being free, a key having no object). Pure: the sync loop reports each
//! round's outcome, the gateway asks.

/// A node's readiness, decided from its sync rounds.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// It must meet a peer before it can be ready: it was given peers to join through, or its
    /// journal holds other nodes' writes (it has been part of a swarm).
    needs_peer: bool,
    ready: bool,
}

/// Why a node is not ready (shown to clients and operators).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// No member has been reachable since start.
    NoPeer,
    /// Members are reachable but this node has not pulled all they hold.
    CatchingUp,
}

impl NotReady {
    pub fn reason(&self) -> &'static str {
        match self {
            NotReady::NoPeer => "this node has not reached any swarm member since it started",
            NotReady::CatchingUp => {
                "this node has not caught up with the namespace the swarm members hold"
            }
        }
    }
}

impl Readiness {
    pub fn new(needs_peer: bool) -> Self {
        Self {
            needs_peer,
            ready: false,
        }
    }

    /// One sync round: `alive` peers, `pulled` of them answered, `backlog` entries they hold
    /// that this node has not recorded. Once ready, a node stays ready: a later partition is
    /// the merge rule's business, not a reason to stop serving.
    pub fn round(&mut self, alive: usize, pulled: usize, backlog: u64) {
        if self.ready {
            return;
        }
        self.ready = if alive == 0 {
            !self.needs_peer
        } else {
            pulled == alive && backlog == 0
        };
    }

    pub fn check(&self, alive: usize) -> Result<(), NotReady> {
        match (self.ready, alive) {
            (true, _) => Ok(()),
            (false, 0) if self.needs_peer => Err(NotReady::NoPeer),
            (false, _) => Err(NotReady::CatchingUp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_first_node_is_ready_after_its_first_round() {
        let mut r = Readiness::new(false);
        assert_eq!(r.check(0), Err(NotReady::CatchingUp));
        r.round(0, 0, 0);
        assert_eq!(r.check(0), Ok(()));
    }

    #[test]
    fn a_joining_node_waits_for_a_peer_and_a_full_catch_up() {
        let mut r = Readiness::new(true);
        r.round(0, 0, 0);
        assert_eq!(r.check(0), Err(NotReady::NoPeer));
        r.round(2, 1, 0);
        assert_eq!(
            r.check(2),
            Err(NotReady::CatchingUp),
            "one peer did not answer"
        );
        r.round(2, 2, 5);
        assert_eq!(
            r.check(2),
            Err(NotReady::CatchingUp),
            "entries still to pull"
        );
        r.round(2, 2, 0);
        assert_eq!(r.check(2), Ok(()));
        r.round(2, 0, 9);
        assert_eq!(r.check(0), Ok(()), "ready stays ready");
    }
}
