//! Multi-source chunk transfer: a download asks every live peer which of the chunks it
//! needs they hold, then requests them (one QUIC stream per chunk) from several peers at
//! once, as the [`Scheduler`] picks: rarest first inside a window that moves with the
//! reader, a few requests in flight per peer, endgame duplicates for stragglers. Every chunk
//! is verified against its BLAKE3 hash before it is stored, and a peer that sends bad bytes
//! is dropped. Stored chunks are served to other peers at once, while the rest downloads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use store::{ChunkHash, VerifiedChunk};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::AbortHandle;

use crate::announce::Heard;
use crate::error::SwarmError;
use crate::member::Member;
use crate::node::NodeId;
use crate::runtime::Inner;
use crate::scheduler::Scheduler;
use crate::seeding::{UPLOAD_QUEUE, UPLOAD_SLOTS};
use crate::transport::Fetched;

/// Requests in flight per peer. Two keep a link busy (the next chunk is queued while one is
/// sent); more only wait in the holder's upload queue, where they cannot be asked elsewhere.
const PER_PEER: usize = 2;
/// ...unless a download has at most `FEW_PEERS` peers: then the asker's own turnaround
/// (verify, ask again) is what idles the link, and a request waiting in the queue covers it.
/// Measured between two uncapped nodes, 512 MiB, while a piece held its request until
/// stored: 2 per peer 3.2 s, 3 per peer 2.6-2.7 s, 4 per peer 2.5-2.6 s. Once a request ended
/// when its bytes arrived, 4 was one more than a holder with 2 slots and a queue of 2 took
/// while it waited for the acknowledgement of the previous one: the extra request was
/// answered "busy" and the only holder paused (loopback: 2.7-3.2 s, against 2.1-2.2 s with 3).
const PER_PEER_FEW: usize = 3;
const FEW_PEERS: usize = 2;
// The coupling above, kept: a holder takes the requests of a few-peer download at once.
const _: () = assert!(PER_PEER_FEW < UPLOAD_SLOTS + UPLOAD_QUEUE);

/// Requests in flight per peer for a download with `peers` possible holders.
fn per_peer(peers: usize) -> usize {
    if peers <= FEW_PEERS {
        PER_PEER_FEW
    } else {
        PER_PEER
    }
}
/// The fewest pieces rarest-first picks among.
const MIN_WINDOW: usize = 32;
/// How soon holdings are asked again when nothing is in flight and nothing can be requested
/// from what is known. (Only then: with every request slot busy, asking was pure overhead,
/// 16 readers polling 16 peers five times a second.)
const POLL_DRY: Duration = Duration::from_millis(200);
/// How often holdings are asked again in any case (announcements are best-effort).
const POLL_EVERY: Duration = Duration::from_secs(2);
/// How often a download looks around when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// How many missing pieces a holdings poll asks about (32 bytes each on the wire). Far more
/// than the request window: a poll that covered only the window left the download idle
/// between polls once the window was done (one peer, 8 pieces per 200 ms, 40 MB/s at best).
const POLL_AHEAD: usize = 1024;
/// How long a download waits for anyone to hold a chunk before it gives up.
const NO_HOLDER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a chunk's bytes may pause once its holder started sending them, and the slowest
/// rate accepted for a whole chunk. A request waits in the holder's upload queue for as
/// long as its turn takes (the holder is alive: it answers polls); then a transfer that stops
/// or crawls is given up and asked elsewhere.
///
/// The rate floor is low on purpose: a chunk shares this node's downlink with the others
/// coming in, so a slow one is mostly this node's own link being full, which asking
/// elsewhere does not cure. With a floor of 512 KiB/s, 16 readers on 25 Mbit/s links (about
/// 3 MB/s each, shared by 3 to 6 chunks at once) gave up 4 to 34 transfers each, part-sent,
/// and the most unlucky one, asking again and again, finished 4 s after the others.
const BODY_STALL: Duration = Duration::from_secs(3);
const MIN_RATE: u64 = 64 * 1024;
/// How long a peer whose transfer stalled is left alone (it keeps what it holds: it may be
/// busy, not gone).
const STALL_BACKOFF: Duration = Duration::from_secs(1);
/// How long after being pointed elsewhere for a chunk a download insists on it if it still
/// knows no other holder (the one pointed to may be slow to pass it on, or have lost it).
/// Longer than a chunk takes to cross a slow link: at 25 Mbit/s, with a 1 s limit, readers
/// insisted before the first recipient had the chunk, and the original sent 1.5 F.
const INSIST_AFTER: Duration = Duration::from_secs(4);
/// How long a peer that said it is busy is left alone.
const BUSY_BACKOFF: Duration = Duration::from_millis(100);
/// Fetched chunks that may fail to be stored before the download gives up.
const MAX_STORE_FAILURES: usize = 3;
/// How long a peer may take to say what it holds.
const HAVE_TIMEOUT: Duration = Duration::from_secs(3);

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
    done: HashSet<ChunkHash>,
    failed: Option<String>,
}

