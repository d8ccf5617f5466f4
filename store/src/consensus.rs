//! The durable log of the consensus group (the registry of the few decisions that must be
//! linearizable: who owns a bucket name, which conditional write wins). It is kept apart
//! from the namespace database so that its synced appends never wait behind a group commit
//! of object writes, and so that the namespace can be rebuilt without touching the votes.
//!
//! The store knows nothing of the consensus protocol: entries and metadata are opaque bytes
//! keyed by log index and by name. Every write is synced before it returns, which is what
//! a vote or an acknowledged append needs.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};

use crate::error::{Result, StoreError};

const LOG: &str = "log";
const META: &str = "meta";

/// An append-only log of opaque entries by index, plus named metadata (vote, snapshot).
pub struct ConsensusLog {
    db: DB,
}

impl ConsensusLog {
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(1);
        opts.set_keep_log_file_num(2);
        let cfs = [LOG, META]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        Ok(Self {
            db: DB::open_cf_descriptors(&opts, path, cfs)?,
        })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("consensus column family {name} missing")))
    }

    fn synced(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        Ok(self.db.write_opt(batch, &wo)?)
    }

    /// Appends (or overwrites) entries by index, durably.
    pub fn append(&self, entries: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<()> {
        let cf = self.cf(LOG)?;
        let mut batch = WriteBatch::default();
        for (i, bytes) in entries {
            batch.put_cf(cf, i.to_be_bytes(), bytes);
        }
        self.synced(batch)
    }

    /// Entries with `from <= index < to`, in order.
    pub fn range(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(LOG)?,
            IteratorMode::From(&from.to_be_bytes(), Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            let i = index_of(&k)?;
            if i >= to {
                break;
            }
            out.push((i, v.to_vec()));
        }
        Ok(out)
    }

    /// The last entry, if any.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>> {
        match self.db.iterator_cf(self.cf(LOG)?, IteratorMode::End).next() {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some((index_of(&k)?, v.to_vec())))
            }
            None => Ok(None),
        }
    }

    /// Removes entries from `from` on (a leader overwrote them), durably.
    pub fn truncate_from(&self, from: u64) -> Result<()> {
        let cf = self.cf(LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, from.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(cf, u64::MAX.to_be_bytes());
        self.synced(batch)
    }

    /// Removes entries up to `upto` inclusive (a snapshot covers them), durably.
    pub fn purge_upto(&self, upto: u64) -> Result<()> {
        let cf = self.cf(LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, 0u64.to_be_bytes(), upto.saturating_add(1).to_be_bytes());
        self.synced(batch)
    }

    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(META)?, name.as_bytes(), value);
        self.synced(batch)
    }

    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(META)?, name.as_bytes())?)
    }
}

fn index_of(k: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(k.try_into().map_err(|_| {
        StoreError::Corrupt("consensus log key".into())
    })?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_truncates_purges_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = ConsensusLog::open(dir.path()).unwrap();
            log.append((1..=10).map(|i| (i, vec![i as u8]))).unwrap();
            log.truncate_from(8).unwrap();
            log.purge_upto(3).unwrap();
            log.put_meta("vote", b"v").unwrap();
        }
        let log = ConsensusLog::open(dir.path()).unwrap();
        let got: Vec<u64> = log
            .range(0, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(got, vec![4, 5, 6, 7]);
        assert_eq!(log.last().unwrap().map(|e| e.0), Some(7));
        assert_eq!(log.range(5, 6).unwrap().len(), 1);
        assert_eq!(log.get_meta("vote").unwrap().as_deref(), Some(&b"v"[..]));
    }
}
