//! `store`: s3swarm's content-addressed object store on one node.
//!
//! An object is a [`Manifest`] of content-defined chunks ([`Chunker`], FastCDC) addressed by
//! BLAKE3 ([`ChunkHash`]); identical chunks are stored once and reference-counted. Chunk
//! bytes live in pack files ([`pack`]), metadata in RocksDB column families ([`meta`]); a
//! write is visible only after its pack is fsynced and one synced batch commits it.
//! The store knows nothing about networks or HTTP.

pub mod census;
pub mod chunker;
pub mod consensus;
pub mod error;
pub mod hash;
pub mod journal;
pub mod manifest;
pub mod merge;
mod meta;
pub mod names;
pub mod pack;
pub mod records;
mod store;
pub mod version;

pub use census::{Census, DbFigures, DiskSpace};
pub use chunker::Chunker;
pub use consensus::ConsensusLog;
pub use error::{Result, StoreError};
pub use hash::{ChunkHash, ContentHash, ManifestHash, VerifiedChunk};
pub use journal::{Applied, Hlc, NodeId, StampSource};
pub use manifest::{ByteRange, ChunkRef, ChunkSlice, Manifest};
pub use names::{BucketId, BucketName, MAX_KEY_LEN, ObjectKey};
pub use records::{
    BucketRecord, CorsRule, ObjectMeta, ObjectRecord, PartRecord, StoredChecksum, UploadRecord,
};
pub use store::{
    BatchOutcome, BlobHolder, ChunkState, Deleted, Fate, FoundBy, HeldChunk, INLINE_MAX, KeyState,
    ListCursor, ListPage, MAX_PART_NUMBER, MIN_PART_SIZE, NewObject, ObjectWriter, PieceId, Pruned,
    ReadPin, Replacement, ScrubStep, StagedObject, Store, StoreOptions, StoreStats, UploadRef,
    VersionsPage, WritePrecondition, upload_home,
};
pub use version::{DeleteMarker, Version, VersionId, Versioning};
