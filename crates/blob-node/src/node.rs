//! [`BlobNode`]: `BlobApi` over a [`BlobStore`], committing through a [`Replicator`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use blob_store::{BlobStore, FsBlobStore};
use cluster_api::{
    BlobApi, BlobError, BlobNodeId, BlobNodes, ByteStream, CommittedBlob, MetaApi, UploadId,
};
use oci_model::{Digest, RepositoryName};

use crate::background::{BackgroundTasks, Capacity, Intervals};
use crate::cluster::ClusterView;
use crate::collector::Collector;
use crate::config::BlobNodeConfig;
use crate::error::BlobNodeError;
use crate::recent_commits::{self, RecentCommits};
use crate::repair::Repairer;
use crate::replicator::{LocalOnly, Replicator, RingReplicator};
use crate::upload_cap::UploadCap;

/// One blob storage node. Every call is one call into the store, except commit, which also
/// hands the durable blob to the replicator (and is remembered, so the same commit asked again
/// succeeds again).
pub struct BlobNode {
    id: BlobNodeId,
    store: Arc<dyn BlobStore>,
    replicator: Arc<dyn Replicator>,
    recent_commits: RecentCommits,
    /// The store again, as itself, when it is the local directory one (`open*`): what serves
    /// redirected GETs with `sendfile` needs its files.
    fs: Option<FsBlobStore>,
    /// Where this node serves redirected GETs (`blob-http`), if it does.
    http_url: Option<String>,
    /// Below this many free bytes the node takes no new replica (0: it takes them while they
    /// fit); see [`BlobNodeConfig::min_free_bytes`].
    min_free_bytes: u64,
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
            recent_commits: RecentCommits::new(recent_commits::CAPACITY, recent_commits::MAX_AGE),
            fs: None,
            http_url: None,
            min_free_bytes: 0,
        }
    }

    /// Validates `config` and opens its node on an [`FsBlobStore`] in `data_dir`, keeping every
    /// copy local ([`LocalOnly`]), with no background loops: a node alone (tests, tools).
    pub async fn open(config: &BlobNodeConfig) -> Result<BlobNode, BlobNodeError> {
        let store = open_store(config).await?;
        let capped = UploadCap::new(Arc::new(store.clone()), config.max_open_uploads_per_repo);
        let mut node = BlobNode::new(config.node_id, Arc::new(capped), Arc::new(LocalOnly));
        node.min_free_bytes = config.min_free_bytes;
        node.fs = Some(store);
        node.http_url = config.http_url.clone();
        Ok(node)
    }

    /// Validates `config` and opens its node on an [`FsBlobStore`] in `data_dir` as a member of
    /// a cluster: commits replicate to the ring owners ([`RingReplicator`]), and the returned
    /// [`BackgroundTasks`] heartbeat to `meta`, repair and rebalance this node's blobs (reaching
    /// other nodes through `nodes`) and collect its garbage. Must be called within a tokio
    /// runtime. The node must also be registered in the cluster map
    /// (`MetaApi::register_blob_node`).
    pub async fn open_clustered(
        config: &BlobNodeConfig,
        meta: Arc<dyn MetaApi>,
        nodes: Arc<dyn BlobNodes>,
    ) -> Result<(BlobNode, BackgroundTasks), BlobNodeError> {
        let store = open_store(config).await?;
        let (mut node, tasks) = BlobNode::clustered(config, Arc::new(store.clone()), meta, nodes);
        node.fs = Some(store);
        node.http_url = config.http_url.clone();
        Ok((node, tasks))
    }

    /// [`open_clustered`](BlobNode::open_clustered) over any store; `config` gives the node id
    /// and the loop settings (it is not validated here).
    pub fn clustered(
        config: &BlobNodeConfig,
        store: Arc<dyn BlobStore>,
        meta: Arc<dyn MetaApi>,
        nodes: Arc<dyn BlobNodes>,
    ) -> (BlobNode, BackgroundTasks) {
        // Under everything that opens or ends a session (the API, the collector), so the count
        // follows every one of them.
        let store: Arc<dyn BlobStore> =
            Arc::new(UploadCap::new(store, config.max_open_uploads_per_repo));
        let view = Arc::new(ClusterView::new(meta));
        let replicator =
            RingReplicator::new(Arc::clone(&store), Arc::clone(&view), Arc::clone(&nodes));
        let repairer = Repairer::new(
            config.node_id,
            Arc::clone(&store),
            Arc::clone(&view),
            nodes,
            config.repair_batch,
        );
        let collector = Collector::new(
            config.node_id,
            Arc::clone(&store),
            Arc::clone(view.meta()),
            Duration::from_millis(config.stale_upload_after_ms),
        );
        let intervals = Intervals {
            heartbeat: Duration::from_millis(config.heartbeat_interval_ms),
            repair: Duration::from_millis(config.repair_interval_ms),
            gc: Duration::from_millis(config.gc_interval_ms),
        };
        let tasks = BackgroundTasks::spawn(
            config.node_id,
            view,
            Arc::new(repairer),
            Arc::new(collector),
            intervals,
            Capacity {
                store: Arc::clone(&store),
                min_free_bytes: config.min_free_bytes,
            },
        );
        let mut node = BlobNode::new(config.node_id, store, Arc::new(replicator));
        node.min_free_bytes = config.min_free_bytes;
        (node, tasks)
    }

    pub fn id(&self) -> BlobNodeId {
        self.id
    }

    /// The store underneath, for work beside the API (tools, tests).
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// The store as the local directory one, when it is (nodes opened with `open*`).
    pub fn fs_store(&self) -> Option<&FsBlobStore> {
        self.fs.as_ref()
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

    async fn append_at_end(&self, id: &UploadId, data: ByteStream) -> Result<u64, BlobError> {
        self.store.append_at_end(id, data).await
    }

    async fn upload_status(&self, id: &UploadId) -> Result<u64, BlobError> {
        self.store.upload_len(id).await
    }

    async fn commit_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
    ) -> Result<CommittedBlob, BlobError> {
        self.replicator.admit(self.id, repo).await?;
        let size = match self.store.commit(id, digest).await {
            Ok(size) => {
                self.recent_commits.insert(id, digest);
                size
            }
            Err(BlobError::UploadNotFound(_)) if self.recent_commits.committed_as(id, digest) => {
                let held = self.store.stat(digest).await?;
                held.ok_or_else(|| BlobError::UploadNotFound(id.to_string()))?
            }
            Err(error) => return Err(error),
        };
        let replicas = self
            .replicator
            .replicate(self.id, digest, size, repo)
            .await?;
        tracing::info!(node = self.id, upload = %id, %digest, size, ?replicas, "blob committed");
        Ok(CommittedBlob { size, replicas })
    }

    fn direct_url(&self) -> Option<String> {
        self.http_url.clone()
    }

    async fn cancel_upload(&self, id: &UploadId) -> Result<(), BlobError> {
        self.recent_commits.forget(id);
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

    /// Straight into the store: a replica is never handed to the replicator, so it is never
    /// pushed onward. A node below its free-space floor refuses a replica it does not hold yet
    /// (`Full`): the sender places the copy on the next node in ring order, as for an owner it
    /// cannot reach, and repair offers it again once space is freed.
    async fn put_replica(&self, digest: &Digest, data: ByteStream) -> Result<(), BlobError> {
        // The free space first: it is one statvfs, and only a node under its floor needs to
        // know whether it already holds the blob (the store's own put_replica checks that too).
        if self.min_free_bytes > 0 {
            let free = self.store.free_bytes().await?;
            let below = free.filter(|free| *free < self.min_free_bytes);
            if let Some(free) = below {
                if self.store.stat(digest).await?.is_none() {
                    return Err(BlobError::Full(format!(
                        "{free} bytes free, under this node's floor of {} (blob_min_free_bytes): \
                         it takes no new replica until space is freed",
                        self.min_free_bytes
                    )));
                }
            }
        }
        self.store.put_replica(digest, data).await.map(drop)
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError> {
        self.store.list_blobs(after, n).await
    }
}

async fn open_store(config: &BlobNodeConfig) -> Result<FsBlobStore, BlobNodeError> {
    config.validate()?;
    let store = FsBlobStore::open(&config.data_dir)
        .await
        .map_err(|source| BlobNodeError::OpenStore {
            path: config.data_dir.clone(),
            source,
        })?;
    tracing::info!(node = config.node_id, data_dir = %config.data_dir.display(), "blob node opened");
    Ok(store)
}
