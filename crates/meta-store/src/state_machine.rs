//! [`StateMachine`]: openraft's `RaftStateMachine` over the registry tables, and
//! [`SnapshotBuilder`]. Snapshots are files ([`crate::snapshot_files`]).

use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{BasicNode, StoredMembership};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
};
use rocksdb::DB;

use crate::apply::apply_command;
use crate::command::CommandResponse;
use crate::db::Database;
use crate::error::StoreError;
use crate::kv::{DbView, Txn};
use crate::snapshot_files::SnapshotFiles;
use crate::state::{self, Membership};
use crate::TypeConfig;

/// The registry state machine. Each `apply` call is one atomic RocksDB write.
pub struct StateMachine {
    db: Arc<Database>,
    files: Arc<SnapshotFiles>,
}

/// Builds a snapshot from a point-in-time view of the database.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    files: Arc<SnapshotFiles>,
}

impl StateMachine {
    pub(crate) fn new(db: Arc<Database>, files: Arc<SnapshotFiles>) -> StateMachine {
        StateMachine { db, files }
    }
}

/// Runs blocking work (RocksDB, snapshot files) off the async workers.
async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await?
}

fn apply_entries(
    db: &DB,
    entries: Vec<Entry<TypeConfig>>,
) -> Result<Vec<CommandResponse>, StoreError> {
    let mut txn = Txn::new(db);
    let mut membership = state::membership(&txn)?;
    let mut last_applied = None;
    let mut responses = Vec::with_capacity(entries.len());
    for entry in entries {
        let response = match entry.payload {
            EntryPayload::Blank => CommandResponse::done(),
            EntryPayload::Normal(command) => apply_command(&mut txn, command)?,
            EntryPayload::Membership(config) => {
                membership = StoredMembership::new(Some(entry.log_id), config);
                CommandResponse::done()
            }
        };
        last_applied = Some(entry.log_id);
        responses.push(response);
    }
    state::put_applied(&mut txn, last_applied.as_ref(), &membership)?;
    db.write(txn.into_batch()?)?;
    Ok(responses)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (db, files) = (self.db.clone(), self.files.clone());
        let (meta, file) = blocking(move || files.build(&db))
            .await
            .map_err(StoreError::write_snapshot)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        let view = DbView::live(&self.db);
        let last_applied = state::last_applied(&view).map_err(StoreError::read_state_machine)?;
        let membership = state::membership(&view).map_err(StoreError::read_state_machine)?;
        Ok((last_applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.db.clone();
        blocking(move || apply_entries(&db, entries))
            .await
            .map_err(StoreError::write_state_machine)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            files: self.files.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<u64>> {
        let files = self.files.clone();
        let file = blocking(move || files.receiving())
            .await
            .map_err(StoreError::write_snapshot)?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<u64>> {
        let meta = meta.clone();
        // Waits for writes still in flight on the handle.
        let file = snapshot.into_std().await;
        let (db, files) = (self.db.clone(), self.files.clone());
        blocking(move || files.install(&db, &meta, file))
            .await
            .map_err(StoreError::write_snapshot)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let (db, files) = (self.db.clone(), self.files.clone());
        let current = blocking(move || files.current(&db))
            .await
            .map_err(StoreError::read_snapshot)?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}
