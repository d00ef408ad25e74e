//! [`BackgroundTasks`]: a clustered node's heartbeat loop, repair/rebalance loop and garbage
//! collection loop, and the handle that stops them.

use std::sync::Arc;
use std::time::Duration;

use blob_store::BlobStore;
use cluster_api::{BlobError, BlobNodeHealth, BlobNodeId};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterView;
use crate::collector::{CollectReport, Collector};
use crate::repair::{RepairReport, Repairer};

/// The loops of one clustered blob node. They stop on [`stop`](BackgroundTasks::stop), when
/// the token from [`shutdown_token`](BackgroundTasks::shutdown_token) is cancelled, or when this
/// handle is dropped.
pub struct BackgroundTasks {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    view: Arc<ClusterView>,
    repairer: Arc<Repairer>,
    collector: Arc<Collector>,
}

/// What the heartbeat reports of the node's disk.
pub(crate) struct Capacity {
    pub store: Arc<dyn BlobStore>,
    pub min_free_bytes: u64,
}

impl Capacity {
    /// The store's free bytes against the node's floor; also published as the gauges
    /// `wharf_blob_free_bytes` and `wharf_blob_full`. A store that cannot tell is not full.
    async fn health(&self, local: BlobNodeId) -> BlobNodeHealth {
        let free_bytes = match self.store.free_bytes().await {
            Ok(free) => free,
            Err(error) => {
                tracing::warn!(node = local, %error, "cannot read the free space");
                None
            }
        };
        let full = free_bytes.is_some_and(|free| free < self.min_free_bytes);
        if let Some(free) = free_bytes {
            metrics::gauge!("wharf_blob_free_bytes").set(free as f64);
        }
        metrics::gauge!("wharf_blob_full").set(if full { 1.0 } else { 0.0 });
        BlobNodeHealth { full, free_bytes }
    }
}

/// How often each loop runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Intervals {
    pub heartbeat: Duration,
    pub repair: Duration,
    pub gc: Duration,
}

impl BackgroundTasks {
    /// Spawns the three loops on the current tokio runtime.
    pub(crate) fn spawn(
        local: BlobNodeId,
        view: Arc<ClusterView>,
        repairer: Arc<Repairer>,
        collector: Arc<Collector>,
        intervals: Intervals,
        capacity: Capacity,
    ) -> BackgroundTasks {
        let shutdown = CancellationToken::new();
        let map_changed = Arc::new(Notify::new());
        let heartbeat = tokio::spawn(heartbeat_loop(
            local,
            Arc::clone(&view),
            capacity,
            intervals.heartbeat,
            Arc::clone(&map_changed),
            shutdown.clone(),
        ));
        let repair = tokio::spawn(repair_loop(
            local,
            Arc::clone(&repairer),
            intervals.repair,
            map_changed,
            shutdown.clone(),
        ));
        let collect = tokio::spawn(collect_loop(
            local,
            Arc::clone(&collector),
            intervals.gc,
            shutdown.clone(),
        ));
        BackgroundTasks {
            shutdown,
            tasks: vec![heartbeat, repair, collect],
            view,
            repairer,
            collector,
        }
    }

    /// The node's cached cluster map.
    pub fn view(&self) -> &Arc<ClusterView> {
        &self.view
    }

    /// Runs one repair pass now (waiting for a running one to finish first), for tests and
    /// operators; the loop keeps its own schedule.
    pub async fn repair_pass(&self) -> Result<RepairReport, BlobError> {
        self.repairer.run_pass().await
    }

    /// The report of the last finished pass.
    pub fn last_repair_report(&self) -> RepairReport {
        self.repairer.last_report()
    }

    /// Runs one garbage collection pass now (waiting for a running one to finish first), for
    /// tests and operators; the loop keeps its own schedule.
    pub async fn collect_pass(&self) -> Result<CollectReport, BlobError> {
        self.collector.run_pass().await
    }

    /// The report of the last garbage collection pass that finished without error.
    pub fn last_collect_report(&self) -> CollectReport {
        self.collector.last_report()
    }

    /// Everything garbage collection did since the node started.
    pub fn collect_totals(&self) -> CollectReport {
        self.collector.totals()
    }

    /// Cancelling this token stops the loops, as [`stop`](BackgroundTasks::stop) does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the loops and waits for them to end. A pass cut short leaves nothing half done
    /// that matters: a push in flight is abandoned (the owner keeps nothing partial), a copy
    /// is only deleted after meta stopped listing it, and a copy garbage collection had set
    /// aside is put back by its next pass or when the store is next opened.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Tells meta this node is alive; re-reads the cluster map when its epoch moved, and wakes the
/// repair loop.
async fn heartbeat_loop(
    local: BlobNodeId,
    view: Arc<ClusterView>,
    capacity: Capacity,
    interval: Duration,
    map_changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // Cut short by a stop: with meta unreachable a heartbeat retries for seconds.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = heartbeat(local, &view, &capacity, &map_changed) => {}
        }
    }
}

/// One heartbeat, and a re-read of the cluster map when meta's epoch moved.
async fn heartbeat(
    local: BlobNodeId,
    view: &ClusterView,
    capacity: &Capacity,
    map_changed: &Notify,
) {
    let health = capacity.health(local).await;
    let epoch = match view.meta().blob_node_heartbeat(local, health).await {
        Ok(epoch) => epoch,
        Err(error) => {
            tracing::debug!(node = local, %error, "heartbeat failed");
            return;
        }
    };
    if view
        .cached()
        .is_some_and(|placement| placement.epoch() == epoch)
    {
        return;
    }
    match view.refresh().await {
        Ok(placement) => {
            tracing::info!(
                node = local,
                epoch = placement.epoch(),
                "cluster map changed"
            );
            map_changed.notify_one();
        }
        Err(error) => tracing::warn!(node = local, %error, "cannot re-read the cluster map"),
    }
}

/// Runs a repair pass every `interval`, and right after the map changes.
async fn repair_loop(
    local: BlobNodeId,
    repairer: Arc<Repairer>,
    interval: Duration,
    map_changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = map_changed.notified() => {}
        }
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = repairer.run_pass() => outcome,
        };
        match outcome {
            Ok(report) if report.pushed + report.dropped + report.under_replicated > 0 => {
                tracing::info!(node = local, ?report, "repair pass")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(node = local, %error, "repair pass failed"),
        }
    }
}

/// Runs a garbage collection pass every `interval`.
async fn collect_loop(
    local: BlobNodeId,
    collector: Arc<Collector>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // Dropping a pass half-way is safe: the collector remembers what it set aside.
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = collector.run_pass() => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(node = local, %error, "garbage collection pass failed");
        }
    }
}
