//! The registry: the few namespace decisions that last-writer-wins cannot make, made once
//! for the whole swarm by a Raft group (openraft) of up to five voting storage members.
//! Everything else in the namespace stays on the journal and anti-entropy (`sync`).
//!
//! - [`state`]: what is decided (bucket name claims, conditional writes), a pure state
//!   machine.
//! - [`voters`]: who votes, and how a swarm's registry is founded.
//! - `storage`: the log in the store's [`store::ConsensusLog`], the state in memory with
//!   snapshots.
//! - `network`: the messages on the swarm's QUIC connections.
//!
//! A decision needs a majority of the voters. A node that cannot reach one (partitioned,
//! or the voters are down) gets [`RegistryError::Unavailable`], which clients see as 503:
//! never two answers for one decision.

mod network;
pub mod state;
mod storage;
pub mod voters;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Cursor;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use store::{ConsensusLog, NodeId};

use crate::error::SwarmError;
use crate::member::Member;
use crate::runtime::{Inner, lock};
use crate::wire::RegistryRpc;
pub use state::{Abandon, Claim, Command, Expect, Incarnation, KeyView, Outcome};

/// A member's id in the registry group: the first 8 bytes of its node id.
pub type RaftId = u64;

pub fn raft_id(n: &NodeId) -> RaftId {
    let mut b = [0u8; 8];
    b.copy_from_slice(&n.0[..8]);
    u64::from_be_bytes(b)
}

/// Where a member of the group was when it joined (its address now comes from membership).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    pub addr: String,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = RaftId,
        Node = Seat,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

type Raft = openraft::Raft<TypeConfig>;

/// How long a decision may take before the node answers that it cannot be made now.
const DECIDE_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "the swarm's registry cannot decide this now ({0}); a majority of its voting members must be reachable"
    )]
    Unavailable(String),
    #[error(
        "this swarm has no registry: start one node without --peer, or every node with --bootstrap-expect N"
    )]
    NotFormed,
}

/// This node's member of the registry group.
pub struct Registry {
    raft: Raft,
    sm: storage::StateMachine,
    inner: Weak<Inner>,
    me: RaftId,
    /// Decisions this node asked for and is still carrying out (not to be swept as abandoned).
    pending: std::sync::Mutex<HashSet<Abandon>>,
}

/// A decision this node must carry out. Dropped without [`Ticket::carried_out`] (the local
/// commit failed, the request was cancelled), the decision is taken back.
#[must_use]
pub struct Ticket {
    reg: Arc<Registry>,
    what: Option<Abandon>,
}

impl Ticket {
    pub fn carried_out(mut self) {
        if let Some(w) = self.what.take() {
            lock(&self.reg.pending).remove(&w);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(w) = self.what.take() {
            lock(&self.reg.pending).remove(&w);
            self.reg.abandon_soon(w);
        }
    }
}

/// How long after a decision its proposer is assumed to have carried it out or given up:
/// the sweep takes back its own older decisions that left nothing here.
const SWEEP_AFTER_MS: u64 = 30_000;

impl Registry {
    pub(crate) async fn start(
        inner: &Arc<Inner>,
        log: Arc<ConsensusLog>,
    ) -> Result<Arc<Self>, SwarmError> {
        let config = Config {
            cluster_name: "s3swarm-registry".into(),
            heartbeat_interval: 200,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            install_snapshot_timeout: 3000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(2000),
            max_in_snapshot_log_to_keep: 500,
            snapshot_max_chunk_size: 1 << 20,
            ..Default::default()
        }
        .validate()
        .map_err(|e| SwarmError::Protocol(format!("registry config: {e}")))?;
        let sm = storage::StateMachine::load(log.clone())
            .map_err(|e| SwarmError::Protocol(format!("registry snapshot: {e}")))?;
        let me = raft_id(&inner.me.id);
        let raft = Raft::new(
            me,
            Arc::new(config),
            network::Network {
                inner: Arc::downgrade(inner),
            },
            storage::LogStore::new(log),
            sm.clone(),
        )
        .await
        .map_err(|e| SwarmError::Protocol(format!("registry: {e}")))?;
        let reg = Arc::new(Self {
            raft,
            sm,
            inner: Arc::downgrade(inner),
            me,
            pending: std::sync::Mutex::new(HashSet::new()),
        });
        // A node with no one to join founds the registry at once: the laptop's first
        // CreateBucket must not wait for the steward's first round.
        if !reg.raft.is_initialized().await.unwrap_or(true) {
            reg.found(inner, &BTreeMap::new()).await;
        }
        tokio::spawn(reg.clone().steward());
        Ok(reg)
    }

