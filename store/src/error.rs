//! The store's error type; the gateway maps it to S3 error codes in one place.

/// Everything that can go wrong inside the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bucket name is invalid: {0}")]
    InvalidBucketName(String),
    #[error("object key is invalid: {0}")]
    InvalidKey(String),
    #[error("object key is {0} bytes long; the limit is 1024")]
    KeyTooLong(usize),
    #[error("no such bucket: {0}")]
    NoSuchBucket(String),
    #[error("bucket already exists: {0}")]
    BucketExists(String),
    #[error("bucket is not empty: {0}")]
    BucketNotEmpty(String),
    #[error("no such key: {0}")]
    NoSuchKey(String),
    #[error("no such version: {0}")]
    NoSuchVersion(String),
    #[error("invalid version id: {0}")]
    InvalidVersion(String),
    /// The key's current version (or the version asked for) is a delete marker.
    #[error("{key} is a delete marker")]
    DeleteMarker {
        key: String,
        version_id: crate::version::VersionId,
        /// Whether the request named this version (S3 then answers 405, else 404).
        named: bool,
    },
    #[error("conflicting write: {0}")]
    Conflict(String),
    #[error("no such upload: {0}")]
    NoSuchUpload(String),
    #[error("invalid part: {0}")]
    InvalidPart(String),
    #[error("the list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("chunk {0} was collected while an upload deduplicated against it; retry")]
    Raced(String),
    #[error("part too small: {0}")]
    PartTooSmall(String),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("invalid range: {0}")]
    InvalidRange(String),
    #[error("not a valid BLAKE3 hex digest: {0}")]
    InvalidHash(String),
    #[error("no blob with content hash {0}")]
    NoSuchBlob(String),
    /// The chunk is referenced here but its bytes are held by peers only.
    #[error("chunk {0} is not held on this node")]
    ChunkAbsent(crate::hash::ChunkHash),
    /// The copy held here failed verification and was dropped; no good copy is held here.
    #[error("chunk {0} failed verification on this node's disk and its copy was dropped")]
    ChunkDamaged(crate::hash::ChunkHash),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("metadata database: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata commit failed: {0}")]
    Commit(String),
    #[error("store is shutting down")]
    Closed,
    /// The node's clock runs too far ahead of its peers' to stamp a write (the reason).
    #[error("{0}")]
    ClockAhead(String),
}

impl StoreError {
    /// Whether this failure is the disk being full (or the quota reached): a condition that
    /// clears by itself once space is freed, unlike a broken disk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Io(e) => matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)),
            // RocksDB reports its own ENOSPC as text: "IO error: No space left on device".
            Self::Db(e) => no_space_text(e.as_ref()),
            Self::Commit(m) => no_space_text(m),
            _ => false,
        }
    }
}

impl StoreError {
    /// Whether reading stored bytes failed because they are damaged (a pack missing or cut
    /// short, or the disk reporting an I/O error), as opposed to the process running out of
    /// something.
    pub fn is_damage(&self) -> bool {
        match self {
            Self::Corrupt(_) => true,
            Self::Io(e) => e.raw_os_error() == Some(libc::EIO),
            _ => false,
        }
    }
}

fn no_space_text(m: &str) -> bool {
    m.contains("No space left on device")
        || m.contains("Disk quota exceeded")
        || m.contains("NoSpace")
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
