//! A member's identity as the failure detector (foca) knows it: the node id, where it
//! listens, its role, and an incarnation drawn at each start so a restarted node wins over
//! the identity it had before.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::node::NodeId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// The QUIC (swarm) address.
    pub addr: SocketAddr,
    /// The S3 endpoint, for `cluster status`.
    pub http: Option<SocketAddr>,
    /// Holds placed copies (false: a cache-only node with a capacity limit).
    pub storage: bool,
    pub incarnation: u64,
}

impl foca::Identity for Member {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            incarnation: self.incarnation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}
