//! [`Replicator`]: what a commit calls once a blob is durable on this node; [`LocalOnly`] for
//! one node, [`RingReplicator`] for a cluster.

use std::sync::Arc;

use async_trait::async_trait;
use blob_store::BlobStore;
use cluster_api::{BlobError, BlobNodeId, BlobNodes, Placement, RepoPlacement};
use futures::future::join_all;
use oci_model::{Digest, RepositoryName};

use crate::cluster::{push_replica, ClusterView};

/// Copies a blob that was just committed on this node to the other nodes that should hold it
/// (the ring owners of its digest), before the commit is acknowledged.
#[async_trait]
pub trait Replicator: Send + Sync + 'static {
    /// Called before an upload into `repo` is committed on node `local`: refuses
    /// (`Unavailable`) when this node may not hold the repository's blobs, so a refused push
    /// leaves no copy behind. The default admits every commit.
    async fn admit(&self, _local: BlobNodeId, _repo: &RepositoryName) -> Result<(), BlobError> {
        Ok(())
    }

    /// Called once `digest` (`size` bytes), pushed into `repo`, is verified and fsynced on node
    /// `local`. Returns every node that now holds a verified, fsynced copy, in preferred read
    /// order; that list becomes the blob's replicas in the metadata service, so it must never
    /// name a node whose copy is not durable, nor one outside the zones `repo`'s placement rules
    /// allow. An error fails the commit (the local copy stays, for repair or a retry).
    async fn replicate(
        &self,
        local: BlobNodeId,
        digest: &Digest,
        size: u64,
        repo: &RepositoryName,
    ) -> Result<Vec<BlobNodeId>, BlobError>;
}

/// Keeps the only copy on this node: right for a single-node cluster (`wharf serve`), where this
/// node is the one ring owner of every digest. Clusters replace it with a ring-aware replicator.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalOnly;

#[async_trait]
impl Replicator for LocalOnly {
    async fn replicate(
        &self,
        local: BlobNodeId,
        _digest: &Digest,
        _size: u64,
        _repo: &RepositoryName,
    ) -> Result<Vec<BlobNodeId>, BlobError> {
        Ok(vec![local])
    }
}

/// Pushes each committed blob to the other ring owners of its digest, in parallel, and succeeds
/// once enough owners hold a durable copy ([`Placement::required_copies`](crate::Placement::required_copies)).
///
/// The local copy always stays and is listed first, even when this node is not an owner (it
/// staged the upload): the repair loop moves it off once the owners confirm.
///
/// **Hinted copies.** An owner that cannot take its copy (it died, and the failure detector has
/// not marked it `Down` yet, which takes `blob_down_after_ms`) does not fail the push: the copies
/// it lacks go to the next `Up` nodes in the digest's ring order, and the push is acknowledged once
/// as many distinct nodes hold a durable copy as the policy requires. Meta records every such
/// node as a replica, so reads find them; the repair loop on a node that holds a copy it does not
/// own pushes it to the owners once they answer, and drops it after they confirm. Durability is
/// never traded: the acknowledgement still needs `required` fsynced copies on distinct nodes.
pub struct RingReplicator {
    store: Arc<dyn BlobStore>,
    view: Arc<ClusterView>,
    nodes: Arc<dyn BlobNodes>,
}

impl RingReplicator {
    /// `store` is this node's own store, read to stream the blob to the owners.
    pub fn new(
        store: Arc<dyn BlobStore>,
        view: Arc<ClusterView>,
        nodes: Arc<dyn BlobNodes>,
    ) -> RingReplicator {
        RingReplicator { store, view, nodes }
    }

    /// Pushes `digest` to each of `targets` at once; returns those that now hold a durable copy.
    async fn push_all(
        &self,
        local: BlobNodeId,
        digest: &Digest,
        size: u64,
        targets: &[BlobNodeId],
    ) -> Vec<BlobNodeId> {
        let pushes = targets.iter().map(|&target| async move {
            let pushed =
                push_replica(self.store.as_ref(), self.nodes.as_ref(), target, digest).await;
            (target, pushed)
        });
        let mut held = Vec::new();
        for (target, pushed) in join_all(pushes).await {
            match pushed {
                Ok(()) => {
                    metrics::counter!("wharf_blob_replicated_bytes_total").increment(size);
                    held.push(target);
                }
                Err(error) => {
                    tracing::warn!(node = local, to = target, %digest, %error, "replica push failed")
                }
            }
        }
        held
    }
}

