//! When to snapshot. A snapshot writes the whole state, so taking one every fixed number of
//! entries makes the work per entry grow with the state (at 200k manifests, every 10,000 PUTs
//! rewrote a few hundred MB). Instead a snapshot is due once at least `min_logs` entries were
//! applied since the last one AND those entries add up to at least half the last snapshot's size.
//! Then:
//! - snapshot writing costs at most about two bytes per byte of log appended, whatever the state;
//! - the log kept on disk is at most about `max(min_logs entries, half the state)` plus the
//!   1,000 entries openraft keeps behind a snapshot, since openraft purges it behind each one.
//!
//! openraft's own policy is off (`SnapshotPolicy::Never`); this task triggers builds.

use std::time::{Duration, Instant};

use meta_store::{StateReader, StoreStats, TypeConfig};
use openraft::Raft;

/// The entry size assumed before this process has appended any.
const DEFAULT_ENTRY_BYTES: u64 = 1_024;
/// How long a trigger is given to produce a snapshot before the schedule triggers again.
const BUILD_PATIENCE: Duration = Duration::from_secs(60);

/// Whether a snapshot is due after `logs_since` entries since the last one.
fn snapshot_due(logs_since: u64, min_logs: u64, stats: &StoreStats) -> bool {
    due(
        logs_since,
        min_logs,
        stats.mean_entry_bytes().unwrap_or(DEFAULT_ENTRY_BYTES),
        stats.snapshot_bytes(),
    )
}

fn due(logs_since: u64, min_logs: u64, entry_bytes: u64, snapshot_bytes: u64) -> bool {
    logs_since >= min_logs && logs_since.saturating_mul(entry_bytes) >= snapshot_bytes / 2
}

/// Follows the applied index and triggers a snapshot whenever one is due, until Raft stops.
pub(crate) async fn run_schedule(raft: Raft<TypeConfig>, reader: StateReader, min_logs: u64) {
    let mut watch = raft.metrics();
    let mut triggered: Option<(Option<u64>, Instant)> = None;
    loop {
        let (applied, snapshot) = {
            let metrics = watch.borrow_and_update();
            (
                metrics.last_applied.map_or(0, |log_id| log_id.index),
                metrics.snapshot.map(|log_id| log_id.index),
            )
        };
        let waiting =
            triggered.is_some_and(|(at, when)| at == snapshot && when.elapsed() < BUILD_PATIENCE);
        let since = applied.saturating_sub(snapshot.unwrap_or(0));
        if !waiting && snapshot_due(since, min_logs, reader.stats()) {
            tracing::debug!(since, "triggering a snapshot");
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            triggered = Some((snapshot, Instant::now()));
        }
        if watch.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn a_snapshot_waits_for_enough_entries_and_enough_log_bytes() {
        // A small state: the entry count decides.
        assert!(!due(9_999, 10_000, 1_000, 1 << 20));
        assert!(due(10_000, 10_000, 1_000, 1 << 20));
        // A 400 MB state of 1 KB entries: 200,000 entries since the last snapshot, not 10,000.
        assert!(!due(10_000, 10_000, 1_000, 400_000_000));
        assert!(!due(199_999, 10_000, 1_000, 400_000_000));
        assert!(due(200_000, 10_000, 1_000, 400_000_000));
        // No snapshot yet: the count alone.
        assert!(due(10_000, 10_000, 1_000, 0));
    }
}
