//! The running swarm on one node: configuration, shared state, counters, and the tasks that
//! drive the deterministic core (transport, gossip, namespace sync, transfer, keeper).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use store::Store;
use tokio::sync::{Notify, mpsc};

use crate::announce::Announcer;
use crate::auth::ClusterSecret;
use crate::bootstrap::PeerAddr;
use crate::error::SwarmError;
use crate::gossip::GossipEvent;
use crate::hlc::SharedClock;
use crate::member::Member;
use crate::membership::{Membership, Report, State};
use crate::node::NodeId;
use crate::readiness::{NotReady, Readiness};
use crate::registry::Registry;
use crate::seeding::Seeding;
use crate::wire::PeerStatus;

/// How a node takes part in the swarm.
#[derive(Clone)]
pub struct SwarmConfig {
    /// Where the QUIC endpoint listens.
    pub listen: SocketAddr,
    /// The address peers dial to reach this node; `None`: the bound address, which must then
    /// be a specific IP (not 0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// The S3 address, shown to peers in `cluster status`.
    pub http: Option<SocketAddr>,
    /// Nodes to join through (any member will do); names are resolved on every attempt.
    pub peers: Vec<PeerAddr>,
    pub secret: ClusterSecret,
    /// Copies of each chunk (k), placed by rendezvous hashing over the storage members.
    pub replicas: usize,
    /// A cache-only node: holds no placed copies, and evicts cached chunks beyond this many
    /// bytes.
    pub capacity: Option<u64>,
    /// Test-only fault: flip a byte in every chunk served to peers.
    pub fault_corrupt: bool,
    /// Where the registry keeps its log (see [`crate::registry`]).
    pub registry_dir: std::path::PathBuf,
    /// Found the registry once this many storage members are live, all of them voters (for
    /// swarms whose every node is given the same peers); `None`: a node given no peer founds
    /// it alone.
    pub bootstrap_expect: Option<usize>,
    /// Peers' connections accepted at most once proved (see [`crate::admission`]).
    pub max_connections: usize,
    /// Measurements reported as they happen.
    pub hooks: Hooks,
}

/// A latency observer.
pub type Observer = Arc<dyn Fn(Duration) + Send + Sync>;

/// Where the swarm reports individual measurements, for histograms it does not keep itself.
#[derive(Clone, Default)]
pub struct Hooks {
    /// How long a chunk took from request to verified bytes.
    pub chunk_fetched: Option<Observer>,
    /// How long a namespace entry took from its origin's stamp to its application here.
    pub entry_applied: Option<Observer>,
}

/// Counters the gateway exports as metrics.
#[derive(Default)]
pub struct SwarmStats {
    /// Indexed by [`PeerClass`].
    pub bytes_sent: [AtomicU64; 2],
    pub bytes_received: [AtomicU64; 2],
    pub chunks_fetched: AtomicU64,
    pub chunks_served: AtomicU64,
    pub verification_failures: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Peers' request and notice frames refused (no room, too slow, or malformed).
    pub frames_refused: AtomicU64,
    pub peers_dropped: AtomicU64,
    /// Peers' connections turned away, at [`crate::admission::Refusal::index`]: too many
    /// proving the secret at once, or as many proved ones as the node accepts.
    pub connections_refused: [AtomicU64; 2],
    pub journal_applied: AtomicU64,
    /// Entries recorded whose bucket incarnation was already deleted (nothing to apply).
    pub journal_superseded: AtomicU64,
    /// Entries recorded here that wait for their bucket incarnation (last measured).
    pub journal_parked: AtomicU64,
    /// Entries not applied, by origin and reason: refused as invalid (see
    /// [`store::merge::Refusal`]), or held back (`clock_ahead`: stamped too far ahead of this
    /// node's clock; counted at each pull that meets it).
    pub journal_unapplied: Mutex<BTreeMap<(NodeId, &'static str), u64>>,
    /// How far this node's clock runs ahead of its peers' beyond the allowed drift (ms; 0:
    /// within it). While non-zero, writes are refused.
    pub clock_ahead_ms: AtomicU64,
    /// Journal entries peers have that this node has not recorded yet (last measured).
    pub journal_backlog: AtomicU64,
    /// Delay between a write's stamp and its application here, last applied (ms); 0 once
    /// caught up with every peer with nothing new applied.
    pub namespace_lag_ms: AtomicU64,
    /// Chunks placement assigns to this node that it does not hold yet.
    pub replication_backlog: AtomicU64,
    /// Chunks placed on this node that it lacks and no live member holds (each node counts
    /// its own placements, so the swarm's lost chunks are at least the largest count).
    pub chunks_lost: AtomicU64,
    pub repairs: AtomicU64,
    pub evicted_bytes: AtomicU64,
}

/// Peers by role, for per-class byte counters.
#[derive(Clone, Copy, Debug)]
pub enum PeerClass {
    Storage = 0,
    Cache = 1,
}

impl PeerClass {
    pub fn of(m: &Member) -> Self {
        if m.storage {
            PeerClass::Storage
        } else {
            PeerClass::Cache
        }
    }

