//! The metadata database (RocksDB) and its single, group-committing writer.
//!
//! Every mutation is a closure run by one committer thread against a transaction view (its
//! own writes, then the writes of earlier closures in the same group, then the database).
//! The committer drains all queued closures, writes their effects as one `WriteBatch` with a
//! synced WAL, and only then answers each caller. So a write is acknowledged only once
//! durable, read-modify-write of reference counts needs no locks, and 32 concurrent small
//! PUTs cost one fsync per group instead of 32.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions,
};

use crate::error::{Result, StoreError};

/// The column families, one per kind of record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Cf {
    Buckets,
    Objects,
    Manifests,
    Chunks,
    Blobs,
    Uploads,
    Parts,
    Packs,
    /// Chunks whose last reference went away, keyed by time of death: collected after a grace
    /// period so reads that resolved them just before still find their bytes.
    Graveyard,
    /// Noncurrent object versions (the current one is in `Objects`).
    Versions,
    /// How many records share a manifest, for manifests shared by copies (absent: one).
    ManifestRefs,
    /// For keys whose `null` version is noncurrent: its seq (its slot in `Versions`).
    NullVersions,
    /// Part sizes of a multipart object's manifest (big-endian u64s), for reads by part.
    PartSizes,
    /// The namespace journal: (origin, number) -> entry (see [`crate::journal`]).
    Journal,
    /// How far into each origin's journal this node has recorded: origin -> number.
    Seen,
    /// The stamp of the write each bucket or object name currently resolves to.
    Stamps,
    /// Bucket incarnations known to be deleted: name 0x00 id -> stamp of the delete.
    Graves,
    /// Replicated entries waiting for a bucket incarnation to be decided (see
    /// [`crate::merge`]): awaited id, origin, number -> nothing (the entry is in `Journal`).
    Parked,
    /// Pieces of upstream (origin) objects cached here: piece id -> manifest id.
    Pieces,
    /// Manifests that journal entries name by hash rather than carry (see
    /// [`crate::journal::ObjectState`]): BLAKE3 of the encoding -> the encoding, and that hash
    /// then `#` -> how many entries here name it (big-endian u64). Every node
    /// holding such an entry holds its manifest here, so it can pass both on.
    ManifestBlobs,
}

impl Cf {
    const ALL: [Cf; 20] = [
        Cf::Buckets,
        Cf::Objects,
        Cf::Manifests,
        Cf::Chunks,
        Cf::Blobs,
        Cf::Uploads,
        Cf::Parts,
        Cf::Packs,
        Cf::Graveyard,
        Cf::Versions,
        Cf::ManifestRefs,
        Cf::NullVersions,
        Cf::PartSizes,
        Cf::Journal,
        Cf::Seen,
        Cf::Stamps,
        Cf::Graves,
        Cf::Parked,
        Cf::Pieces,
        Cf::ManifestBlobs,
    ];

    fn name(self) -> &'static str {
        match self {
            Cf::Buckets => "buckets",
            Cf::Objects => "objects",
            Cf::Manifests => "manifests",
            Cf::Chunks => "chunks",
            Cf::Blobs => "blobs",
            Cf::Uploads => "uploads",
            Cf::Parts => "parts",
            Cf::Packs => "packs",
            Cf::Graveyard => "graveyard",
            Cf::Versions => "versions",
            Cf::ManifestRefs => "manifest_refs",
            Cf::NullVersions => "null_versions",
            Cf::PartSizes => "part_sizes",
            Cf::Journal => "journal",
            Cf::Seen => "seen",
            Cf::Stamps => "stamps",
            Cf::Graves => "graves",
            Cf::Parked => "parked",
            Cf::Pieces => "origin_pieces",
            Cf::ManifestBlobs => "manifest_blobs",
        }
    }
}

/// Read access to the database; shared by readers and the committer.
pub(crate) struct Meta {
    db: DB,
    /// Kept for its statistics object (write-stall time).
    opts: Options,
}