/// A download in progress; readers wait on individual chunks.
#[derive(Clone)]
pub struct Download {
    progress: watch::Receiver<Progress>,
}

impl Download {
    /// Waits until every one of `hashes` is stored locally; the first that cannot be fails
    /// it, named with why.
    pub async fn wait_all(&self, hashes: &[ChunkHash]) -> Result<(), (ChunkHash, SwarmError)> {
        for h in hashes {
            self.wait(h).await.map_err(|e| (*h, e))?;
        }
        Ok(())
    }

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
        let per_peer = per_peer(peers_now);
        let mut sched = Scheduler::new(pieces.len(), per_peer)
            // Wide enough that readers of one object hold different pieces to trade (at
            // two readers, an 8-piece window had them want the same few pieces), narrow
            // enough to keep a streaming read's next bytes close.
            .windowed((per_peer * peers_now * 4).max(MIN_WINDOW))
            .tie_break(u64::from_le_bytes(self.me.id.0[..8].try_into().unwrap_or([1; 8])) | 1);
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
        // The last piece the latest poll asked about, if pieces after it were left out.
        let mut polled_to: Option<usize> = None;
        let mut store_failures = 0;
        let mut waiting_since = Instant::now();
        // Requests out, and how to cancel them (a request given up on, or won by another
        // peer in the endgame, stops its stream so the holder stops sending).
        let mut sent: HashMap<(usize, NodeId), AbortHandle> = HashMap::new();
        // Pieces a holder pointed elsewhere for, and since when; and those it pointed to a
        // member this node cannot use (insisted on whoever else holds them).
        let mut deferred: HashMap<usize, Instant> = HashMap::new();
        let mut pointed_unusable: HashSet<usize> = HashSet::new();
        // Peers that said they are busy, and when to ask them again.
        let mut paused: Vec<(Instant, NodeId)> = Vec::new();
        while !sched.done() {
            let now = Instant::now();
            paused.retain(|(until, peer)| {
                let wait = *until > now;
                if !wait {
                    sched.resume(*peer);
                }
                wait
            });
            let requests = sched.requests();
            // Ask who holds what: at the start, soon when nothing can be requested, and now
            // and then anyway (announcements are best-effort, and asking keeps this node on
            // the peers' lists of downloaders to announce to). The answers arrive as events;
            // transfers go on meanwhile.
            let since = last_poll.map(|t| t.elapsed());
            // The window is about to run past what the latest poll asked about.
            let window = sched.window_len().max(1);
            let beyond = polled_to.is_some_and(|end| sched.missing_through(end) < window * 2);
            let due = match since {
                None => true,
                Some(t) => {
                    t >= POLL_EVERY
                        || beyond
                        || (requests.is_empty() && sched.in_flight() == 0 && t >= POLL_DRY)
                }
            };
            if !polling && due {
                polling = true;
                last_poll = Some(Instant::now());
                peers = self.alive_peers().into_iter().map(|p| (p.id, p)).collect();
                // Requests to members no longer alive (declared down, or dropped) are
                // asked elsewhere now rather than when their connection times out.
                let lost: Vec<(usize, NodeId)> = sent
                    .keys()
                    .filter(|(_, peer)| !peers.contains_key(peer))
                    .copied()
                    .collect();
                for (piece, peer) in lost {
                    if let Some(task) = sent.remove(&(piece, peer)) {
                        task.abort();
                    }
                    tracing::debug!(%peer, piece, "holder left; asking elsewhere");
                    sched.failed(piece, peer);
                    sched.peer_gone(peer);
                }
                let ahead = sched.next_missing(POLL_AHEAD);
                polled_to = match ahead.last() {
                    Some(last) if sched.missing_through(*last) < sched.remaining() => Some(*last),
                    _ => None,
                };
                let ahead: Vec<ChunkHash> = ahead.iter().map(|i| pieces[*i]).collect();
                self.spawn_poll(peers.values().cloned().collect(), ahead, poll_tx.clone());
            }
            for r in requests {
                let Some(peer) = peers.get(&r.peer).cloned() else {
                    sched.failed(r.piece, r.peer);
                    continue;
                };
                let hash = pieces[r.piece];
                // Pointed elsewhere a while ago, and still nobody else to ask.
                let insist = pointed_unusable.contains(&r.piece)
                    || (deferred
                        .get(&r.piece)
                        .is_some_and(|t| t.elapsed() >= INSIST_AFTER)
                        && sched.holders(r.piece) <= 1);
                tracing::trace!(peer = %r.peer, piece = r.piece, insist, "requesting");
                let me = self.clone();
                let results = results.clone();
                let task = tokio::spawn(async move {
                    let got = me
                        .fetch_chunk(&peer, hash, insist, BODY_STALL, MIN_RATE)
                        .await;
                    let _ = results.send((r.piece, peer.id, got));
                });
                sent.insert((r.piece, r.peer), task.abort_handle());
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
                            tracing::trace!(
                                %peer,
                                asked = flags.len(),
                                held = flags.iter().filter(|f| **f).count(),
                                "holdings"
                            );
                            sched.peer_complete(peer, flags.iter().all(|f| *f));
                            let has = window
                                .iter()
                                .zip(flags)
                                .filter(|(_, f)| *f)
                                .filter_map(|(h, _)| index.get(h).copied());
                            sched.peer_has(peer, has);
                        }
                        // What it said before still holds (chunks rarely go away); a peer
                        // that died is dropped when membership declares it down or its
                        // requests fail, not here: a holder slow to answer behind a full
                        // uplink must not be forgotten, least of all the original one.
                        Some(PollAnswer::Silent(peer)) => {
                            tracing::debug!(%peer, "no answer to a holdings poll in time");
                        }
                        Some(PollAnswer::Done) | None => polling = false,
                    }
                    continue;
                }
                h = heard.recv() => {
                    match h {
                        Ok(Heard { peer, chunks }) => {
                            if !peers.contains_key(&peer)
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
                        if let Err(e) = result {
                            // One failed write (a full disk, a compaction stall) costs the
                            // piece, not the download; a store that keeps failing ends it.
                            store_failures += 1;
                            if store_failures > MAX_STORE_FAILURES {
                                return Err(e);
                            }
                            tracing::warn!(error = %e, piece, "storing a fetched chunk failed; asking again");
                            sched.failed(piece, from);
                            continue;
                        }
                        for loser in sched.received(piece, from) {
                            if let Some(task) = sent.remove(&(piece, loser)) {
                                task.abort();
                            }
                        }
                        progress.send_modify(|p| {
                            p.done.insert(pieces[piece]);
                        });
                    }
                    continue;
                }
                _ = tokio::time::sleep(TICK) => continue,
            };
            let (piece, from, got) = arrival;
            tracing::trace!(
                peer = %from,
                piece,
                answer = match &got {
                    Ok(Fetched::Chunk(_)) => "chunk",
                    Ok(Fetched::Missing) => "missing",
                    Ok(Fetched::Elsewhere(_)) => "elsewhere",
                    Ok(Fetched::Busy) => "busy",
                    Err(_) => "error",
                },
                wanted = sent.contains_key(&(piece, from)),
                "answer"
            );
            match sent.remove(&(piece, from)) {
                Some(_) => waiting_since = Instant::now(),
                // An answer to a request already given up on: only bytes count (and only if
                // still wanted, below).
                None if !matches!(got, Ok(Fetched::Chunk(_))) => continue,
                None => {}
            }
            match got {
                // A copy of a piece no longer wanted: already being stored (an endgame
                // duplicate not cancelled in time), or stored since it was given up on.
                Ok(Fetched::Chunk(_)) if !sched.wants(piece) => {}
                Ok(Fetched::Chunk(chunk)) => {
                    // Stored off the loop (each store ends in an fsync): requests keep going
                    // out meanwhile, the peer's request slot included. The piece is asked of
                    // no one while it is stored, and again if storing fails.
                    for loser in sched.arrived(piece, from) {
                        if let Some(task) = sent.remove(&(piece, loser)) {
                            task.abort();
                        }
                    }
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
                Ok(Fetched::Elsewhere(to)) if peers.contains_key(&to) => {
                    // That member is getting it from there right now and will announce it.
                    sched.not_from(piece, from);
                    deferred.entry(piece).or_insert(Instant::now());
                }
                Ok(Fetched::Elsewhere(to)) => {
                    // Pointed to a member this node cannot use (one it dropped, or not yet
                    // knows): insist on the next request, after the next poll (an insisting
                    // request is pointed there again while that member's copy is on its way,
                    // and asking at once would repeat this as fast as answers come).
                    tracing::debug!(%from, %to, piece, "pointed to an unusable peer; insisting");
                    sched.not_from(piece, from);
                    pointed_unusable.insert(piece);
                }
                Ok(Fetched::Busy) => {
                    // Its queue is full: others first, this one again shortly.
                    sched.failed(piece, from);
                    sched.pause(from);
                    paused.push((Instant::now() + BUSY_BACKOFF, from));
                }
                Err(SwarmError::Corrupt(h, _)) => {
                    self.ban(from, &format!("chunk {h} failed verification"));
                    sched.peer_gone(from);
                    peers.remove(&from);
                }
                Err(e @ SwarmError::Timeout(_)) => {
                    // Slow or stalled (or no answer to the request in time), not gone: what
                    // it holds stays known, others go first. A dead peer is dropped when its
                    // connection fails or membership declares it down.
                    tracing::debug!(peer = %from, error = %e, "chunk request given up");
                    sched.failed(piece, from);
                    sched.pause(from);
                    paused.push((Instant::now() + STALL_BACKOFF, from));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_holders_get_more_requests_each_and_many_keep_the_distribution_limit() {
        assert_eq!(per_peer(0), PER_PEER_FEW);
        assert_eq!(per_peer(1), PER_PEER_FEW);
        assert_eq!(per_peer(2), PER_PEER_FEW);
        for peers in 3..64 {
            assert_eq!(per_peer(peers), PER_PEER, "{peers} peers");
        }
    }
}
