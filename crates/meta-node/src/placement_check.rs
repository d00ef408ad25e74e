//! The placement gauges. Every `interval`, each meta member folds the blob records of its own
//! state into a [`PlacementStatus`] (the verdict `wharf admin placement status` and fsck print)
//! and publishes it: `wharf_placement_violations{kind="outside"|"missing"}` (copies outside
//! every zone their rules allow, copies the rules ask for that are not there: both 0 once the
//! blob nodes' repair loops have caught up) and `wharf_placement_blobs{state}` (ruled blobs
//! compliant, pending, impossible). Without rules nothing is scanned and every gauge is 0.

use std::time::Duration;

use cluster_api::{MetaError, Placement, PlacementStatus};
use meta_store::StateReader;

/// Blob records read per page of the scan.
const PAGE: usize = 1000;

pub(crate) async fn run_placement_check(reader: StateReader, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let scan_reader = reader.clone();
        // A scan of every blob record: RocksDB reads, off the async workers.
        match tokio::task::spawn_blocking(move || fold(&scan_reader)).await {
            Ok(Ok(status)) => publish(&status),
            Ok(Err(error)) => tracing::debug!(%error, "placement check did not run"),
            Err(error) => tracing::warn!(%error, "placement check failed"),
        }
    }
}

/// The placement verdict over every blob record of `reader`'s state.
pub(crate) fn fold(reader: &StateReader) -> Result<PlacementStatus, MetaError> {
    let map = reader.cluster_map()?;
    let no_rules = map.placement.is_empty();
    let placement = Placement::new(map);
    let mut status = PlacementStatus::new(&placement);
    if no_rules {
        return Ok(status);
    }
    let mut after = None;
    loop {
        let page = reader.list_blobs(after.as_ref(), PAGE)?;
        for record in &page {
            status.add(&placement, record);
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.digest.clone()),
            _ => return Ok(status),
        }
    }
}

fn publish(status: &PlacementStatus) {
    metrics::gauge!("wharf_placement_violations", "kind" => "outside")
        .set(status.copies_outside as f64);
    metrics::gauge!("wharf_placement_violations", "kind" => "missing")
        .set(status.copies_missing as f64);
    for (state, count) in [
        ("compliant", status.compliant),
        ("pending", status.pending),
        ("impossible", status.impossible),
    ] {
        metrics::gauge!("wharf_placement_blobs", "state" => state).set(count as f64);
    }
}
