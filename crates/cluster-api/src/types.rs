//! Domain types shared by every role. They derive serde because Raft commands embed them; they
//! never derive prost (STYLE.md rule 8): `wharf-proto` converts.

use oci_model::{Descriptor, Digest, RepositoryName, Tag};
use serde::{Deserialize, Serialize};

use crate::{PlacementRule, RepoPlacement};

/// Identifies a blob storage node in the cluster map.
pub type BlobNodeId = u64;

/// An upload session id: a signed [`UploadToken`](crate::UploadToken) in lowercase hex, safe in
/// paths and URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UploadId(pub String);

impl UploadId {
    /// Accepts only the shape of what Wharf issues: 32 to 128 lowercase hex characters (tokens
    /// are 114; stores and tests use shorter ids). Anything else is a bogus id from a client and
    /// must never reach a file path.
    pub fn parse(text: &str) -> Option<UploadId> {
        let ok = (32..=128).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| UploadId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An open blob upload, as its token says: any gateway can continue it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    pub id: UploadId,
    pub repo: RepositoryName,
    /// The blob node holding the staging file.
    pub staging_node: BlobNodeId,
    /// When the session opened, unix milliseconds (the proposing leader's clock).
    pub started_ms: u64,
}

/// A blob as the metadata service knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    /// Nodes holding a verified, fsynced copy, in preferred read order.
    pub replicas: Vec<BlobNodeId>,
    /// Where the blob must keep copies: the distinct sets of placement-rule ids that govern the
    /// repositories linking it, under the rules as they stand (`[]`: a repository no rule
    /// matches). Empty means `[[]]`: placed by the ring over every zone. Filled in by
    /// [`MetaApi::list_blobs`](crate::MetaApi::list_blobs) only; ignored in a commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<Vec<String>>,
}

/// What a blob node reports once an upload is verified and durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedBlob {
    pub size: u64,
    pub replicas: Vec<BlobNodeId>,
}

/// A request to store a validated manifest, with everything the state machine must check and index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PutManifest {
    pub repo: RepositoryName,
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// Set when the PUT was by tag.
    pub tag: Option<Tag>,
    /// Config and layers: each must be linked in `repo`.
    pub blobs: Vec<Digest>,
    /// Index children: each must be a manifest in `repo`.
    pub manifests: Vec<Digest>,
    /// When set, this manifest is a referrer of `subject` and `referrer` is how it is listed.
    pub subject: Option<Digest>,
    pub referrer: Option<Descriptor>,
}

impl PutManifest {
    /// The request that stores manifest `bytes` (whose digest is `digest`, as validated into
    /// `parsed`) in `repo`, under `tag` when given: its references and, for a referrer, how it
    /// is listed under its subject.
    pub fn from_parsed(
        repo: RepositoryName,
        digest: Digest,
        tag: Option<Tag>,
        parsed: &oci_model::ParsedManifest,
        bytes: Vec<u8>,
    ) -> PutManifest {
        let subject = parsed
            .subject
            .as_ref()
            .map(|subject| subject.digest.clone());
        PutManifest {
            referrer: subject
                .as_ref()
                .map(|_| parsed.referrer_descriptor(&digest, bytes.len() as u64)),
            repo,
            media_type: parsed.media_type.clone(),
            tag,
            blobs: parsed.blobs.clone(),
            manifests: parsed.manifests.clone(),
            subject,
            digest,
            bytes,
        }
    }
}

/// A blob garbage collection took out of the registry (no repository links it any more) whose
/// copy on some node is still to be deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoomedBlob {
    pub digest: Digest,
    pub size: u64,
    /// Which collection of this digest it is: a blob pushed again and collected again gets a new
    /// generation, so a node's late answer about an earlier one is never taken for this one.
    pub generation: u64,
}

/// One namespace's storage (a namespace is a repository name's first component: `team` for
/// `team/app`), kept exact by the metadata service with every push and delete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceUsage {
    pub namespace: String,
    /// What was pushed: every blob and manifest link counted, so a layer in two repositories
    /// counts twice.
    pub logical_bytes: u64,
    /// What is stored for it: each distinct blob and manifest of the namespace counted once.
    /// Quotas apply to this figure.
    pub physical_bytes: u64,
    /// Distinct blobs and manifests.
    pub blobs: u64,
    pub manifests: u64,
    /// The namespace's quota on physical bytes, if one is set.
    pub quota_bytes: Option<u64>,
}

