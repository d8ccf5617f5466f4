//! Multi-source chunk transfer: a download asks every live peer which of the chunks it
//! needs they hold, then requests them (one QUIC stream per chunk) from several peers at
//! once, as the [`Scheduler`] picks: rarest first inside a window that moves with the
//! reader, a few requests in flight per peer, endgame duplicates for stragglers. Every chunk
//! is verified against its BLAKE3 hash before it is stored, and a peer that sends bad bytes
//! is dropped. Stored chunks are served to other peers at once, while the rest downloads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use store::{ChunkHash, VerifiedChunk};
use tokio::sync::{mpsc, watch};

use crate::error::SwarmError;
use crate::member::Member;
use crate::node::NodeId;
use crate::runtime::Inner;
use crate::scheduler::Scheduler;

/// Requests in flight per peer.
const PER_PEER: usize = 4;
/// How often holdings are asked again while pieces are wanted that no known peer has.
const HAVE_REFRESH: Duration = Duration::from_millis(200);
/// How long a download waits for anyone to hold a chunk before it gives up.
const NO_HOLDER_TIMEOUT: Duration = Duration::from_secs(20);
/// A request unanswered this long is asked of another holder too, and its peer is avoided
/// for a while: a peer that died answers nothing until failure detection notices, and a
/// reader must not stall that long.
const STRAGGLER: Duration = Duration::from_millis(1500);
const AVOID_FOR: Duration = Duration::from_secs(5);
/// How long a peer may take to say what it holds.
const HAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Progress of one download, shared with the readers waiting on it.
#[derive(Clone, Debug, Default)]
struct Progress {
    done: std::collections::HashSet<ChunkHash>,
    failed: Option<String>,
}

/// A download in progress; readers wait on individual chunks.
#[derive(Clone)]
pub struct Download {
    progress: watch::Receiver<Progress>,
}

impl Download {
    /// Waits until `hash` is stored locally (or the download failed).
    pub async fn wait(&self, hash: &ChunkHash) -> Result<(), SwarmError> {
        let mut rx = self.progress.clone();
        loop {
            {
                let p = rx.borrow_and_update();
                if p.done.contains(hash) {
                    return Ok(());
                }
                if let Some(why) = &p.failed {
                    return Err(SwarmError::Unreachable(why.clone()));
                }
            }
            if rx.changed().await.is_err() {
                // The download task ended without a word on this chunk.
                let p = rx.borrow();
                return if p.done.contains(hash) {
                    Ok(())
                } else {
                    Err(SwarmError::NoHolder(*hash))
                };
            }
        }
    }
}

