//! Opening the database, its column families ([`Table`]) and the value codecs.

use std::ops::Deref;
use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch,
    WriteBufferManager, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;

/// One column family. See the layout in the crate documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Table {
    Log,
    Raft,
    SmMeta,
    Snapshot,
    Repositories,
    Tags,
    Manifests,
    ManifestLinks,
    Blobs,
    BlobLinks,
    Referrers,
    Uploads,
    BlobNodes,
    NodeStates,
    ClusterMeta,
    Unreferenced,
    Doomed,
    Fences,
    NamespaceRefs,
    Usage,
}

impl Table {
    pub(crate) const ALL: [Table; 20] = [
        Table::Log,
        Table::Raft,
        Table::SmMeta,
        Table::Snapshot,
        Table::Repositories,
        Table::Tags,
        Table::Manifests,
        Table::ManifestLinks,
        Table::Blobs,
        Table::BlobLinks,
        Table::Referrers,
        Table::Uploads,
        Table::BlobNodes,
        Table::NodeStates,
        Table::ClusterMeta,
        Table::Unreferenced,
        Table::Doomed,
        Table::Fences,
        Table::NamespaceRefs,
        Table::Usage,
    ];

    /// The tables that make up the registry state (what a snapshot carries).
    pub(crate) const STATE: [Table; 16] = [
        Table::Repositories,
        Table::Tags,
        Table::Manifests,
        Table::ManifestLinks,
        Table::Blobs,
        Table::BlobLinks,
        Table::Referrers,
        Table::Uploads,
        Table::BlobNodes,
        Table::NodeStates,
        Table::ClusterMeta,
        Table::Unreferenced,
        Table::Doomed,
        Table::Fences,
        Table::NamespaceRefs,
        Table::Usage,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Log => "log",
            Table::Raft => "raft",
            Table::SmMeta => "sm_meta",
            Table::Snapshot => "snapshot",
            Table::Repositories => "repositories",
            Table::Tags => "tags",
            Table::Manifests => "manifests",
            Table::ManifestLinks => "manifest_links",
            Table::Blobs => "blobs",
            Table::BlobLinks => "blob_links",
            Table::Referrers => "referrers",
            Table::Uploads => "uploads",
            Table::BlobNodes => "blob_nodes",
            Table::NodeStates => "node_states",
            Table::ClusterMeta => "cluster",
            Table::Unreferenced => "unreferenced",
            Table::Doomed => "doomed",
            Table::Fences => "fences",
            Table::NamespaceRefs => "namespace_refs",
            Table::Usage => "usage",
        }
    }
}

/// The open database. Every handle (log store, state machine, readers, snapshot builders) shares
/// one through an `Arc`; when the last one goes, RocksDB closes and [`StoreClosed`] resolves.
pub(crate) struct Database {
    db: DB,
    // Declared after `db`, so it drops (and wakes `StoreClosed`) only once RocksDB is closed.
    _closed: tokio::sync::oneshot::Sender<()>,
}

impl Deref for Database {
    type Target = DB;

    fn deref(&self) -> &DB {
        &self.db
    }
}

/// Resolves once every handle on a store has been dropped and its database closed, so the same
/// directory can be opened again (RocksDB allows one open per directory).
pub struct StoreClosed(tokio::sync::oneshot::Receiver<()>);

impl StoreClosed {
    pub async fn wait(self) {
        // The sender is never used: its drop, as an error here, is the signal.
        let _ = self.0.await;
    }
}

/// Block cache shared by every column family (metadata is small and mostly hot).
const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// Memtables of all column families together, charged to the block cache.
const MEMTABLES_BYTES: usize = 32 << 20;
/// One column family's memtable before it is flushed.
const WRITE_BUFFER_BYTES: usize = 8 << 20;

/// Opens (creating if needed) the database and every column family.
///
/// Tuned for a registry's metadata: small values, point reads, a steady trickle of writes. RocksDB's
/// defaults give each of the 20 column families its own block cache and a 64 MiB memtable, which lets
/// a long-running node grow towards a gigabyte; here one 32 MiB LRU cache serves every family and all
/// memtables together stay within 32 MiB, charged to that cache.
pub(crate) fn open(path: &Path) -> Result<(Database, StoreClosed), StoreError> {
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let memtables = WriteBufferManager::new_write_buffer_manager_with_cache(
        MEMTABLES_BYTES,
        false,
        cache.clone(),
    );
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_write_buffer_manager(&memtables);
    options.set_max_background_jobs(2);
    let mut table_options = BlockBasedOptions::default();
    table_options.set_block_cache(&cache);
    table_options.set_cache_index_and_filter_blocks(true);
    table_options.set_bloom_filter(10.0, false);
    let family_options = || {
        let mut family = Options::default();
        family.set_block_based_table_factory(&table_options);
        family.set_write_buffer_size(WRITE_BUFFER_BYTES);
        family
    };
    let families = Table::ALL
        .iter()
        .map(|table| ColumnFamilyDescriptor::new(table.name(), family_options()));
    let db = DB::open_cf_descriptors(&options, path, families)?;
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let database = Database {
        db,
        _closed: closed_tx,
    };
    Ok((database, StoreClosed(closed_rx)))
}

pub(crate) fn cf(db: &DB, table: Table) -> Result<&ColumnFamily, StoreError> {
    db.cf_handle(table.name())
        .ok_or(StoreError::MissingColumnFamily(table.name()))
}

/// Writes `batch` and fsyncs the write-ahead log before returning.
pub(crate) fn write_synced(db: &DB, batch: WriteBatch) -> Result<(), StoreError> {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    Ok(db.write_opt(batch, &options)?)
}

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { what, source })
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { what, source })
}

/// Big-endian, so that keys sort numerically.
pub(crate) fn u64_key(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub(crate) fn u64_from_key(what: &'static str, key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::corrupt(what, format!("key of {} bytes, not 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}
