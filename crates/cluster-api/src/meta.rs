//! [`MetaApi`]: the metadata service as every other role sees it.

use async_trait::async_trait;
use oci_model::{Digest, Reference, RepositoryName, Tag};

use crate::error::MetaError;
use crate::types::*;
use crate::{
    AuthChange, AuthState, FetchLease, PlacementRule, ProxyUpstream, ReplicationBacklog,
    ReplicationRule, ReplicationStatus, RetentionAction, RetentionRule,
};

/// The Raft-replicated metadata service. Every mutating call returns only once its Raft entry is
/// committed (durable on a quorum) and applied; every read is linearizable.
#[async_trait]
pub trait MetaApi: Send + Sync + 'static {
    /// Opens an upload session in `repo`, choosing a staging blob node among the `Up` ones not in
    /// `avoid` (nodes the caller could not reach), and returns it as a signed token
    /// ([`UploadToken`](crate::UploadToken)) started on the leader's clock: no Raft write. Fails
    /// with `NoBlobNodes` when there is none.
    async fn create_upload(
        &self,
        repo: &RepositoryName,
        avoid: &[BlobNodeId],
    ) -> Result<UploadSession, MetaError>;

    /// Records a verified, durable blob and links it into `repo`. `upload` is the session that
    /// staged it, whose token must be a valid one of `repo` (else `UploadUnknown`): its start time
    /// is what the garbage collector's fence is checked against. Idempotent.
    async fn commit_blob(
        &self,
        repo: &RepositoryName,
        blob: BlobInfo,
        upload: Option<UploadId>,
    ) -> Result<(), MetaError>;

    /// The blob `digest` if it is linked in `repo`; else `BlobUnknown`.
    async fn stat_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobInfo, MetaError>;

    /// Links `digest` into `repo` if it is linked in `from`, returning it; `Ok(None)` when `from`
    /// does not have it (the caller then opens a normal upload).
    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<Option<BlobInfo>, MetaError>;

    /// Removes the link of `digest` from `repo`; `BlobUnknown` if it was not linked.
    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<(), MetaError>;

    /// Stores a manifest atomically with its tag, links and referrer entry. Fails with
    /// `ManifestBlobUnknown` when a referenced blob or child manifest is not in the repository.
    async fn put_manifest(&self, manifest: PutManifest) -> Result<(), MetaError>;

    /// The manifest `reference` names in `repo`; `ManifestUnknown` if none.
    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest, MetaError>;

    /// Removes manifest `digest` from `repo` with every tag pointing at it; `ManifestUnknown` if absent.
    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), MetaError>;

    /// Removes tag `tag` from `repo` (the manifest stays); `ManifestUnknown` if the tag is absent.
    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<(), MetaError>;

    /// Tags of `repo` in lexical order, at most `n`, strictly after `last`. `NameUnknown` when the
    /// repository does not exist.
    async fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, MetaError>;

    /// Repository names in lexical order, at most `n`, strictly after `last`.
    async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Page, MetaError>;

    /// Descriptors of the manifests in `repo` whose subject is `subject`, optionally only those of
    /// `artifact_type`, ordered by digest.
    async fn list_referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<oci_model::Descriptor>, MetaError>;

    /// Adds or updates a blob node in the cluster map.
    async fn register_blob_node(&self, node: BlobNodeInfo) -> Result<(), MetaError>;

    /// The blob nodes of the cluster map.
    async fn blob_nodes(&self) -> Result<Vec<BlobNodeInfo>, MetaError>;

    // ---- cluster map ----

    /// The current cluster map (linearizable, like every read).
    async fn cluster_map(&self) -> Result<ClusterMap, MetaError>;

    /// Sets a blob node's placement state (operator drain, or the failure detector). Bumps the
    /// epoch when the state changes. `Invalid` for an unknown node.
    async fn set_blob_node_state(&self, id: BlobNodeId, state: NodeState) -> Result<(), MetaError>;

    /// Removes a blob node from the cluster map, bumping the epoch. Removing an unknown node
    /// succeeds and changes nothing, so a retried call is harmless.
    async fn remove_blob_node(&self, id: BlobNodeId) -> Result<(), MetaError>;

    /// Sets the replication policy, bumping the epoch when it changes. `Invalid` when `replicas`
    /// is 0 or `write_quorum` exceeds it.
    async fn set_replication_policy(&self, policy: ReplicationPolicy) -> Result<(), MetaError>;

    /// Adds placement rule `rule`, or replaces the one with its id, bumping the epoch when the
    /// rules change; `Invalid` for a rule that does not validate. The rules are part of the
    /// [`ClusterMap`].
    async fn put_placement_rule(&self, rule: PlacementRule) -> Result<(), MetaError>;

    /// Removes placement rule `id`, bumping the epoch; `Invalid` when there is no such rule.
    async fn delete_placement_rule(&self, id: &str) -> Result<(), MetaError>;

    /// A blob node says it is alive; returns the current map epoch so the node knows when to
    /// re-read the map. Liveness is tracked by the leader in memory (no Raft write per beat); its
    /// failure detector proposes `Down` for silent nodes and `Up` when they return (never
    /// overriding `Draining`). A follower answers `Unavailable { leader }`. `health` says whether
    /// the node is full: the leader stages no upload on a full node until a later beat says
    /// otherwise.
    async fn blob_node_heartbeat(
        &self,
        id: BlobNodeId,
        health: BlobNodeHealth,
    ) -> Result<u64, MetaError>;

    /// Records that `nodes` now hold a verified, durable copy of `digest` (repair, rebalance).
    /// `BlobUnknown` when meta has no record of the blob.
    async fn add_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError>;

    /// Records that `nodes` dropped their copy of `digest`. Refused with `Invalid` (nothing
    /// changes) when it would leave the blob with no replica; `BlobUnknown` without a record.
    async fn remove_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError>;

    /// Global blob records in digest order strictly after `after`, at most `n` (repair and fsck
    /// scans), each with its placement ([`BlobInfo::placement`]).
    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<BlobInfo>, MetaError>;

    // ---- garbage collection ----

    /// Blobs collected from the registry whose copy on `node` is still to be deleted, in digest
    /// order strictly after `after`, at most `n`.
    async fn doomed_blobs(
        &self,
        node: BlobNodeId,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<DoomedBlob>, MetaError>;

    /// `node` has set its copies of `blobs` (digest, generation) aside and asks to delete them.
    /// Answers, for each in order, `true` when the blob is still collected in that generation:
    /// meta no longer counts the node's copy and the node deletes it for good; `false` when the
    /// blob was pushed again (or collected anew) since: the node puts its copy back. The node
    /// stays listed until it reports the purge ([`blobs_purged`](MetaApi::blobs_purged)).
    async fn confirm_blob_deletions(
        &self,
        node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<Vec<bool>, MetaError>;

    /// `node` purged its copies of `blobs` (digest, generation) after meta confirmed their
    /// deletion; meta stops listing the node as holding them.
    async fn blobs_purged(
        &self,
        node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<(), MetaError>;

    /// Those of `ids` that are upload tokens not yet expired, in the order given; a blob node
    /// removes the staging files of the others. (Only the shape and start time are checked: the
    /// signature covers the repository, which a staging file does not record, and only gateways
    /// create staging files, from tokens meta minted.)
    async fn open_uploads(&self, ids: &[UploadId]) -> Result<Vec<UploadId>, MetaError>;

    /// The key that signs redirected blob URLs ([`sign_blob_query`](crate::sign_blob_query)):
    /// derived from a secret in the Raft state, the same on every member and for good.
    async fn blob_url_key(&self) -> Result<Vec<u8>, MetaError>;

    /// Runs a garbage-collection sweep now on the leader (the leader also runs one every
    /// interval), returning what it did.
    async fn collect_garbage(&self) -> Result<SweepReport, MetaError>;

    /// Recomputes every reference count and namespace usage from the graph and lists each
    /// disagreement with the kept figures; empty when consistent (the meta half of fsck).
    async fn check_consistency(&self) -> Result<Vec<String>, MetaError>;

    /// fsck found `blobs` (digest, size) on `node` with no live record in meta: dooms each that
    /// is still unknown, so the node deletes it through the usual confirmation. Returns how many.
    async fn discard_orphans(
        &self,
        node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<u64, MetaError>;

    // ---- usage, quotas and retention ----

    /// The usage of `namespace`, or of every namespace holding something or with a quota.
    async fn usage(&self, namespace: Option<&str>) -> Result<Vec<NamespaceUsage>, MetaError>;

    /// Sets (`Some`) or removes (`None`) the quota on `namespace`'s physical bytes.
    async fn set_quota(&self, namespace: &str, bytes: Option<u64>) -> Result<(), MetaError>;

    /// The retention rules, by id.
    async fn retention_rules(&self) -> Result<Vec<RetentionRule>, MetaError>;

    /// Adds or replaces a retention rule; `Invalid` when it does not validate.
    async fn put_retention_rule(&self, rule: RetentionRule) -> Result<(), MetaError>;

    /// Removes a retention rule; `Invalid` if unknown.
    async fn delete_retention_rule(&self, id: &str) -> Result<(), MetaError>;

    /// What the retention rules would remove now (the dry run), `dry_run` rules included when
    /// `include_dry_run`.
    async fn retention_plan(
        &self,
        include_dry_run: bool,
    ) -> Result<Vec<RetentionAction>, MetaError>;

    // ---- pull-through cache ----

    /// Stores a pull-through cache's copy of an upstream manifest in a repository under a proxy
    /// prefix, like [`put_manifest`](MetaApi::put_manifest) except that its blobs and children
    /// need not be linked yet: the cache fetches them when they are pulled, and each counts
    /// the manifests using it from the moment it is linked. `Invalid` outside a proxy prefix.
    async fn put_cached_manifest(&self, manifest: PutManifest) -> Result<(), MetaError>;

    /// Records that the cached manifests `entries` (repository, digest) were pulled now: the
    /// cache's idle TTL counts from the last pull. Entries that are not cached manifests are
    /// ignored.
    async fn touch_cached(&self, entries: &[(RepositoryName, Digest)]) -> Result<(), MetaError>;

    /// The proxy upstreams, by id, credentials included (gateways present them upstream; the
    /// operator views hide them).
    async fn proxies(&self) -> Result<Vec<ProxyUpstream>, MetaError>;

    /// Adds or replaces upstream `proxy`; `Invalid` when it does not validate or its prefix
    /// overlaps another's.
    async fn put_proxy(&self, proxy: ProxyUpstream) -> Result<(), MetaError>;

    /// Removes upstream `id` (what it cached stays, as ordinary repositories); `Invalid` if
    /// unknown.
    async fn delete_proxy(&self, id: &str) -> Result<(), MetaError>;

    /// Asks for the lease on fetching `key` from an upstream for `ttl_ms`, so that one gateway
    /// of the cluster fetches what many clients miss at once. Granted when no other holder has
    /// an unexpired lease; a holder asking again renews its own. The leases are the leader's,
    /// in memory, like blob-node liveness: a new leader starts with none, which at worst lets
    /// a second fetch of the same content run. A follower answers `Unavailable { leader }`.
    async fn acquire_fetch(
        &self,
        key: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<FetchLease, MetaError>;

    /// Gives up `holder`'s lease on `key` (done or failed); nothing when another holds it.
    async fn release_fetch(&self, key: &str, holder: &str) -> Result<(), MetaError>;

    // ---- replication ----

    /// The replication rules, by id, credentials included (the replicator presents them).
    async fn replication_rules(&self) -> Result<Vec<ReplicationRule>, MetaError>;

    /// Adds or replaces a replication rule; `Invalid` when it does not validate.
    async fn put_replication_rule(&self, rule: ReplicationRule) -> Result<(), MetaError>;

    /// Removes replication rule `id`; `Invalid` if unknown. What it copied stays.
    async fn delete_replication_rule(&self, id: &str) -> Result<(), MetaError>;

    /// Repositories changed since a push rule last copied them (a manifest pushed or deleted, a
    /// tag moved or removed), at most `limit`: the replicator copies these within seconds.
    async fn replication_backlog(&self, limit: usize)
        -> Result<Vec<ReplicationBacklog>, MetaError>;

    /// `entry`'s repository was copied as of its sequence: it leaves the backlog unless it
    /// changed again since.
    async fn replication_done(&self, entry: ReplicationBacklog) -> Result<(), MetaError>;

    /// The last recorded pass of each rule.
    async fn replication_status(&self) -> Result<Vec<ReplicationStatus>, MetaError>;

    /// Records a rule's pass (the replicator, after each); a status of a rule that no longer
    /// exists is dropped.
    async fn record_replication(&self, status: ReplicationStatus) -> Result<(), MetaError>;

    // ---- access control ----

    /// The access-control state, or `None` when its version is still `known_version` (gateways
    /// poll with the version they hold). Not linearizable: a follower may answer from its own
    /// applied state, which is at most a heartbeat behind.
    async fn auth_state(&self, known_version: Option<u64>) -> Result<Option<AuthState>, MetaError>;

    /// Applies one access-control change as one Raft entry; returns the new state version.
    async fn change_auth(&self, change: AuthChange) -> Result<u64, MetaError>;
}
