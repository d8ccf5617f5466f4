//! Connections between nodes: one quinn endpoint both dials and listens; each connection
//! starts with the mutual proof of the cluster secret (see [`crate::auth`]) and only then
//! carries requests (one bidirectional stream each) and notices (unidirectional streams).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use store::VerifiedChunk;
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::admission::Refusal;
use crate::auth::{Role, session_keying};
use crate::error::SwarmError;
use crate::gossip::GossipEvent;
use crate::member::Member;
use crate::node::NodeId;
use crate::runtime::{Inner, lock};
use crate::seeding::{Decision, UPLOAD_QUEUE, UPLOAD_SLOTS};
use crate::wire::{self, Hello, Notice, PROTOCOL, Request, Response};

/// Stream priorities. Control traffic (membership probes, holdings polls, journal pulls,
/// requests, announcements) goes before chunk bytes: behind a saturated uplink, a probe
/// queued after megabytes of chunk data made healthy members look dead and holders look
/// silent. Chunk streams share one lower priority and are sent in the order they were
/// written (fairness off in the transport config): a chunk finished sooner can be passed on
/// sooner, where round-robin would finish all of them late together.
const CONTROL: i32 = 1;
const BULK: i32 = 0;

/// The code a stream is stopped with when its frame is refused (see `refuse_frame`).
const FRAME_REFUSED: u32 = 2;
/// The code a proved connection is closed with when the node has no room for it.
const BUSY: u32 = 3;

/// How long the proof exchange may take before the connection is dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may wait for its response header.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialing may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a connection was not admitted.
enum Admit {
    /// No room (see [`crate::admission`]).
    Refused(Refusal),
    /// No valid proof, or the exchange failed.
    Failed(SwarmError),
}

impl From<SwarmError> for Admit {
    fn from(e: SwarmError) -> Self {
        Admit::Failed(e)
    }
}

