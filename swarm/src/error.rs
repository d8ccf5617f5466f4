//! The swarm's error type.

/// Everything that can go wrong talking to peers.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("cluster secret: {0}")]
    Secret(String),
    #[error("peer {0} failed authentication")]
    Unauthorized(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("peer {0} is not reachable")]
    Unreachable(String),
    #[error("chunk {0} from peer {1} failed verification")]
    Corrupt(store::ChunkHash, String),
    #[error("no peer holds chunk {0}")]
    NoHolder(store::ChunkHash),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("quic connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("quic connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("quic stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("quic stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("quic stream: {0}")]
    ReadStream(#[from] quinn::ReadError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
}