impl Meta {
    fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        // Tickers only (no histograms or timers): what the stall counter needs, at the
        // lowest cost statistics have.
        opts.enable_statistics();
        opts.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptHistogramOrTimers);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Self { db, opts })
    }

    fn handle(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| StoreError::Corrupt(format!("column family {} missing", cf.name())))
    }

    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.handle(cf)?, key)?)
    }

    /// Calls `f` for each entry with key >= `from` while it returns true.
    pub(crate) fn scan(
        &self,
        cf: Cf,
        from: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut ro = ReadOptions::default();
        ro.fill_cache(true);
        let it = self.db.iterator_cf_opt(
            self.handle(cf)?,
            ro,
            IteratorMode::From(from, Direction::Forward),
        );
        each(it, f)
    }

    /// Calls `f` for every entry whose key starts with `prefix`, while it returns true.
    pub(crate) fn scan_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.scan(cf, prefix, |k, v| {
            if k.starts_with(prefix) {
                f(k, v)
            } else {
                Ok(false)
            }
        })
    }

    /// A consistent view of the database as of now: reads through it see no commit that
    /// lands after it was taken (a version read or listing spanning several keys and column
    /// families sees one state).
    pub(crate) fn view(&self) -> View<'_> {
        View {
            meta: self,
            snap: self.db.snapshot(),
        }
    }

    /// A database-wide RocksDB property (e.g. `rocksdb.is-write-stopped`), for metrics.
    pub(crate) fn property_int(&self, name: &str) -> Option<u64> {
        self.db.property_int_value(name).ok().flatten()
    }

    /// A per-column-family RocksDB property summed over our column families.
    pub(crate) fn property_sum(&self, name: &str) -> Option<u64> {
        let mut sum = None;
        for cf in Cf::ALL {
            let v = self
                .handle(cf)
                .ok()
                .and_then(|h| self.db.property_int_value_cf(h, name).ok().flatten());
            if let Some(v) = v {
                sum = Some(sum.unwrap_or(0) + v);
            }
        }
        sum
    }

    /// Total time writes have been stalled or stopped since the database opened.
    pub(crate) fn stall_micros(&self) -> u64 {
        self.opts
            .get_ticker_count(rocksdb::statistics::Ticker::StallMicros)
    }
}

/// Feeds an iterator's entries to `f` while it returns true.
fn each(
    it: impl Iterator<Item = std::result::Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
) -> Result<()> {
    for item in it {
        let (k, v) = item?;
        if !f(&k, &v)? {
            break;
        }
    }
    Ok(())
}

/// A snapshot of the database (see [`Meta::view`]).
pub(crate) struct View<'a> {
    meta: &'a Meta,
    snap: rocksdb::Snapshot<'a>,
}

impl View<'_> {
    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.snap.get_cf(self.meta.handle(cf)?, key)?)
    }

    /// Calls `f` for each entry with key >= `from` while it returns true.
    pub(crate) fn scan(
        &self,
        cf: Cf,
        from: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let it = self.snap.iterator_cf_opt(
            self.meta.handle(cf)?,
            ReadOptions::default(),
            IteratorMode::From(from, Direction::Forward),
        );
        each(it, f)
    }
}

/// A transaction view handed to a mutation closure.
pub(crate) struct Tx<'a> {
    meta: &'a Meta,
    group: &'a HashMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    mine: HashMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    /// Work that may only happen once the batch is durable (unlinking dead packs).
    pub(crate) after_commit: Vec<crate::pack::PackId>,
}