impl Inner {
    /// Starts fetching `chunks` (in reading order) that this node lacks. `cached`: the
    /// copies are for reading (evictable) rather than placed here for durability.
    pub fn download(self: &Arc<Self>, chunks: Vec<ChunkHash>, cached: bool) -> Download {
        let (tx, rx) = watch::channel(Progress::default());
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.run_download(chunks, cached, &tx).await {
                tracing::warn!(error = %e, "download failed");
                tx.send_modify(|p| p.failed = Some(e.to_string()));
            }
        });
        Download { progress: rx }
    }

    async fn run_download(
        self: &Arc<Self>,
        chunks: Vec<ChunkHash>,
        cached: bool,
        progress: &watch::Sender<Progress>,
    ) -> Result<(), SwarmError> {
        // Duplicates in a manifest (a repeated chunk) are one piece.
        let mut index: HashMap<ChunkHash, usize> = HashMap::new();
        let mut pieces = Vec::new();
        for c in chunks {
            index.entry(c).or_insert_with(|| {
                pieces.push(c);
                pieces.len() - 1
            });
        }
        let peers_now = self.alive_peers().len().max(1);
        let mut sched = Scheduler::new(pieces.len(), PER_PEER)
            .windowed(PER_PEER * peers_now * 2)
            .tie_break(u64::from_le_bytes(self.me.id.0[..8].try_into().unwrap_or([1; 8])) | 1);
        // How long chunks take to arrive (moving average): a request is late only well past
        // it, so a busy but healthy link does not trigger duplicate requests.
        let mut typical = Duration::from_millis(200);
        {
            let store = self.store.clone();
            let check = pieces.clone();
            let held = tokio::task::spawn_blocking(move || {
                check
                    .iter()
                    .map(|h| store.has_chunk(h).unwrap_or(false))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| SwarmError::Protocol(e.to_string()))?;
            let mut done = Vec::new();
            for (i, h) in held.into_iter().enumerate() {
                if h {
                    sched.have(i);
                    done.push(pieces[i]);
                }
            }
            progress.send_modify(|p| p.done.extend(done));
        }
        let (results, mut arrivals) = mpsc::unbounded_channel();
        let mut peers: HashMap<NodeId, Member> = HashMap::new();
        let mut last_refresh: Option<Instant> = None;
        let mut waiting_since = Instant::now();
        let mut sent: HashMap<(usize, NodeId), Instant> = HashMap::new();
        let mut avoid: HashMap<NodeId, Instant> = HashMap::new();
        while !sched.done() {
            // Give up on stragglers: ask another holder, avoid the slow peer for a while.
            let now = Instant::now();
            let patience = STRAGGLER.max(typical * 4);
            let late: Vec<(usize, NodeId)> = sent
                .iter()
                .filter(|(_, t)| now.duration_since(**t) > patience)
                .map(|(k, _)| *k)
                .collect();
            for (piece, peer) in late {
                sent.remove(&(piece, peer));
                tracing::debug!(%peer, piece, "chunk request is late; asking elsewhere");
                // Its holdings are asked again; a peer that does not answer that either
                // (dead, not yet declared so) is avoided for a while.
                sched.failed(piece, peer);
                sched.peer_gone(peer);
                last_refresh = None;
            }
            // Ask again who holds what when there is nothing to send and the last answers
            // are stale: peers gain chunks as they download them too.
            let requests = sched.requests();
            if requests.is_empty() && last_refresh.is_none_or(|t| t.elapsed() >= HAVE_REFRESH) {
                last_refresh = Some(Instant::now());
                let window: Vec<ChunkHash> =
                    sched.window_pieces().iter().map(|i| pieces[*i]).collect();
                avoid.retain(|_, until| *until > Instant::now());
                peers.clear();
                for p in self.alive_peers() {
                    if !avoid.contains_key(&p.id) {
                        peers.insert(p.id, p);
                    }
                }
                let window_ref = &window;
                let asks = peers.values().map(|p| async move {
                    let asked = tokio::time::timeout(HAVE_TIMEOUT, self.ask_have(p, window_ref));
                    (
                        p.id,
                        asked
                            .await
                            .unwrap_or_else(|_| Err(SwarmError::Timeout("have".into()))),
                    )
                });
                for (id, answer) in futures::future::join_all(asks).await {
                    match answer {
                        Ok(flags) => {
                            let has = window
                                .iter()
                                .zip(flags)
                                .filter(|(_, f)| *f)
                                .filter_map(|(h, _)| index.get(h).copied());
                            sched.peer_has(id, has);
                        }
                        Err(_) => {
                            sched.peer_gone(id);
                            avoid.insert(id, Instant::now() + AVOID_FOR);
                        }
                    }
                }
                continue;
            }
            for r in requests {
                let Some(peer) = peers.get(&r.peer).cloned() else {
                    sched.failed(r.piece, r.peer);
                    continue;
                };
                let hash = pieces[r.piece];
                sent.insert((r.piece, r.peer), Instant::now());
                let me = self.clone();
                let results = results.clone();
                tokio::spawn(async move {
                    let got = me.fetch_chunk(&peer, hash).await;
                    let _ = results.send((r.piece, peer.id, got));
                });
            }
            if sched.in_flight() == 0 {
                if waiting_since.elapsed() > NO_HOLDER_TIMEOUT {
                    let missing = sched.window_pieces().first().map(|i| pieces[*i]);
                    return Err(match missing {
                        Some(h) => SwarmError::NoHolder(h),
                        None => SwarmError::Protocol("download stalled".into()),
                    });
                }
                tokio::time::sleep(HAVE_REFRESH / 4).await;
                continue;
            }
            let (piece, from, got) = match tokio::time::timeout(HAVE_REFRESH, arrivals.recv()).await
            {
                Ok(Some(a)) => a,
                Ok(None) => break,
                Err(_) => continue,
            };
            match sent.remove(&(piece, from)) {
                Some(t) => {
                    typical = (typical * 7 + t.elapsed()) / 8;
                    waiting_since = Instant::now();
                }
                // An answer to a request already given up on: only bytes still wanted count.
                None if !matches!(got, Ok(Some(_)))
                    || progress.borrow().done.contains(&pieces[piece]) =>
                {
                    continue;
                }
                None => {}
            }
            match got {
                Ok(Some(chunk)) => {
                    self.stats.chunks_fetched.fetch_add(1, Ordering::Relaxed);
                    self.keep_chunk(chunk, cached).await?;
                    sched.received(piece, from);
                    progress.send_modify(|p| {
                        p.done.insert(pieces[piece]);
                    });
                }
                Ok(None) => {
                    // It no longer has it (evicted): forget that it did.
                    sched.failed(piece, from);
                    sched.peer_gone(from);
                }
                Err(SwarmError::Corrupt(h, _)) => {
                    self.ban(from, &format!("chunk {h} failed verification"));
                    sched.peer_gone(from);
                    peers.remove(&from);
                }
                Err(e) => {
                    tracing::debug!(peer = %from, error = %e, "chunk request failed");
                    sched.failed(piece, from);
                    sched.peer_gone(from);
                }
            }
        }
        Ok(())
    }

    async fn keep_chunk(&self, chunk: VerifiedChunk, cached: bool) -> Result<(), SwarmError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.put_chunk(chunk, cached))
            .await
            .map_err(|e| SwarmError::Protocol(e.to_string()))??;
        Ok(())
    }
}
