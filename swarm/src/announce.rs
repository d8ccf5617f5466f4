//! Have-announcements: a node that has just stored chunks tells the peers that are
//! downloading (those that asked it what it holds lately), so their schedulers can ask it for
//! those chunks at once instead of learning at their next poll. This is what lets pieces
//! spread between downloaders while the original holder still has most of them: without it,
//! every reader keeps asking the origin.
//!
//! Announcements are batched (a few milliseconds' worth per notice) and best-effort: a lost
//! one only costs the periodic holdings poll that downloads keep as a fallback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::ChunkHash;
use tokio::sync::broadcast;

use crate::node::NodeId;
use crate::runtime::{Inner, lock};
use crate::wire::Notice;

/// Chunks stored within this long go out in one notice.
const BATCH: Duration = Duration::from_millis(10);
/// A peer that asked what we hold this recently is downloading and wants to hear.
const INTEREST: Duration = Duration::from_secs(10);
/// Chunks per notice at most (32 bytes each).
const MAX_PER_NOTICE: usize = 1024;

/// Chunks a peer announced it now holds.
#[derive(Clone, Debug)]
pub struct Heard {
    pub peer: NodeId,
    pub chunks: Arc<[ChunkHash]>,
}

/// The announcement state of one node.
pub struct Announcer {
    fresh: std::sync::Mutex<Vec<ChunkHash>>,
    wake: tokio::sync::Notify,
    interested: std::sync::Mutex<HashMap<NodeId, Instant>>,
    heard: broadcast::Sender<Heard>,
}

impl Default for Announcer {
    fn default() -> Self {
        Self {
            fresh: std::sync::Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            interested: std::sync::Mutex::new(HashMap::new()),
            // Downloads that fall this far behind skip ahead (and poll instead).
            heard: broadcast::channel(1024).0,
        }
    }
}

impl Announcer {
    /// This node has just stored `hash`.
    pub fn stored(&self, hash: ChunkHash) {
        lock(&self.fresh).push(hash);
        self.wake.notify_one();
    }

    /// `peer` asked what we hold: it is downloading.
    pub fn interest(&self, peer: NodeId) {
        lock(&self.interested).insert(peer, Instant::now());
    }

    /// A peer's announcement arrived.
    pub fn heard(&self, peer: NodeId, chunks: Vec<[u8; 32]>) {
        let chunks: Arc<[ChunkHash]> = chunks.into_iter().map(ChunkHash::from_bytes).collect();
        // No download listening is fine: nobody needs it now.
        let _ = self.heard.send(Heard { peer, chunks });
    }

    /// Announcements from now on, for one download.
    pub fn listen(&self) -> broadcast::Receiver<Heard> {
        self.heard.subscribe()
    }
}

impl Inner {
    /// Sends batched announcements for as long as the node runs.
    pub async fn announce_loop(self: Arc<Self>) {
        loop {
            self.announcer.wake.notified().await;
            tokio::time::sleep(BATCH).await;
            let fresh = std::mem::take(&mut *lock(&self.announcer.fresh));
            if fresh.is_empty() {
                continue;
            }
            let now = Instant::now();
            let interested: Vec<NodeId> = {
                let mut m = lock(&self.announcer.interested);
                m.retain(|_, at| now.duration_since(*at) < INTEREST);
                m.keys().copied().collect()
            };
            if interested.is_empty() {
                continue;
            }
            let peers: Vec<_> = self
                .alive_peers()
                .into_iter()
                .filter(|p| interested.contains(&p.id))
                .collect();
            for batch in fresh.chunks(MAX_PER_NOTICE) {
                let hashes: Vec<[u8; 32]> = batch.iter().map(|h| *h.as_bytes()).collect();
                for p in &peers {
                    self.notify(p.addr, Notice::Have(hashes.clone()));
                }
            }
        }
    }
}
