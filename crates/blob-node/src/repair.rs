//! [`Repairer`]: one node's repair and rebalance pass. For every local blob meta knows, each ring
//! owner that lacks it gets a copy pushed (and recorded in meta); a copy this node holds without
//! being an owner is dropped once every owner has confirmed its own, never before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use blob_store::BlobStore;
use cluster_api::{BlobError, BlobInfo, BlobNodeId, BlobNodes, MetaError};
use oci_model::Digest;

use cluster_api::{Placement, RecordOwners};

use crate::cluster::{push_replica, ClusterView};

/// Meta records are read in pages of this size while matching them to a page of local blobs.
const META_PAGE: usize = 512;

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Local blobs examined.
    pub scanned: usize,
    /// Examined blobs that had fewer confirmed owner copies than the policy asks for when the
    /// pass looked at them (before its pushes).
    pub under_replicated: usize,
    /// Copies pushed to owners.
    pub pushed: usize,
    /// Local copies dropped because the owners hold the blob.
    pub dropped: usize,
    /// Examined blobs meta has no record of (not committed yet, or collected): left alone.
    pub unknown_to_meta: usize,
    /// True when the pass reached the last local blob (the next one starts from the first).
    pub wrapped: bool,
}

/// Runs repair passes for one node. Passes never overlap: a second caller waits.
pub struct Repairer {
    local: BlobNodeId,
    store: Arc<dyn BlobStore>,
    view: Arc<ClusterView>,
    nodes: Arc<dyn BlobNodes>,
    batch: usize,
    /// The last blob the previous pass examined; `None` to start from the first.
    cursor: tokio::sync::Mutex<Option<Digest>>,
    last_report: Mutex<RepairReport>,
}

/// The outcome for one blob.
#[derive(Default)]
struct BlobOutcome {
    under_replicated: bool,
    pushed: usize,
    dropped: bool,
}

impl Repairer {
    pub fn new(
        local: BlobNodeId,
        store: Arc<dyn BlobStore>,
        view: Arc<ClusterView>,
        nodes: Arc<dyn BlobNodes>,
        batch: usize,
    ) -> Repairer {
        Repairer {
            local,
            store,
            view,
            nodes,
            batch: batch.max(1),
            cursor: tokio::sync::Mutex::new(None),
            last_report: Mutex::default(),
        }
    }

