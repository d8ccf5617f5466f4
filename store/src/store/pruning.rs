//! Keeping the journal bounded by the namespace, not its history: entries that can no longer
//! change what any node holds are dropped, and peers are told which numbers went (skip
//! markers in [`Store::journal_since`]). What remains is, per name, the entry that decides
//! it, so a node that joins pulls a snapshot of the current namespace plus the tail.
//!
//! An entry goes when
//! - its name's stamp here is newer than its own: a newer write of the name is in this
//!   journal, and reaches every puller as it reached this node (a write is never dropped in
//!   favour of one that is not kept);
//! - or its bucket incarnation is dead here and it is not that incarnation's deletion: the
//!   deletion (kept for good) supersedes everything written into it wherever it arrives.
//!
//! Entries waiting for their bucket (parked) and undecodable ones are never dropped. Only
//! entries go, never numbers: a puller is told which numbers went and records them as seen.

use super::replication::{grave_key, release_blob};
use super::*;

/// Entries looked at per transaction: the committer is shared with client writes.
const PRUNE_BATCH: usize = 512;

/// What one pruning pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Entries looked at.
    pub examined: u64,
    /// Entries dropped.
    pub dropped: u64,
}

impl Store {
    /// One pass over the journal, dropping what is superseded (see the module docs).
    pub fn prune_journal(&self) -> Result<Pruned> {
        let mut out = Pruned::default();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut keys: Vec<Vec<u8>> = Vec::with_capacity(PRUNE_BATCH);
            let start = after.clone().unwrap_or_default();
            self.shared.meta.scan(Cf::Journal, &start, |k, _| {
                if after.as_deref() == Some(k) {
                    return Ok(true);
                }
                keys.push(k.to_vec());
                Ok(keys.len() < PRUNE_BATCH)
            })?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            out.examined += keys.len() as u64;
            out.dropped += self.db.transact(move |tx| {
                let mut dropped = 0;
                for k in keys {
                    let Some(bytes) = tx.get(Cf::Journal, &k)? else {
                        continue;
                    };
                    // Undecodable entries stay: they are kept as a record of what arrived.
                    let Ok(entry) = Entry::decode(&bytes) else {
                        continue;
                    };
                    if !parked(tx, &entry, &k)? && superseded(tx, &entry)? {
                        if let Some(h) = entry.named_manifest() {
                            release_blob(tx, &h)?;
                        }
                        tx.delete(Cf::Journal, k);
                        dropped += 1;
                    }
                }
                Ok(dropped)
            })?;
            after = Some(last);
        }
        self.shared
            .stats
            .journal_pruned
            .fetch_add(out.dropped, Ordering::Relaxed);
        Ok(out)
    }
}

/// Whether the entry at journal key `at` waits for an incarnation to be decided (checked in
/// the pruning commit: an entry may have parked since the pass began). A version waits for
/// its bucket; a bucket record for itself to win, or for the incarnation it follows to die.
fn parked(tx: &Tx<'_>, entry: &Entry, at: &[u8]) -> Result<bool> {
    let awaited = match &entry.change {
        Change::Bucket { id, record, .. } => {
            vec![Some(*id), record.as_ref().and_then(|r| r.follows)]
        }
        Change::Version { bucket_id, .. } => vec![Some(*bucket_id)],
    };
    for id in awaited.into_iter().flatten() {
        let mut k = id.0.to_vec();
        k.extend_from_slice(at);
        if tx.get(Cf::Parked, &k)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `entry` can no longer change what any node holds (see the module docs).
fn superseded(tx: &Tx<'_>, entry: &Entry) -> Result<bool> {
    let (name, id, is_deletion) = match &entry.change {
        Change::Bucket { name, id, record } => (name, *id, record.is_none()),
        Change::Version {
            bucket, bucket_id, ..
        } => (bucket, *bucket_id, false),
    };
    if !is_deletion && tx.get(Cf::Graves, &grave_key(name, id))?.is_some() {
        return Ok(true);
    }
    Ok(match tx.get(Cf::Stamps, &entry.change.name_key())? {
        Some(held) => Hlc::decode(&held)? > entry.at,
        None => false,
    })
}
