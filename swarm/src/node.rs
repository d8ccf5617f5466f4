//! Node identity (defined in `store`: a node's id lives in its data directory).

pub use store::NodeId;
