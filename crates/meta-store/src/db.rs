//! Opening the database, its column families ([`Table`]) and the value codecs.

use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    LruCacheOptions, Options, WriteBatch, WriteBufferManager, WriteOptions, DB,
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
    /// Retired (upload sessions are signed tokens now): never written, still opened and still in
    /// [`Table::STATE`], whose positions number the tables in snapshot files.
    Uploads,
    BlobNodes,
    NodeStates,
    ClusterMeta,
    Unreferenced,
    Doomed,
    Fences,
    NamespaceRefs,
    Usage,
    /// The tags of each manifest, `(repository, digest, tag)` with no value: derived from
    /// [`Table::Tags`] and kept beside it in every write, rebuilt from it after a snapshot install
    /// (so not in snapshots) and at open when absent (see `derived`).
    TagsByDigest,
    /// The repositories linking each blob, `(digest, repository)` with no value: derived from
    /// [`Table::BlobLinks`] like [`Table::TagsByDigest`] from the tags (see `derived`).
    LinksByDigest,
    /// References of cached manifests (pull-through cache) to blobs and children not linked
    /// yet, counted per `(repository, kind, digest)` until the link comes and takes them up.
    PendingRefs,
    /// When each cached manifest (pull-through cache) was last pulled: its idle TTL counts from
    /// there.
    CacheAccess,
    /// Repositories with changes a push replication rule has not copied yet: `rule \0 repo`
    /// -> the change's sequence number.
    ReplicationBacklog,
}

impl Table {
    pub(crate) const ALL: [Table; 25] = [
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
        Table::TagsByDigest,
        Table::LinksByDigest,
        Table::PendingRefs,
        Table::CacheAccess,
        Table::ReplicationBacklog,
    ];

    /// The tables that make up the registry state (what a snapshot carries).
    pub(crate) const STATE: [Table; 19] = [
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
        Table::PendingRefs,
        Table::CacheAccess,
        Table::ReplicationBacklog,
    ];

    /// Whether the table is read by key (and so keeps Bloom filters); the others are only
    /// scanned, by prefix or range.
    pub(crate) fn point_reads(self) -> bool {
        !matches!(
            self,
            Table::Log
                | Table::Referrers
                | Table::Uploads
                | Table::Unreferenced
                | Table::TagsByDigest
                | Table::LinksByDigest
        )
    }

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
            Table::TagsByDigest => "tags_by_digest",
            Table::LinksByDigest => "links_by_digest",
            Table::PendingRefs => "pending_refs",
            Table::CacheAccess => "cache_access",
            Table::ReplicationBacklog => "replication_backlog",
        }
    }
}

/// The open database. Every handle (log store, state machine, readers, snapshot builders) shares
/// one through an `Arc`; when the last one goes, RocksDB closes and [`StoreClosed`] resolves.
pub(crate) struct Database {
    db: DB,
    /// Set while a snapshot replaces the state (in several writes): readers then refuse.
    pub(crate) installing: AtomicBool,
    pub(crate) stats: Arc<StoreStats>,
    /// Keeps the cache the budget is charged to alive as long as the database.
    _cache: Cache,
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

/// How a store is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// RocksDB's memory, all of it: one LRU cache holding data, index and filter blocks, with
    /// every memtable charged to it through a write buffer manager (memtables are flushed once
    /// they hold half of it).
    pub memory_budget: usize,
}

/// The smallest budget accepted: below it RocksDB flushes memtables almost every write.
pub const MIN_MEMORY_BUDGET: usize = 8 << 20;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            memory_budget: 32 << 20,
        }
    }
}

/// Figures about the log and snapshots that the node's snapshot schedule and metrics read.
#[derive(Debug, Default)]
pub struct StoreStats {
    log_bytes_appended: AtomicU64,
    log_entries_appended: AtomicU64,
    snapshot_bytes: AtomicU64,
}

