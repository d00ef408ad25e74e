//! [`BlobNode`]: `BlobApi` over a [`BlobStore`], committing through a [`Replicator`].

use std::sync::Arc;

use async_trait::async_trait;
use blob_store::{BlobStore, FsBlobStore};
use cluster_api::{BlobApi, BlobError, BlobNodeId, ByteStream, CommittedBlob, UploadId};
use oci_model::Digest;

use crate::config::BlobNodeConfig;
use crate::error::BlobNodeError;
use crate::replicator::{LocalOnly, Replicator};

/// One blob storage node. Every call is one call into the store, except commit, which also
/// hands the durable blob to the replicator.
pub struct BlobNode {
    id: BlobNodeId,
    store: Arc<dyn BlobStore>,
    replicator: Arc<dyn Replicator>,
}

impl BlobNode {
    pub fn new(
        id: BlobNodeId,
        store: Arc<dyn BlobStore>,
        replicator: Arc<dyn Replicator>,
    ) -> BlobNode {
        BlobNode {
            id,
            store,
            replicator,
        }
    }

    /// Validates `config` and opens its node on an [`FsBlobStore`] in `data_dir`, keeping every
    /// copy local ([`LocalOnly`]) until a cluster replicator is plugged in with [`BlobNode::new`].
    pub async fn open(config: &BlobNodeConfig) -> Result<BlobNode, BlobNodeError> {
        config.validate()?;
        let store = FsBlobStore::open(&config.data_dir)
            .await
            .map_err(|source| BlobNodeError::OpenStore {
                path: config.data_dir.clone(),
                source,
            })?;
        tracing::info!(node = config.node_id, data_dir = %config.data_dir.display(), "blob node opened");
        Ok(BlobNode::new(
            config.node_id,
            Arc::new(store),
            Arc::new(LocalOnly),
        ))
    }

    pub fn id(&self) -> BlobNodeId {
        self.id
    }

    /// The store underneath, for work beside the API such as garbage collection of abandoned
    /// uploads.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }
}

#[async_trait]
impl BlobApi for BlobNode {
    async fn start_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        self.store.start_upload(id).await
    }

    async fn append_upload(
        &self,
        id: &UploadId,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, BlobError> {
        self.store.append(id, offset, data).await
    }

    async fn upload_status(&self, id: &UploadId) -> Result<u64, BlobError> {
        self.store.upload_len(id).await
    }

    async fn commit_upload(
        &self,
        id: &UploadId,
        digest: &Digest,
    ) -> Result<CommittedBlob, BlobError> {
        let size = self.store.commit(id, digest).await?;
        let replicas = self.replicator.replicate(self.id, digest, size).await?;
        tracing::info!(node = self.id, upload = %id, %digest, size, ?replicas, "blob committed");
        Ok(CommittedBlob { size, replicas })
    }

    async fn cancel_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        self.store.cancel_upload(id).await
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        self.store.stat(digest).await
    }

    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError> {
        self.store.read(digest, offset, length).await
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        self.store.delete(digest).await
    }
}
