//! [`GcMeta`]: `MemMeta` with the garbage collection calls under the test's control (what is
//! doomed, which deletions meta refuses, which uploads are open, which calls fail), every other
//! call passed through.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use cluster_api::fake::MemMeta;
use cluster_api::{
    AuthChange, AuthState, BlobInfo, BlobNodeId, BlobNodeInfo, ClusterMap, DoomedBlob, MetaApi,
    MetaError, NodeState, Page, PutManifest, ReplicationPolicy, StoredManifest, UploadId,
    UploadSession,
};
use oci_model::{Descriptor, Digest, Reference, RepositoryName, Tag};
use tokio::sync::{Mutex as AsyncMutex, Notify};

#[derive(Default)]
pub struct GcMeta {
    inner: MemMeta,
    /// Doomed on the node under test, by digest.
    doomed: Mutex<BTreeMap<Digest, DoomedBlob>>,
    /// Digests whose deletion is refused.
    refused: Mutex<HashSet<Digest>>,
    pub confirm_fails: AtomicBool,
    /// Every `confirm_blob_deletions` call, in order.
    confirm_calls: Mutex<Vec<Vec<(Digest, u64)>>>,
    /// Notified when a confirm call arrives; the call then waits for `confirm_gate`.
    pub confirm_arrived: Notify,
    pub confirm_gate: AsyncMutex<()>,
    open: Mutex<HashSet<UploadId>>,
    pub open_uploads_fail: AtomicBool,
}

impl GcMeta {
    /// Dooms `digest` (generation 1) on the node under test.
    pub fn doom(&self, digest: &Digest, size: u64) {
        self.doomed.lock().expect("lock").insert(
            digest.clone(),
            DoomedBlob {
                digest: digest.clone(),
                size,
                generation: 1,
            },
        );
    }

    pub fn doomed(&self) -> Vec<Digest> {
        self.doomed.lock().expect("lock").keys().cloned().collect()
    }

    /// The blob is pushed again between the node's listing and its confirm call: meta refuses
    /// to let the copy go.
    pub fn refuse(&self, digest: &Digest) {
        self.refused.lock().expect("lock").insert(digest.clone());
    }

    /// Meta stops dooming `digest` without the node asking (pushed again while the node was away).
    pub fn forget(&self, digest: &Digest) {
        self.doomed.lock().expect("lock").remove(digest);
    }

    pub fn confirm_calls(&self) -> Vec<Vec<(Digest, u64)>> {
        self.confirm_calls.lock().expect("lock").clone()
    }

    pub fn open_session(&self, id: &UploadId) {
        self.open.lock().expect("lock").insert(id.clone());
    }

    fn unavailable() -> MetaError {
        MetaError::Unavailable { leader: None }
    }
}

