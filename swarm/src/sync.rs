//! Namespace anti-entropy: every node pulls, from every live peer, the journal entries it
//! has not recorded (by origin and number), often and whenever a peer pokes it after a
//! write. The store records them in order per origin and carries them out by its merge rule
//! (`store::merge`), so nodes converge after any partition: what one side wrote is pulled by
//! the other once they meet, whatever order peers and pages come in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use store::Applied;
use store::journal::{Change, Pulled};

use crate::error::SwarmError;
use crate::hlc::SharedClock;
use crate::member::Member;
use crate::node::NodeId;
use crate::runtime::{Inner, lock};
use crate::wire::{Notice, Request, Response};

/// How often peers are pulled without being poked.
const PULL_EVERY: Duration = Duration::from_millis(250);

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
            let mut pulled = 0;
            let pulls = peers.iter().map(|p| self.pull_from(p));
            for (peer, r) in peers.iter().zip(futures::future::join_all(pulls).await) {
                match r {
                    Ok(behind) => {
                        backlog += behind;
                        pulled += 1;
                    }
                    Err(e) => tracing::debug!(peer = %peer.id, error = %e, "namespace pull failed"),
                }
            }
            lock(&self.readiness).round(peers.len(), pulled, backlog);
            let ahead = self.clock.ahead_of_peers().map_or(0, |a| a.ahead_ms);
            if ahead > 0 && self.stats.clock_ahead_ms.load(Ordering::Relaxed) == 0 {
                tracing::warn!(
                    ahead_ms = ahead,
                    "this node's clock runs ahead of its peers'; refusing writes"
                );
            }
            self.stats.clock_ahead_ms.store(ahead, Ordering::Relaxed);
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
        // Origins held back this round: the peer is told not to send them again (as if we
        // had seen all of them), so they do not fill every page while others wait.
        let mut held_back = BTreeSet::new();
        loop {
            let store = self.store.clone();
            let seen = tokio::task::spawn_blocking(move || store.journal_seen())
                .await
                .map_err(|e| SwarmError::Protocol(e.to_string()))??;
            let mut ask = seen.clone();
            for o in &held_back {
                ask.insert(*o, u64::MAX);
            }
            let req = Request::Pull {
                seen: ask.into_iter().collect(),
            };
            let sent = SharedClock::wall_ms();
            let (entries, theirs) = match self.call(peer, &req).await?.0 {
                Response::Entries {
                    entries,
                    seen,
                    now_ms: their_ms,
                } => {
                    self.clock
                        .peer_clock(peer.id, their_ms, sent, SharedClock::wall_ms());
                    (entries, seen)
                }
                other => return Err(SwarmError::Protocol(format!("unexpected answer {other:?}"))),
            };
            if entries.is_empty() {
                return Ok(behind(&seen, &theirs));
            }
            let mut batch = Vec::with_capacity(entries.len());
            // An origin whose entry is held back is skipped for the rest of this page (its
            // entries must be recorded in order); other origins' entries go on.
            for (origin, seq, bytes) in entries {
                if held_back.contains(&origin) {
                    continue;
                }
                let pulled = Pulled::new(origin, seq, bytes);
                if let Ok(e) = pulled.entry()
                    && let Err(far) = self.clock.observe(e.at)
                {
                    // One node with a wild clock must not drag every name's order with it:
                    // wait until our clock has caught up (or the writer's clock is fixed).
                    tracing::warn!(origin = %origin, remote_ms = far.remote_ms, local_ms = far.local_ms,
                        "journal entry stamped too far in the future; not applied yet");
                    self.count_unapplied(origin, "clock_ahead");
                    held_back.insert(origin);
                    continue;
                }
                batch.push(pulled);
            }
            // Entries that name their manifest rather than carry it are recorded with it:
            // fetched from the peer that sent them (which holds it, as everyone holding the
            // entry does) and checked against the name.
            for pulled in &mut batch {
                if held_back.contains(&pulled.origin) {
                    continue;
                }
                let Some(hash) = pulled.named_manifest() else {
                    continue;
                };
                let store = self.store.clone();
                let held = tokio::task::spawn_blocking(move || store.has_manifest_blob(&hash))
                    .await
                    .map_err(|e| SwarmError::Protocol(e.to_string()))??;
                if held {
                    continue;
                }
                let fetched = match self.fetch_manifest(peer, hash).await {
                    Ok(bytes) => {
                        if pulled.attach_manifest(bytes) {
                            Ok(())
                        } else {
                            Err(format!("{} sent other bytes", peer.id))
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                match fetched {
                    Ok(()) => {}
                    Err(why) => {
                        tracing::warn!(origin = %pulled.origin, peer = %peer.id, manifest = %hash,
                            error = why, "a journal entry's manifest could not be fetched; not applied yet");
                        self.count_unapplied(pulled.origin, "manifest_unavailable");
                        held_back.insert(pulled.origin);
                    }
                }
            }
            batch.retain(|p| !held_back.contains(&p.origin));
            if batch.is_empty() {
                return Ok(behind(&seen, &theirs));
            }
            let stamps: Vec<(NodeId, u64, bool)> = batch
                .iter()
                .map(|p| match p.entry() {
                    Ok(e) => (
                        p.origin,
                        e.at.wall_ms,
                        matches!(e.change, Change::Version { .. }),
                    ),
                    Err(_) => (p.origin, 0, false),
                })
                .collect();
            let store = self.store.clone();
            let outcome = tokio::task::spawn_blocking(move || store.apply_journal_batch(batch))
                .await
                .map_err(|e| SwarmError::Protocol(e.to_string()))??;
            let now = SharedClock::wall_ms();
            let mut held_back_after = Vec::new();
            let mut objects = outcome.released > 0;
            let mut parked = outcome.released > 0;
            for (a, (origin, at, is_object)) in outcome.applied.iter().zip(stamps) {
                match a {
                    Applied::Newer | Applied::Older => {
                        let delay = now.saturating_sub(at);
                        self.stats.journal_applied.fetch_add(1, Ordering::Relaxed);
                        self.stats.namespace_lag_ms.store(delay, Ordering::Relaxed);
                        if let Some(observe) = &self.cfg.hooks.entry_applied {
                            observe(Duration::from_millis(delay));
                        }
                        objects |= is_object;
                    }
                    Applied::Parked => parked = true,
                    Applied::Superseded => {
                        self.stats
                            .journal_superseded
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Applied::Refused(why) => {
                        tracing::warn!(origin = %origin, reason = why.as_str(),
                            "replicated journal entry refused");
                        self.count_unapplied(origin, why.as_str());
                    }
                    // Only if the manifest vanished between the fetch and the commit: the
                    // entry is pulled again.
                    Applied::NoManifest => held_back_after.push(origin),
                    Applied::Duplicate | Applied::Gap | Applied::Pruned => {}
                }
            }
            if outcome.released > 0 {
                self.stats
                    .journal_applied
                    .fetch_add(outcome.released, Ordering::Relaxed);
            }
            if parked {
                let store = self.store.clone();
                if let Ok(Ok(n)) = tokio::task::spawn_blocking(move || store.journal_parked()).await
                {
                    self.stats.journal_parked.store(n, Ordering::Relaxed);
                }
            }
            if objects {
                self.keeper_wake.notify_one();
            }
            held_back.extend(held_back_after);
            if outcome
                .applied
                .iter()
                .all(|a| matches!(a, Applied::Duplicate | Applied::Gap | Applied::NoManifest))
            {
                return Ok(behind(&seen, &theirs));
            }
        }
    }

    fn count_unapplied(&self, origin: NodeId, reason: &'static str) {
        if let Ok(mut m) = self.stats.journal_unapplied.lock() {
            *m.entry((origin, reason)).or_default() += 1;
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