    pub fn label(i: usize) -> &'static str {
        if i == 0 { "storage" } else { "cache" }
    }
}

/// The membership as this node sees it: states from failure detection, identities from
/// the members themselves.
#[derive(Default)]
pub(crate) struct Members {
    pub view: Membership,
    pub info: BTreeMap<NodeId, Member>,
}

impl Members {
    pub fn up(&mut self, m: Member) -> bool {
        let changed = self.view.apply(Report {
            node: m.id,
            incarnation: m.incarnation,
            state: State::Alive,
        });
        if changed {
            self.info.insert(m.id, m);
        }
        changed
    }

    pub fn down(&mut self, m: &Member) -> bool {
        self.view.apply(Report {
            node: m.id,
            incarnation: m.incarnation,
            state: State::Down,
        })
    }

    /// Live peers (not this node).
    pub fn alive_peers(&self, me: &NodeId) -> Vec<Member> {
        self.info
            .values()
            .filter(|m| m.id != *me && self.view.state(&m.id) == Some(State::Alive))
            .cloned()
            .collect()
    }

    /// Storage members that count for placement, this node included if it stores.
    pub fn placement(&self) -> Vec<NodeId> {
        self.view
            .placement_members()
            .into_iter()
            .filter(|n| self.info.get(n).is_some_and(|m| m.storage))
            .collect()
    }
}

pub(crate) struct Inner {
    pub cfg: SwarmConfig,
    pub store: Arc<Store>,
    pub me: Member,
    pub clock: SharedClock,
    pub endpoint: quinn::Endpoint,
    /// Authenticated connections by peer.
    pub conns: Mutex<HashMap<NodeId, (quinn::Connection, Member)>>,
    /// One dial at a time per address.
    pub dialing: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
    pub members: Mutex<Members>,
    /// Peers that sent corrupt bytes, until when they are ignored.
    pub banned: Mutex<HashMap<NodeId, Instant>>,
    pub gossip: mpsc::UnboundedSender<GossipEvent>,
    /// Wakes the namespace sync (a peer poked, or a local write).
    pub sync_wake: Notify,
    /// Wakes the keeper (membership or namespace changed).
    pub keeper_wake: Notify,
    pub stats: Arc<SwarmStats>,
    pub announcer: Announcer,
    pub seeding: Seeding,
    /// Chunk uploads in progress at once (see [`crate::seeding::UPLOAD_SLOTS`]).
    pub uploads: tokio::sync::Semaphore,
    /// Chunk requests waiting for an upload slot.
    pub upload_queue: std::sync::atomic::AtomicUsize,
    /// Whether this node has caught up with the swarm since it started.
    pub readiness: Mutex<Readiness>,
    /// This node's member of the registry group, once started.
    pub registry: std::sync::OnceLock<Arc<Registry>>,
    /// Memory for peers' request and notice frames being read (see [`crate::wire::FrameBudget`]).
    pub frame_budget: Arc<tokio::sync::Semaphore>,
    /// What answers `Request::Service`, once the node above registered it.
    pub service: std::sync::OnceLock<Service>,
    /// Caps on peers' connections.
    pub admission: crate::admission::Admission,
}