impl StoreStats {
    pub(crate) fn appended(&self, entries: u64, bytes: u64) {
        self.log_entries_appended
            .fetch_add(entries, Ordering::Relaxed);
        self.log_bytes_appended.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn set_snapshot_bytes(&self, bytes: u64) {
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Log entries this process appended so far.
    pub fn entries_appended(&self) -> u64 {
        self.log_entries_appended.load(Ordering::Relaxed)
    }

    /// The mean encoded size of the log entries this process appended (None before the first).
    pub fn mean_entry_bytes(&self) -> Option<u64> {
        let entries = self.log_entries_appended.load(Ordering::Relaxed);
        let bytes = self.log_bytes_appended.load(Ordering::Relaxed);
        bytes.checked_div(entries)
    }

    /// The size of the current snapshot file (0 when there is none).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }
}

/// RocksDB's own accounting of its memory, for metrics and the soak benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Every memtable, active and immutable.
    pub memtables: u64,
    /// The block cache, memtable charges included.
    pub block_cache: u64,
    /// Blocks pinned by open iterators.
    pub pinned: u64,
    /// What the open SST readers hold outside the block cache (RocksDB's estimate): with index
    /// and filter blocks in the cache this is per file, not per key, so it grows with the
    /// number of files only.
    pub table_readers: u64,
    /// The block cache by what it holds, from RocksDB's last scan of it (at most 10 s old).
    pub cache_roles: CacheRoles,
}

/// The block cache's bytes by the kind of entry holding them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheRoles {
    /// Data blocks: the values point reads and scans went to.
    pub data: u64,
    /// Index blocks: one entry per data block of every table read since it was opened.
    pub index: u64,
    /// Bloom filter blocks.
    pub filter: u64,
    /// Memtable memory charged to the cache by the write buffer manager.
    pub write_buffer: u64,
    /// Everything else (table reader metadata, other blocks).
    pub other: u64,
}

impl CacheRoles {
    /// Parses the text of RocksDB's `rocksdb.block-cache-entry-stats` property, whose second
    /// line reads `Block cache entry stats(count,size,portion): DataBlock(12,1.50 MB,4.7%) ...`
    /// with sizes in KB, MB, GB or TB of 1024. The C API reaches only this text form, not the
    /// map of exact byte counts; two decimals are within 0.5 % of the exact figure.
    pub(crate) fn parse(text: &str) -> CacheRoles {
        let mut roles = CacheRoles::default();
        let Some((_, entries)) = text.split_once("Block cache entry stats(count,size,portion):")
        else {
            return roles;
        };
        // Each entry is `Role(count,size,portion%)`, and the size holds a space.
        for entry in entries.lines().next().unwrap_or("").split(')') {
            let Some((role, fields)) = entry.trim().split_once('(') else {
                continue;
            };
            let Some(bytes) = fields.split(',').nth(1).and_then(human_bytes) else {
                continue;
            };
            let slot = match role {
                "DataBlock" => &mut roles.data,
                "IndexBlock" => &mut roles.index,
                "FilterBlock" | "FilterMetaBlock" | "DeprecatedFilterBlock" => &mut roles.filter,
                "WriteBuffer" => &mut roles.write_buffer,
                _ => &mut roles.other,
            };
            *slot += bytes;
        }
        roles
    }
}

/// RocksDB's human size (`1.50 MB`, units of 1024 from KB up) in bytes.
fn human_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    Some((number * scale as f64).round() as u64)
}

/// One column family's memtable before it is flushed, at most.
const WRITE_BUFFER_BYTES: usize = 8 << 20;
/// Memtable arena blocks. RocksDB's default (an eighth of the write buffer, 1 MiB) charged about
/// 0.7 MiB to the write buffer manager for every family holding a single write: 20 families used
/// 14.7 of the 16 MiB from the first second, so every write flushed a nearly empty memtable (27
/// flushes a second in a soak, thousands of tiny SST files, and a 25 MB info log in 150 s).
const ARENA_BLOCK_BYTES: usize = 64 << 10;
/// The smallest shard of the block cache. RocksDB's default splits a 32 MiB cache into 64 shards
/// of 512 KiB, and the write buffer manager charges memtables to the cache in 256 KiB entries
/// placed by hash: a shard holding one or two of them evicted nearly every block put in it, so
/// under a steady write load the index and filter blocks of live files were read again and again
/// (about 330 MB of block reads for 75k manifest PUTs; benches/README.md, "Dead blocks and a
/// churning cache").
const MIN_CACHE_SHARD_BYTES: usize = 4 << 20;

/// Shard bits giving shards of at least [`MIN_CACHE_SHARD_BYTES`] (8 shards for the default
/// budget, 2 for the smallest), and at most RocksDB's own 64 shards.
fn cache_shard_bits(budget: usize) -> i32 {
    let shards = (budget / MIN_CACHE_SHARD_BYTES).max(1);
    (shards.ilog2() as i32).min(6)
}

