//! Memtables written out while a node is idle. RocksDB keeps recent writes in memtables (up to
//! half of `memory_budget`) until one fills; a registry that goes quiet would otherwise hold them,
//! and the WAL behind them, for as long as it stays quiet, so its idle memory depended on where
//! in that sawtooth the last push left it. Once no more than a trickle of entries (the leader's
//! periodic sweeps) was appended over a whole check interval, every memtable is flushed to an SST
//! and its arena freed.

use std::time::Duration;

use meta_store::StateReader;

/// How often idleness is checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// At most this many log entries appended over one interval still counts as idle (the garbage
/// collector proposes a sweep every interval even when there is nothing to collect).
const IDLE_ENTRIES: u64 = 8;
/// Memtables smaller than this are left alone: a flush would write a tiny file for nothing.
const MIN_FLUSH_BYTES: u64 = 1 << 20;

/// Whether memtables of `memtable_bytes` are flushed after `appended` log entries in one check.
fn flush_due(appended: u64, memtable_bytes: u64) -> bool {
    appended <= IDLE_ENTRIES && memtable_bytes >= MIN_FLUSH_BYTES
}

/// Checks every few seconds and flushes the memtables of an idle node, until the process ends.
pub(crate) async fn run_idle_flush(reader: StateReader) {
    let mut appended = reader.stats().entries_appended();
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = reader.stats().entries_appended();
        let since = now.saturating_sub(appended);
        appended = now;
        if !flush_due(since, reader.memory_usage().memtables) {
            continue;
        }
        let flushing = reader.clone();
        match tokio::task::spawn_blocking(move || flushing.flush_memtables()).await {
            Ok(Ok(())) => {
                metrics::counter!("wharf_meta_idle_flushes_total").increment(1);
                tracing::debug!("idle: memtables flushed");
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot flush the memtables"),
            Err(error) => tracing::warn!(%error, "the memtable flush task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_quiet_node_with_memtables_worth_writing_flushes() {
        assert!(flush_due(0, MIN_FLUSH_BYTES));
        assert!(
            flush_due(IDLE_ENTRIES, 16 << 20),
            "the leader's sweeps are quiet"
        );
        assert!(
            !flush_due(IDLE_ENTRIES + 1, 16 << 20),
            "writes are going on"
        );
        assert!(
            !flush_due(0, MIN_FLUSH_BYTES - 1),
            "too little to write a file for"
        );
    }
}
