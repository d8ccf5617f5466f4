//! The registry's log and state machine as openraft stores them: the log, vote and commit
//! point in the store's [`ConsensusLog`] (every write synced before openraft is told), the
//! state in memory, saved whole as a snapshot (it is small: names and contested keys).

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use store::ConsensusLog;
use tokio::sync::Mutex;

use super::state::{Outcome, State};
use super::{RaftId, Seat, TypeConfig};

type SE = StorageError<RaftId>;

fn io(e: impl ToString) -> AnyError {
    AnyError::error(e.to_string())
}

/// The log, vote and commit point.
#[derive(Clone)]
pub(crate) struct LogStore {
    log: Arc<ConsensusLog>,
}

impl LogStore {
    pub fn new(log: Arc<ConsensusLog>) -> Self {
        Self { log }
    }

    fn meta<T: for<'a> Deserialize<'a>>(&self, name: &str) -> Result<Option<T>, AnyError> {
        match self.log.get_meta(name).map_err(io)? {
            Some(b) => Ok(Some(postcard::from_bytes(&b).map_err(io)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, name: &str, v: &T) -> Result<(), AnyError> {
        let b = postcard::to_allocvec(v).map_err(io)?;
        self.log.put_meta(name, &b).map_err(io)
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SE> {
        let (from, to) = bounds(&range);
        let rows = self
            .log
            .range(from, to)
            .map_err(|e| StorageIOError::read_logs(io(e)))?;
        let mut out = Vec::with_capacity(rows.len());
        for (_, b) in rows {
            out.push(postcard::from_bytes(&b).map_err(|e| StorageIOError::read_logs(io(e)))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SE> {
        let purged: Option<LogId<RaftId>> = self
            .meta("purged")
            .map_err(StorageIOError::read_logs)?
            .flatten();
        let last = match self
            .log
            .last()
            .map_err(|e| StorageIOError::read_logs(io(e)))?
        {
            Some((_, b)) => {
                let e: Entry<TypeConfig> =
                    postcard::from_bytes(&b).map_err(|e| StorageIOError::read_logs(io(e)))?;
                Some(e.log_id)
            }
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), SE> {
        Ok(self
            .put_meta("vote", vote)
            .map_err(StorageIOError::write_vote)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, SE> {
        Ok(self.meta("vote").map_err(StorageIOError::read_vote)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftId>>) -> Result<(), SE> {
        Ok(self
            .put_meta("committed", &committed)
            .map_err(StorageIOError::write)?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftId>>, SE> {
        Ok(self
            .meta::<Option<LogId<RaftId>>>("committed")
            .map_err(StorageIOError::read)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SE>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            let b = postcard::to_allocvec(&e).map_err(|e| StorageIOError::write_logs(io(e)))?;
            rows.push((e.log_id.index, b));
        }
        // Synced before openraft hears of it: an acknowledged entry survives a crash.
        match self.log.append(rows) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
                Err(StorageIOError::write_logs(io(msg)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<(), SE> {
        Ok(self
            .log
            .truncate_from(log_id.index)
            .map_err(|e| StorageIOError::write_logs(io(e)))?)
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<(), SE> {
        self.put_meta("purged", &Some(log_id))
            .map_err(StorageIOError::write_logs)?;
        Ok(self
            .log
            .purge_upto(log_id.index)
            .map_err(|e| StorageIOError::write_logs(io(e)))?)
    }
}

/// The state with what openraft needs to know about it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Applied {
    pub last: Option<LogId<RaftId>>,
    pub membership: StoredMembership<RaftId, Seat>,
    pub state: State,
}

/// A snapshot as saved in the consensus log's metadata.
#[derive(Serialize, Deserialize)]
struct SavedSnapshot {
    meta: SnapshotMeta<RaftId, Seat>,
    data: Vec<u8>,
}

/// The state machine: shared with the registry handle, which reads it for answers that need
/// no decision (who holds a name).
#[derive(Clone)]
pub(crate) struct StateMachine {
    pub applied: Arc<std::sync::RwLock<Applied>>,
    log: Arc<ConsensusLog>,
    snapshot_seq: Arc<Mutex<u64>>,
}

impl StateMachine {
    /// The state as the last saved snapshot left it (entries after it are applied again
    /// from the log when openraft starts).
    pub fn load(log: Arc<ConsensusLog>) -> Result<Self, AnyError> {
        let applied = match log.get_meta("snapshot").map_err(io)? {
            Some(b) => {
                let s: SavedSnapshot = postcard::from_bytes(&b).map_err(io)?;
                postcard::from_bytes(&s.data).map_err(io)?
            }
            None => Applied::default(),
        };
        Ok(Self {
            applied: Arc::new(std::sync::RwLock::new(applied)),
            log,
            snapshot_seq: Arc::new(Mutex::new(0)),
        })
    }

    fn read(&self) -> Applied {
        self.applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn save(&self, meta: &SnapshotMeta<RaftId, Seat>, data: &[u8]) -> Result<(), String> {
        let saved = SavedSnapshot {
            meta: meta.clone(),
            data: data.to_vec(),
        };
        let b = postcard::to_allocvec(&saved).map_err(|e| e.to_string())?;
        self.log.put_meta("snapshot", &b).map_err(|e| e.to_string())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SE> {
        // One consistent copy: the state and the log id it reflects taken together.
        let applied = self.read();
        let data = postcard::to_allocvec(&applied)
            .map_err(|e| StorageIOError::write_snapshot(None, io(e)))?;
        let n = {
            let mut s = self.snapshot_seq.lock().await;
            *s += 1;
            *s
        };
        let snapshot_id = match &applied.last {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("none-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        self.save(&meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(None, io(e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftId>>, StoredMembership<RaftId, Seat>), SE> {
        let a = self.read();
        Ok((a.last, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, SE>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut a = self.applied.write().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for e in entries {
            a.last = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => Outcome::Nothing,
                EntryPayload::Normal(cmd) => a.state.apply(cmd),
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(e.log_id), m);
                    Outcome::Nothing
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SE> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, Seat>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SE> {
        let data = snapshot.into_inner();
        let mut applied: Applied =
            postcard::from_bytes(&data).map_err(|e| StorageIOError::read_snapshot(None, io(e)))?;
        applied.last = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        self.save(meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(None, io(e)))?;
        *self.applied.write().unwrap_or_else(|e| e.into_inner()) = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SE> {
        let Some(b) = self
            .log
            .get_meta("snapshot")
            .map_err(|e| StorageIOError::read_snapshot(None, io(e)))?
        else {
            return Ok(None);
        };
        let s: SavedSnapshot =
            postcard::from_bytes(&b).map_err(|e| StorageIOError::read_snapshot(None, io(e)))?;
        Ok(Some(Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