impl Inner {
    /// Accepts connections until the endpoint closes, as many as [`crate::admission`] allows.
    pub async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let proving = match self.admission.handshake() {
                Ok(p) => p,
                Err(why) => {
                    self.refused(why, incoming.remote_address());
                    incoming.refuse();
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(%remote, error = %e, "incoming connection failed");
                        return;
                    }
                };
                let admitted = tokio::time::timeout(HELLO_TIMEOUT, me.admit(&conn)).await;
                drop(proving);
                match admitted {
                    Ok(Ok((peer, _slot))) => me.serve(conn, peer).await,
                    Ok(Err(Admit::Refused(why))) => {
                        me.refused(why, remote);
                        conn.close(BUSY.into(), b"busy: connection limit reached");
                    }
                    Ok(Err(Admit::Failed(e))) => {
                        me.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%remote, error = %e, "refused a peer");
                        conn.close(1u32.into(), b"unauthorized");
                    }
                    Err(_) => {
                        me.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                        // Counted; not worth a line each (a crowd of strangers would
                        // write 64 every few seconds).
                        tracing::debug!(%remote, "refused a peer: no proof in time");
                        conn.close(1u32.into(), b"unauthorized");
                    }
                }
            });
        }
    }

    fn refused(&self, why: Refusal, remote: SocketAddr) {
        self.stats.connections_refused[why.index()].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%remote, ?why, "turned a peer's connection away");
    }

    /// The listener's side of the proof exchange: the dialer proves first, and learns
    /// nothing (not even who we are) unless its proof checks out and there is room for it.
    /// The room is held while the connection is served.
    async fn admit(
        &self,
        conn: &quinn::Connection,
    ) -> Result<(Member, OwnedSemaphorePermit), Admit> {
        let remote = conn.remote_address().to_string();
        let (mut send, mut recv) = conn.accept_bi().await.map_err(SwarmError::from)?;
        let hello: Hello = wire::read_frame_max(&mut recv, wire::MAX_HELLO).await?;
        let keying = session_keying(conn)?;
        if hello.protocol != PROTOCOL
            || !self
                .cfg
                .secret
                .verify(Role::Dialer, &hello.member.id, &keying, &hello.proof)
        {
            return Err(SwarmError::Unauthorized(remote).into());
        }
        if self.is_banned(&hello.member.id) {
            return Err(SwarmError::Unauthorized(format!("{remote} (dropped earlier)")).into());
        }
        let slot = self.admission.connection().map_err(Admit::Refused)?;
        let reply = Hello {
            protocol: PROTOCOL,
            member: self.me.clone(),
            proof: self.cfg.secret.proof(Role::Listener, &self.me.id, &keying),
        };
        wire::write_frame(&mut send, &reply).await?;
        send.finish().ok();
        Ok((hello.member, slot))
    }

    /// An authenticated connection to the peer at `addr`, dialing if there is none.
    pub async fn connect(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<(quinn::Connection, Member), SwarmError> {
        if let Some(found) = self.conn_at(addr) {
            return Ok(found);
        }
        let gate = lock(&self.dialing).entry(addr).or_default().clone();
        let _one_at_a_time = gate.lock().await;
        if let Some(found) = self.conn_at(addr) {
            return Ok(found);
        }
        let dial = async {
            let conn = self.endpoint.connect(addr, "s3swarm")?.await?;
            let (mut send, mut recv) = conn.open_bi().await?;
            let keying = session_keying(&conn)?;
            let hello = Hello {
                protocol: PROTOCOL,
                member: self.me.clone(),
                proof: self.cfg.secret.proof(Role::Dialer, &self.me.id, &keying),
            };
            wire::write_frame(&mut send, &hello).await?;
            send.finish().ok();
            let reply: Hello = wire::read_frame_max(&mut recv, wire::MAX_HELLO)
                .await
                .map_err(|e| {
                    // A listener that refuses us closes the connection: say so plainly.
                    match conn.close_reason() {
                        Some(reason) => SwarmError::Unauthorized(format!("{addr}: {reason}")),
                        None => e,
                    }
                })?;
            if reply.protocol != PROTOCOL
                || !self
                    .cfg
                    .secret
                    .verify(Role::Listener, &reply.member.id, &keying, &reply.proof)
            {
                conn.close(1u32.into(), b"unauthorized");
                return Err(SwarmError::Unauthorized(addr.to_string()));
            }
            Ok::<_, SwarmError>((conn, reply.member))
        };
        let (conn, peer) = tokio::time::timeout(DIAL_TIMEOUT + HELLO_TIMEOUT, dial)
            .await
            .map_err(|_| SwarmError::Unreachable(addr.to_string()))??;
        let me = self.clone();
        let (c, p) = (conn.clone(), peer.clone());
        tokio::spawn(async move { me.serve(c, p).await });
        Ok((conn, peer))
    }

    fn conn_at(&self, addr: SocketAddr) -> Option<(quinn::Connection, Member)> {
        lock(&self.conns)
            .values()
            .find(|(c, m)| m.addr == addr && c.close_reason().is_none())
            .cloned()
    }

    /// Serves one authenticated connection until it closes.
    async fn serve(self: Arc<Self>, conn: quinn::Connection, peer: Member) {
        lock(&self.conns).insert(peer.id, (conn.clone(), peer.clone()));
        // A peer that reached us is worth telling the failure detector about.
        let _ = self.gossip.send(GossipEvent::Announce(peer.clone()));
        let budget = wire::FrameBudget::for_connection(&self.frame_budget);
        loop {
            tokio::select! {
                bi = conn.accept_bi() => match bi {
                    Ok((send, mut recv)) => {
                        let me = self.clone();
                        let p = peer.clone();
                        let budget = budget.clone();
                        tokio::spawn(async move {
                            let req = match wire::read_frame_within(&mut recv, &budget).await {
                                Ok(req) => req,
                                Err(e) => return me.refuse_frame(&p, recv, &e),
                            };
                            if let Err(e) = me.answer(&p, req, send, recv).await {
                                tracing::debug!(peer = %p.id, error = %e, "request failed");
                            }
                        });
                    }
                    Err(_) => break,
                },
                uni = conn.accept_uni() => match uni {
                    Ok(mut recv) => {
                        let me = self.clone();
                        let p = peer.clone();
                        let budget = budget.clone();
                        tokio::spawn(async move {
                            match wire::read_frame_within::<_, Notice>(&mut recv, &budget).await {
                                Ok(n) => me.on_notice(peer.id, n),
                                Err(e) => me.refuse_frame(&p, recv, &e),
                            }
                        });
                    }
                    Err(_) => break,
                },
            }
        }
        let mut conns = lock(&self.conns);
        if conns
            .get(&peer.id)
            .is_some_and(|(c, _)| c.stable_id() == conn.stable_id())
        {
            conns.remove(&peer.id);
        }
    }

    /// Drops a frame that could not be read: the stream is stopped, so quinn discards what it
    /// buffered for it and the peer learns at once. A stream that simply ended is no news.
    fn refuse_frame(&self, peer: &Member, mut recv: quinn::RecvStream, e: &SwarmError) {
        if matches!(e, SwarmError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof) {
            return;
        }
        self.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer = %peer.id, error = %e, "frame refused");
        let _ = recv.stop(FRAME_REFUSED.into());
    }

    fn on_notice(&self, from: NodeId, n: Notice) {
        match n {
            Notice::Gossip(data) => {
                let _ = self.gossip.send(GossipEvent::Data(data));
            }
            Notice::Poke => self.sync_wake.notify_one(),
            Notice::Have(chunks) => self.announcer.heard(from, chunks),
        }
    }

    /// Answers one request.
    async fn answer(
        self: Arc<Self>,
        peer: &Member,
        req: Request,
        mut send: quinn::SendStream,
        // Held until answered, as the peer's side of the stream.
        _recv: quinn::RecvStream,
    ) -> Result<(), SwarmError> {
        let store = self.store.clone();
        let _ = send.set_priority(match req {
            Request::Chunk { .. } => BULK,
            _ => CONTROL,
        });
        match req {
            Request::Pull { seen } => {
                let seen = seen.into_iter().collect();
                let resp = tokio::task::spawn_blocking(move || -> Result<Response, SwarmError> {
                    Ok(Response::Entries {
                        entries: store.journal_since(&seen, 1 << 20)?,
                        seen: store.journal_seen()?.into_iter().collect(),
                        now_ms: crate::hlc::SharedClock::wall_ms(),
                    })
                })
                .await
                .map_err(|e| SwarmError::Protocol(e.to_string()))??;
                wire::write_frame(&mut send, &resp).await?;
            }
            Request::Have { chunks } => {
                self.announcer.interest(peer.id);
                let flags = tokio::task::spawn_blocking(move || {
                    chunks
                        .iter()
                        .map(|h| {
                            store
                                .has_chunk(&store::ChunkHash::from_bytes(*h))
                                .unwrap_or(false)
                        })
                        .collect::<Vec<bool>>()
                })
                .await
                .map_err(|e| SwarmError::Protocol(e.to_string()))?;
                wire::write_frame(&mut send, &Response::Have(flags)).await?;
            }
            Request::Chunk { hash, insist } => {
                self.announcer.interest(peer.id);
                let h = store::ChunkHash::from_bytes(hash);
                // A full queue is answered before the store is asked: most requests to a busy
                // holder end here (16 readers on 25 Mbit/s links got 12 "busy" answers per
                // chunk they received), and the lookup's hop to the blocking pool and back
                // cost more than the answer. Whether the copy is an original is not known yet,
                // but only originals recorded as sent are ever pointed elsewhere, and the
                // seeding book knows those without the store.
                if self.upload_queue.load(Ordering::Relaxed) >= UPLOAD_QUEUE
                    && let Some(resp) = self.early_answer(h, peer.id, true, insist)
                {
                    tracing::trace!(peer = %peer.id, chunk = %h, early = ?resp, "chunk asked, queue full");
                    wire::write_frame(&mut send, &resp).await?;
                    send.finish().ok();
                    return Ok(());
                }
                // One lookup: the bytes are read (and checked) once, and stay valid while the
                // request waits for a slot even if the chunk is evicted meanwhile.
                let held = tokio::task::spawn_blocking(move || store.held_chunk(&h))
                    .await
                    .map_err(|e| SwarmError::Protocol(e.to_string()))??;
                let Some(held) = held else {
                    wire::write_frame(&mut send, &Response::NoChunk).await?;
                    send.finish().ok();
                    return Ok(());
                };
                // Only a node's own copies (written here, or held for durability) are sent
                // once while their recipient passes them on: those are the original's, the
                // one upload that bounds the swarm. Copies fetched for reading are served to
                // every asker; refusing those too throttled the readers' trading to one send
                // per chunk.
                let original = !held.cached;
                let early = self.early_answer(h, peer.id, original, insist);
                tracing::trace!(peer = %peer.id, chunk = %h, original, insist, ?early, "chunk asked");
                if let Some(resp) = early {
                    wire::write_frame(&mut send, &resp).await?;
                    send.finish().ok();
                    return Ok(());
                }
                // Wait for an upload slot; an asker that gives up meanwhile (it got the
                // chunk elsewhere) leaves the queue at once.
                self.upload_queue.fetch_add(1, Ordering::Relaxed);
                let slot = tokio::select! {
                    slot = self.uploads.acquire() => slot
                        .map_err(|_| SwarmError::Unreachable("shutting down".into())),
                    _ = send.stopped() => Err(SwarmError::Unreachable("asker gave up".into())),
                };
                self.upload_queue.fetch_sub(1, Ordering::Relaxed);
                let Ok(_slot) = slot else { return Ok(()) };
                tracing::trace!(peer = %peer.id, chunk = %h, "upload slot");
                let decision = original.then(|| {
                    self.seeding.decide(
                        h,
                        peer.id,
                        Instant::now(),
                        self.uploads_idle(1),
                        insist,
                        |n| self.is_alive(n),
                    )
                });
                match decision {
                    Some(Decision::Elsewhere(to)) => {
                        wire::write_frame(&mut send, &Response::Elsewhere(to)).await?;
                    }
                    // A copy that is not an original, or one the seeding book counts as under
                    // way until `_under_way` drops: when the send ends, however it ends.
                    _under_way => self.send_chunk(peer, &mut send, held.bytes).await?,
                }
            }
            Request::Manifest { hash } => {
                let h = store::ManifestHash::from_bytes(hash);
                let blob = tokio::task::spawn_blocking(move || store.manifest_blob(&h))
                    .await
                    .map_err(|e| SwarmError::Protocol(e.to_string()))??;
                match blob {
                    Some(bytes) => {
                        let len = bytes.len() as u64;
                        wire::write_frame(&mut send, &Response::Manifest { len }).await?;
                        send.write_all(&bytes).await?;
                        self.count_sent(peer, len);
                    }
                    None => wire::write_frame(&mut send, &Response::NoManifest).await?,
                }
            }
            Request::Registry { rpc, body } => {
                let resp = match self.registry.get() {
                    Some(r) => Response::Registry(r.answer(rpc, body).await),
                    None => Response::Error("this node's registry is not running yet".into()),
                };
                wire::write_frame(&mut send, &resp).await?;
            }
            Request::Service { body } => {
                let resp = match self.service.get() {
                    Some(serve) => Response::Service(serve(peer.id, body).await),
                    None => Response::Service(Err("this node offers no service".into())),
                };
                wire::write_frame(&mut send, &resp).await?;
            }
            Request::Status => {
                let me = self.clone();
                let resp = tokio::task::spawn_blocking(move || me.local_status())
                    .await
                    .map_err(|e| SwarmError::Protocol(e.to_string()))?;
                let resp = match resp {
                    Ok(s) => Response::Status(s),
                    Err(e) => Response::Error(e.to_string()),
                };
                wire::write_frame(&mut send, &resp).await?;
            }
        }
        send.finish().ok();
        Ok(())
    }

    /// What a request for `chunk` is answered at once, without waiting for an upload slot, if
    /// anything: an `original` copy on its way to, or just sent to, another member is to be
    /// fetched there (see [`crate::seeding`]), and beyond a full queue the holder is busy.
    fn early_answer(
        &self,
        chunk: store::ChunkHash,
        asker: NodeId,
        original: bool,
        insist: bool,
    ) -> Option<Response> {
        let pointed = original
            .then(|| {
                self.seeding.would_defer(
                    chunk,
                    asker,
                    Instant::now(),
                    self.uploads_idle(0),
                    insist,
                    |n| self.is_alive(n),
                )
            })
            .flatten();
        match pointed {
            Some(to) => Some(Response::Elsewhere(to)),
            None if self.upload_queue.load(Ordering::Relaxed) >= UPLOAD_QUEUE => {
                Some(Response::Busy)
            }
            None => None,
        }
    }

    /// Whether no chunk upload is under way or waiting for a slot, besides the `own` slots
    /// the caller holds.
    fn uploads_idle(&self, own: usize) -> bool {
        self.upload_queue.load(Ordering::Relaxed) == 0
            && self.uploads.available_permits() + own == UPLOAD_SLOTS
    }

    /// Sends a chunk's header and bytes, and waits until the peer has them all.
    async fn send_chunk(
        &self,
        peer: &Member,
        send: &mut quinn::SendStream,
        bytes: Bytes,
    ) -> Result<(), SwarmError> {
        let bytes = if self.cfg.fault_corrupt {
            corrupt(bytes)
        } else {
            bytes
        };
        wire::write_frame(
            send,
            &Response::Chunk {
                len: bytes.len() as u32,
            },
        )
        .await?;
        let len = bytes.len() as u64;
        // Handed over whole: quinn keeps the (mapped) bytes until acknowledged, no copy.
        send.write_chunk(bytes).await?;
        // The slot is held until the peer has the bytes, not merely until they are buffered
        // here: otherwise the slots would limit nothing.
        send.finish().ok();
        let started = Instant::now();
        let delivered = tokio::time::timeout(CALL_TIMEOUT, send.stopped()).await;
        tracing::trace!(peer = %peer.id, len, took = ?started.elapsed(), ?delivered, "chunk sent");
        // Bytes are counted as handed to the transport (a request cancelled midway sent some
        // of them); a chunk counts as served once delivered.
        self.count_sent(peer, len);
        if matches!(delivered, Ok(Ok(None))) {
            self.stats.chunks_served.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sends a request to `peer`; returns the response header and the stream (a chunk's
    /// bytes follow on it).
    pub async fn call(
        self: &Arc<Self>,
        peer: &Member,
        req: &Request,
    ) -> Result<(Response, quinn::RecvStream), SwarmError> {
        self.call_within(peer, req, CALL_TIMEOUT).await
    }

    /// `call`, waiting up to `timeout` for the response header.
    async fn call_within(
        self: &Arc<Self>,
        peer: &Member,
        req: &Request,
        timeout: Duration,
    ) -> Result<(Response, quinn::RecvStream), SwarmError> {
        let (conn, _) = self.connect(peer.addr).await?;
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            let _ = send.set_priority(CONTROL);
            wire::write_frame(&mut send, req).await?;
            send.finish().ok();
            let resp: Response = wire::read_frame(&mut recv).await?;
            Ok::<_, SwarmError>((resp, recv))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| SwarmError::Timeout(format!("request to {}", peer.id)))?
    }

    /// Sends a service request to `peer` and waits up to `timeout` for its answer.
    pub async fn ask_service(
        self: &Arc<Self>,
        peer: &Member,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, SwarmError> {
        match self
            .call_within(peer, &Request::Service { body }, timeout)
            .await?
            .0
        {
            Response::Service(Ok(b)) => Ok(b),
            Response::Service(Err(why)) => Err(SwarmError::Protocol(format!(
                "{} could not answer: {why}",
                peer.id
            ))),
            other => Err(SwarmError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Sends a notice to the member; failures are only logged (gossip tolerates loss).
    pub fn notify(self: &Arc<Self>, to: SocketAddr, notice: Notice) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.deliver(to, notice, false).await {
                tracing::debug!(%to, error = %e, "notice not delivered");
            }
        });
    }

    /// Sends one notice; with `read`, waits until the peer has read it all.
    pub async fn deliver(
        self: &Arc<Self>,
        to: SocketAddr,
        notice: Notice,
        read: bool,
    ) -> Result<(), SwarmError> {
        let sent = async {
            let (conn, _) = self.connect(to).await?;
            let mut s = conn.open_uni().await?;
            let _ = s.set_priority(CONTROL);
            wire::write_frame(&mut s, &notice).await?;
            s.finish().ok();
            s.flush().await?;
            if read {
                let _ = s.stopped().await;
            }
            Ok::<_, SwarmError>(())
        };
        tokio::time::timeout(DIAL_TIMEOUT * 2, sent)
            .await
            .unwrap_or_else(|_| Err(SwarmError::Unreachable(to.to_string())))
    }

    /// Which of `chunks` the peer holds.
    pub async fn ask_have(
        self: &Arc<Self>,
        peer: &Member,
        chunks: &[store::ChunkHash],
    ) -> Result<Vec<bool>, SwarmError> {
        let req = Request::Have {
            chunks: chunks.iter().map(|c| *c.as_bytes()).collect(),
        };
        match self.call(peer, &req).await?.0 {
            Response::Have(flags) if flags.len() == chunks.len() => Ok(flags),
            other => Err(SwarmError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Fetches a manifest that journal entries name by hash from `peer`, checked against the
    /// hash: at least 1 MiB/s after a first 10 s.
    pub async fn fetch_manifest(
        self: &Arc<Self>,
        peer: &Member,
        hash: store::ManifestHash,
    ) -> Result<Vec<u8>, SwarmError> {
        let (resp, mut recv) = self
            .call(
                peer,
                &Request::Manifest {
                    hash: *hash.as_bytes(),
                },
            )
            .await?;
        let len = match resp {
            Response::Manifest { len } if len <= store::journal::MAX_MANIFEST_BYTES => len,
            Response::Manifest { len } => {
                return Err(SwarmError::Protocol(format!("a manifest of {len} bytes")));
            }
            Response::NoManifest => {
                return Err(SwarmError::Protocol(format!(
                    "{} does not hold manifest {hash}",
                    peer.id
                )));
            }
            other => return Err(SwarmError::Protocol(format!("unexpected answer {other:?}"))),
        };
        let mut buf = Vec::with_capacity(len.min(8 << 20) as usize);
        let limit = Duration::from_secs(10 + len / (1 << 20));
        let read = async {
            let mut take = tokio::io::AsyncReadExt::take(&mut recv, len);
            tokio::io::AsyncReadExt::read_to_end(&mut take, &mut buf).await
        };
        tokio::time::timeout(limit, read)
            .await
            .map_err(|_| SwarmError::Timeout(format!("manifest {hash} from {}", peer.id)))??;
        if buf.len() as u64 != len || store::ManifestHash::of(&buf) != hash {
            return Err(SwarmError::Protocol(format!(
                "{} sent a manifest that is not {hash}",
                peer.id
            )));
        }
        self.count_received(peer, len);
        Ok(buf)
    }

    /// Fetches one chunk from `peer` and verifies it; bad bytes are an error naming the
    /// peer (the caller drops it).
    /// The holder answers when one of its upload slots is free (the header may take a
    /// while). Then the bytes must keep coming: a pause of `stall` without any is given up
    /// (a timeout), as is a body slower than `min_rate` on the whole, after a first `stall`
    /// of grace.
    pub async fn fetch_chunk(
        self: &Arc<Self>,
        peer: &Member,
        hash: store::ChunkHash,
        insist: bool,
        stall: Duration,
        min_rate: u64,
    ) -> Result<Fetched, SwarmError> {
        let asked = Instant::now();
        let (resp, mut recv) = self
            .call(
                peer,
                &Request::Chunk {
                    hash: *hash.as_bytes(),
                    insist,
                },
            )
            .await?;
        match resp {
            Response::Chunk { len } => {
                if len as usize > store::chunker::MAX_CHUNK {
                    return Err(SwarmError::Protocol(format!("chunk of {len} bytes")));
                }
                let len = len as usize;
                // Quinn's own buffers are appended as they come: no zero-filled buffer first.
                let mut buf = BytesMut::with_capacity(len);
                // One timer for the whole body, for both limits, moved as bytes come rather
                // than one per read (a read is often a single datagram).
                let began = Instant::now();
                let deadline =
                    began + stall + Duration::from_secs_f64(len as f64 / min_rate.max(1) as f64);
                let mut last = began;
                let watchdog = tokio::time::sleep(stall);
                tokio::pin!(watchdog);
                while buf.len() < len {
                    tokio::select! {
                        biased;
                        // Cancel-safe: a read not taken leaves its bytes in the stream.
                        piece = recv.read_chunk(len - buf.len(), true) => match piece? {
                            Some(c) => {
                                buf.extend_from_slice(&c.bytes);
                                last = Instant::now();
                            }
                            None => {
                                return Err(SwarmError::Protocol(format!(
                                    "chunk {hash} cut short at {} of {len} bytes",
                                    buf.len()
                                )));
                            }
                        },
                        () = &mut watchdog => {
                            let now = Instant::now();
                            if now >= deadline {
                                return Err(SwarmError::Timeout(format!(
                                    "chunk {hash} from {}: slower than {min_rate} bytes/s",
                                    peer.id
                                )));
                            }
                            if now >= last + stall {
                                return Err(SwarmError::Timeout(format!(
                                    "chunk {hash} from {}: nothing for {stall:?} at {} of \
                                     {len} bytes",
                                    peer.id,
                                    buf.len()
                                )));
                            }
                            watchdog.as_mut().reset((last + stall).min(deadline).into());
                        }
                    }
                }
                self.count_received(peer, len as u64);
                match VerifiedChunk::new(hash, buf.freeze()) {
                    Some(chunk) => {
                        if let Some(observe) = &self.cfg.hooks.chunk_fetched {
                            observe(asked.elapsed());
                        }
                        Ok(Fetched::Chunk(chunk))
                    }
                    None => {
                        self.stats
                            .verification_failures
                            .fetch_add(1, Ordering::Relaxed);
                        Err(SwarmError::Corrupt(hash, peer.id.to_string()))
                    }
                }
            }
            Response::NoChunk => Ok(Fetched::Missing),
            Response::Elsewhere(to) => Ok(Fetched::Elsewhere(to)),
            Response::Busy => Ok(Fetched::Busy),
            other => Err(SwarmError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }
}

/// What asking a peer for a chunk got.
pub enum Fetched {
    /// The bytes, verified.
    Chunk(VerifiedChunk),
    /// The peer does not hold it (any more).
    Missing,
    /// The peer has just sent it to this member, who will announce it.
    Elsewhere(NodeId),
    /// The peer's upload queue is full.
    Busy,
}

/// The test-only fault: one flipped byte in the middle.
fn corrupt(bytes: Bytes) -> Bytes {
    let mut v = bytes.to_vec();
    let mid = v.len() / 2;
    if let Some(b) = v.get_mut(mid) {
        *b ^= 0x5a;
    }
    Bytes::from(v)
}
