//! Namespace anti-entropy: every node pulls, from every live peer, the journal entries it
//! has not recorded (by origin and number), often and whenever a peer pokes it after a
//! write. Entries are applied last-writer-wins by the store, in order per origin, so nodes
//! converge after any partition: what one side wrote is pulled by the other once they meet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use store::Applied;
use store::journal::{Change, Pulled};

use crate::error::SwarmError;
use crate::member::Member;
use crate::node::NodeId;
use crate::runtime::Inner;
use crate::wire::{Notice, Request, Response};

/// How often peers are pulled without being poked.
const PULL_EVERY: Duration = Duration::from_millis(250);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Inner {
    pub async fn sync_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PULL_EVERY) => {}
                _ = self.sync_wake.notified() => {}
            }
            let peers = self.alive_peers();
            let applied_before = self.stats.journal_applied.load(Ordering::Relaxed);
            let mut backlog = 0u64;
            let pulls = peers.iter().map(|p| self.pull_from(p));
            for (peer, r) in peers.iter().zip(futures::future::join_all(pulls).await) {
                match r {
                    Ok(behind) => backlog += behind,
                    Err(e) => tracing::debug!(peer = %peer.id, error = %e, "namespace pull failed"),
                }
            }
            self.stats.journal_backlog.store(backlog, Ordering::Relaxed);
            // Caught up with every peer and nothing new arrived: no write is waiting here, so
            // the lag is zero, not whatever the last entry (maybe hours ago) took.
            if backlog == 0 && self.stats.journal_applied.load(Ordering::Relaxed) == applied_before
            {
                self.stats.namespace_lag_ms.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Pulls and applies what `peer` has that we lack; returns how many entries it still
    /// has beyond what we recorded.
    async fn pull_from(self: &Arc<Self>, peer: &Member) -> Result<u64, SwarmError> {
        loop {
            let store = self.store.clone();
            let seen = tokio::task::spawn_blocking(move || store.journal_seen())
                .await
                .map_err(|e| SwarmError::Protocol(e.to_string()))??;
            let req = Request::Pull {
                seen: seen.iter().map(|(k, v)| (*k, *v)).collect(),
            };
            let (entries, theirs) = match self.call(peer, &req).await?.0 {
                Response::Entries { entries, seen } => (entries, seen),
                other => return Err(SwarmError::Protocol(format!("unexpected answer {other:?}"))),
            };
            if entries.is_empty() {
                return Ok(behind(&seen, &theirs));
            }
            let mut batch = Vec::with_capacity(entries.len());
            for (origin, seq, bytes) in entries {
                let pulled = Pulled::decode(origin, seq, bytes)?;
                if let Err(far) = self.clock.observe(pulled.entry().at) {
                    // One node with a wild clock must not drag every name's order with it:
                    // stop here and retry once our clock has caught up.
                    tracing::warn!(origin = %origin, remote_ms = far.remote_ms, local_ms = far.local_ms,
                        "journal entry stamped too far in the future; not applied yet");
                    break;
                }
                batch.push(pulled);
            }
            if batch.is_empty() {
                return Ok(behind(&seen, &theirs));
            }
            let stamps: Vec<(u64, bool)> = batch
                .iter()
                .map(|p| {
                    let e = p.entry();
                    (e.at.wall_ms, matches!(e.change, Change::Object { .. }))
                })
                .collect();
            let store = self.store.clone();
            let applied = tokio::task::spawn_blocking(move || store.apply_journal_batch(batch))
                .await
                .map_err(|e| SwarmError::Protocol(e.to_string()))??;
            let now = now_ms();
            let mut objects = false;
            for (a, (at, is_object)) in applied.iter().zip(stamps) {
                if matches!(a, Applied::Newer | Applied::Older) {
                    let delay = now.saturating_sub(at);
                    self.stats.journal_applied.fetch_add(1, Ordering::Relaxed);
                    self.stats.namespace_lag_ms.store(delay, Ordering::Relaxed);
                    if let Some(observe) = &self.cfg.hooks.entry_applied {
                        observe(Duration::from_millis(delay));
                    }
                    objects |= is_object;
                }
            }
            if objects {
                self.keeper_wake.notify_one();
            }
            if applied
                .iter()
                .all(|a| matches!(a, Applied::Duplicate | Applied::Gap))
            {
                return Ok(behind(&seen, &theirs));
            }
        }
    }

    /// Tells every live peer there is something new to pull.
    pub fn poke_peers(self: &Arc<Self>) {
        for p in self.alive_peers() {
            self.notify(p.addr, Notice::Poke);
        }
    }
}

/// Entries `theirs` has recorded beyond `ours`.
fn behind(ours: &BTreeMap<NodeId, u64>, theirs: &[(NodeId, u64)]) -> u64 {
    theirs
        .iter()
        .map(|(o, n)| n.saturating_sub(ours.get(o).copied().unwrap_or(0)))
        .sum()
}
