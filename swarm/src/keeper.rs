//! Durability and capacity, driven from each node's own view: every chunk the namespace
//! references is placed on k storage members by rendezvous hashing; a node fetches the
//! chunks placed on it that it lacks (which is both how a new write reaches its k copies
//! and how copies lost with a departed node are re-made from the survivors), marks the
//! chunks it holds beyond its placement as evictable once their holders have them, and, on
//! a cache-only node, evicts cached chunks beyond its capacity.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use store::ChunkHash;

use crate::error::SwarmError;
use crate::node::NodeId;
use crate::placement::holders;
use crate::repair;
use crate::runtime::{Inner, lock};

/// How often the keeper looks without being woken.
const KEEP_EVERY: Duration = Duration::from_secs(5);
/// Chunks asked about per have-request.
const HAVE_BATCH: usize = 4096;

impl Inner {
    pub async fn keeper_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(KEEP_EVERY) => {}
                _ = self.keeper_wake.notified() => {}
            }
            // Let a burst of changes settle into one pass.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Err(e) = self.keep().await {
                tracing::warn!(error = %e, "placement pass failed");
            }
        }
    }

    async fn keep(self: &Arc<Self>) -> Result<(), SwarmError> {
        let members = {
            let mut m = lock(&self.members).placement();
            m.sort();
            m
        };
        let me = self.me.id;
        let k = self.cfg.replicas;
        let store = self.store.clone();
        let (want, promote, extra) = {
            let members = members.clone();
            tokio::task::spawn_blocking(move || {
                let (mut want, mut promote, mut extra) = (Vec::new(), Vec::new(), Vec::new());
                store.chunk_inventory(|c| {
                    if c.refs == 0 || c.origin_only {
                        // Awaiting collection, or kept by an origin: nobody needs copies of it.
                        return true;
                    }
                    let placed = holders(&c.hash, &members, k);
                    let mine = placed.contains(&me);
                    match (mine, c.held_bytes > 0, c.cached) {
                        (true, false, _) => want.push(c.hash),
                        (true, true, true) => promote.push(c.hash),
                        (false, true, false) => extra.push((c.hash, placed)),
                        _ => {}
                    }
                    true
                })?;
                Ok::<_, SwarmError>((want, promote, extra))
            })
            .await
            .map_err(|e| SwarmError::Protocol(e.to_string()))??
        };
        self.stats
            .replication_backlog
            .store(want.len() as u64, Ordering::Relaxed);
        if !promote.is_empty() {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.set_cached(promote, false))
                .await
                .map_err(|e| SwarmError::Protocol(e.to_string()))??;
        }
        if want.is_empty() {
            // Nothing placed here is missing, so nothing placed here is lost.
            self.stats.chunks_lost.store(0, Ordering::Relaxed);
        } else {
            self.repair(&members, want).await?;
        }
        if self.cfg.capacity.is_some() && !extra.is_empty() {
            self.release_placed(extra).await?;
        }
        if let Some(cap) = self.cfg.capacity {
            let store = self.store.clone();
            let freed = tokio::task::spawn_blocking(move || store.evict_to(cap))
                .await
                .map_err(|e| SwarmError::Protocol(e.to_string()))??;
            if freed > 0 {
                tracing::info!(bytes = freed, "evicted cached chunks");
                self.stats.evicted_bytes.fetch_add(freed, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Fetches the chunks placed here that this node lacks, from whoever holds them.
    async fn repair(
        self: &Arc<Self>,
        members: &[NodeId],
        want: Vec<ChunkHash>,
    ) -> Result<(), SwarmError> {
        let peers = self.alive_peers();
        let mut held: Vec<(ChunkHash, Vec<NodeId>)> =
            want.iter().map(|h| (*h, Vec::new())).collect();
        for batch in held.chunks_mut(HAVE_BATCH) {
            let hashes: Vec<ChunkHash> = batch.iter().map(|(h, _)| *h).collect();
            for p in &peers {
                if let Ok(flags) = self.ask_have(p, &hashes).await {
                    for ((_, who), f) in batch.iter_mut().zip(flags) {
                        if f {
                            who.push(p.id);
                        }
                    }
                }
            }
        }
        let plan = repair::plan(
            held.iter().map(|(h, w)| (h, w.as_slice())),
            members,
            self.cfg.replicas,
        );
        self.stats
            .chunks_lost
            .store(plan.lost.len() as u64, Ordering::Relaxed);
        let mine: Vec<ChunkHash> = plan
            .copies
            .iter()
            .filter(|c| c.to == self.me.id)
            .map(|c| c.chunk)
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        tracing::info!(chunks = mine.len(), "fetching chunks placed on this node");
        let n = mine.len() as u64;
        self.download(mine.clone(), false)
            .wait_all(&mine)
            .await
            .map_err(|(_, e)| e)?;
        self.stats.repairs.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Chunks this node holds outside its placement (it wrote them, or was a holder before
    /// the membership changed) become evictable once every placed holder has them.
    async fn release_placed(
        self: &Arc<Self>,
        extra: Vec<(ChunkHash, Vec<NodeId>)>,
    ) -> Result<(), SwarmError> {
        let peers = self.alive_peers();
        let mut confirmed = Vec::new();
        for batch in extra.chunks(HAVE_BATCH) {
            let hashes: Vec<ChunkHash> = batch.iter().map(|(h, _)| *h).collect();
            let mut count = vec![0usize; batch.len()];
            for p in &peers {
                if !batch.iter().any(|(_, placed)| placed.contains(&p.id)) {
                    continue;
                }
                if let Ok(flags) = self.ask_have(p, &hashes).await {
                    for (i, f) in flags.into_iter().enumerate() {
                        if f && batch[i].1.contains(&p.id) {
                            count[i] += 1;
                        }
                    }
                }
            }
            for (i, (h, placed)) in batch.iter().enumerate() {
                if !placed.is_empty() && count[i] == placed.len() {
                    confirmed.push(*h);
                }
            }
        }
        if !confirmed.is_empty() {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.set_cached(confirmed, true))
                .await
                .map_err(|e| SwarmError::Protocol(e.to_string()))??;
        }
        Ok(())
    }
}