    /// The report of the last finished pass.
    pub fn last_report(&self) -> RepairReport {
        self.last_report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Examines up to `batch` local blobs after where the previous pass stopped, under the cached
    /// cluster map. Fails only when the map, the local listing or meta's records cannot be read.
    pub async fn run_pass(&self) -> Result<RepairReport, BlobError> {
        let mut cursor = self.cursor.lock().await;
        let placement = self.view.current().await?;
        let page = self.store.list_blobs(cursor.as_ref(), self.batch).await?;
        let records = self.meta_records(cursor.as_ref(), &page).await?;
        let mut report = RepairReport {
            scanned: page.len(),
            wrapped: page.len() < self.batch,
            ..RepairReport::default()
        };
        for (digest, size) in &page {
            let Some(record) = records.get(digest) else {
                report.unknown_to_meta += 1;
                continue;
            };
            let outcome = self.repair_blob(&placement, digest, *size, record).await;
            report.under_replicated += usize::from(outcome.under_replicated);
            report.pushed += outcome.pushed;
            report.dropped += usize::from(outcome.dropped);
        }
        *cursor = if report.wrapped {
            None
        } else {
            page.last().map(|(digest, _)| digest.clone())
        };
        metrics::gauge!("wharf_blob_under_replicated").set(report.under_replicated as f64);
        metrics::counter!("wharf_blob_repair_passes_total").increment(1);
        metrics::counter!("wharf_blob_rebalanced_blobs_total").increment(report.dropped as u64);
        *self
            .last_report
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = report.clone();
        Ok(report)
    }

    /// Meta's records of the blobs in `page`, read in digest order from `after` on.
    async fn meta_records(
        &self,
        after: Option<&Digest>,
        page: &[(Digest, u64)],
    ) -> Result<HashMap<Digest, BlobInfo>, BlobError> {
        let mut records = HashMap::new();
        let Some((last, _)) = page.last() else {
            return Ok(records);
        };
        let mut meta_after = after.cloned();
        loop {
            let listed = self
                .view
                .meta()
                .list_blobs(meta_after.as_ref(), META_PAGE)
                .await
                .map_err(|error| {
                    BlobError::Unavailable(format!("cannot list blobs in meta: {error}"))
                })?;
            let done =
                listed.len() < META_PAGE || listed.last().is_some_and(|info| info.digest >= *last);
            meta_after = listed.last().map(|info| info.digest.clone());
            for info in listed {
                if page
                    .binary_search_by(|(digest, _)| digest.cmp(&info.digest))
                    .is_ok()
                {
                    records.insert(info.digest.clone(), info);
                }
            }
            if done {
                return Ok(records);
            }
        }
    }

    async fn repair_blob(
        &self,
        placement: &Placement,
        digest: &Digest,
        size: u64,
        record: &BlobInfo,
    ) -> BlobOutcome {
        // Per rule set the blob was linked under (data residency), or the plain ring.
        let RecordOwners {
            owners,
            complete,
            empty_set,
        } = placement.owners_of_record(record);
        let mut outcome = BlobOutcome {
            under_replicated: !complete,
            ..BlobOutcome::default()
        };
        let mut every_owner_confirmed = !owners.is_empty() && !empty_set;
        for &owner in &owners {
            let mut confirmed = self.ensure_copy(owner, digest, size, &mut outcome).await;
            if confirmed && !record.replicas.contains(&owner) {
                match self.view.meta().add_blob_replicas(digest, &[owner]).await {
                    Ok(()) => {}
                    // Collected since the records were read: nothing left to repair.
                    Err(MetaError::BlobUnknown(_)) => return outcome,
                    Err(error) => {
                        tracing::warn!(node = self.local, owner, %digest, %error, "cannot record a replica");
                        confirmed = false;
                    }
                }
            }
            every_owner_confirmed &= confirmed;
        }
        if every_owner_confirmed && !owners.contains(&self.local) {
            outcome.dropped = self.drop_local_copy(digest).await;
        }
        outcome
    }

    /// Makes sure `owner` holds `digest`, pushing the local copy when it does not. True when the
    /// owner's copy is confirmed.
    async fn ensure_copy(
        &self,
        owner: BlobNodeId,
        digest: &Digest,
        size: u64,
        outcome: &mut BlobOutcome,
    ) -> bool {
        if owner == self.local {
            return true;
        }
        let held = match self.nodes.node(owner).await {
            Ok(node) => node.stat(digest).await,
            Err(error) => Err(error),
        };
        match held {
            Ok(Some(held_size)) if held_size == size => return true,
            Ok(_) => outcome.under_replicated = true,
            Err(error) => {
                outcome.under_replicated = true;
                tracing::debug!(node = self.local, owner, %digest, %error, "cannot check an owner");
                return false;
            }
        }
        match push_replica(self.store.as_ref(), self.nodes.as_ref(), owner, digest).await {
            Ok(()) => {
                outcome.pushed += 1;
                metrics::counter!("wharf_blob_replicated_bytes_total").increment(size);
                tracing::debug!(node = self.local, owner, %digest, "repair pushed a replica");
                true
            }
            // A full owner refuses every pass until space is freed: not worth a warning each time
            // (its heartbeat and `wharf_blob_full` say it once).
            Err(error @ BlobError::Full(_)) => {
                tracing::debug!(node = self.local, owner, %digest, %error, "repair push refused: the owner is full");
                false
            }
            Err(error) => {
                tracing::warn!(node = self.local, owner, %digest, %error, "repair push failed");
                false
            }
        }
    }

    /// Takes this node out of `digest`'s replicas in meta, then deletes the local copy. True when
    /// the copy is gone.
    async fn drop_local_copy(&self, digest: &Digest) -> bool {
        if let Err(error) = self
            .view
            .meta()
            .remove_blob_replicas(digest, &[self.local])
            .await
        {
            tracing::warn!(node = self.local, %digest, %error, "meta refused to drop this replica");
            return false;
        }
        match self.store.delete(digest).await {
            Ok(()) => {
                tracing::debug!(node = self.local, %digest, "moved off this node");
                true
            }
            Err(error) => {
                // Meta no longer lists this copy, so it is only wasted space until collected.
                tracing::warn!(node = self.local, %digest, %error, "cannot delete a moved blob");
                false
            }
        }
    }
}
