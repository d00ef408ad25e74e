//! [`MemMeta`]: the metadata service in maps, following the contract on each [`MetaApi`] method.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use oci_model::{Descriptor, Digest, Reference, RepositoryName, Tag};

use super::{lock, page};
use crate::error::MetaError;
use crate::meta::MetaApi;
use crate::types::*;
use crate::{
    placement_sets, AuthChange, AuthState, FetchLease, PlacementRule, ProxyUpstream,
    ReplicationRule, ReplicationStatus, RetentionAction, RetentionRule, UploadToken,
    UPLOAD_KEY_BYTES,
};

/// The metadata service, in memory.
#[derive(Default)]
pub struct MemMeta {
    state: Mutex<MetaState>,
}

#[derive(Default)]
struct MetaState {
    repos: BTreeMap<RepositoryName, RepoState>,
    blobs: HashMap<Digest, BlobInfo>,
    nodes: BTreeMap<BlobNodeId, BlobNodeInfo>,
    /// Explicit node states; a node without one is `Up`.
    node_states: BTreeMap<BlobNodeId, NodeState>,
    epoch: u64,
    policy: ReplicationPolicy,
    placement: Vec<PlacementRule>,
    uploads_opened: u128,
    auth: AuthState,
    outage: Option<MetaError>,
    proxies: Vec<ProxyUpstream>,
    replication: Vec<ReplicationRule>,
    replication_status: BTreeMap<String, ReplicationStatus>,
    /// Fetch leases: key -> (holder, expiry in unix ms).
    fetch_leases: HashMap<String, (String, u64)>,
}

#[derive(Default)]
struct RepoState {
    blobs: BTreeSet<Digest>,
    manifests: BTreeMap<Digest, StoredManifest>,
    tags: BTreeMap<String, Digest>,
    /// subject -> referrer digest -> how the referrer is listed.
    referrers: BTreeMap<Digest, BTreeMap<Digest, Descriptor>>,
}

impl MemMeta {
    pub fn new() -> MemMeta {
        MemMeta::default()
    }

    /// A metadata service whose cluster map already lists blob nodes `ids`.
    pub fn with_blob_nodes(ids: &[BlobNodeId]) -> MemMeta {
        let meta = MemMeta::new();
        {
            let mut state = lock(&meta.state);
            for &id in ids {
                state.nodes.insert(id, fake_node_info(id));
                state.epoch += 1;
            }
        }
        meta
    }

    /// While set, every call fails with `error` (for example `Unavailable`).
    pub fn set_outage(&self, error: Option<MetaError>) {
        lock(&self.state).outage = error;
    }

    /// A metadata service with an empty cluster map and `policy`.
    pub fn with_policy(policy: ReplicationPolicy) -> MemMeta {
        let meta = MemMeta::new();
        lock(&meta.state).policy = policy;
        meta
    }

    /// The cluster map, for assertions and placement in tests.
    pub fn map(&self) -> ClusterMap {
        lock(&self.state).cluster_map()
    }

    /// The global record of blob `digest`, for assertions.
    pub fn blob(&self, digest: &Digest) -> Option<BlobInfo> {
        lock(&self.state).blobs.get(digest).cloned()
    }

    /// Locks the state, failing with the injected outage if one is set.
    /// A manifest PUT, or the cache's copy of an upstream manifest (`cached`: its references
    /// need not be here yet).
    fn store_manifest(&self, manifest: PutManifest, cached: bool) -> Result<(), MetaError> {
        let mut state = self.state()?;
        if cached && crate::proxy_for(&state.proxies, manifest.repo.as_str()).is_none() {
            return Err(MetaError::Invalid(format!(
                "{} is not under a proxy upstream's prefix",
                manifest.repo
            )));
        }
        let missing = match state.repos.get(&manifest.repo) {
            _ if cached => None,
            Some(repo_state) => repo_state.missing_reference(&manifest),
            None => manifest
                .blobs
                .iter()
                .chain(&manifest.manifests)
                .next()
                .cloned(),
        };
        if let Some(digest) = missing {
            return Err(MetaError::ManifestBlobUnknown(digest));
        }
        if let Some(tag) = &manifest.tag {
            let current = state
                .repos
                .get(&manifest.repo)
                .and_then(|repo_state| repo_state.tags.get(tag.as_str()));
            if current.is_some_and(|digest| *digest != manifest.digest) {
                state.refuse_if_immutable(&manifest.repo, tag.as_str())?;
            }
        }
        let repo_state = state.repos.entry(manifest.repo.clone()).or_default();
        if let Some(tag) = &manifest.tag {
            repo_state
                .tags
                .insert(tag.as_str().to_owned(), manifest.digest.clone());
        }
        if let (Some(subject), Some(referrer)) = (&manifest.subject, &manifest.referrer) {
            repo_state
                .referrers
                .entry(subject.clone())
                .or_default()
                .insert(manifest.digest.clone(), referrer.clone());
        }
        let stored = StoredManifest {
            digest: manifest.digest.clone(),
            media_type: manifest.media_type,
            bytes: manifest.bytes,
        };
        repo_state.manifests.insert(manifest.digest, stored);
        Ok(())
    }