/// RocksDB's info log: rolled at this size, `INFO_LOGS_KEPT` files kept.
const INFO_LOG_BYTES: usize = 4 << 20;
const INFO_LOGS_KEPT: usize = 4;
/// RocksDB's MANIFEST (the record of SST files) is rewritten from scratch past this size; the
/// default lets it grow to 1 GiB.
const MAX_MANIFEST_BYTES: usize = 8 << 20;
/// Write-ahead log files kept at most before the column families they hold up are flushed: with
/// 20 families, RocksDB's default (four times all memtables) kept hundreds of MiB of log alive
/// for families written once in a while.
const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;
/// How hard RocksDB tries to take the blocks of a deleted SST file out of the block cache (its
/// default, 0, never does; its documentation expects the default to become about 300, "erase
/// while at least 99 % of attempts find the block"). With 0, every compaction left the blocks read
/// from its input files in the cache until the LRU pushed them out: under a steady stream of
/// manifest PUTs `serve`'s cache held 5.4-7.7 MiB after the first 50k, much of it such dead data
/// blocks; with 300 it holds 3.0-4.4 MiB (benches/README.md, "Dead blocks and a churning cache").
const UNCACHE_AGGRESSIVENESS: &str = "300";
/// A flush puts the blocks it writes into the block cache. What was just written is what
/// registries read next (a pushed image is pulled), and it makes the cache reach its share of the
/// budget within the first minutes of writes instead of creeping up over hours as reads fill it:
/// with it the voters sat at 54-56 MiB from 50k to 200k manifest PUTs (ratios 0.99-1.05), without
/// it they went from 37-39 to 40-41 MiB (up to 1.11; benches/README.md).
const PREPOPULATE: &str = "{prepopulate_block_cache=kFlushOnly}";
/// The step in which the MANIFEST file is preallocated (RocksDB's default: 4 MiB).
const MANIFEST_PREALLOCATION_BYTES: usize = 1 << 20;

/// Opens (creating if needed) the database and every column family.
///
/// Tuned for a registry's metadata: small values, point reads, a steady trickle of writes. RocksDB's
/// defaults give each of the 20 column families its own block cache and a 64 MiB memtable, which lets
/// a long-running node grow towards a gigabyte; here one LRU cache of `memory_budget` serves every
/// family, index and filter blocks live in it, and all memtables together are charged to it and
/// flushed at half of it. Bulk reads (snapshots, consistency checks) do not fill it.
pub(crate) fn open(
    path: &Path,
    store: &StoreOptions,
) -> Result<(Database, StoreClosed), StoreError> {
    let budget = store.memory_budget.max(MIN_MEMORY_BUDGET);
    let mut cache_options = LruCacheOptions::default();
    cache_options.set_capacity(budget);
    cache_options.set_num_shard_bits(cache_shard_bits(budget));
    let cache = Cache::new_lru_cache_opts(&cache_options);
    let memtables =
        WriteBufferManager::new_write_buffer_manager_with_cache(budget / 2, false, cache.clone());
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_write_buffer_manager(&memtables);
    options.set_max_background_jobs(2);
    options.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    options.set_max_log_file_size(INFO_LOG_BYTES);
    options.set_keep_log_file_num(INFO_LOGS_KEPT);
    options.set_max_manifest_file_size(MAX_MANIFEST_BYTES);
    // What a fresh node reserves on disk: RocksDB preallocates the WAL (16 MiB allocated on a
    // fresh store here, what fsynced appends to it save) and the MANIFEST (4 MiB by default; a
    // MANIFEST grows by a few hundred bytes per flush, so 1 MiB steps are plenty).
    options.set_manifest_preallocation_size(MANIFEST_PREALLOCATION_BYTES);
    // Bloom filters only where a point read can use them: a filter costs 10 bits per key in the
    // cache, and tables only ever scanned by prefix or range would pay that for nothing.
    let table_options = |filtered: bool| {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        if filtered {
            table.set_bloom_filter(10.0, false);
        }
        table
    };
    let family_options = |table: &Table| {
        let mut family = Options::default();
        family.set_block_based_table_factory(&table_options(table.point_reads()));
        family.set_write_buffer_size(WRITE_BUFFER_BYTES.min(budget / 4));
        family.set_arena_block_size(ARENA_BLOCK_BYTES);
        family.set_compression_type(DBCompressionType::Lz4);
        family
    };
    let families = Table::ALL
        .iter()
        .map(|table| ColumnFamilyDescriptor::new(table.name(), family_options(table)));
    let db = DB::open_cf_descriptors(&options, path, families)?;
    // Options rust-rocksdb has no setter for, set before any write of ours.
    for table in Table::ALL {
        db.set_options_cf(
            cf(&db, table)?,
            &[
                ("uncache_aggressiveness", UNCACHE_AGGRESSIVENESS),
                ("block_based_table_factory", PREPOPULATE),
            ],
        )?;
    }
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let database = Database {
        db,
        installing: AtomicBool::new(false),
        stats: Arc::new(StoreStats::default()),
        _cache: cache,
        _closed: closed_tx,
    };
    Ok((database, StoreClosed(closed_rx)))
}

