//! [`StateMachine`]: openraft's `RaftStateMachine` over the registry tables, and
//! [`SnapshotBuilder`].

use std::io::Cursor;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{BasicNode, StoredMembership};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
};
use rocksdb::DB;

use crate::apply::apply_command;
use crate::command::CommandResponse;
use crate::db::{decode, encode, write_synced, Database, Table};
use crate::error::StoreError;
use crate::kv::{DbView, KvRead, Txn};
use crate::snapshot::{decode_body, dump, encode_body, restore};
use crate::state::{self, Membership};
use crate::TypeConfig;

const SNAPSHOT_META: &[u8] = b"meta";
const SNAPSHOT_DATA: &[u8] = b"data";

/// The registry state machine. Each `apply` call is one atomic RocksDB write.
pub struct StateMachine {
    db: Arc<Database>,
}

/// Builds a snapshot from a point-in-time view of the database.
pub struct SnapshotBuilder {
    db: Arc<Database>,
}

impl StateMachine {
    pub(crate) fn new(db: Arc<Database>) -> StateMachine {
        StateMachine { db }
    }
}

/// Runs blocking RocksDB work off the async workers.
async fn blocking<T, F>(db: &Arc<Database>, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&DB) -> Result<T, StoreError> + Send + 'static,
{
    let db = db.clone();
    tokio::task::spawn_blocking(move || work(&db)).await?
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

fn build_snapshot(db: &DB) -> Result<Snapshot<TypeConfig>, StoreError> {
    let body = dump(&DbView::frozen(db))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let snapshot_id = match &body.last_applied {
        Some(log_id) => format!("{}-{}-{nanos}", log_id.leader_id, log_id.index),
        None => format!("empty-{nanos}"),
    };
    let meta = SnapshotMeta {
        last_log_id: body.last_applied,
        last_membership: body.membership.clone(),
        snapshot_id,
    };
    let data = encode_body(&body)?;
    let mut txn = Txn::new(db);
    put_current_snapshot(&mut txn, &meta, &data)?;
    write_synced(db, txn.into_batch()?)?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    })
}

fn put_current_snapshot(
    txn: &mut Txn<'_>,
    meta: &SnapshotMeta<u64, BasicNode>,
    data: &[u8],
) -> Result<(), StoreError> {
    txn.put(
        Table::Snapshot,
        SNAPSHOT_META,
        encode("snapshot meta", meta)?,
    );
    txn.put(Table::Snapshot, SNAPSHOT_DATA, data);
    Ok(())
}

fn install_snapshot(
    db: &DB,
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
) -> Result<(), StoreError> {
    let body = decode_body(&data)?;
    let mut txn = Txn::new(db);
    restore(&mut txn, body)?;
    state::put_applied(&mut txn, meta.last_log_id.as_ref(), &meta.last_membership)?;
    put_current_snapshot(&mut txn, &meta, &data)?;
    write_synced(db, txn.into_batch()?)
}

fn current_snapshot(db: &DB) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
    let view = DbView::live(db);
    let (Some(meta), Some(data)) = (
        view.get(Table::Snapshot, SNAPSHOT_META)?,
        view.get(Table::Snapshot, SNAPSHOT_DATA)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Snapshot {
        meta: decode("snapshot meta", &meta)?,
        snapshot: Box::new(Cursor::new(data)),
    }))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        blocking(&self.db, build_snapshot)
            .await
            .map_err(StoreError::write_snapshot)
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
        blocking(&self.db, move |db| apply_entries(db, entries))
            .await
            .map_err(StoreError::write_state_machine)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let meta = meta.clone();
        let data = snapshot.into_inner();
        blocking(&self.db, move |db| install_snapshot(db, meta, data))
            .await
            .map_err(StoreError::write_snapshot)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        blocking(&self.db, current_snapshot)
            .await
            .map_err(StoreError::read_snapshot)
    }
}