impl Tx<'_> {
    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let k = (cf, key.to_vec());
        if let Some(v) = self.mine.get(&k) {
            return Ok(v.clone());
        }
        if let Some(v) = self.group.get(&k) {
            return Ok(v.clone());
        }
        self.meta.get(cf, key)
    }

    pub(crate) fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.mine.insert((cf, key), Some(value));
    }

    pub(crate) fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.mine.insert((cf, key), None);
    }

    /// The first key with `prefix` (and its value) as the transaction sees it, without
    /// listing the rest of the range.
    pub(crate) fn first_with_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let overlay = |k: &[u8]| -> Option<&Option<Vec<u8>>> {
            let key = (cf, k.to_vec());
            self.mine.get(&key).or_else(|| self.group.get(&key))
        };
        let mut best: Option<(Vec<u8>, Vec<u8>)> = None;
        self.meta.scan_prefix(cf, prefix, |k, v| {
            match overlay(k) {
                Some(None) => Ok(true), // deleted by a pending write: keep looking
                Some(Some(pending)) => {
                    best = Some((k.to_vec(), pending.clone()));
                    Ok(false)
                }
                None => {
                    best = Some((k.to_vec(), v.to_vec()));
                    Ok(false)
                }
            }
        })?;
        // A key written earlier in this batch may sort before the database's first.
        for m in [self.group, &self.mine] {
            for (c, k) in m.keys() {
                if *c != cf || !k.starts_with(prefix) || best.as_ref().is_some_and(|(b, _)| b <= k)
                {
                    continue;
                }
                // Live if the newest pending write of that key is a put.
                if let Some(Some(v)) = overlay(k) {
                    best = Some((k.clone(), v.clone()));
                }
            }
        }
        Ok(best)
    }

    /// Keys with `prefix` as the transaction sees them (database merged with pending writes).
    pub(crate) fn keys_with_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut keys = std::collections::BTreeSet::new();
        self.meta.scan_prefix(cf, prefix, |k, _| {
            keys.insert(k.to_vec());
            Ok(true)
        })?;
        for overlay in [self.group, &self.mine] {
            for ((c, k), v) in overlay {
                if *c == cf && k.starts_with(prefix) {
                    if v.is_some() {
                        keys.insert(k.clone());
                    } else {
                        keys.remove(k);
                    }
                }
            }
        }
        Ok(keys.into_iter().collect())
    }
}

type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A mutation: reports whether it succeeded (so its writes are kept) and how to answer.
type Job = Box<dyn FnOnce(&mut Tx<'_>) -> (bool, Reply) + Send>;

/// Owns the database and the committer thread.
pub(crate) struct Database {
    pub(crate) meta: std::sync::Arc<Meta>,
    /// `None` once closed.
    jobs: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    committer: std::sync::Mutex<Option<thread::JoinHandle<()>>>,
}

/// Called with packs to unlink once a batch that released them is durable.
pub(crate) type PackReaper = Box<dyn Fn(&[crate::pack::PackId]) + Send>;

impl Database {
    pub(crate) fn open(path: &Path, reap: PackReaper) -> Result<Self> {
        let meta = std::sync::Arc::new(Meta::open(path)?);
        let (jobs, rx) = mpsc::channel::<Job>();
        let m = meta.clone();
        let committer = thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || committer(&m, &rx, &reap))?;
        Ok(Self {
            meta,
            jobs: std::sync::Mutex::new(Some(jobs)),
            committer: std::sync::Mutex::new(Some(committer)),
        })
    }

    /// Lets the commits already queued land, stops the committer and waits for RocksDB's
    /// flushes and compactions to stop. Reads keep working; later writes fail as closed.
    /// RocksDB aborts the whole process ("pthread lock: Invalid argument") if it is still
    /// working, or a database is still being closed on another thread, while the process
    /// tears down; so a node closes its store before it exits.
    pub(crate) fn close(&self) {
        let jobs = self.jobs.lock().map(|mut j| j.take()).unwrap_or(None);
        drop(jobs);
        let committer = self.committer.lock().map(|mut c| c.take()).unwrap_or(None);
        if let Some(committer) = committer {
            // The committer never panics by design; if it did, there is nothing left to stop.
            let _ = committer.join();
        }
        self.meta.db.cancel_all_background_work(true);
    }

    /// Whether the committer thread is there to take writes (false once closed).
    pub(crate) fn committer_running(&self) -> bool {
        self.committer
            .lock()
            .is_ok_and(|c| c.as_ref().is_some_and(|h| !h.is_finished()))
    }

    /// Runs `f` in the next group commit and returns its value once the group is durable.
    /// If `f` fails, none of its writes are applied.
    pub(crate) fn transact<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel::<Result<T>>(1);
        let job: Job = Box::new(move |t: &mut Tx<'_>| {
            let outcome = f(t);
            let succeeded = outcome.is_ok();
            let reply: Reply = Box::new(move |committed: Result<(), String>| {
                let answer = match committed {
                    Ok(()) => outcome,
                    Err(e) => Err(StoreError::Commit(e)),
                };
                let _ = tx.send(answer);
            });
            (succeeded, reply)
        });
        self.jobs
            .lock()
            .map_err(|_| StoreError::Closed)?
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }
}