impl Database {
    /// Writes every memtable to an SST (waiting for it) and frees it, with the WAL behind it.
    pub(crate) fn flush_memtables(&self) -> Result<(), StoreError> {
        let mut options = rocksdb::FlushOptions::default();
        options.set_wait(true);
        for table in Table::ALL {
            self.db.flush_cf_opt(cf(self, table)?, &options)?;
        }
        Ok(())
    }

    /// RocksDB's memory as it accounts for it.
    pub(crate) fn memory_usage(&self) -> MemoryUsage {
        use rocksdb::properties::{
            BLOCK_CACHE_PINNED_USAGE, BLOCK_CACHE_USAGE, CUR_SIZE_ALL_MEM_TABLES,
            ESTIMATE_TABLE_READERS_MEM,
        };
        let int = |value: Result<Option<u64>, rocksdb::Error>| value.ok().flatten().unwrap_or(0);
        let per_family = |property| -> u64 {
            Table::ALL
                .iter()
                .filter_map(|table| self.db.cf_handle(table.name()))
                .map(|family| int(self.db.property_int_value_cf(family, property)))
                .sum()
        };
        let memtables = per_family(CUR_SIZE_ALL_MEM_TABLES);
        let table_readers = per_family(ESTIMATE_TABLE_READERS_MEM);
        // The cache is shared by every family but `default` (opened with RocksDB's own
        // options and never used), so any of ours reports all of it.
        let Some(family) = self.db.cf_handle(Table::Log.name()) else {
            return MemoryUsage::default();
        };
        MemoryUsage {
            memtables,
            block_cache: int(self.db.property_int_value_cf(family, BLOCK_CACHE_USAGE)),
            pinned: int(self
                .db
                .property_int_value_cf(family, BLOCK_CACHE_PINNED_USAGE)),
            table_readers,
            cache_roles: self
                .db
                .property_value_cf(family, BLOCK_CACHE_ENTRY_STATS)
                .ok()
                .flatten()
                .map(|text| CacheRoles::parse(&text))
                .unwrap_or_default(),
        }
    }
}