    /// Whether `claim` was made by this node for a create it is no longer carrying out (its
    /// answer was lost, or the create failed): such an incarnation is never created, so the
    /// claim may be replaced at once rather than after it is taken back.
    pub fn given_up_here(&self, name: &str, claim: &Claim) -> bool {
        claim.node == self.node()
            && !lock(&self.pending).contains(&Abandon::Claim {
                name: name.to_owned(),
                id: claim.id,
            })
    }

    /// Claims `name` for incarnation `id` of `owner` (see [`state`]). When granted, the
    /// ticket is to be marked carried out once the bucket is created here.
    pub async fn claim_bucket(
        self: &Arc<Self>,
        name: &str,
        id: Incarnation,
        owner: &str,
        replaces: Option<Incarnation>,
    ) -> Result<(Outcome, Option<Ticket>), RegistryError> {
        let undo = Abandon::Claim {
            name: name.to_owned(),
            id,
        };
        let cmd = Command::ClaimBucket {
            name: name.to_owned(),
            claim: Claim {
                id,
                owner: owner.to_owned(),
                claimed_ms: crate::hlc::SharedClock::wall_ms(),
                node: self.node(),
            },
            replaces,
        };
        self.decide(cmd, undo, |o| *o == Outcome::Claimed).await
    }

    /// Decides a conditional write of `key` in incarnation `bucket`, leaving `etag`, given
    /// the key as this node sees it. When it wins, the ticket is to be marked carried out
    /// once the write is committed here.
    pub async fn conditional_write(
        self: &Arc<Self>,
        bucket: Incarnation,
        key: &str,
        expect: Expect,
        seen: KeyView,
        etag: &str,
    ) -> Result<(Outcome, Option<Ticket>), RegistryError> {
        let stamp = match self.inner.upgrade() {
            Some(i) => i.clock.now(),
            None => return Err(RegistryError::Unavailable("this node is stopping".into())),
        };
        let undo = Abandon::Write {
            bucket,
            key: key.to_owned(),
            stamp,
        };
        let cmd = Command::Write {
            bucket,
            key: key.to_owned(),
            expect,
            seen,
            stamp,
            etag: etag.to_owned(),
            writer: self.node(),
        };
        self.decide(cmd, undo, |o| *o == Outcome::Written).await
    }

    fn node(&self) -> state::Node {
        self.inner.upgrade().map_or([0; 16], |i| i.me.id.0)
    }

    /// Proposes `cmd`; a grant comes with a ticket, an unknown outcome is taken back.
    async fn decide(
        self: &Arc<Self>,
        cmd: Command,
        undo: Abandon,
        granted: impl Fn(&Outcome) -> bool,
    ) -> Result<(Outcome, Option<Ticket>), RegistryError> {
        lock(&self.pending).insert(undo.clone());
        match self.propose(cmd).await {
            Ok(o) if granted(&o) => Ok((
                o,
                Some(Ticket {
                    reg: self.clone(),
                    what: Some(undo),
                }),
            )),
            Ok(o) => {
                lock(&self.pending).remove(&undo);
                Ok((o, None))
            }
            Err(e) => {
                // It may still be decided (the leader has it and commits it later): take it
                // back, in order after it.
                lock(&self.pending).remove(&undo);
                self.abandon_soon(undo);
                Err(e)
            }
        }
    }

