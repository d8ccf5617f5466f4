//! How many peers' connections a node takes on. A connection costs a task, quinn's state and
//! up to its receive window of buffered bytes, and anyone on the network can open one: those
//! still proving the cluster secret are capped apart from (and far below) those that proved
//! it, so a flood of strangers cannot crowd out members, and a member holding the secret that
//! turns hostile cannot open connections without end.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections at most still proving the secret (each gets `HELLO_TIMEOUT` to do it). Honest
/// peers prove it within a round trip; 64 at once is a swarm of thousands restarting together.
pub const MAX_HANDSHAKES: usize = 64;

/// The two caps.
pub struct Admission {
    handshakes: Arc<Semaphore>,
    connections: Arc<Semaphore>,
}

/// Why a connection was turned away, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// [`MAX_HANDSHAKES`] connections were already proving the secret.
    Handshakes,
    /// The node had as many proved connections as it accepts.
    Busy,
}

impl Refusal {
    /// Every reason, in the order [`crate::SwarmStats::connections_refused`] counts them.
    pub const ALL: [Refusal; 2] = [Refusal::Handshakes, Refusal::Busy];

    /// Where [`crate::SwarmStats::connections_refused`] counts this reason.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Handshakes => "handshakes",
            Refusal::Busy => "busy",
        }
    }
}

impl Admission {
    pub fn new(max_connections: usize) -> Self {
        Self {
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            connections: Arc::new(Semaphore::new(max_connections.max(1))),
        }
    }

    /// Room for one more connection to prove the secret, held until it has (or has failed).
    pub fn handshake(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.handshakes
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Handshakes)
    }

    /// Room for one more proved connection, held while it is served.
    pub fn connection(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cap_counts_what_is_held_and_frees_on_drop() {
        let a = Admission::new(2);
        let held: Vec<_> = (0..MAX_HANDSHAKES)
            .map(|_| a.handshake().unwrap())
            .collect();
        assert_eq!(a.handshake().unwrap_err(), Refusal::Handshakes);
        drop(held);
        assert!(a.handshake().is_ok());
        let (x, _y) = (a.connection().unwrap(), a.connection().unwrap());
        assert_eq!(a.connection().unwrap_err(), Refusal::Busy);
        drop(x);
        assert!(a.connection().is_ok());
    }
}