/// Refuses a copy on `local` when `repo`'s placement rules do not allow its zone.
impl RingReplicator {
    /// A push refused after `holders` stored the blob: meta never hears of those copies from
    /// the gateway, so tell it here. Meta dooms them unless the blob is live (then repair counts
    /// them), and each holder's collector deletes its copy, instead of keeping a file nothing
    /// knows for good. A retry of the push brings the blob back (a doomed blob pushed again is
    /// resurrected, and a deletion meanwhile fences the retry's commit, which is refused with
    /// RETRY). Best effort: what meta does not hear of, `fsck --repair` finds.
    async fn discard(&self, digest: &Digest, size: u64, holders: &[BlobNodeId]) {
        let blob = [(digest.clone(), size)];
        for node in holders {
            if let Err(error) = self.view.meta().discard_orphans(*node, &blob).await {
                tracing::warn!(node, %digest, %error, "could not hand an unacknowledged copy to meta");
            }
        }
    }
}

fn check_staging_zone(
    placement: &Placement,
    local: BlobNodeId,
    repo: &RepositoryName,
    rules: &RepoPlacement,
) -> Result<(), BlobError> {
    if placement
        .map()
        .zone_of(local)
        .is_some_and(|zone| rules.allows(zone))
    {
        return Ok(());
    }
    Err(BlobError::Unavailable(format!(
        "{} of {repo} does not allow a copy on this staging node ({local}); push again",
        rules.describe()
    )))
}

#[async_trait]
impl Replicator for RingReplicator {
    /// Checked against the cached map (no meta read per push), and when that refuses, against
    /// a fresh one (the rule may have changed since it was cached); `replicate` checks again on
    /// a fresh map.
    async fn admit(&self, local: BlobNodeId, repo: &RepositoryName) -> Result<(), BlobError> {
        let cached = self.view.current().await?;
        let rules = cached.map().placement_of(repo.as_str());
        if check_staging_zone(&cached, local, repo, &rules).is_ok() {
            return Ok(());
        }
        let fresh = self.view.refresh().await?;
        let rules = fresh.map().placement_of(repo.as_str());
        check_staging_zone(&fresh, local, repo, &rules)
    }

    async fn replicate(
        &self,
        local: BlobNodeId,
        digest: &Digest,
        size: u64,
        repo: &RepositoryName,
    ) -> Result<Vec<BlobNodeId>, BlobError> {
        // A fresh (linearizable) read of the map on every commit: acknowledging against a cached
        // map could count owners of an older epoch, an older policy or older placement rules as
        // enough copies.
        let placement = self.view.refresh().await?;
        let rules = placement.map().placement_of(repo.as_str());
        // Data residency: the staging node was chosen in the rules' zones and `admit` checked it
        // on the cached map; a rule changed since then refuses the push here (the client pushes
        // again and is staged where it may be).
        if let Err(error) = check_staging_zone(&placement, local, repo, &rules) {
            self.discard(digest, size, &[local]).await;
            return Err(error);
        }
        let owners = placement.owners_for(digest, &rules);
        if owners.is_empty() {
            self.discard(digest, size, &[local]).await;
            return Err(BlobError::Unavailable(format!(
                "{} of {repo}: no blob node is up in those zones",
                rules.describe()
            )));
        }
        let required = placement.required_copies(owners.len());
        let others: Vec<BlobNodeId> = owners.iter().copied().filter(|o| *o != local).collect();
        let mut replicas = vec![local];
        replicas.extend(self.push_all(local, digest, size, &others).await);
        let owner_copies = replicas.iter().filter(|node| owners.contains(node)).count();
        if owner_copies >= required {
            return Ok(replicas);
        }
        // Some owner could not take its copy: place the missing ones on the next nodes in ring
        // order (one round: a node that fails here is as unreachable as the owner was).
        let missing = required.saturating_sub(replicas.len());
        let hints: Vec<BlobNodeId> = placement
            .preference_for(digest, &rules)
            .into_iter()
            .filter(|node| !owners.contains(node) && !replicas.contains(node))
            .take(missing)
            .collect();
        let hinted = self.push_all(local, digest, size, &hints).await;
        metrics::counter!("wharf_blob_hinted_copies_total").increment(hinted.len() as u64);
        replicas.extend(hinted);
        if replicas.len() < required {
            self.discard(digest, size, &replicas).await;
            return Err(BlobError::Unavailable(format!(
                "{digest} is durable on {} nodes {replicas:?} (owners {owners:?}), {required} required",
                replicas.len()
            )));
        }
        tracing::info!(node = local, %digest, ?owners, ?replicas, "hinted copies: an owner could not take its copy");
        Ok(replicas)
    }
}