    fn state(&self) -> Result<MutexGuard<'_, MetaState>, MetaError> {
        let state = lock(&self.state);
        match &state.outage {
            Some(error) => Err(error.clone()),
            None => Ok(state),
        }
    }
}

fn fake_node_info(id: BlobNodeId) -> BlobNodeInfo {
    BlobNodeInfo {
        id,
        addr: format!("mem-blob-{id}:0"),
        zone: "mem".to_owned(),
        weight: 1,
        http_url: None,
    }
}

/// The lifecycle features live in the real state machine only (`meta-store`); the fake says so
/// instead of pretending.
fn unsupported(what: &str) -> MetaError {
    MetaError::Invalid(format!("{what} is not implemented by the in-memory fake"))
}

/// The fake's upload-token key: fixed, as the fake has no state to keep one in.
const FAKE_UPLOAD_KEY: [u8; UPLOAD_KEY_BYTES] = [0x5a; UPLOAD_KEY_BYTES];

/// The fake's blob-URL key: fixed, like its upload key.
pub const FAKE_BLOB_URL_KEY: [u8; crate::BLOB_URL_KEY_BYTES] = [0x6b; crate::BLOB_URL_KEY_BYTES];

/// True when `id` is a token this fake signed for `repo`.
fn signed_here(id: &UploadId, repo: &RepositoryName) -> bool {
    UploadToken::decode(id).is_some_and(|token| token.verify(&FAKE_UPLOAD_KEY, repo))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

impl MetaState {
    /// `Denied` when an immutable-tag rule protects `tag` in `repo`.
    fn refuse_if_immutable(&self, repo: &RepositoryName, tag: &str) -> Result<(), MetaError> {
        match self
            .auth
            .immutable_tags
            .iter()
            .find(|rule| rule.protects(repo.as_str(), tag))
        {
            Some(rule) => Err(MetaError::Denied(format!(
                "tag {tag} of {repo} is immutable (rule {})",
                rule.id
            ))),
            None => Ok(()),
        }
    }

    fn link_blob(&mut self, repo: &RepositoryName, blob: BlobInfo) {
        self.repos
            .entry(repo.clone())
            .or_default()
            .blobs
            .insert(blob.digest.clone());
        match self.blobs.get_mut(&blob.digest) {
            Some(known) => {
                for replica in blob.replicas {
                    if !known.replicas.contains(&replica) {
                        known.replicas.push(replica);
                    }
                }
            }
            None => {
                self.blobs.insert(blob.digest.clone(), blob);
            }
        }
    }

    fn linked_blob(&self, repo: &RepositoryName, digest: &Digest) -> Option<&BlobInfo> {
        let linked = self
            .repos
            .get(repo)
            .is_some_and(|state| state.blobs.contains(digest));
        linked.then(|| self.blobs.get(digest)).flatten()
    }

    fn node_state(&self, id: BlobNodeId) -> NodeState {
        self.node_states.get(&id).copied().unwrap_or(NodeState::Up)
    }

    fn cluster_map(&self) -> ClusterMap {
        let members = self
            .nodes
            .values()
            .map(|node| ClusterMember {
                node: node.clone(),
                state: self.node_state(node.id),
            })
            .collect();
        ClusterMap {
            epoch: self.epoch,
            policy: self.policy,
            members,
            placement: self.placement.clone(),
        }
    }
}

impl RepoState {
    /// The first blob or child manifest `manifest` references that this repository lacks.
    fn missing_reference(&self, manifest: &PutManifest) -> Option<Digest> {
        let missing_blob = manifest
            .blobs
            .iter()
            .find(|digest| !self.blobs.contains(*digest));
        let missing_child = || {
            manifest
                .manifests
                .iter()
                .find(|digest| !self.manifests.contains_key(*digest))
        };
        missing_blob.or_else(missing_child).cloned()
    }

    fn forget_referrer(&mut self, referrer: &Digest) {
        for listed in self.referrers.values_mut() {
            listed.remove(referrer);
        }
        self.referrers.retain(|_, listed| !listed.is_empty());
    }
}

#[async_trait]
impl MetaApi for MemMeta {
    async fn create_upload(
        &self,
        repo: &RepositoryName,
        avoid: &[BlobNodeId],
    ) -> Result<UploadSession, MetaError> {
        let mut state = self.state()?;
        let node_ids: Vec<BlobNodeId> = state
            .nodes
            .keys()
            .copied()
            .filter(|id| !avoid.contains(id))
            .collect();
        if node_ids.is_empty() {
            return Err(MetaError::NoBlobNodes);
        }
        state.uploads_opened += 1;
        let opened = state.uploads_opened;
        let staging_node = node_ids[(opened as usize) % node_ids.len()];
        let token = UploadToken::mint(
            &FAKE_UPLOAD_KEY,
            repo,
            staging_node,
            unix_now() * 1000,
            opened.to_be_bytes(),
        );
        Ok(UploadSession {
            id: token.id(),
            repo: repo.clone(),
            staging_node,
            started_ms: token.started_ms(),
        })
    }

    async fn commit_blob(
        &self,
        repo: &RepositoryName,
        blob: BlobInfo,
        upload: Option<UploadId>,
    ) -> Result<(), MetaError> {
        let mut state = self.state()?;
        if let Some(id) = upload {
            if !signed_here(&id, repo) {
                return Err(MetaError::UploadUnknown(id.to_string()));
            }
        }
        state.link_blob(repo, blob);
        Ok(())
    }

    async fn stat_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobInfo, MetaError> {
        self.state()?
            .linked_blob(repo, digest)
            .cloned()
            .ok_or_else(|| MetaError::BlobUnknown(digest.clone()))
    }

    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<Option<BlobInfo>, MetaError> {
        let mut state = self.state()?;
        let Some(blob) = state.linked_blob(from, digest).cloned() else {
            return Ok(None);
        };
        state.link_blob(repo, blob.clone());
        Ok(Some(blob))
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<(), MetaError> {
        let mut state = self.state()?;
        let removed = state
            .repos
            .get_mut(repo)
            .is_some_and(|repo_state| repo_state.blobs.remove(digest));
        if removed {
            Ok(())
        } else {
            Err(MetaError::BlobUnknown(digest.clone()))
        }
    }

    async fn put_manifest(&self, manifest: PutManifest) -> Result<(), MetaError> {
        self.store_manifest(manifest, false)
    }

    async fn put_cached_manifest(&self, manifest: PutManifest) -> Result<(), MetaError> {
        self.store_manifest(manifest, true)
    }

    async fn touch_cached(&self, _entries: &[(RepositoryName, Digest)]) -> Result<(), MetaError> {
        // The fake keeps no access times: it never collects.
        self.state().map(drop)
    }

    async fn replication_rules(&self) -> Result<Vec<ReplicationRule>, MetaError> {
        Ok(self.state()?.replication.clone())
    }

    async fn put_replication_rule(&self, rule: ReplicationRule) -> Result<(), MetaError> {
        crate::put_replication_rule(&mut self.state()?.replication, rule)
    }

    async fn delete_replication_rule(&self, id: &str) -> Result<(), MetaError> {
        crate::delete_replication_rule(&mut self.state()?.replication, id)
    }

    async fn replication_backlog(
        &self,
        _limit: usize,
    ) -> Result<Vec<crate::ReplicationBacklog>, MetaError> {
        // The fake keeps no backlog: its replication is the full passes.
        self.state().map(|_| Vec::new())
    }

    async fn replication_done(&self, _entry: crate::ReplicationBacklog) -> Result<(), MetaError> {
        self.state().map(drop)
    }

    async fn replication_status(&self) -> Result<Vec<ReplicationStatus>, MetaError> {
        Ok(self.state()?.replication_status.values().cloned().collect())
    }

    async fn record_replication(&self, status: ReplicationStatus) -> Result<(), MetaError> {
        let mut state = self.state()?;
        if state.replication.iter().any(|rule| rule.id == status.rule) {
            state.replication_status.insert(status.rule.clone(), status);
        }
        Ok(())
    }

    async fn proxies(&self) -> Result<Vec<ProxyUpstream>, MetaError> {
        Ok(self.state()?.proxies.clone())
    }

    async fn put_proxy(&self, proxy: ProxyUpstream) -> Result<(), MetaError> {
        crate::put_proxy(&mut self.state()?.proxies, proxy)
    }

    async fn delete_proxy(&self, id: &str) -> Result<(), MetaError> {
        crate::delete_proxy(&mut self.state()?.proxies, id)
    }

    async fn acquire_fetch(
        &self,
        key: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<FetchLease, MetaError> {
        let mut state = self.state()?;
        let now = unix_ms();
        if let Some((current, until)) = state.fetch_leases.get(key) {
            if current != holder && *until > now {
                return Ok(FetchLease {
                    granted: false,
                    holder: current.clone(),
                    expires_in_ms: until - now,
                });
            }
        }
        state
            .fetch_leases
            .insert(key.to_owned(), (holder.to_owned(), now + ttl_ms));
        Ok(FetchLease {
            granted: true,
            holder: holder.to_owned(),
            expires_in_ms: ttl_ms,
        })
    }

    async fn release_fetch(&self, key: &str, holder: &str) -> Result<(), MetaError> {
        let mut state = self.state()?;
        if state
            .fetch_leases
            .get(key)
            .is_some_and(|(current, _)| current == holder)
        {
            state.fetch_leases.remove(key);
        }
        Ok(())
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest, MetaError> {
        let state = self.state()?;
        let unknown = || MetaError::ManifestUnknown(reference.to_string());
        let repo_state = state.repos.get(repo).ok_or_else(unknown)?;
        let digest = match reference {
            Reference::Digest(digest) => digest,
            Reference::Tag(tag) => repo_state.tags.get(tag.as_str()).ok_or_else(unknown)?,
        };
        repo_state
            .manifests
            .get(digest)
            .cloned()
            .ok_or_else(unknown)
    }

    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), MetaError> {
        let mut state = self.state()?;
        let tags: Vec<String> = state
            .repos
            .get(repo)
            .map(|repo_state| {
                repo_state
                    .tags
                    .iter()
                    .filter(|(_, tagged)| *tagged == digest)
                    .map(|(tag, _)| tag.clone())
                    .collect()
            })
            .unwrap_or_default();
        for tag in &tags {
            state.refuse_if_immutable(repo, tag)?;
        }
        let repo_state = state
            .repos
            .get_mut(repo)
            .filter(|repo_state| repo_state.manifests.contains_key(digest))
            .ok_or_else(|| MetaError::ManifestUnknown(digest.to_string()))?;
        repo_state.manifests.remove(digest);
        repo_state.tags.retain(|_, tagged| tagged != digest);
        repo_state.forget_referrer(digest);
        Ok(())
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<(), MetaError> {
        let mut state = self.state()?;
        let exists = state
            .repos
            .get(repo)
            .is_some_and(|repo_state| repo_state.tags.contains_key(tag.as_str()));
        if exists {
            state.refuse_if_immutable(repo, tag.as_str())?;
        }
        let removed = state
            .repos
            .get_mut(repo)
            .and_then(|repo_state| repo_state.tags.remove(tag.as_str()));
        match removed {
            Some(_) => Ok(()),
            None => Err(MetaError::ManifestUnknown(tag.to_string())),
        }
    }

    async fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, MetaError> {
        let state = self.state()?;
        let repo_state = state
            .repos
            .get(repo)
            .ok_or_else(|| MetaError::NameUnknown(repo.to_string()))?;
        Ok(page(repo_state.tags.keys().map(String::as_str), last, n))
    }

    async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Page, MetaError> {
        let state = self.state()?;
        Ok(page(
            state.repos.keys().map(RepositoryName::as_str),
            last,
            n,
        ))
    }

    async fn list_referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        let state = self.state()?;
        let listed = state
            .repos
            .get(repo)
            .and_then(|repo_state| repo_state.referrers.get(subject));
        let Some(listed) = listed else {
            return Ok(Vec::new());
        };
        let matches = |descriptor: &&Descriptor| {
            artifact_type.is_none_or(|wanted| descriptor.artifact_type.as_deref() == Some(wanted))
        };
        Ok(listed.values().filter(matches).cloned().collect())
    }

    async fn register_blob_node(&self, node: BlobNodeInfo) -> Result<(), MetaError> {
        let mut state = self.state()?;
        if state.nodes.get(&node.id) != Some(&node) {
            state.nodes.insert(node.id, node);
            state.epoch += 1;
        }
        Ok(())
    }

    async fn blob_nodes(&self) -> Result<Vec<BlobNodeInfo>, MetaError> {
        Ok(self.state()?.nodes.values().cloned().collect())
    }

    async fn cluster_map(&self) -> Result<ClusterMap, MetaError> {
        Ok(self.state()?.cluster_map())
    }

    async fn set_blob_node_state(
        &self,
        id: BlobNodeId,
        wanted: NodeState,
    ) -> Result<(), MetaError> {
        let mut state = self.state()?;
        if !state.nodes.contains_key(&id) {
            return Err(MetaError::Invalid(format!("blob node {id} is not known")));
        }
        if state.node_state(id) != wanted {
            state.node_states.insert(id, wanted);
            state.epoch += 1;
        }
        Ok(())
    }

    async fn remove_blob_node(&self, id: BlobNodeId) -> Result<(), MetaError> {
        let mut state = self.state()?;
        if state.nodes.remove(&id).is_some() {
            state.node_states.remove(&id);
            state.epoch += 1;
        }
        Ok(())
    }

    async fn set_replication_policy(&self, policy: ReplicationPolicy) -> Result<(), MetaError> {
        let mut state = self.state()?;
        if policy.replicas == 0 || policy.write_quorum > policy.replicas {
            return Err(MetaError::Invalid(format!(
                "replication policy needs replicas >= 1 and write_quorum <= replicas, not {policy:?}"
            )));
        }
        if state.policy != policy {
            state.policy = policy;
            state.epoch += 1;
        }
        Ok(())
    }

    async fn put_placement_rule(&self, rule: PlacementRule) -> Result<(), MetaError> {
        let mut state = self.state()?;
        let MetaState {
            nodes, placement, ..
        } = &mut *state;
        let zones = nodes.values().map(|node| node.zone.as_str());
        if crate::put_placement_rule(placement, rule, zones)? {
            state.epoch += 1;
        }
        Ok(())
    }

    async fn delete_placement_rule(&self, id: &str) -> Result<(), MetaError> {
        let mut state = self.state()?;
        crate::delete_placement_rule(&mut state.placement, id)?;
        state.epoch += 1;
        Ok(())
    }

    /// The fake has no failure detector: a heartbeat only answers the epoch.
    async fn blob_node_heartbeat(
        &self,
        _id: BlobNodeId,
        _health: BlobNodeHealth,
    ) -> Result<u64, MetaError> {
        Ok(self.state()?.epoch)
    }

    async fn add_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError> {
        let mut state = self.state()?;
        let blob = state
            .blobs
            .get_mut(digest)
            .ok_or_else(|| MetaError::BlobUnknown(digest.clone()))?;
        for node in nodes {
            if !blob.replicas.contains(node) {
                blob.replicas.push(*node);
            }
        }
        Ok(())
    }

    async fn remove_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError> {
        let mut state = self.state()?;
        let blob = state
            .blobs
            .get_mut(digest)
            .ok_or_else(|| MetaError::BlobUnknown(digest.clone()))?;
        if blob.replicas.iter().all(|replica| nodes.contains(replica)) {
            return Err(MetaError::Invalid(format!(
                "removing {nodes:?} would leave blob {digest} with no replica"
            )));
        }
        blob.replicas.retain(|replica| !nodes.contains(replica));
        Ok(())
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<BlobInfo>, MetaError> {
        let state = self.state()?;
        let after = after.map(Digest::to_string);
        let mut blobs: Vec<&BlobInfo> = state
            .blobs
            .values()
            .filter(|blob| {
                after
                    .as_ref()
                    .is_none_or(|after| blob.digest.to_string() > *after)
            })
            .collect();
        blobs.sort_by_key(|blob| blob.digest.to_string());
        let mut page: Vec<BlobInfo> = blobs.into_iter().take(n).cloned().collect();
        // The rule sets of the repositories linking each blob, as meta computes them (the fake
        // enforces no placement rule; repair and status read these).
        for blob in &mut page {
            let linking = state
                .repos
                .iter()
                .filter(|(_, repo_state)| repo_state.blobs.contains(&blob.digest))
                .map(|(repo, _)| repo.as_str());
            blob.placement = placement_sets(&state.placement, linking);
        }
        Ok(page)
    }

    /// The fake never collects garbage, so no blob is ever doomed.
    async fn doomed_blobs(
        &self,
        _node: BlobNodeId,
        _after: Option<&Digest>,
        _n: usize,
    ) -> Result<Vec<DoomedBlob>, MetaError> {
        drop(self.state()?);
        Ok(Vec::new())
    }

    /// Nothing is ever doomed here, so no deletion is ever confirmed: every copy stays.
    async fn confirm_blob_deletions(
        &self,
        _node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<Vec<bool>, MetaError> {
        drop(self.state()?);
        Ok(vec![false; blobs.len()])
    }

    /// Nothing is ever doomed here, so there is nothing to stop listing.
    async fn blobs_purged(
        &self,
        _node: BlobNodeId,
        _blobs: &[(Digest, u64)],
    ) -> Result<(), MetaError> {
        drop(self.state()?);
        Ok(())
    }

    /// Tokens never expire here: every id shaped as one is open.
    async fn open_uploads(&self, ids: &[UploadId]) -> Result<Vec<UploadId>, MetaError> {
        drop(self.state()?);
        Ok(ids
            .iter()
            .filter(|id| UploadToken::decode(id).is_some())
            .cloned()
            .collect())
    }

    async fn blob_url_key(&self) -> Result<Vec<u8>, MetaError> {
        drop(self.state()?);
        Ok(FAKE_BLOB_URL_KEY.to_vec())
    }

    async fn collect_garbage(&self) -> Result<SweepReport, MetaError> {
        Err(unsupported("garbage collection"))
    }

    async fn check_consistency(&self) -> Result<Vec<String>, MetaError> {
        Err(unsupported("consistency checks"))
    }

    async fn discard_orphans(
        &self,
        _node: BlobNodeId,
        _blobs: &[(Digest, u64)],
    ) -> Result<u64, MetaError> {
        Err(unsupported("fsck"))
    }

    async fn usage(&self, _namespace: Option<&str>) -> Result<Vec<NamespaceUsage>, MetaError> {
        Err(unsupported("usage accounting"))
    }

    async fn set_quota(&self, _namespace: &str, _bytes: Option<u64>) -> Result<(), MetaError> {
        Err(unsupported("quotas"))
    }

    async fn retention_rules(&self) -> Result<Vec<RetentionRule>, MetaError> {
        Err(unsupported("retention"))
    }

    async fn put_retention_rule(&self, _rule: RetentionRule) -> Result<(), MetaError> {
        Err(unsupported("retention"))
    }

    async fn delete_retention_rule(&self, _id: &str) -> Result<(), MetaError> {
        Err(unsupported("retention"))
    }

    async fn retention_plan(
        &self,
        _include_dry_run: bool,
    ) -> Result<Vec<RetentionAction>, MetaError> {
        Err(unsupported("retention"))
    }

    async fn auth_state(&self, known_version: Option<u64>) -> Result<Option<AuthState>, MetaError> {
        let state = self.state()?;
        Ok((known_version != Some(state.auth.version)).then(|| state.auth.clone()))
    }

    async fn change_auth(&self, change: AuthChange) -> Result<u64, MetaError> {
        let mut state = self.state()?;
        let mut auth = state.auth.clone();
        auth.apply(change)?;
        state.auth = auth;
        Ok(state.auth.version)
    }
}
