//! [`TestMeta`]: `MemMeta` for everything it already does, plus the cluster-map methods done
//! here (map, states, heartbeats, the global blob index with its replica lists).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use cluster_api::fake::MemMeta;
use cluster_api::{
    BlobInfo, BlobNodeId, BlobNodeInfo, ClusterMap, ClusterMember, MetaApi, MetaError, NodeState,
    Page, PutManifest, ReplicationPolicy, StoredManifest, UploadId, UploadSession,
};
use oci_model::{Descriptor, Digest, Reference, RepositoryName, Tag};

#[derive(Default)]
pub struct TestMeta {
    inner: MemMeta,
    map: Mutex<ClusterMap>,
    blobs: Mutex<BTreeMap<Digest, BlobInfo>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TestMeta {
    pub fn new(policy: ReplicationPolicy) -> TestMeta {
        let meta = TestMeta::default();
        lock(&meta.map).policy = policy;
        meta
    }

    pub fn map(&self) -> ClusterMap {
        lock(&self.map).clone()
    }

    pub fn blob(&self, digest: &Digest) -> Option<BlobInfo> {
        lock(&self.blobs).get(digest).cloned()
    }

    fn change_map(&self, change: impl FnOnce(&mut ClusterMap)) {
        let mut map = lock(&self.map);
        change(&mut map);
        map.epoch += 1;
    }
}

#[async_trait]
impl MetaApi for TestMeta {
    async fn create_upload(&self, repo: &RepositoryName) -> Result<UploadSession, MetaError> {
        self.inner.create_upload(repo).await
    }

    async fn get_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
    ) -> Result<UploadSession, MetaError> {
        self.inner.get_upload(repo, id).await
    }

    async fn delete_upload(&self, repo: &RepositoryName, id: &UploadId) -> Result<(), MetaError> {
        self.inner.delete_upload(repo, id).await
    }

    async fn commit_blob(
        &self,
        repo: &RepositoryName,
        blob: BlobInfo,
        upload: Option<UploadId>,
    ) -> Result<(), MetaError> {
        self.inner.commit_blob(repo, blob.clone(), upload).await?;
        let mut blobs = lock(&self.blobs);
        let record = blobs
            .entry(blob.digest.clone())
            .or_insert_with(|| BlobInfo {
                replicas: Vec::new(),
                ..blob.clone()
            });
        for node in blob.replicas {
            if !record.replicas.contains(&node) {
                record.replicas.push(node);
            }
        }
        Ok(())
    }

    async fn stat_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobInfo, MetaError> {
        self.inner.stat_blob(repo, digest).await?;
        self.blob(digest)
            .ok_or_else(|| MetaError::BlobUnknown(digest.clone()))
    }

    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<Option<BlobInfo>, MetaError> {
        self.inner.mount_blob(repo, digest, from).await
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<(), MetaError> {
        self.inner.unlink_blob(repo, digest).await
    }

    async fn put_manifest(&self, manifest: PutManifest) -> Result<(), MetaError> {
        self.inner.put_manifest(manifest).await
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest, MetaError> {
        self.inner.get_manifest(repo, reference).await
    }

    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), MetaError> {
        self.inner.delete_manifest(repo, digest).await
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<(), MetaError> {
        self.inner.delete_tag(repo, tag).await
    }

    async fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, MetaError> {
        self.inner.list_tags(repo, last, n).await
    }

    async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Page, MetaError> {
        self.inner.list_repositories(last, n).await
    }

    async fn list_referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        self.inner
            .list_referrers(repo, subject, artifact_type)
            .await
    }

    async fn register_blob_node(&self, node: BlobNodeInfo) -> Result<(), MetaError> {
        self.change_map(|map| {
            map.members.retain(|member| member.node.id != node.id);
            map.members.push(ClusterMember {
                node,
                state: NodeState::Up,
            });
        });
        Ok(())
    }

    async fn blob_nodes(&self) -> Result<Vec<BlobNodeInfo>, MetaError> {
        Ok(self
            .map()
            .members
            .into_iter()
            .map(|member| member.node)
            .collect())
    }

    async fn cluster_map(&self) -> Result<ClusterMap, MetaError> {
        Ok(self.map())
    }

    async fn set_blob_node_state(&self, id: BlobNodeId, state: NodeState) -> Result<(), MetaError> {
        if !self.map().members.iter().any(|member| member.node.id == id) {
            return Err(MetaError::Invalid(format!("blob node {id} is not known")));
        }
        self.change_map(|map| {
            for member in &mut map.members {
                if member.node.id == id {
                    member.state = state;
                }
            }
        });
        Ok(())
    }

    async fn remove_blob_node(&self, id: BlobNodeId) -> Result<(), MetaError> {
        self.change_map(|map| map.members.retain(|member| member.node.id != id));
        Ok(())
    }

    async fn set_replication_policy(&self, policy: ReplicationPolicy) -> Result<(), MetaError> {
        self.change_map(|map| map.policy = policy);
        Ok(())
    }

    async fn blob_node_heartbeat(&self, _id: BlobNodeId) -> Result<u64, MetaError> {
        Ok(lock(&self.map).epoch)
    }

    async fn add_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError> {
        let mut blobs = lock(&self.blobs);
        let record = blobs
            .get_mut(digest)
            .ok_or_else(|| MetaError::BlobUnknown(digest.clone()))?;
        for node in nodes {
            if !record.replicas.contains(node) {
                record.replicas.push(*node);
            }
        }
        Ok(())
    }

    async fn remove_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError> {
        let mut blobs = lock(&self.blobs);
        let record = blobs
            .get_mut(digest)
            .ok_or_else(|| MetaError::BlobUnknown(digest.clone()))?;
        if record.replicas.iter().all(|node| nodes.contains(node)) {
            return Err(MetaError::Invalid(format!(
                "{digest} would have no replica left"
            )));
        }
        record.replicas.retain(|node| !nodes.contains(node));
        Ok(())
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<BlobInfo>, MetaError> {
        Ok(lock(&self.blobs)
            .values()
            .filter(|blob| after.is_none_or(|after| blob.digest > *after))
            .take(n)
            .cloned()
            .collect())
    }
}