fn committer(meta: &Meta, rx: &mpsc::Receiver<Job>, reap: &PackReaper) {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    while let Ok(first) = rx.recv() {
        let mut group: HashMap<(Cf, Vec<u8>), Option<Vec<u8>>> = HashMap::new();
        let mut replies = Vec::new();
        let mut dead_packs = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            let mut tx = Tx {
                meta,
                group: &group,
                mine: HashMap::new(),
                after_commit: Vec::new(),
            };
            // A transaction that panics (a bug) fails alone: its writes are dropped, its caller
            // sees the store as closed for that one call, and the committer carries on, so one
            // bad request cannot stop every later write of the node.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut tx)));
            let Tx {
                mine, after_commit, ..
            } = tx;
            let Ok((succeeded, reply)) = ran else {
                tracing::error!("a metadata transaction panicked; its writes were dropped");
                next = rx.try_recv().ok();
                continue;
            };
            // A closure that returned an error has its writes dropped; its reply carries the error.
            if succeeded {
                group.extend(mine);
                dead_packs.extend(after_commit);
            }
            replies.push(reply);
            next = if replies.len() < 512 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let result = write_group(meta, group, &wo);
        if result.is_ok() && !dead_packs.is_empty() {
            reap(&dead_packs);
        }
        for reply in replies {
            reply(result.clone());
        }
    }
}

fn write_group(
    meta: &Meta,
    group: HashMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    wo: &WriteOptions,
) -> Result<(), String> {
    if group.is_empty() {
        return Ok(());
    }
    let mut batch = WriteBatch::default();
    for ((cf, key), value) in group {
        let h = meta.handle(cf).map_err(|e| e.to_string())?;
        match value {
            Some(v) => batch.put_cf(h, key, v),
            None => batch.delete_cf(h, key),
        }
    }
    meta.db.write_opt(batch, wo).map_err(|e| e.to_string())
}

impl Tx<'_> {
    /// Up to `limit` keys with `prefix`, cheap on a huge range (used for emptiness checks).
    pub(crate) fn keys_with_prefix_limited(
        &self,
        cf: Cf,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        self.meta.scan_prefix(cf, prefix, |k, _| {
            let hidden = matches!(self.mine.get(&(cf, k.to_vec())), Some(None))
                || (!self.mine.contains_key(&(cf, k.to_vec()))
                    && matches!(self.group.get(&(cf, k.to_vec())), Some(None)));
            if !hidden {
                keys.push(k.to_vec());
            }
            Ok(keys.len() < limit)
        })?;
        for overlay in [self.group, &self.mine] {
            for ((c, k), v) in overlay {
                if keys.len() >= limit {
                    break;
                }
                if *c == cf && k.starts_with(prefix) && v.is_some() && !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_that_panics_fails_alone_and_the_committer_keeps_committing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::open(&dir.path().join("meta"), Box::new(|_| {})).expect("open");
        let kept = db.transact(|tx| {
            tx.put(Cf::Seen, b"before".to_vec(), b"1".to_vec());
            Ok(())
        });
        assert!(kept.is_ok());
        let panicked = db.transact(|tx| -> Result<()> {
            tx.put(Cf::Seen, b"dropped".to_vec(), b"1".to_vec());
            panic!("a bug in a transaction step");
        });
        assert!(matches!(panicked, Err(StoreError::Closed)), "{panicked:?}");
        assert!(db.committer_running());
        let after = db.transact(|tx| {
            tx.put(Cf::Seen, b"after".to_vec(), b"1".to_vec());
            Ok(())
        });
        assert!(after.is_ok(), "{after:?}");
        assert!(db.meta.get(Cf::Seen, b"before").expect("read").is_some());
        assert!(db.meta.get(Cf::Seen, b"after").expect("read").is_some());
        assert!(db.meta.get(Cf::Seen, b"dropped").expect("read").is_none());
        db.close();
        assert!(!db.committer_running());
    }
}