    /// Takes back a decision in the background, retrying while the registry cannot decide.
    fn abandon_soon(self: &Arc<Self>, what: Abandon) {
        let reg = self.clone();
        tokio::spawn(async move {
            for _ in 0..120 {
                match reg.propose(Command::Abandon(what.clone())).await {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, ?what, "taking back a decision; retrying")
                    }
                }
                if reg.inner.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            tracing::warn!(
                ?what,
                "could not take back a decision for 10 minutes; the sweep will"
            );
        });
    }

    /// Takes back this node's own decisions older than [`SWEEP_AFTER_MS`] that left nothing
    /// here: a bucket claimed and never created, a write decided and never committed (the
    /// node crashed between the two, or its answer was lost).
    async fn sweep(self: &Arc<Self>, inner: &Arc<Inner>) {
        let me = inner.me.id.0;
        let now = crate::hlc::SharedClock::wall_ms();
        let (claims, writes) = {
            let a = self.sm.applied.read().unwrap_or_else(|e| e.into_inner());
            let pending = lock(&self.pending);
            let claims: Vec<(String, Incarnation)> = a
                .state
                .buckets
                .iter()
                .filter(|(_, c)| c.node == me && now.saturating_sub(c.claimed_ms) > SWEEP_AFTER_MS)
                .map(|(n, c)| (n.clone(), c.id))
                .filter(|(n, id)| {
                    !pending.contains(&Abandon::Claim {
                        name: n.clone(),
                        id: *id,
                    })
                })
                .collect();
            let writes: Vec<(Incarnation, String, store::Hlc)> = a
                .state
                .keys
                .iter()
                .filter(|(_, w)| w.writer == me)
                .filter_map(|((b, k), w)| w.view.stamp.map(|s| (*b, k.clone(), s)))
                .filter(|(_, _, s)| now.saturating_sub(s.wall_ms) > SWEEP_AFTER_MS)
                .filter(|(b, k, s)| {
                    !pending.contains(&Abandon::Write {
                        bucket: *b,
                        key: k.clone(),
                        stamp: *s,
                    })
                })
                .collect();
            (claims, writes)
        };
        if claims.is_empty() && writes.is_empty() {
            return;
        }
        let store = inner.store.clone();
        let dead = tokio::task::spawn_blocking(move || {
            let mut dead = Vec::new();
            for (name, id) in claims {
                if let Ok(store::Fate::Unknown) = store.incarnation_fate(&name, store::BucketId(id))
                {
                    dead.push(Abandon::Claim { name, id });
                }
            }
            for (bucket, key, stamp) in writes {
                match store.key_stamp(store::BucketId(bucket), &key) {
                    Ok(Some(local)) if local >= stamp => {}
                    Ok(_) => dead.push(Abandon::Write { bucket, key, stamp }),
                    Err(_) => {}
                }
            }
            dead
        })
        .await
        .unwrap_or_default();
        for what in dead {
            tracing::info!(?what, "taking back a decision this node never carried out");
            if let Err(e) = self.propose(Command::Abandon(what)).await {
                tracing::debug!(error = %e, "sweep: not taken back yet");
                return;
            }
        }
    }

