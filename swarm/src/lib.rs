//! `swarm`: how s3swarm nodes agree on names and share chunks.
//!
//! This crate is the deterministic, I/O-free core the network layer drives (see
//! `../shared/ARCHITECTURE.md`): every type here takes time and messages as inputs and
//! returns decisions, so each can be tested exhaustively without sockets.
//!
//! - [`hlc`]: hybrid logical clocks, the order of namespace writes across nodes.
//! - [`namespace`]: last-writer-wins replication of bucket and object records, with the
//!   per-node write logs peers pull from.
//! - [`membership`]: which nodes are in the swarm and in what state (fed by failure detection).
//! - [`placement`]: which k nodes hold a chunk (rendezvous hashing over the members).
//! - [`repair`]: which copies re-make chunks whose holders left.
//! - [`scheduler`]: which chunk to ask which peer for next (rarest first, endgame).

pub mod hlc;
pub mod membership;
pub mod namespace;
pub mod node;
pub mod placement;
pub mod repair;
pub mod scheduler;

pub use hlc::{Clock, Hlc};
pub use membership::{Membership, Report, State};
pub use namespace::{Namespace, Write, WriteLog};
pub use node::NodeId;
pub use placement::holders;
pub use scheduler::{Request, Scheduler};