/// RocksDB's scan of the block cache by entry role (re-collected at most every 10 s when read).
const BLOCK_CACHE_ENTRY_STATS: &str = "rocksdb.block-cache-entry-stats";

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

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;

    #[test]
    fn a_flush_empties_the_memtables_and_keeps_every_row() {
        let dir = TempDir::new().expect("dir");
        let (db, _closed) = open(dir.path(), &StoreOptions::default()).expect("open");
        let family = cf(&db, Table::Manifests).expect("family");
        for i in 0..2_000u32 {
            db.put_cf(family, i.to_be_bytes(), [7u8; 512]).expect("put");
        }
        let before = db.memory_usage().memtables;
        assert!(
            before > 1 << 20,
            "2,000 rows of 512 bytes in memtables: {before}"
        );
        db.flush_memtables().expect("flush");
        let after = db.memory_usage().memtables;
        assert!(after < before / 8, "{before} -> {after} bytes");
        let row = db.get_cf(family, 1_234u32.to_be_bytes()).expect("get");
        assert_eq!(row.map(|value| value.len()), Some(512));
    }

    #[test]
    fn the_cache_is_told_apart_by_what_it_holds() {
        let dir = TempDir::new().expect("dir");
        let (db, _closed) = open(dir.path(), &StoreOptions::default()).expect("open");
        let family = cf(&db, Table::Manifests).expect("family");
        for i in 0..2_000u32 {
            db.put_cf(family, i.to_be_bytes(), [7u8; 512]).expect("put");
        }
        db.flush_memtables().expect("flush");
        for i in (0..2_000u32).step_by(7) {
            db.get_cf(family, i.to_be_bytes()).expect("get");
        }
        // RocksDB re-scans the cache for these figures at most every 10 s (it may have scanned
        // it at open), so the first read can be older than the reads above.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let roles = loop {
            let roles = db.memory_usage().cache_roles;
            if roles.data > 0 || std::time::Instant::now() > deadline {
                break roles;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        // 2,000 rows of 512 bytes (LZ4 takes the repeated bytes down) in 4 KiB blocks: every
        // block was read, so the data blocks hold at least some tens of KiB.
        assert!(roles.data > 16 << 10, "{roles:?}");
        assert!(roles.index > 0 && roles.filter > 0, "{roles:?}");
    }

    #[test]
    fn blocks_of_a_deleted_file_leave_the_cache() {
        let dir = TempDir::new().expect("dir");
        let (db, _closed) = open(dir.path(), &StoreOptions::default()).expect("open");
        let family = cf(&db, Table::Manifests).expect("family");
        // Values LZ4 cannot shrink, so the data blocks are what fills the cache.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut value = || -> Vec<u8> {
            (0..512)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        };
        for i in 0..2_000u32 {
            db.put_cf(family, i.to_be_bytes(), value()).expect("put");
        }
        db.flush_memtables().expect("flush");
        for i in 0..2_000u32 {
            db.get_cf(family, i.to_be_bytes()).expect("get");
        }
        let read = db.memory_usage().block_cache;
        assert!(read > 900 << 10, "1 MB of rows read: cache {read}");
        // Rewrite every row and compact: the first file is deleted, and the compaction's own
        // reads and output do not fill the cache.
        for i in 0..2_000u32 {
            db.put_cf(family, i.to_be_bytes(), value()).expect("put");
        }
        db.flush_memtables().expect("flush");
        db.compact_range_cf(family, None::<&[u8]>, None::<&[u8]>);
        let after = db.memory_usage().block_cache;
        assert!(
            after < read / 4,
            "the deleted files' blocks stayed in the cache: {read} -> {after} bytes"
        );
    }

    #[test]
    fn what_a_flush_writes_is_read_from_the_cache() {
        let dir = TempDir::new().expect("dir");
        let (db, _closed) = open(dir.path(), &StoreOptions::default()).expect("open");
        let family = cf(&db, Table::Tags).expect("family");
        for i in 0..2_000u32 {
            db.put_cf(family, i.to_be_bytes(), [i as u8; 300])
                .expect("put");
        }
        db.flush_memtables().expect("flush");
        rocksdb::perf::set_perf_stats(rocksdb::perf::PerfStatsLevel::EnableCount);
        let mut perf = rocksdb::perf::PerfContext::default();
        perf.reset();
        for i in 0..2_000u32 {
            let row = db.get_cf(family, i.to_be_bytes()).expect("get");
            assert_eq!(row.map(|value| value.len()), Some(300));
        }
        let reads = perf.metric(rocksdb::perf::PerfMetric::BlockReadCount);
        assert_eq!(reads, 0, "blocks read from the file after its flush");
    }

    #[test]
    fn the_cache_entry_stats_text_is_read_by_role() {
        let text = "Block cache LRUCache@0x5581 capacity: 32.00 MB seed: 1 usage: 7.41 MB \
                    table_size: 4096 occupancy: 2000 collections: 3 last_copies: 0 \
                    last_secs: 0.0011 secs_since: 2\n\
                    Block cache entry stats(count,size,portion): DataBlock(1200,4.50 MB,14.06%) \
                    FilterBlock(30,512.00 KB,1.56%) FilterMetaBlock(2,1.00 KB,0%) \
                    IndexBlock(40,2.25 MB,7.03%) WriteBuffer(3,0.75 MB,2.3%) \
                    Misc(1,0.00 KB,0%)\n";
        assert_eq!(
            CacheRoles::parse(text),
            CacheRoles {
                data: 4_718_592,
                index: 2_359_296,
                filter: 525_312,
                write_buffer: 786_432,
                other: 0,
            }
        );
        assert_eq!(CacheRoles::parse(""), CacheRoles::default());
        assert_eq!(
            CacheRoles::parse("Block cache entry stats(count,size,portion): DataBlock(1,x,0%)"),
            CacheRoles::default(),
            "an unreadable size is left out, not guessed"
        );
    }
}
