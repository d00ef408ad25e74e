//! [`Replicator`]: what a commit calls once a blob is durable on this node.

use async_trait::async_trait;
use cluster_api::{BlobError, BlobNodeId};
use oci_model::Digest;

/// Copies a blob that was just committed on this node to the other nodes that should hold it
/// (the ring owners of its digest), before the commit is acknowledged.
#[async_trait]
pub trait Replicator: Send + Sync + 'static {
    /// Called once `digest` (`size` bytes) is verified and fsynced on node `local`. Returns every
    /// node that now holds a verified, fsynced copy, in preferred read order; that list becomes
    /// the blob's replicas in the metadata service, so it must never name a node whose copy is
    /// not durable. An error fails the commit (the local copy stays, for repair or a retry).
    async fn replicate(
        &self,
        local: BlobNodeId,
        digest: &Digest,
        size: u64,
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
    ) -> Result<Vec<BlobNodeId>, BlobError> {
        Ok(vec![local])
    }
}
