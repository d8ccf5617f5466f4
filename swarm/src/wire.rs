//! What nodes say to each other on QUIC streams: one request per bidirectional stream, a
//! length-prefixed postcard frame each way; a chunk's bytes follow its response frame raw, so
//! QUIC flow control paces them.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::error::SwarmError;
use crate::member::Member;
use crate::node::NodeId;

/// Bumped when a message changes incompatibly; peers with another version are refused.
pub const PROTOCOL: u32 = 7;
/// The largest control frame accepted (a journal page, a have-list).
pub const MAX_FRAME: usize = 8 << 20;

/// The first message on a connection, each way: who is speaking, and the proof that it holds
/// the cluster secret, bound to this TLS session (see [`crate::auth`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub member: Member,
    pub proof: [u8; 32],
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Journal entries the asker lacks, given what it has seen of each origin.
    Pull { seen: Vec<(NodeId, u64)> },
    /// Which of these chunks does the peer hold?
    Have { chunks: Vec<[u8; 32]> },
    /// One whole chunk. `insist`: the asker was pointed elsewhere for it a while ago and
    /// knows no other holder it can use (the recipient may be one it dropped): send it anyway.
    Chunk { hash: [u8; 32], insist: bool },
    /// A manifest that journal entries name by hash (see `store::journal::ObjectState`).
    Manifest { hash: [u8; 32] },
    /// What the peer holds, for `cluster status`.
    Status,
    /// A message of the registry's consensus group (see [`crate::registry`]): openraft's
    /// request, or a proposal forwarded to the leader, as postcard bytes.
    Registry { rpc: RegistryRpc, body: Vec<u8> },
    /// A request for the service the node above the swarm registered (see
    /// [`crate::Swarm::serve`]); the swarm only carries it.
    Service { body: Vec<u8> },
}

/// The registry's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    /// A command for the leader to commit (answered with its outcome).
    Propose,
    /// Whether the peer belongs to an initialized registry.
    Status,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// Journal entries (origin, number, entry bytes), and the responder's own version vector
    /// so the asker can tell how far behind it is.
    Entries {
        entries: Vec<(NodeId, u64, Vec<u8>)>,
        seen: Vec<(NodeId, u64)>,
        /// The responder's wall clock when it answered (unix ms), so the asker can tell
        /// whether its own clock runs ahead of its peers'.
        now_ms: u64,
    },
    /// One flag per chunk asked about.
    Have(Vec<bool>),
    /// The chunk's bytes follow: `len` of them.
    Chunk {
        len: u32,
    },
    NoChunk,
    /// The manifest's bytes follow: `len` of them.
    Manifest {
        len: u64,
    },
    NoManifest,
    /// The chunk was just sent to this other member: get it there (see [`crate::seeding`]).
    Elsewhere(NodeId),
    /// The responder's upload queue is full: ask another holder, or this one a little later.
    Busy,
    Status(PeerStatus),
    Error(String),
    /// The registry's answer, as postcard bytes.
    Registry(Vec<u8>),
    /// The service's answer, or why it failed.
    Service(Result<Vec<u8>, String>),
}

/// Messages without an answer, on unidirectional streams.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Notice {
    /// A foca (SWIM) packet.
    Gossip(Vec<u8>),
    /// The sender has new journal entries: pull now rather than at the next tick.
    Poke,
    /// The sender has just stored these chunks (see [`crate::announce`]).
    Have(Vec<[u8; 32]>),
}

/// What a node reports about itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    pub chunks_held: u64,
    pub bytes_held: u64,
    pub chunks_missing: u64,
    pub journal: Vec<(NodeId, u64)>,
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), SwarmError> {
    let body = postcard::to_allocvec(msg).map_err(|e| SwarmError::Protocol(e.to_string()))?;
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(&body).await?;
    Ok(())
}

pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<T, SwarmError> {
    read_frame_max(r, MAX_FRAME).await
}

/// [`read_frame`] for a message known to be small (a hello): a longer frame is refused before
/// any of it is read.
pub async fn read_frame_max<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
    max: usize,
) -> Result<T, SwarmError> {
    let len = read_len(r, max).await?;
    read_body(r, len).await
}

/// Largest hello accepted, before the sender has proven anything (a real one is ~100 bytes).
pub const MAX_HELLO: usize = 4096;

/// Memory for frames being read from peers' requests and notices: the node's whole allowance
/// and one connection's share, both taken (whole frame lengths, connection first) before a
/// frame's bytes are read. A frame that finds no room within [`BUDGET_WAIT`] is refused and
/// its stream stopped, so quinn drops what it buffered for it: what a peer makes this node
/// hold stays within the allowance, however many streams it opens and however it stalls.
#[derive(Clone)]
pub struct FrameBudget {
    node: Arc<Semaphore>,
    conn: Arc<Semaphore>,
}

/// Bytes of peers' frames a node holds at once, all connections together.
pub const NODE_FRAME_BUDGET: usize = 64 << 20;
/// Bytes of frames one connection may have in flight (two maximal frames).
pub const CONN_FRAME_BUDGET: usize = 2 * MAX_FRAME;
/// How long a frame may wait for room before it is refused.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);
/// How long a frame's bytes may take to arrive once its length is known.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(30);

impl FrameBudget {
    /// The node's allowance, shared by all its connections.
    pub fn node() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(NODE_FRAME_BUDGET >> 10))
    }

    /// A new connection's share of `node`.
    pub fn for_connection(node: &Arc<Semaphore>) -> Self {
        Self {
            node: node.clone(),
            conn: Arc::new(Semaphore::new(CONN_FRAME_BUDGET >> 10)),
        }
    }
}

/// Reads one frame of a peer's request or notice within `budget` (see [`FrameBudget`]).
pub async fn read_frame_within<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
    budget: &FrameBudget,
) -> Result<T, SwarmError> {
    let len = read_len(r, MAX_FRAME).await?;
    let kib = u32::try_from(len.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    let busy =
        || SwarmError::Protocol(format!("no room for a {len}-byte frame from this peer now"));
    let room = async {
        let conn = budget.conn.clone().acquire_many_owned(kib).await;
        let node = budget.node.clone().acquire_many_owned(kib).await;
        (conn, node)
    };
    let (Ok(_conn), Ok(_node)) = tokio::time::timeout(BUDGET_WAIT, room)
        .await
        .map_err(|_| busy())?
    else {
        return Err(busy());
    };
    tokio::time::timeout(FRAME_DEADLINE, read_body(r, len))
        .await
        .map_err(|_| {
            SwarmError::Protocol(format!(
                "a {len}-byte frame took over {FRAME_DEADLINE:?} to arrive"
            ))
        })?
}

async fn read_len<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<usize, SwarmError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(SwarmError::Protocol(format!(
            "frame of {len} bytes exceeds the {max}-byte limit"
        )));
    }
    Ok(len)
}

async fn read_body<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
    len: usize,
) -> Result<T, SwarmError> {
    // Grow the buffer as bytes arrive rather than trusting the announced length: a peer
    // that announces 8 MiB frames on many streams and sends nothing must not cost 8 MiB each.
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(SwarmError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("stream ended {} bytes into a {len}-byte frame", body.len()),
        )));
    }
    postcard::from_bytes(&body).map_err(|e| SwarmError::Protocol(e.to_string()))
}
