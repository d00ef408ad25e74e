//! The metadata service's durable half: openraft's log storage ([`LogStore`]) and the registry
//! state machine ([`StateMachine`]) on one RocksDB database, the Raft [`Command`]s that mutate the
//! state, and [`StateReader`], the query side every `MetaApi` read goes through.
//!
//! This is the only crate in Wharf that knows RocksDB. It must not depend on tonic, prost, the
//! gateway or any network code: `meta-node` wires it into a running Raft node.
//!
//! # On-disk layout
//!
//! One RocksDB database (`<data_dir>`), one column family per table, and snapshot files in
//! `<data_dir>/snapshots/` (`snapshot_files.rs` draws them; the format is in `snapshot.rs`).
//! `\0` separates key parts: repository names, tags, digests and upload ids never contain it, and
//! with it a prefix scan of `repo\0` yields exactly one repository's rows, sorted by the next
//! part. Integers are big-endian so that they sort numerically.
//!
//! ```text
//! column family   key                                   value
//! -------------   -----------------------------------   -------------------------------------
//! log             index: u64 BE                         openraft Entry (json)
//! raft            "vote" | "committed" | "last_purged"  Vote / LogId (json)
//! sm_meta         "last_applied" | "membership" |       LogId / StoredMembership (json) /
//!                 "tags_by_digest_built" |              "" (the tag index is complete) /
//!                 "links_by_digest_built"               "" (the blob link index is complete)
//! snapshot        "meta" | "file" | "installing"        SnapshotMeta (json) / the current
//!                                                       snapshot's file name / an install
//!                                                       under way (see snapshot_files.rs)
//! repositories    repo                                  "" (the repository exists)
//! tags            repo \0 tag                           TagRecord (json): digest, pushed_ms
//! manifests       digest                                ManifestRecord (json): bytes, media
//!                                                       type, subject, blobs, children, links
//! manifest_links  repo \0 digest                        ManifestLinkRecord: refs (indexes of
//!                                                       the repo listing it), pushed_ms
//! blobs           digest                                BlobRecord (json): size, replicas, links
//! blob_links      repo \0 digest                        BlobLinkRecord: refs (manifests of the
//!                                                       repo using it), pushed_ms
//! referrers       repo \0 subject \0 referrer digest    Descriptor (json)
//! uploads         retired (sessions are signed tokens   never written; kept so that the table
//!                 now, cluster_api::UploadToken)         numbers in snapshot files stay put
//! blob_nodes      node id: u64 BE                       BlobNodeInfo (json)
//! node_states     node id: u64 BE                       NodeState (json); no row means Up
//! cluster         "epoch" | "policy" | "auth" |         u64 / ReplicationPolicy / AuthState /
//!                 "immutable_tags" | "quotas" |         rules / {namespace: bytes} /
//!                 "retention" | "placement" |           rules / rules /
//!                 "proxies" | "replication" |           proxy upstreams / rules /
//!                 "replication_status" |                {rule: last pass} /
//!                 "replication_seq" |                   u64 (the backlog's last sequence) /
//!                 "gc_generation" |                     u64 /
//!                 "upload_key" | "fence_horizon"        the upload-token key / ms before which
//!                                                       tokens never commit
//! unreferenced    pushed_ms: u64 BE, repo \0 digest     "" (a blob link no manifest uses)
//! doomed          digest                                DoomedRecord: size, nodes still holding
//!                                                       a copy, generation
//! fences          "d" digest | "t" ms: u64 BE digest    last deletion of a copy (ms) / ""
//! namespace_refs  namespace \0 "b"|"m" \0 digest        links of the digest in the namespace
//! usage           namespace                             UsageRecord: logical, physical bytes
//! tags_by_digest  repo \0 digest \0 tag                 "" (derived from tags; not in
//!                                                       snapshots, see derived.rs)
//! links_by_digest digest \0 repo                        "" (derived from blob_links; not in
//!                                                       snapshots, see derived.rs)
//! pending_refs    repo \0 "b"|"m" \0 digest             u32: cached manifests of the repo
//!                                                       listing a blob or child not linked
//!                                                       yet (pull-through cache, refs.rs)
//! cache_access    repo \0 digest                        u64: when a cached manifest was last
//!                                                       pulled (its idle TTL counts from it)
//! replication_    rule \0 repo                          u64: the sequence number of the last
//!   backlog                                             change a push rule has yet to copy
//! ```
//!
//! `blob_nodes`, `node_states` and `cluster` together are the cluster map; every command that
//! changes it (a new or changed node, a state change, a removal, a new policy) bumps `epoch` in
//! the same batch, so nodes compare epochs to tell a stale map from the current one.
//!
//! The reference counts (`links` on records, `refs` on links, `unreferenced`, `namespace_refs`,
//! `usage`) change in the same batch as the links they count; `refs.rs` is the only writer and
//! `check.rs` recomputes them all from the graph (fsck, and every lifecycle test).
//!
//! Every `apply` call writes one `WriteBatch` holding the state changes of all its entries plus
//! `last_applied` and `membership`, so the state on disk always matches `last_applied`; after a
//! crash openraft re-applies the log from there, which is why every [`Command`] is deterministic
//! and idempotent. Log appends and votes are written with `sync = true` before they are
//! acknowledged; since the whole database shares one write-ahead log, each synced write also makes
//! every earlier state-machine write durable.
//!
//! `manifests` and `blobs` are global (keyed by digest): a manifest record goes with its last
//! link; a blob record with its last link moves to `doomed` until every node holding a copy has
//! confirmed deleting it.