/// What one garbage-collection sweep of the metadata state did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Blob links removed: unreferenced by any manifest of their repository for longer than the
    /// upload grace.
    pub links_removed: u64,
    /// Blobs whose last link went: their copies are now deleted by the nodes holding them.
    pub blobs_doomed: u64,
    /// Deletion fences old enough that no upload they guard can still commit, dropped.
    pub fences_expired: u64,
    /// True when the sweep stopped at its limit and more is due.
    pub more: bool,
}

/// A stored manifest as served to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// One page of a sorted listing (tags or repositories).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub items: Vec<String>,
    /// True when more items follow the last one returned.
    pub more: bool,
}

/// A blob node as the cluster map records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobNodeInfo {
    pub id: BlobNodeId,
    /// gRPC address, `host:port`.
    pub addr: String,
    pub zone: String,
    pub weight: u32,
    /// Base URL (`http://host:port`) of the node's endpoint for redirected blob GETs
    /// (`blob-http`), when it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
}

/// Whether a blob node takes part in placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Serving and placed on the ring.
    Up,
    /// Leaving: holds data and serves reads, but no longer owns new placements; its blobs move
    /// to their new owners in the background.
    Draining,
    /// Unreachable (missed heartbeats) or stopped by an operator: not placed; its blobs are
    /// re-replicated from the survivors.
    Down,
}

/// How many copies a blob gets and how many must be durable before a push is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationPolicy {
    /// Copies of each blob (the replication factor).
    pub replicas: u32,
    /// Owners that must hold a copy fsynced before the push is acknowledged; 0 means "every owner
    /// that is up, and at least 2 when `replicas >= 2`".
    pub write_quorum: u32,
}

impl Default for ReplicationPolicy {
    fn default() -> Self {
        ReplicationPolicy {
            replicas: 1,
            write_quorum: 0,
        }
    }
}

/// A blob node with its placement state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    pub node: BlobNodeInfo,
    pub state: NodeState,
}

/// The cluster map kept in Raft: blob nodes, their states, the replication policy and an epoch
/// that increases with every change, so nodes can tell a stale map from a current one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    pub epoch: u64,
    pub policy: ReplicationPolicy,
    pub members: Vec<ClusterMember>,
    /// Placement rules (data residency), by id.
    #[serde(default)]
    pub placement: Vec<PlacementRule>,
}

impl ClusterMap {
    /// The member with id `id`, if any.
    pub fn member(&self, id: BlobNodeId) -> Option<&ClusterMember> {
        self.members.iter().find(|member| member.node.id == id)
    }

    /// Where the blobs of `repo` may be stored under this map's placement rules.
    pub fn placement_of(&self, repo: &str) -> RepoPlacement {
        RepoPlacement::for_repository(&self.placement, repo)
    }

    /// The zone of blob node `id`, if the map lists it.
    pub fn zone_of(&self, id: BlobNodeId) -> Option<&str> {
        self.member(id).map(|member| member.node.zone.as_str())
    }
}

/// Whether a meta node votes or only replicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaRole {
    Voter,
    Learner,
}

/// A member of the meta (Raft) cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaMember {
    pub id: u64,
    /// Advertised gRPC address, `host:port`.
    pub addr: String,
    pub role: MetaRole,
    /// The highest log index the leader knows this member holds; `None` before the leader has
    /// heard from it since it was elected (a member restarting or cut off).
    #[serde(default)]
    pub matched_index: Option<u64>,
}

/// What the meta leader knows of a blob node's heartbeats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobNodeLiveness {
    pub id: BlobNodeId,
    /// Milliseconds since the node's last heartbeat reached the current leader; `None` when none
    /// has since it became leader.
    pub last_seen_ms_ago: Option<u64>,
    /// What its last heartbeat said of its storage.
    #[serde(default)]
    pub health: BlobNodeHealth,
}

/// What a blob node says of its storage in each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobNodeHealth {
    /// Below its `min_free_bytes`: it still serves reads and keeps its blobs, but is not chosen
    /// to stage uploads until space is freed.
    pub full: bool,
    /// Bytes free for its blobs; `None` for a store with no such limit (an S3 bucket).
    pub free_bytes: Option<u64>,
}

/// The state of the whole cluster as the answering meta node (the leader) sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub leader_id: Option<u64>,
    pub leader_addr: Option<String>,
    pub term: u64,
    /// Highest log index known committed (on the leader: by a quorum).
    pub commit_index: u64,
    pub last_applied: u64,
    pub meta_members: Vec<MetaMember>,
    pub map: ClusterMap,
    pub liveness: Vec<BlobNodeLiveness>,
}
