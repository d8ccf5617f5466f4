//! `swarm`: how s3swarm nodes agree on names and share chunks.
//!
//! A deterministic, I/O-free core (see `../shared/ARCHITECTURE.md`), each part taking time
//! and messages as inputs and returning decisions, so it can be tested exhaustively:
//!
//! - [`hlc`]: hybrid logical clocks, the order of namespace writes across nodes.
//! - [`membership`]: which nodes are in the swarm and in what state.
//! - [`placement`]: which k nodes hold a chunk (rendezvous hashing over the members).
//! - [`readiness`]: whether a node has caught up with the swarm since it started.
//! - [`registry`]: the decisions made once for the whole swarm (bucket names, conditional
//!   writes) by a Raft group (openraft) of a few voters.
//! - [`repair`]: which copies re-make chunks whose holders left.
//! - [`scheduler`]: which chunk to ask which peer for next (rarest first, window, endgame).
//!
//! and the network layer that drives it on one node ([`Swarm`]):
//!
//! - [`admission`]: how many peers' connections a node takes on.
//! - [`bootstrap`]: the addresses a node joins through (names resolved on every attempt).
//! - [`auth`]: the cluster secret, proven on each QUIC connection and bound to its TLS session.
//! - [`wire`]: the messages on QUIC streams.
//! - [`socket`]: the UDP socket under QUIC (LAN-sized buffers, send batches the kernel takes).
//! - `transport`: the quinn endpoint, connections, requests.
//! - `gossip`: foca (SWIM) membership and failure detection over those connections.
//! - `sync`: namespace anti-entropy (pulling journal entries from peers; the merge rule they
//!   are applied by is `store::merge`, the one production and its tests use).
//! - [`transfer`]: multi-source, verified chunk downloads.
//! - [`announce`]: telling downloading peers which chunks this node has just stored.
//! - [`seeding`]: sending each chunk once while its recipients pass it on.
//! - `keeper`: placement, repair and eviction.

pub mod admission;
pub mod announce;
pub mod auth;
pub mod bootstrap;
pub mod error;
mod gossip;
pub mod hlc;
mod keeper;
pub mod member;
pub mod membership;
pub mod node;
pub mod placement;
pub mod readiness;
pub mod registry;
pub mod repair;
mod runtime;
pub mod scheduler;
pub mod seeding;
pub mod socket;
mod sync;
pub mod transfer;
mod transport;
pub mod wire;

pub use auth::ClusterSecret;
pub use bootstrap::PeerAddr;
pub use error::SwarmError;
pub use hlc::{Clock, Hlc, SharedClock};
pub use membership::{Membership, Report, State};
pub use node::NodeId;
pub use placement::holders;
pub use readiness::NotReady;
pub use runtime::{
    ClusterStatus, Hooks, MemberStatus, Observer, PeerClass, Service, Swarm, SwarmConfig,
    SwarmStats,
};
pub use scheduler::{Request, Scheduler};