/// The service a node above the swarm offers its peers: given the asker and the request
/// bytes, the answer bytes (or why there is none). The swarm carries both opaquely.
pub type Service = Arc<
    dyn Fn(
            NodeId,
            Vec<u8>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send>>
        + Send
        + Sync,
>;

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    pub fn is_banned(&self, id: &NodeId) -> bool {
        let mut b = lock(&self.banned);
        match b.get(id) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                b.remove(id);
                false
            }
            None => false,
        }
    }

    /// Drops a peer that misbehaved (sent bytes that fail verification) for a while.
    pub fn ban(&self, id: NodeId, why: &str) {
        tracing::warn!(peer = %id, reason = why, "dropping peer");
        lock(&self.banned).insert(id, Instant::now() + Duration::from_secs(60));
        self.stats.peers_dropped.fetch_add(1, Ordering::Relaxed);
        if let Some((conn, _)) = lock(&self.conns).remove(&id) {
            conn.close(2u32.into(), b"sent corrupt data");
        }
    }

    /// The member whose registry id is `id`, as membership knows it.
    pub fn member_by_raft_id(&self, id: crate::registry::RaftId) -> Option<Member> {
        lock(&self.members)
            .info
            .values()
            .find(|m| crate::registry::raft_id(&m.id) == id)
            .cloned()
    }

    /// Whether membership has `id` alive now.
    pub fn is_alive(&self, id: &NodeId) -> bool {
        lock(&self.members).view.state(id) == Some(State::Alive)
    }

    pub fn alive_peers(&self) -> Vec<Member> {
        let me = self.me.id;
        lock(&self.members)
            .alive_peers(&me)
            .into_iter()
            .filter(|m| !self.is_banned(&m.id))
            .collect()
    }

    pub fn count_sent(&self, to: &Member, n: u64) {
        self.stats.bytes_sent[PeerClass::of(to) as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn count_received(&self, from: &Member, n: u64) {
        self.stats.bytes_received[PeerClass::of(from) as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// What this node holds, for `cluster status`.
    pub fn local_status(&self) -> Result<PeerStatus, SwarmError> {
        let (mut held, mut missing, mut bytes) = (0u64, 0u64, 0u64);
        self.store.chunk_inventory(|c| {
            bytes += c.held_bytes;
            match (c.refs, c.held_bytes) {
                (0, _) => {}
                // A piece of an origin object not fetched here is not missing: the origin has it.
                (_, 0) if c.origin_only => {}
                (_, 0) => missing += 1,
                _ => held += 1,
            }
            true
        })?;
        Ok(PeerStatus {
            chunks_held: held,
            bytes_held: bytes,
            chunks_missing: missing,
            journal: self.store.journal_seen()?.into_iter().collect(),
        })
    }
}

/// One member as `cluster status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    pub id: String,
    pub swarm_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub state: String,
    pub role: &'static str,
    pub incarnation: u64,
    pub is_self: bool,
    /// What it holds, if it answered.
    pub chunks_held: Option<u64>,
    pub bytes_held: Option<u64>,
    pub chunks_missing: Option<u64>,
    pub journal_entries: Option<u64>,
    pub error: Option<String>,
}

/// The swarm as one node sees it.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub node: String,
    pub replicas: usize,
    pub members: Vec<MemberStatus>,
}

/// A node's handle on the swarm.
#[derive(Clone)]
pub struct Swarm {
    inner: Arc<Inner>,
}

impl Swarm {
    /// Leaves the swarm: tells members this node is going (they mark it down at once rather
    /// than after seconds of failed probes, and stop sending readers to it), then closes
    /// every connection. Requests to peers fail from then on.
    pub async fn close(&self) {
        if let Some(r) = self.inner.registry.get() {
            r.shutdown().await;
        }
        let (told, delivered) = tokio::sync::oneshot::channel();
        if self.inner.gossip.send(GossipEvent::Leave(told)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), delivered).await;
        }
        self.inner.endpoint.close(0u32.into(), b"node stopping");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }

    /// Binds the QUIC endpoint and starts membership, namespace sync and the keeper.
    pub async fn start(
        cfg: SwarmConfig,
        store: Arc<Store>,
        clock: SharedClock,
    ) -> Result<Self, SwarmError> {
        let (server, client) = crate::auth::quic_configs(Duration::from_secs(6))?;
        let mut endpoint = crate::socket::endpoint(cfg.listen, Some(server)).map_err(|e| {
            SwarmError::Unreachable(format!("cannot listen on {}: {e}", cfg.listen))
        })?;
        endpoint.set_default_client_config(client);
        let listen = endpoint.local_addr()?;
        let addr = match cfg.advertise {
            Some(a) if a.ip().is_unspecified() || a.port() == 0 => {
                return Err(SwarmError::Unreachable(format!(
                    "cannot advertise {a}: peers need a specific IP and port to dial"
                )));
            }
            Some(a) => a,
            None if listen.ip().is_unspecified() => {
                return Err(SwarmError::Unreachable(format!(
                    "listening on {listen} needs an advertised address (--swarm-advertise \
                     IP:PORT) that peers can dial"
                )));
            }
            None => listen,
        };
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let me = Member {
            id: store.node_id(),
            addr,
            http: cfg.http,
            storage: cfg.capacity.is_none(),
            incarnation,
        };
        // A node that has been part of a swarm (its journal holds other nodes' writes) must
        // meet one of them again before it is ready, like one told whom to join through.
        let me_id = store.node_id();
        let known_others = store.journal_seen()?.keys().any(|o| *o != me_id);
        let readiness = Readiness::new(!cfg.peers.is_empty() || known_others);
        let (gossip, events) = mpsc::unbounded_channel();
        let mut members = Members::default();
        members.up(me.clone());
        let inner = Arc::new(Inner {
            cfg: SwarmConfig {
                listen,
                ..cfg.clone()
            },
            store,
            me,
            clock,
            endpoint,
            conns: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            members: Mutex::new(members),
            banned: Mutex::new(HashMap::new()),
            gossip,
            sync_wake: Notify::new(),
            keeper_wake: Notify::new(),
            stats: Arc::new(SwarmStats::default()),
            announcer: Announcer::default(),
            seeding: Seeding::default(),
            uploads: tokio::sync::Semaphore::new(crate::seeding::UPLOAD_SLOTS),
            upload_queue: std::sync::atomic::AtomicUsize::new(0),
            readiness: Mutex::new(readiness),
            registry: std::sync::OnceLock::new(),
            frame_budget: crate::wire::FrameBudget::node(),
            service: std::sync::OnceLock::new(),
            admission: crate::admission::Admission::new(cfg.max_connections),
        });
        let dir = cfg.registry_dir.clone();
        let log = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            store::ConsensusLog::open(&dir).map_err(SwarmError::from)
        })
        .await
        .map_err(|e| SwarmError::Protocol(e.to_string()))??;
        let registry = Registry::start(&inner, Arc::new(log)).await?;
        let _ = inner.registry.set(registry);
        let peers: Vec<String> = cfg.peers.iter().map(ToString::to_string).collect();
        tracing::info!(node = %inner.me.id, %listen, advertise = %addr, ?peers, "swarm listening");
        tokio::spawn(inner.clone().accept_loop());
        tokio::spawn(inner.clone().gossip_loop(events, cfg.peers.clone()));
        tokio::spawn(inner.clone().sync_loop());
        tokio::spawn(inner.clone().keeper_loop());
        tokio::spawn(inner.clone().watch_journal());
        tokio::spawn(inner.clone().announce_loop());
        Ok(Self { inner })
    }

    /// The QUIC address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.me.addr
    }

    /// This node as its peers see it (id, advertised address, role).
    pub fn me(&self) -> &Member {
        &self.inner.me
    }

    pub fn stats(&self) -> &Arc<SwarmStats> {
        &self.inner.stats
    }

    /// Whether this node has caught up with the swarm since it started (see
    /// [`crate::readiness`]): until it has, it must not decide that a bucket name is free or
    /// that a key has no object.
    pub fn readiness(&self) -> Result<(), NotReady> {
        let alive = self.inner.alive_peers().len();
        lock(&self.inner.readiness).check(alive)
    }

    /// This node's member of the registry (see [`crate::registry`]).
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.inner.registry.get()
    }

    /// Members by state (this node included).
    pub fn member_counts(&self) -> BTreeMap<State, usize> {
        lock(&self.inner.members).view.counts()
    }

    /// Registers what answers peers' service requests (once; later calls are ignored).
    pub fn serve(&self, service: Service) {
        let _ = self.inner.service.set(service);
    }

    /// Asks `peer` (a live member) for the service, waiting up to `timeout`.
    pub async fn ask(
        &self,
        peer: &NodeId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, SwarmError> {
        let member = self
            .inner
            .alive_peers()
            .into_iter()
            .find(|m| m.id == *peer)
            .ok_or_else(|| SwarmError::Unreachable(format!("{peer} is not a live member")))?;
        self.inner.ask_service(&member, body, timeout).await
    }

    /// The live members' ids, this node's included (what a rendezvous choice ranks).
    pub fn live_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.inner.alive_peers().iter().map(|m| m.id).collect();
        ids.push(self.inner.me.id);
        ids.sort();
        ids
    }

    /// How many live members hold a copy of the least-copied of `chunks`, counting this node
    /// and the members placement puts each chunk on (the copies that keep it), and how many
    /// that should be: `--replicas`, or fewer when fewer storage members are alive.
    pub async fn copies(&self, chunks: &[store::ChunkHash]) -> Result<(usize, usize), SwarmError> {
        let inner = &self.inner;
        let mut members = lock(&inner.members).placement();
        members.sort();
        let want = inner.cfg.replicas.min(members.len()).max(1);
        let mut counts = vec![0usize; chunks.len()];
        let store = inner.store.clone();
        let list = chunks.to_vec();
        let here = tokio::task::spawn_blocking(move || {
            list.iter()
                .map(|h| store.has_chunk(h))
                .collect::<Result<Vec<bool>, _>>()
        })
        .await
        .map_err(|e| SwarmError::Protocol(e.to_string()))??;
        let mut by_holder: HashMap<NodeId, Vec<usize>> = HashMap::new();
        for (i, h) in chunks.iter().enumerate() {
            if here[i] {
                counts[i] += 1;
            }
            for n in crate::placement::holders(h, &members, inner.cfg.replicas) {
                if n != inner.me.id {
                    by_holder.entry(n).or_default().push(i);
                }
            }
        }
        for peer in inner.alive_peers() {
            let Some(idx) = by_holder.get(&peer.id) else {
                continue;
            };
            let asked: Vec<store::ChunkHash> = idx.iter().map(|&i| chunks[i]).collect();
            if let Ok(flags) = inner.ask_have(&peer, &asked).await {
                for (&i, held) in idx.iter().zip(flags) {
                    if held {
                        counts[i] += 1;
                    }
                }
            }
        }
        Ok((counts.into_iter().min().unwrap_or(want), want))
    }

    /// Starts fetching chunks this node lacks, for a read (kept as evictable copies).
    pub fn fetch(&self, chunks: Vec<store::ChunkHash>) -> crate::transfer::Download {
        self.inner.download(chunks, true)
    }

    /// Starts fetching chunks this node lacks and must keep (a part of an upload it holds
    /// whose bytes arrived at another node): not evictable copies.
    pub fn fetch_kept(&self, chunks: Vec<store::ChunkHash>) -> crate::transfer::Download {
        self.inner.download(chunks, false)
    }

    /// The members, their state and what they hold (each live peer is asked).
    pub async fn status(&self) -> ClusterStatus {
        let inner = &self.inner;
        let list: Vec<(Member, State)> = {
            let m = lock(&inner.members);
            m.info
                .values()
                .map(|x| (x.clone(), m.view.state(&x.id).unwrap_or(State::Down)))
                .collect()
        };
        let asks = list.iter().map(|(m, state)| async move {
            let answer = if m.id == inner.me.id {
                let i = inner.clone();
                tokio::task::spawn_blocking(move || i.local_status())
                    .await
                    .map_err(|e| SwarmError::Protocol(e.to_string()))
                    .and_then(|r| r)
            } else if *state == State::Alive {
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    inner.call(m, &crate::wire::Request::Status),
                )
                .await
                {
                    Ok(Ok((crate::wire::Response::Status(s), _))) => Ok(s),
                    Ok(Ok((other, _))) => Err(SwarmError::Protocol(format!("{other:?}"))),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(SwarmError::Timeout("status".into())),
                }
            } else {
                Err(SwarmError::Unreachable(m.addr.to_string()))
            };
            let (s, error) = match answer {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e.to_string())),
            };
            MemberStatus {
                id: m.id.to_hex(),
                swarm_addr: m.addr,
                http_addr: m.http,
                state: format!("{state:?}").to_lowercase(),
                role: if m.storage { "storage" } else { "cache" },
                incarnation: m.incarnation,
                is_self: m.id == inner.me.id,
                chunks_held: s.as_ref().map(|s| s.chunks_held),
                bytes_held: s.as_ref().map(|s| s.bytes_held),
                chunks_missing: s.as_ref().map(|s| s.chunks_missing),
                journal_entries: s.as_ref().map(|s| s.journal.iter().map(|(_, n)| n).sum()),
                error,
            }
        });
        ClusterStatus {
            node: inner.me.id.to_hex(),
            replicas: inner.cfg.replicas,
            members: futures::future::join_all(asks).await,
        }
    }
}

impl Inner {
    /// Pokes peers soon after each local write, so they pull it without waiting for the
    /// next tick. Reads the journal head (one key) every few milliseconds: cheaper than a
    /// hook in the store's commit path, and it only fires once the write is durable.
    async fn watch_journal(self: Arc<Self>) {
        let mut last = self.store.journal_head().unwrap_or(0);
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let head = self.store.journal_head().unwrap_or(last);
            if head != last {
                last = head;
                self.poke_peers();
            }
        }
    }
}
