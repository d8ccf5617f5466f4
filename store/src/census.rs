//! What the store holds, counted: the figures operators watch (objects, logical vs stored
//! bytes, the dedup ratio, disk space) and the RocksDB health figures that explain slow writes.
//!
//! Counting means scanning a snapshot, so it is not done per request or per scrape: the caller
//! runs [`Store::census`] in the background at a pace it chooses. Keeping live counters in the
//! write path instead would put one hot key into every transaction.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{Result, StoreError};
use crate::meta::Cf;
use crate::records::{ChunkEntry, ChunkLocation};
use crate::store::Store;

/// One count of the store, taken from a consistent snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Keys whose latest version is an object.
    pub current_objects: u64,
    /// Older versions kept by versioning (objects and delete markers alike are versions;
    /// this counts the objects).
    pub noncurrent_objects: u64,
    /// Delete markers, latest or not.
    pub delete_markers: u64,
    /// Sizes of all object versions, current and noncurrent: what clients stored.
    pub logical_bytes: u64,
    /// Chunks whose bytes this node holds.
    pub held_chunks: u64,
    /// Chunks known from replicated manifests whose bytes only peers hold.
    pub absent_chunks: u64,
    /// Chunks whose copy here failed verification and was dropped, not yet replaced (on a
    /// node alone: lost).
    pub damaged_chunks: u64,
    /// Bytes of the distinct chunks held here.
    pub stored_bytes: u64,
    /// For held chunks, length times references (manifests that use them): what they would
    /// take without deduplication. Copies sharing one manifest count once.
    pub referenced_bytes: u64,
    /// Size of the pack files, dead space not yet reclaimed included.
    pub pack_bytes: u64,
    /// Namespace journal entries held (every origin's, pruned ones gone).
    pub journal_entries: u64,
    /// Multipart uploads in progress whose home is this node.
    pub uploads: u64,
    /// Relay uploads: parts received here for an upload homed elsewhere, kept only until its
    /// home has them (a count that stays above zero means hand-overs that never finished).
    pub relay_uploads: u64,
    /// How long the count took.
    pub took: Duration,
}

/// Space on the file system that holds the data directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskSpace {
    pub size_bytes: u64,
    /// Available to an unprivileged writer (what s3swarm, running as a plain user, can use).
    pub free_bytes: u64,
}

/// RocksDB figures that explain slow or refused writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbFigures {
    pub write_stopped: bool,
    /// Bytes per second writes are slowed to while stalled; 0 otherwise.
    pub delayed_write_rate: u64,
    /// Time writes spent stalled or stopped since the database opened.
    pub stall_micros: u64,
    pub pending_compaction_bytes: u64,
    pub running_compactions: u64,
    pub memtable_bytes: u64,
    pub sst_bytes: u64,
}

/// Only the size of a version: objects have one, delete markers do not. Decoding just this
/// keeps the census from materializing every record's metadata and tags.
#[derive(Deserialize)]
struct Sized {
    size: Option<u64>,
}

impl Store {
    /// Counts objects, versions and chunks on one snapshot, and sizes the pack files.
    pub fn census(&self) -> Result<Census> {
        let start = Instant::now();
        let mut c = Census::default();
        let view = self.meta().view();
        let size_of = |v: &[u8]| -> Result<Option<u64>> {
            serde_json::from_slice::<Sized>(v)
                .map(|s| s.size)
                .map_err(|e| StoreError::Corrupt(format!("version record: {e}")))
        };
        // Current versions live in `Objects`, older ones in `Versions`; both hold objects and
        // delete markers alike.
        for (cf, objects) in [
            (Cf::Objects, &mut c.current_objects),
            (Cf::Versions, &mut c.noncurrent_objects),
        ] {
            view.scan(cf, &[], |_, v| {
                match size_of(v)? {
                    Some(n) => {
                        *objects += 1;
                        c.logical_bytes += n;
                    }
                    None => c.delete_markers += 1,
                }
                Ok(true)
            })?;
        }
        view.scan(Cf::Chunks, &[], |_, v| {
            let e = ChunkEntry::decode(v)?;
            if e.location == ChunkLocation::Damaged {
                c.damaged_chunks += 1;
            } else if e.location == ChunkLocation::Absent {
                c.absent_chunks += 1;
            } else {
                let len = e.location.stored_len();
                c.held_chunks += 1;
                c.stored_bytes += len;
                c.referenced_bytes += len.saturating_mul(e.refs);
            }
            Ok(true)
        })?;
        view.scan(Cf::Journal, &[], |_, _| {
            c.journal_entries += 1;
            Ok(true)
        })?;
        view.scan(Cf::Uploads, &[], |_, v| {
            let rec: crate::records::UploadRecord = serde_json::from_slice(v)
                .map_err(|e| StoreError::Corrupt(format!("upload record: {e}")))?;
            if rec.relay {
                c.relay_uploads += 1;
            } else {
                c.uploads += 1;
            }
            Ok(true)
        })?;
        drop(view);
        c.pack_bytes = self.packs().disk_usage()?;
        c.took = start.elapsed();
        Ok(c)
    }

