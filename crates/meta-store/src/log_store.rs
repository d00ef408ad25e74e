//! [`LogStore`]: openraft's `RaftLogStorage` (and its log reader) on the `log` and `raft` column
//! families. Appends, votes, truncations and purges are fsynced before they are acknowledged.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::{cf, decode, encode, u64_from_key, u64_key, write_synced, Database, Table};
use crate::error::StoreError;
use crate::TypeConfig;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log and vote. Cloning gives another handle on the same database (openraft's log
/// reader is one).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }

    fn read_raft<T: DeserializeOwned>(
        &self,
        key: &'static [u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        self.db
            .get_cf(cf(&self.db, Table::Raft)?, key)?
            .map(|bytes| decode(what, &bytes))
            .transpose()
    }

    async fn write_raft<T: Serialize>(
        &self,
        key: &'static [u8],
        what: &'static str,
        value: &T,
        sync: bool,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, Table::Raft)?, key, encode(what, value)?);
        self.write(batch, sync).await
    }

    /// Writes `batch` on a blocking thread, fsyncing the write-ahead log when `sync`.
    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            if sync {
                write_synced(&db, batch)
            } else {
                Ok(db.write_opt(batch, &WriteOptions::default())?)
            }
        })
        .await?
    }

    fn entries(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let mut entries = Vec::new();
        let from = u64_key(start);
        let mode = IteratorMode::From(&from, Direction::Forward);
        for row in self.db.iterator_cf(cf(&self.db, Table::Log)?, mode) {
            let (key, value) = row?;
            let index = u64_from_key("log key", &key)?;
            if end.is_some_and(|end| index >= end) {
                break;
            }
            entries.push(decode("log entry", &value)?);
        }
        Ok(entries)
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, StoreError> {
        let mut rows = self
            .db
            .iterator_cf(cf(&self.db, Table::Log)?, IteratorMode::End);
        match rows.next() {
            Some(row) => {
                let (_, value) = row?;
                let entry: Entry<TypeConfig> = decode("log entry", &value)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged_log_id: Option<LogId<u64>> =
            self.read_raft(LAST_PURGED, "last purged log id")?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    fn append_batch(
        &self,
        entries: impl Iterator<Item = Entry<TypeConfig>>,
    ) -> Result<WriteBatch, StoreError> {
        let family = cf(&self.db, Table::Log)?;
        let mut batch = WriteBatch::default();
        let (mut count, mut bytes) = (0, 0);
        for entry in entries {
            let encoded = encode("log entry", &entry)?;
            count += 1;
            bytes += encoded.len() as u64;
            batch.put_cf(family, u64_key(entry.log_id.index), encoded);
        }
        self.db.stats.appended(count, bytes);
        Ok(batch)
    }

    /// Records `log_id` as the last purged entry and deletes every entry up to it, in one batch.
    fn purge_batch(&self, log_id: &LogId<u64>) -> Result<WriteBatch, StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf(&self.db, Table::Raft)?,
            LAST_PURGED,
            encode("last purged log id", log_id)?,
        );
        self.delete_range(&mut batch, 0, log_id.index.saturating_add(1))?;
        Ok(batch)
    }

    /// Deletes the entries with index in `start..end`.
    fn delete_range(&self, batch: &mut WriteBatch, start: u64, end: u64) -> Result<(), StoreError> {
        batch.delete_range_cf(cf(&self.db, Table::Log)?, u64_key(start), u64_key(end));
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(start) => *start,
            Bound::Excluded(start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(end) => end.checked_add(1),
            Bound::Excluded(end) => Some(*end),
            Bound::Unbounded => None,
        };
        self.entries(start, end).map_err(StoreError::read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        self.log_state().map_err(StoreError::read_logs)
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.write_raft(VOTE, "vote", vote, true)
            .await
            .map_err(StoreError::write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.read_raft(VOTE, "vote").map_err(StoreError::read_vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Not synced: losing it only means re-applying from the state machine's last_applied.
        self.write_raft(COMMITTED, "committed log id", &committed, false)
            .await
            .map_err(StoreError::write_logs)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let committed: Option<Option<LogId<u64>>> = self
            .read_raft(COMMITTED, "committed log id")
            .map_err(StoreError::read_logs)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let batch = self
            .append_batch(entries.into_iter())
            .map_err(StoreError::write_logs)?;
        match self.write(batch, true).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(error.write_logs())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut batch = WriteBatch::default();
        self.delete_range(&mut batch, log_id.index, u64::MAX)
            .map_err(StoreError::write_logs)?;
        self.write(batch, true)
            .await
            .map_err(StoreError::write_logs)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let batch = self.purge_batch(&log_id).map_err(StoreError::write_logs)?;
        self.write(batch, true)
            .await
            .map_err(StoreError::write_logs)
    }
}
