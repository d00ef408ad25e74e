//! Raft and cluster-map gauges for Prometheus (the binary installs the exporter; without one the
//! `metrics` calls are no-ops). One task follows `raft.metrics()` and republishes on each change.

use cluster_api::NodeState;
use meta_store::{StateReader, TypeConfig};
use openraft::{Raft, RaftMetrics, ServerState};

type Metrics = RaftMetrics<u64, openraft::BasicNode>;

fn publish_raft(metrics: &Metrics) {
    metrics::gauge!("wharf_raft_term").set(metrics.current_term as f64);
    let applied = metrics.last_applied.map_or(0, |log_id| log_id.index);
    metrics::gauge!("wharf_raft_last_applied").set(applied as f64);
    metrics::gauge!("wharf_raft_last_log_index").set(metrics.last_log_index.unwrap_or(0) as f64);
    let is_leader = if metrics.state == ServerState::Leader {
        1.0
    } else {
        0.0
    };
    metrics::gauge!("wharf_raft_is_leader").set(is_leader);
    metrics::gauge!("wharf_raft_leader_id").set(metrics.current_leader.unwrap_or(0) as f64);
    publish_replication_lag(metrics);
}

/// On the leader: how many log entries each follower is behind (`wharf_raft_replication_lag`,
/// labelled by peer id). Followers publish nothing (they do not know the others' progress).
fn publish_replication_lag(metrics: &Metrics) {
    let Some(replication) = &metrics.replication else {
        return;
    };
    let last = metrics.last_log_index.unwrap_or(0);
    for (peer, matched) in replication {
        if *peer == metrics.id {
            continue;
        }
        let lag = last.saturating_sub(matched.map_or(0, |log_id| log_id.index));
        metrics::gauge!("wharf_raft_replication_lag", "peer" => peer.to_string()).set(lag as f64);
    }
}

fn publish_map(reader: &StateReader) {
    let map = match reader.cluster_map() {
        Ok(map) => map,
        Err(error) => {
            tracing::debug!(%error, "cannot read the cluster map for metrics");
            return;
        }
    };
    metrics::gauge!("wharf_cluster_epoch").set(map.epoch as f64);
    for (state, label) in [
        (NodeState::Up, "up"),
        (NodeState::Draining, "draining"),
        (NodeState::Down, "down"),
    ] {
        let count = map.members.iter().filter(|m| m.state == state).count();
        metrics::gauge!("wharf_blob_nodes", "state" => label).set(count as f64);
    }
}

/// RocksDB's memory and the log and snapshot sizes: what the memory budget and the snapshot
/// schedule bound.
fn publish_store(reader: &StateReader, metrics: &Metrics) {
    let memory = reader.memory_usage();
    metrics::gauge!("wharf_meta_rocksdb_memtable_bytes").set(memory.memtables as f64);
    metrics::gauge!("wharf_meta_rocksdb_block_cache_bytes").set(memory.block_cache as f64);
    metrics::gauge!("wharf_meta_rocksdb_pinned_bytes").set(memory.pinned as f64);
    metrics::gauge!("wharf_meta_rocksdb_table_readers_bytes").set(memory.table_readers as f64);
    let roles = memory.cache_roles;
    for (role, bytes) in [
        ("data", roles.data),
        ("index", roles.index),
        ("filter", roles.filter),
        ("write_buffer", roles.write_buffer),
        ("other", roles.other),
    ] {
        metrics::gauge!("wharf_meta_rocksdb_block_cache_role_bytes", "role" => role)
            .set(bytes as f64);
    }
    metrics::gauge!("wharf_meta_snapshot_bytes").set(reader.stats().snapshot_bytes() as f64);
    let purged = metrics.purged.map_or(0, |log_id| log_id.index);
    let entries = metrics.last_log_index.unwrap_or(0).saturating_sub(purged);
    metrics::gauge!("wharf_raft_log_entries").set(entries as f64);
}

/// How often the store's figures are re-read (twenty RocksDB properties each time).
const STORE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Publishes the gauges until Raft stops. The cluster map is re-read only when the applied
/// index moved, since only an applied entry can change it.
pub(crate) async fn run_metrics(raft: Raft<TypeConfig>, reader: StateReader) {
    let mut watch = raft.metrics();
    let mut published_applied = None;
    let mut store_published: Option<std::time::Instant> = None;
    loop {
        let metrics = watch.borrow_and_update().clone();
        publish_raft(&metrics);
        if published_applied != Some(metrics.last_applied) {
            publish_map(&reader);
            published_applied = Some(metrics.last_applied);
        }
        if store_published.is_none_or(|at| at.elapsed() >= STORE_EVERY) {
            publish_store(&reader, &metrics);
            store_published = Some(std::time::Instant::now());
        }
        if watch.changed().await.is_err() {
            return;
        }
    }
}