#[async_trait]
impl MetaApi for GcMeta {
    async fn doomed_blobs(
        &self,
        _node: BlobNodeId,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<DoomedBlob>, MetaError> {
        let doomed = self.doomed.lock().expect("lock");
        Ok(doomed
            .values()
            .filter(|blob| after.is_none_or(|after| blob.digest > *after))
            .take(n)
            .cloned()
            .collect())
    }

    async fn confirm_blob_deletions(
        &self,
        _node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<Vec<bool>, MetaError> {
        self.confirm_arrived.notify_one();
        let _gate = self.confirm_gate.lock().await;
        self.confirm_calls
            .lock()
            .expect("lock")
            .push(blobs.to_vec());
        if self.confirm_fails.load(Ordering::SeqCst) {
            return Err(GcMeta::unavailable());
        }
        let refused = self.refused.lock().expect("lock");
        let mut doomed = self.doomed.lock().expect("lock");
        Ok(blobs
            .iter()
            .map(|(digest, generation)| {
                let still_doomed = !refused.contains(digest)
                    && doomed
                        .get(digest)
                        .is_some_and(|blob| blob.generation == *generation);
                // Either way the node's copy is no longer doomed: deleted, or counted again.
                doomed.remove(digest);
                still_doomed
            })
            .collect())
    }

    async fn open_uploads(&self, ids: &[UploadId]) -> Result<Vec<UploadId>, MetaError> {
        if self.open_uploads_fail.load(Ordering::SeqCst) {
            return Err(GcMeta::unavailable());
        }
        let open = self.open.lock().expect("lock");
        Ok(ids
            .iter()
            .filter(|id| open.contains(*id))
            .cloned()
            .collect())
    }

    // ---- everything else is MemMeta's ----

    async fn blob_url_key(&self) -> Result<Vec<u8>, MetaError> {
        self.inner.blob_url_key().await
    }

    async fn create_upload(
        &self,
        repo: &RepositoryName,
        avoid: &[BlobNodeId],
    ) -> Result<UploadSession, MetaError> {
        self.inner.create_upload(repo, avoid).await
    }

    async fn commit_blob(
        &self,
        repo: &RepositoryName,
        blob: BlobInfo,
        upload: Option<UploadId>,
    ) -> Result<(), MetaError> {
        self.inner.commit_blob(repo, blob, upload).await
    }

    async fn stat_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobInfo, MetaError> {
        self.inner.stat_blob(repo, digest).await
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
        self.inner.register_blob_node(node).await
    }

    async fn blob_nodes(&self) -> Result<Vec<BlobNodeInfo>, MetaError> {
        self.inner.blob_nodes().await
    }

    async fn cluster_map(&self) -> Result<ClusterMap, MetaError> {
        self.inner.cluster_map().await
    }

    async fn set_blob_node_state(&self, id: BlobNodeId, state: NodeState) -> Result<(), MetaError> {
        self.inner.set_blob_node_state(id, state).await
    }

    async fn remove_blob_node(&self, id: BlobNodeId) -> Result<(), MetaError> {
        self.inner.remove_blob_node(id).await
    }

    async fn set_replication_policy(&self, policy: ReplicationPolicy) -> Result<(), MetaError> {
        self.inner.set_replication_policy(policy).await
    }

    async fn put_placement_rule(&self, rule: cluster_api::PlacementRule) -> Result<(), MetaError> {
        self.inner.put_placement_rule(rule).await
    }

    async fn delete_placement_rule(&self, id: &str) -> Result<(), MetaError> {
        self.inner.delete_placement_rule(id).await
    }

    async fn blob_node_heartbeat(
        &self,
        id: BlobNodeId,
        health: cluster_api::BlobNodeHealth,
    ) -> Result<u64, MetaError> {
        self.inner.blob_node_heartbeat(id, health).await
    }

    async fn add_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError> {
        self.inner.add_blob_replicas(digest, nodes).await
    }

    async fn remove_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError> {
        self.inner.remove_blob_replicas(digest, nodes).await
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<BlobInfo>, MetaError> {
        self.inner.list_blobs(after, n).await
    }

    async fn collect_garbage(&self) -> Result<cluster_api::SweepReport, MetaError> {
        self.inner.collect_garbage().await
    }

    async fn check_consistency(&self) -> Result<Vec<String>, MetaError> {
        self.inner.check_consistency().await
    }

    async fn blobs_purged(
        &self,
        node: cluster_api::BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<(), MetaError> {
        self.inner.blobs_purged(node, blobs).await
    }

    async fn discard_orphans(
        &self,
        node: cluster_api::BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<u64, MetaError> {
        self.inner.discard_orphans(node, blobs).await
    }

    async fn usage(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<cluster_api::NamespaceUsage>, MetaError> {
        self.inner.usage(namespace).await
    }

    async fn set_quota(&self, namespace: &str, bytes: Option<u64>) -> Result<(), MetaError> {
        self.inner.set_quota(namespace, bytes).await
    }

    async fn put_cached_manifest(
        &self,
        manifest: cluster_api::PutManifest,
    ) -> Result<(), MetaError> {
        self.inner.put_cached_manifest(manifest).await
    }

    async fn touch_cached(
        &self,
        entries: &[(oci_model::RepositoryName, Digest)],
    ) -> Result<(), MetaError> {
        self.inner.touch_cached(entries).await
    }

    async fn replication_rules(&self) -> Result<Vec<cluster_api::ReplicationRule>, MetaError> {
        self.inner.replication_rules().await
    }

    async fn put_replication_rule(
        &self,
        rule: cluster_api::ReplicationRule,
    ) -> Result<(), MetaError> {
        self.inner.put_replication_rule(rule).await
    }

    async fn delete_replication_rule(&self, id: &str) -> Result<(), MetaError> {
        self.inner.delete_replication_rule(id).await
    }

    async fn replication_backlog(
        &self,
        limit: usize,
    ) -> Result<Vec<cluster_api::ReplicationBacklog>, MetaError> {
        self.inner.replication_backlog(limit).await
    }

    async fn replication_done(
        &self,
        entry: cluster_api::ReplicationBacklog,
    ) -> Result<(), MetaError> {
        self.inner.replication_done(entry).await
    }

    async fn replication_status(&self) -> Result<Vec<cluster_api::ReplicationStatus>, MetaError> {
        self.inner.replication_status().await
    }

    async fn record_replication(
        &self,
        status: cluster_api::ReplicationStatus,
    ) -> Result<(), MetaError> {
        self.inner.record_replication(status).await
    }

    async fn proxies(&self) -> Result<Vec<cluster_api::ProxyUpstream>, MetaError> {
        self.inner.proxies().await
    }

    async fn put_proxy(&self, proxy: cluster_api::ProxyUpstream) -> Result<(), MetaError> {
        self.inner.put_proxy(proxy).await
    }

    async fn delete_proxy(&self, id: &str) -> Result<(), MetaError> {
        self.inner.delete_proxy(id).await
    }

    async fn acquire_fetch(
        &self,
        key: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<cluster_api::FetchLease, MetaError> {
        self.inner.acquire_fetch(key, holder, ttl_ms).await
    }

    async fn release_fetch(&self, key: &str, holder: &str) -> Result<(), MetaError> {
        self.inner.release_fetch(key, holder).await
    }

    async fn retention_rules(&self) -> Result<Vec<cluster_api::RetentionRule>, MetaError> {
        self.inner.retention_rules().await
    }

    async fn put_retention_rule(&self, rule: cluster_api::RetentionRule) -> Result<(), MetaError> {
        self.inner.put_retention_rule(rule).await
    }

    async fn delete_retention_rule(&self, id: &str) -> Result<(), MetaError> {
        self.inner.delete_retention_rule(id).await
    }

    async fn retention_plan(
        &self,
        include_dry_run: bool,
    ) -> Result<Vec<cluster_api::RetentionAction>, MetaError> {
        self.inner.retention_plan(include_dry_run).await
    }

    async fn auth_state(&self, known_version: Option<u64>) -> Result<Option<AuthState>, MetaError> {
        self.inner.auth_state(known_version).await
    }

    async fn change_auth(&self, change: AuthChange) -> Result<u64, MetaError> {
        self.inner.change_auth(change).await
    }
}
