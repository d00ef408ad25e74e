//! [`ClusterView`]: this node's cached copy of the cluster map, as a [`Placement`] (the ring
//! owners of a digest under one map, `cluster_api::Placement`).

use std::sync::{Arc, Mutex, PoisonError};

use blob_store::BlobStore;
use cluster_api::{BlobError, BlobNodeId, BlobNodes, MetaApi, Placement};
use oci_model::Digest;

/// The cluster map as this node last read it from meta.
pub struct ClusterView {
    meta: Arc<dyn MetaApi>,
    current: Mutex<Option<Arc<Placement>>>,
}

impl ClusterView {
    pub fn new(meta: Arc<dyn MetaApi>) -> ClusterView {
        ClusterView {
            meta,
            current: Mutex::new(None),
        }
    }

    pub fn meta(&self) -> &Arc<dyn MetaApi> {
        &self.meta
    }

    /// The cached placement, reading the map from meta when none is cached yet.
    pub async fn current(&self) -> Result<Arc<Placement>, BlobError> {
        if let Some(placement) = self.cached() {
            return Ok(placement);
        }
        self.refresh().await
    }

    /// The cached placement without asking meta.
    pub fn cached(&self) -> Option<Arc<Placement>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the map from meta and caches it (unless a newer one is cached already).
    pub async fn refresh(&self) -> Result<Arc<Placement>, BlobError> {
        let map = self.meta.cluster_map().await.map_err(|error| {
            BlobError::Unavailable(format!("cannot read the cluster map: {error}"))
        })?;
        let fresh = Arc::new(Placement::new(map));
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match current.as_ref() {
            Some(cached) if cached.epoch() > fresh.epoch() => Ok(Arc::clone(cached)),
            _ => {
                *current = Some(Arc::clone(&fresh));
                Ok(fresh)
            }
        }
    }
}

/// Streams the local copy of `digest` to node `owner` as a replica; returns once the owner has
/// it verified and fsynced.
pub(crate) async fn push_replica(
    store: &dyn BlobStore,
    nodes: &dyn BlobNodes,
    owner: BlobNodeId,
    digest: &Digest,
) -> Result<(), BlobError> {
    let target = nodes.node(owner).await?;
    let data = store.read(digest, 0, None).await?;
    target.put_replica(digest, data).await
}