mod apply;
mod check;
mod command;
mod db;
mod derived;
mod error;
mod kv;
mod log_store;
mod reader;
mod refs;
mod retention;
mod snapshot;
mod snapshot_files;
mod state;
mod state_machine;
#[cfg(test)]
mod testing;

use std::path::Path;
use std::sync::Arc;

use snapshot_files::SnapshotFiles;

pub use command::{Command, CommandOutput, CommandResponse};
pub use db::{CacheRoles, MemoryUsage, StoreClosed, StoreOptions, StoreStats, MIN_MEMORY_BUDGET};
pub use error::StoreError;
pub use log_store::LogStore;
pub use reader::StateReader;
pub use state_machine::{SnapshotBuilder, StateMachine};

openraft::declare_raft_types!(
    /// Wharf's openraft type configuration: u64 node ids, [`Command`] entries.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The handles on one opened database. The database closes when the log store, the state
/// machine, every reader and every snapshot built from them have been dropped; `closed` tells when.
pub struct MetaStore {
    pub log_store: LogStore,
    pub state_machine: StateMachine,
    pub reader: StateReader,
    pub closed: StoreClosed,
}

impl MetaStore {
    /// Opens (creating if needed) the database under `path` with the default options.
    pub fn open(path: &Path) -> Result<MetaStore, StoreError> {
        MetaStore::open_with(path, &StoreOptions::default())
    }

    /// Opens (creating if needed) the database under `path`, its snapshots in
    /// `path/snapshots/`, and finishes a snapshot install a crash cut short.
    pub fn open_with(path: &Path, options: &StoreOptions) -> Result<MetaStore, StoreError> {
        let (db, closed) = db::open(path, options)?;
        let files = Arc::new(SnapshotFiles::open(path.join(SNAPSHOT_DIR), &db)?);
        for index in derived::ALL {
            index.ensure(&db)?;
        }
        let db = Arc::new(db);
        Ok(MetaStore {
            log_store: LogStore::new(db.clone()),
            state_machine: StateMachine::new(db.clone(), files),
            reader: StateReader::new(db),
            closed,
        })
    }
}

/// The snapshot files' directory, inside the database's (RocksDB ignores names it did not write).
const SNAPSHOT_DIR: &str = "snapshots";
