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
use tokio::sync::{broadcast, mpsc, watch};

use crate::announce::Heard;
use crate::error::SwarmError;
use crate::member::Member;
use crate::node::NodeId;
use crate::runtime::Inner;
use crate::scheduler::Scheduler;
use crate::transport::Fetched;

/// Requests in flight per peer.
const PER_PEER: usize = 4;
/// How soon holdings are asked again when nothing can be requested from what is known.
const POLL_DRY: Duration = Duration::from_millis(200);
/// How often holdings are asked again in any case (announcements are best-effort).
const POLL_EVERY: Duration = Duration::from_secs(2);
/// How often a download looks at its late requests when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// How long a download waits for anyone to hold a chunk before it gives up.
const NO_HOLDER_TIMEOUT: Duration = Duration::from_secs(20);
/// A request unanswered this long is asked of another holder too, and its peer is avoided
/// for a while: a peer that died answers nothing until failure detection notices, and a
/// reader must not stall that long.
const STRAGGLER: Duration = Duration::from_millis(1500);
const AVOID_FOR: Duration = Duration::from_secs(5);
/// How long a peer may take to say what it holds.
const HAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a holdings poll tells a download, peer by peer.
enum PollAnswer {
    Holds {
        peer: NodeId,
        window: Arc<[ChunkHash]>,
        flags: Vec<bool>,
    },
    /// No answer in time (dead, not yet declared so, or overloaded).
    Silent(NodeId),
    /// Every peer asked has answered or timed out.
    Done,
}

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
        let (poll_tx, mut poll_answers) = mpsc::unbounded_channel::<PollAnswer>();
        let (stored_tx, mut stored_rx) = mpsc::unbounded_channel();
        let mut heard = self.announcer.listen();
        let mut peers: HashMap<NodeId, Member> = HashMap::new();
        let mut polling = false;
        let mut last_poll: Option<Instant> = None;
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
                last_poll = None;
            }
            let requests = sched.requests();
            // Ask who holds what: at the start, soon when nothing can be requested, and now
            // and then anyway (announcements are best-effort, and asking keeps this node on
            // the peers' lists of downloaders to announce to). The answers arrive as events;
            // transfers go on meanwhile.
            let since = last_poll.map(|t| t.elapsed());
            let due = match since {
                None => true,
                Some(t) => t >= POLL_EVERY || (requests.is_empty() && t >= POLL_DRY),
            };
            if !polling && due {
                polling = true;
                last_poll = Some(Instant::now());
                avoid.retain(|_, until| *until > Instant::now());
                peers = self
                    .alive_peers()
                    .into_iter()
                    .filter(|p| !avoid.contains_key(&p.id))
                    .map(|p| (p.id, p))
                    .collect();
                let window: Vec<ChunkHash> =
                    sched.window_pieces().iter().map(|i| pieces[*i]).collect();
                self.spawn_poll(peers.values().cloned().collect(), window, poll_tx.clone());
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
            if sched.in_flight() == 0 && !polling && waiting_since.elapsed() > NO_HOLDER_TIMEOUT {
                let missing = sched.window_pieces().first().map(|i| pieces[*i]);
                return Err(match missing {
                    Some(h) => SwarmError::NoHolder(h),
                    None => SwarmError::Protocol("download stalled".into()),
                });
            }
            let arrival = tokio::select! {
                a = arrivals.recv() => match a {
                    Some(a) => a,
                    None => break,
                },
                answer = poll_answers.recv() => {
                    match answer {
                        Some(PollAnswer::Holds { peer, window, flags }) => {
                            sched.peer_complete(peer, flags.iter().all(|f| *f));
                            let has = window
                                .iter()
                                .zip(flags)
                                .filter(|(_, f)| *f)
                                .filter_map(|(h, _)| index.get(h).copied());
                            sched.peer_has(peer, has);
                        }
                        Some(PollAnswer::Silent(peer)) => {
                            sched.peer_gone(peer);
                            avoid.insert(peer, Instant::now() + AVOID_FOR);
                        }
                        Some(PollAnswer::Done) | None => polling = false,
                    }
                    continue;
                }
                h = heard.recv() => {
                    match h {
                        Ok(Heard { peer, chunks }) => {
                            if !peers.contains_key(&peer)
                                && !avoid.contains_key(&peer)
                                && let Some(m) = self.alive_peers().into_iter().find(|m| m.id == peer)
                            {
                                peers.insert(peer, m);
                            }
                            if peers.contains_key(&peer) {
                                sched.peer_has(peer, chunks.iter().filter_map(|h| index.get(h).copied()));
                            }
                        }
                        // Fell behind the announcements: the next poll covers what was missed.
                        Err(broadcast::error::RecvError::Lagged(_)) => last_poll = None,
                        Err(broadcast::error::RecvError::Closed) => {}
                    }
                    continue;
                }
                kept = stored_rx.recv() => {
                    if let Some((piece, from, result)) = kept {
                        result?;
                        sched.received(piece, from);
                        progress.send_modify(|p| {
                            p.done.insert(pieces[piece]);
                        });
                    }
                    continue;
                }
                _ = tokio::time::sleep(TICK) => continue,
            };
            let (piece, from, got) = arrival;
            match sent.remove(&(piece, from)) {
                Some(t) => {
                    typical = (typical * 7 + t.elapsed()) / 8;
                    waiting_since = Instant::now();
                }
                // An answer to a request already given up on: only bytes still wanted count.
                None if !matches!(got, Ok(Fetched::Chunk(_)))
                    || progress.borrow().done.contains(&pieces[piece]) =>
                {
                    continue;
                }
                None => {}
            }
            match got {
                Ok(Fetched::Chunk(chunk)) => {
                    // Stored off the loop (each store ends in an fsync): requests keep going
                    // out meanwhile. The piece stays in flight until it is stored.
                    self.stats.chunks_fetched.fetch_add(1, Ordering::Relaxed);
                    let (me, stored) = (self.clone(), stored_tx.clone());
                    tokio::spawn(async move {
                        let r = me.keep_chunk(chunk, cached).await;
                        let _ = stored.send((piece, from, r));
                    });
                }
                Ok(Fetched::Missing) => {
                    // It no longer has it (evicted): forget that it did.
                    sched.failed(piece, from);
                    sched.peer_gone(from);
                }
                Ok(Fetched::Elsewhere) => {
                    // Someone else is getting it from there right now and will announce it.
                    sched.not_from(piece, from);
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
        let hash = *chunk.hash();
        let stored = tokio::task::spawn_blocking(move || store.put_chunk(chunk, cached))
            .await
            .map_err(|e| SwarmError::Protocol(e.to_string()))??;
        if stored {
            self.announcer.stored(hash);
        }
        Ok(())
    }

    /// Asks `peers` which of `window` they hold; each answer is an event for the download,
    /// then `Done`.
    fn spawn_poll(
        self: &Arc<Self>,
        peers: Vec<Member>,
        window: Vec<ChunkHash>,
        answers: mpsc::UnboundedSender<PollAnswer>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let window: Arc<[ChunkHash]> = window.into();
            let asks = peers.into_iter().map(|p| {
                let (me, window, answers) = (me.clone(), window.clone(), answers.clone());
                async move {
                    let asked = tokio::time::timeout(HAVE_TIMEOUT, me.ask_have(&p, &window)).await;
                    let _ = answers.send(match asked {
                        Ok(Ok(flags)) => PollAnswer::Holds {
                            peer: p.id,
                            window,
                            flags,
                        },
                        _ => PollAnswer::Silent(p.id),
                    });
                }
            });
            futures::future::join_all(asks).await;
            let _ = answers.send(PollAnswer::Done);
        });
    }
}