    /// Size and free space of the file system under the data directory.
    pub fn disk_space(&self) -> Result<DiskSpace> {
        disk_space(self.packs().dir())
    }

    /// RocksDB's write-stall and compaction figures.
    pub fn db_figures(&self) -> DbFigures {
        let meta = self.meta();
        let db = |p| meta.property_int(p).unwrap_or(0);
        let sum = |p| meta.property_sum(p).unwrap_or(0);
        DbFigures {
            write_stopped: db("rocksdb.is-write-stopped") != 0,
            delayed_write_rate: db("rocksdb.actual-delayed-write-rate"),
            stall_micros: meta.stall_micros(),
            pending_compaction_bytes: sum("rocksdb.estimate-pending-compaction-bytes"),
            running_compactions: db("rocksdb.num-running-compactions"),
            memtable_bytes: sum("rocksdb.cur-size-all-mem-tables"),
            sst_bytes: sum("rocksdb.live-sst-files-size"),
        }
    }
}

// The statvfs fields are u64 on 64-bit Linux but narrower elsewhere: the casts are for those.
#[allow(clippy::unnecessary_cast)]
fn disk_space(path: &Path) -> Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| StoreError::Corrupt("data directory path contains a NUL byte".into()))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` points to writable memory
    // of the right type; statvfs fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: statvfs returned 0, so `st` is initialized.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as u64;
    Ok(DiskSpace {
        size_bytes: (st.f_blocks as u64).saturating_mul(frsize),
        free_bytes: (st.f_bavail as u64).saturating_mul(frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BucketName, NewObject, ObjectKey, StoreOptions, Versioning};

    #[test]
    fn counts_versions_markers_and_deduplicated_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), StoreOptions::default()).unwrap();
        store
            .create_bucket(&BucketName::new("census").unwrap(), "owner", None)
            .unwrap();
        store.set_versioning("census", Versioning::Enabled).unwrap();
        // Incompressible and large enough for pack-stored chunks.
        let body: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let put = |key: &str| {
            let mut w = store.writer();
            w.write(&body).unwrap();
            let staged = w.finish().unwrap();
            let new = NewObject {
                etag: "e".into(),
                ..Default::default()
            };
            store
                .put_object("census", &ObjectKey::new(key).unwrap(), staged, new)
                .unwrap();
        };
        put("a");
        put("b"); // same bytes: deduplicated
        put("a"); // a second version of a
        store.delete_object("census", "b", None).unwrap(); // a delete marker over b

        let c = store.census().unwrap();
        assert_eq!(c.current_objects, 1, "{c:?}");
        assert_eq!(c.noncurrent_objects, 2, "{c:?}");
        assert_eq!(c.delete_markers, 1, "{c:?}");
        assert_eq!(c.logical_bytes, 3 * body.len() as u64);
        assert_eq!(c.stored_bytes, body.len() as u64, "one copy of the bytes");
        assert_eq!(c.referenced_bytes, 3 * body.len() as u64);
        assert!(c.held_chunks >= 1 && c.absent_chunks == 0, "{c:?}");
        assert!(c.pack_bytes >= body.len() as u64, "{c:?}");

        let d = store.disk_space().unwrap();
        assert!(d.size_bytes > 0 && d.free_bytes <= d.size_bytes, "{d:?}");
        let f = store.db_figures();
        assert!(!f.write_stopped);
        assert!(f.memtable_bytes > 0, "{f:?}");
    }
}