    /// Commits `cmd` through the leader (this node, or the one it forwards to), retrying
    /// while there is none or it changes, for at most [`DECIDE_WITHIN`].
    async fn propose(&self, cmd: Command) -> Result<Outcome, RegistryError> {
        let deadline = tokio::time::Instant::now() + DECIDE_WITHIN;
        let mut last = RegistryError::Unavailable("no leader elected".into());
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(last);
            }
            match tokio::time::timeout(left, self.try_propose(&cmd)).await {
                Ok(Ok(outcome)) => return Ok(outcome),
                Ok(Err(e)) => last = e,
                Err(_) => {
                    return Err(RegistryError::Unavailable(format!(
                        "no decision within {} s",
                        DECIDE_WITHIN.as_secs()
                    )));
                }
            }
            tracing::debug!(error = %last, "registry proposal not decided yet; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_propose(&self, cmd: &Command) -> Result<Outcome, RegistryError> {
        if !self.raft.is_initialized().await.unwrap_or(false) {
            return Err(RegistryError::NotFormed);
        }
        match self.raft.client_write(cmd.clone()).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                match (f.leader_id, f.leader_node) {
                    (Some(id), Some(seat)) if id != self.me => {
                        match self.forward(id, &seat, cmd).await {
                            Ok(Ok(outcome)) => Ok(outcome),
                            Ok(Err(e)) | Err(e) => Err(RegistryError::Unavailable(e)),
                        }
                    }
                    _ => Err(RegistryError::Unavailable("no leader elected".into())),
                }
            }
            Err(e) => Err(RegistryError::Unavailable(e.to_string())),
        }
    }

    /// Sends `cmd` to the leader; the outer error is the transport's, the inner the leader's.
    async fn forward(
        &self,
        leader: RaftId,
        seat: &Seat,
        cmd: &Command,
    ) -> Result<Result<Outcome, String>, String> {
        let inner = self.inner.upgrade().ok_or("this node is stopping")?;
        let body = postcard::to_allocvec(cmd).map_err(|e| e.to_string())?;
        let answer = network::exchange(&inner, leader, seat, RegistryRpc::Propose, body)
            .await
            .map_err(|e| e.to_string())?;
        postcard::from_bytes(&answer).map_err(|e| e.to_string())
    }

    /// Answers a registry message from a peer (postcard bytes of openraft's answer, or of the
    /// proposal's outcome). Bytes that do not decode get an empty answer, which the sender
    /// cannot decode either: a network error to it, retried.
    pub(crate) async fn answer(&self, rpc: RegistryRpc, body: Vec<u8>) -> Vec<u8> {
        fn enc<T: Serialize>(v: &T) -> Vec<u8> {
            postcard::to_allocvec(v).unwrap_or_default()
        }
        match rpc {
            RegistryRpc::AppendEntries => match postcard::from_bytes(&body) {
                Ok(req) => enc(&self.raft.append_entries(req).await),
                Err(_) => Vec::new(),
            },
            RegistryRpc::Vote => match postcard::from_bytes(&body) {
                Ok(req) => enc(&self.raft.vote(req).await),
                Err(_) => Vec::new(),
            },
            RegistryRpc::InstallSnapshot => match postcard::from_bytes(&body) {
                Ok(req) => enc(&self.raft.install_snapshot(req).await),
                Err(_) => Vec::new(),
            },
            RegistryRpc::Propose => match postcard::from_bytes::<Command>(&body) {
                // Only the leader commits; a stale forward is told so and retried elsewhere.
                Ok(cmd) => {
                    let r = tokio::time::timeout(DECIDE_WITHIN, self.raft.client_write(cmd)).await;
                    let r: Result<Outcome, String> = match r {
                        Ok(Ok(resp)) => Ok(resp.data),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the leader could not commit in time".into()),
                    };
                    enc(&r)
                }
                Err(_) => Vec::new(),
            },
            RegistryRpc::Status => enc(&self.raft.is_initialized().await.unwrap_or(false)),
        }
    }

    /// What this member knows of the group, for metrics and `cluster status`.
    pub fn view(&self) -> RegistryView {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        RegistryView {
            formed: membership.voter_ids().next().is_some(),
            leader: m.current_leader == Some(self.me),
            has_leader: m.current_leader.is_some(),
            voter: membership.voter_ids().any(|v| v == self.me),
            voters: membership.voter_ids().count(),
            members: membership.nodes().count(),
            term: m.current_term,
            last_applied: m.last_applied.map_or(0, |l| l.index),
        }
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// Founds the registry when this node is the one to, and, while it leads, keeps every
    /// member in the group and the voters as [`voters::desired`] says.
    async fn steward(self: Arc<Self>) {
        let mut last_seen: HashMap<RaftId, Instant> = HashMap::new();
        let mut round = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            round += 1;
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            // Live members (cache-only ones too: they follow the log as learners, to know
            // whom to forward to); only storage members vote.
            let live: BTreeMap<RaftId, Member> = {
                let members = lock(&inner.members);
                let ids: BTreeSet<NodeId> = members.view.placement_members().into_iter().collect();
                members
                    .info
                    .values()
                    .filter(|m| ids.contains(&m.id))
                    .map(|m| (raft_id(&m.id), m.clone()))
                    .collect()
            };
            let now = Instant::now();
            for id in live.keys() {
                last_seen.insert(*id, now);
            }
            if !self.raft.is_initialized().await.unwrap_or(true) {
                self.found(&inner, &live).await;
                continue;
            }
            let m = self.raft.metrics().borrow().clone();
            if round.is_multiple_of(15) && m.current_leader.is_some() {
                self.sweep(&inner).await;
            }
            if m.state != ServerState::Leader {
                continue;
            }
            if let Err(e) = self.reconcile(&live, &last_seen, now).await {
                tracing::debug!(error = %e, "registry membership not updated yet");
            }
        }
    }

    async fn found(&self, inner: &Arc<Inner>, live: &BTreeMap<RaftId, Member>) {
        let seats: BTreeMap<RaftId, Seat> = match inner.cfg.bootstrap_expect {
            None if inner.cfg.peers.is_empty() => BTreeMap::from([(self.me, seat(&inner.me))]),
            None => return,
            Some(n) => {
                let ids: BTreeSet<RaftId> = live
                    .iter()
                    .filter(|(_, m)| m.storage)
                    .map(|(id, _)| *id)
                    .collect();
                let Some(set) = voters::founders(self.me, &ids, n) else {
                    return;
                };
                // Nobody already in a registry: a new node with the lowest id joining a
                // running swarm must not found a second one.
                for id in set.iter().filter(|id| **id != self.me) {
                    let Some(m) = live.get(id) else { return };
                    let asked =
                        network::exchange(inner, *id, &seat(m), RegistryRpc::Status, Vec::new())
                            .await;
                    match asked.map(|b| postcard::from_bytes::<bool>(&b)) {
                        Ok(Ok(false)) => {}
                        _ => return,
                    }
                }
                set.iter()
                    .filter_map(|id| live.get(id).map(|m| (*id, seat(m))))
                    .collect()
            }
        };
        match self.raft.initialize(seats.clone()).await {
            Ok(()) => {
                tracing::info!(voters = seats.len(), "founded the swarm's registry")
            }
            Err(e) => tracing::debug!(error = %e, "registry not founded"),
        }
    }

    async fn reconcile(
        &self,
        live: &BTreeMap<RaftId, Member>,
        last_seen: &HashMap<RaftId, Instant>,
        now: Instant,
    ) -> Result<(), String> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        if membership.get_joint_config().len() > 1 {
            return Ok(()); // a change is under way
        }
        let known: BTreeSet<RaftId> = membership.nodes().map(|(id, _)| *id).collect();
        for (id, m) in live {
            if !known.contains(id) {
                self.raft
                    .add_learner(*id, seat(m), false)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        let recent = |id: &RaftId| {
            last_seen
                .get(id)
                .is_some_and(|t| now.duration_since(*t) < voters::GRACE)
        };
        let storage = |id: &RaftId| live.get(id).is_some_and(|m| m.storage);
        let usable: BTreeSet<RaftId> = known
            .iter()
            .chain(live.keys())
            .filter(|id| storage(id) || (voters.contains(id) && recent(id)))
            .copied()
            .collect();
        let want = voters::desired(&voters, &usable);
        if want != voters {
            tracing::info!(from = ?voters, to = ?want, "changing the registry's voters");
            self.raft
                .change_membership(ChangeMembers::ReplaceAllVoters(want.clone()), true)
                .await
                .map_err(|e| e.to_string())?;
        }
        let gone: BTreeSet<RaftId> = known
            .iter()
            .filter(|id| !want.contains(id) && !live.contains_key(id) && !recent(id))
            .copied()
            .collect();
        if !gone.is_empty() {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(gone), false)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn seat(m: &Member) -> Seat {
    Seat {
        addr: m.addr.to_string(),
    }
}

/// The registry as one member sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RegistryView {
    /// It has voters (it was founded and this member knows of it).
    pub formed: bool,
    pub leader: bool,
    pub has_leader: bool,
    pub voter: bool,
    pub voters: usize,
    /// Voters and learners.
    pub members: usize,
    pub term: u64,
    pub last_applied: u64,
}
