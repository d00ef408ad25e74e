//! The registry state's tables as typed rows: key encoding, record types, and the reads and
//! writes that both the apply path and the query path use, so each encoding lives here once.

use cluster_api::{
    AuthState, BlobInfo, BlobNodeId, BlobNodeInfo, ClusterMap, ClusterMember, ImmutableTagRule,
    NodeState, PlacementRule, ProxyUpstream, ReplicationPolicy, ReplicationRule, RetentionRule,
};
use std::collections::BTreeMap;

use oci_model::{Descriptor, Digest, RepositoryName, Tag};
use openraft::{BasicNode, LogId, StoredMembership};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::db::{decode, encode, u64_from_key, u64_key, Table};
use crate::error::StoreError;
use crate::kv::{KvRead, Txn};

const SEPARATOR: u8 = 0;
const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
const EPOCH: &[u8] = b"epoch";
const POLICY: &[u8] = b"policy";
const AUTH: &[u8] = b"auth";
const QUOTAS: &[u8] = b"quotas";
const RETENTION: &[u8] = b"retention";
const PLACEMENT: &[u8] = b"placement";
const PROXIES: &[u8] = b"proxies";
const REPLICATION: &[u8] = b"replication";
const REPLICATION_STATUS: &[u8] = b"replication_status";
const REPLICATION_SEQ: &[u8] = b"replication_seq";
const UPLOAD_KEY: &[u8] = b"upload_key";
const FENCE_HORIZON: &[u8] = b"fence_horizon";
/// The immutable-tag rules alone (also in the auth state), so a tagged manifest PUT reads a few
/// bytes, not every account.
const IMMUTABLE_TAGS: &[u8] = b"immutable_tags";

pub(crate) type Membership = StoredMembership<u64, BasicNode>;

/// A manifest, stored once per digest whichever repositories link it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ManifestRecord {
    pub media_type: String,
    #[serde(with = "crate::command::text_bytes")]
    pub bytes: Vec<u8>,
    pub subject: Option<Digest>,
    /// Config and layers.
    pub blobs: Vec<Digest>,
    /// Index children.
    pub manifests: Vec<Digest>,
    /// Repositories linking this manifest; the record goes when the last link does.
    pub links: u32,
}

impl ManifestRecord {
    /// Config and layers, each once (a manifest may list the same blob twice).
    pub(crate) fn distinct_blobs(&self) -> Vec<Digest> {
        distinct(&self.blobs)
    }

    /// Index children, each once.
    pub(crate) fn distinct_children(&self) -> Vec<Digest> {
        distinct(&self.manifests)
    }
}

fn distinct(digests: &[Digest]) -> Vec<Digest> {
    let mut seen = Vec::with_capacity(digests.len());
    for digest in digests {
        if !seen.contains(digest) {
            seen.push(digest.clone());
        }
    }
    seen
}

/// A blob, stored once per digest whichever repositories link it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobRecord {
    pub size: u64,
    pub replicas: Vec<BlobNodeId>,
    /// Repositories linking this blob; at zero the blob is doomed (see [`DoomedRecord`]).
    pub links: u32,
}

/// A blob's link into one repository (`blob_links`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobLinkRecord {
    /// Manifests linked in the same repository that list this blob (config or layer).
    pub refs: u32,
    /// When the blob was last uploaded or mounted into the repository, or last stopped being
    /// used by a manifest there (unix ms, proposer's clock). An unreferenced link lives for the
    /// upload grace period after this.
    pub pushed_ms: u64,
}

/// A manifest's link into one repository (`manifest_links`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManifestLinkRecord {
    /// Indexes linked in the same repository that list this manifest as a child.
    pub refs: u32,
    /// When the manifest was last pushed to the repository (unix ms).
    pub pushed_ms: u64,
}

/// A tag (`tags`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TagRecord {
    pub digest: Digest,
    /// When the tag was last pushed (moved or re-pushed), unix ms: retention keeps the newest.
    pub pushed_ms: u64,
}

/// A blob no repository links any more, whose copies the nodes in `pending` still hold
/// (`doomed`). Each node sets its copy aside, asks meta to confirm (the generation must still
/// match), and deletes it; a push of the same digest in the meantime brings the blob back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DoomedRecord {
    pub size: u64,
    pub pending: Vec<BlobNodeId>,
    pub generation: u64,
    pub doomed_ms: u64,
}

/// One namespace's usage (`usage`), kept exact by every link change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UsageRecord {
    /// Every link counted: a blob or manifest in two repositories counts twice.
    pub logical_bytes: u64,
    /// Each distinct blob and manifest of the namespace counted once.
    pub physical_bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
}

impl BlobRecord {
    pub(crate) fn info(self, digest: Digest) -> BlobInfo {
        BlobInfo {
            digest,
            size: self.size,
            replicas: self.replicas,
            placement: Vec::new(),
        }
    }
}

/// The namespace of a repository: its first path component (`team` for `team/app/api`).
pub(crate) fn namespace(repo: &RepositoryName) -> &str {
    let name = repo.as_str();
    name.split_once('/').map_or(name, |(first, _)| first)
}

/// `a \0 b \0 ...`: a key whose parts sort in order and whose prefixes select one group.
pub(crate) fn key(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|part| part.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(SEPARATOR);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// The prefix selecting every key whose leading parts are `parts`.
pub(crate) fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut prefix = key(parts);
    prefix.push(SEPARATOR);
    prefix
}

/// The `N` parts of a key written by [`key`].
pub(crate) fn split_key<'k, const N: usize>(
    what: &'static str,
    key: &'k [u8],
) -> Result<[&'k str; N], StoreError> {
    let text =
        std::str::from_utf8(key).map_err(|_| StoreError::corrupt(what, "key is not utf-8"))?;
    let parts: Vec<&str> = text.split(SEPARATOR as char).collect();
    parts.try_into().map_err(|parts: Vec<&str>| {
        StoreError::corrupt(what, format!("key has {} parts, not {N}", parts.len()))
    })
}

pub(crate) fn parse_repo(what: &'static str, text: &str) -> Result<RepositoryName, StoreError> {
    RepositoryName::parse(text).map_err(|error| StoreError::corrupt(what, error.to_string()))
}

pub(crate) fn parse_tag(what: &'static str, text: &str) -> Result<Tag, StoreError> {
    Tag::parse(text).map_err(|error| StoreError::corrupt(what, error.to_string()))
}

pub(crate) fn parse_digest(what: &'static str, text: &[u8]) -> Result<Digest, StoreError> {
    let text =
        std::str::from_utf8(text).map_err(|_| StoreError::corrupt(what, "digest is not utf-8"))?;
    Digest::parse(text).map_err(|error| StoreError::corrupt(what, error.to_string()))
}

fn digest_key(digest: &Digest) -> Vec<u8> {
    digest.to_string().into_bytes()
}

// ---- reads -------------------------------------------------------------------------------------

pub(crate) fn last_applied(kv: &impl KvRead) -> Result<Option<LogId<u64>>, StoreError> {
    kv.get(Table::SmMeta, LAST_APPLIED)?
        .map(|bytes| decode("last applied log id", &bytes))
        .transpose()
}

pub(crate) fn membership(kv: &impl KvRead) -> Result<Membership, StoreError> {
    Ok(kv
        .get(Table::SmMeta, MEMBERSHIP)?
        .map(|bytes| decode("membership", &bytes))
        .transpose()?
        .unwrap_or_default())
}

pub(crate) fn repository_exists(
    kv: &impl KvRead,
    repo: &RepositoryName,
) -> Result<bool, StoreError> {
    Ok(kv
        .get(Table::Repositories, repo.as_str().as_bytes())?
        .is_some())
}

pub(crate) fn tag(
    kv: &impl KvRead,
    repo: &RepositoryName,
    tag: &Tag,
) -> Result<Option<Digest>, StoreError> {
    Ok(tag_record(kv, repo, tag)?.map(|record| record.digest))
}

pub(crate) fn tag_record(
    kv: &impl KvRead,
    repo: &RepositoryName,
    tag: &Tag,
) -> Result<Option<TagRecord>, StoreError> {
    kv.get(Table::Tags, &key(&[repo.as_str(), tag.as_str()]))?
        .map(|bytes| decode("tag", &bytes))
        .transpose()
}

pub(crate) fn manifest(
    kv: &impl KvRead,
    digest: &Digest,
) -> Result<Option<ManifestRecord>, StoreError> {
    kv.get(Table::Manifests, &digest_key(digest))?
        .map(|bytes| decode("manifest record", &bytes))
        .transpose()
}

pub(crate) fn manifest_linked(
    kv: &impl KvRead,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<bool, StoreError> {
    Ok(manifest_link(kv, repo, digest)?.is_some())
}

pub(crate) fn manifest_link(
    kv: &impl KvRead,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<Option<ManifestLinkRecord>, StoreError> {
    kv.get(
        Table::ManifestLinks,
        &key(&[repo.as_str(), &digest.to_string()]),
    )?
    .map(|bytes| decode("manifest link", &bytes))
    .transpose()
}

pub(crate) fn blob(kv: &impl KvRead, digest: &Digest) -> Result<Option<BlobRecord>, StoreError> {
    kv.get(Table::Blobs, &digest_key(digest))?
        .map(|bytes| decode("blob record", &bytes))
        .transpose()
}

pub(crate) fn blob_linked(
    kv: &impl KvRead,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<bool, StoreError> {
    Ok(blob_link(kv, repo, digest)?.is_some())
}

pub(crate) fn blob_link(
    kv: &impl KvRead,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<Option<BlobLinkRecord>, StoreError> {
    kv.get(
        Table::BlobLinks,
        &key(&[repo.as_str(), &digest.to_string()]),
    )?
    .map(|bytes| decode("blob link", &bytes))
    .transpose()
}

pub(crate) fn doomed(
    kv: &impl KvRead,
    digest: &Digest,
) -> Result<Option<DoomedRecord>, StoreError> {
    kv.get(Table::Doomed, &digest_key(digest))?
        .map(|bytes| decode("doomed blob", &bytes))
        .transpose()
}

/// When a node last deleted its copy of `digest` (unix ms), while that is remembered.
pub(crate) fn fence(kv: &impl KvRead, digest: &Digest) -> Result<Option<u64>, StoreError> {
    kv.get(Table::Fences, &fence_key(digest))?
        .map(|bytes| decode("deletion fence", &bytes))
        .transpose()
}

pub(crate) fn usage(kv: &impl KvRead, namespace: &str) -> Result<UsageRecord, StoreError> {
    Ok(kv
        .get(Table::Usage, namespace.as_bytes())?
        .map(|bytes| decode("namespace usage", &bytes))
        .transpose()?
        .unwrap_or_default())
}

/// The key that signs upload tokens, once the first leader asked for an upload has set it.
pub(crate) fn upload_key(kv: &impl KvRead) -> Result<Option<Vec<u8>>, StoreError> {
    cluster_value(kv, UPLOAD_KEY, "upload key")
}

pub(crate) fn put_upload_key(txn: &mut Txn<'_>, key: &[u8]) -> Result<(), StoreError> {
    put_cluster_value(txn, UPLOAD_KEY, "upload key", &key)
}

/// Deletion fences older than this (unix ms) have been dropped: an upload started before it can
/// no longer be checked against them. 0 until a sweep drops one.
pub(crate) fn fence_horizon(kv: &impl KvRead) -> Result<u64, StoreError> {
    cluster_value(kv, FENCE_HORIZON, "fence horizon")
}

pub(crate) fn put_fence_horizon(txn: &mut Txn<'_>, horizon_ms: u64) -> Result<(), StoreError> {
    put_cluster_value(txn, FENCE_HORIZON, "fence horizon", &horizon_ms)
}

pub(crate) fn blob_node(
    kv: &impl KvRead,
    id: BlobNodeId,
) -> Result<Option<BlobNodeInfo>, StoreError> {
    kv.get(Table::BlobNodes, &u64_key(id))?
        .map(|bytes| decode("blob node", &bytes))
        .transpose()
}

/// Every blob node of the cluster map, by id.
pub(crate) fn blob_nodes(kv: &impl KvRead) -> Result<Vec<BlobNodeInfo>, StoreError> {
    let mut nodes = Vec::new();
    kv.scan(Table::BlobNodes, b"", None, &mut |_, value| {
        nodes.push(decode("blob node", value)?);
        Ok(true)
    })?;
    Ok(nodes)
}

/// A node's placement state; a node without a row is `Up` (rows are written only on change).
pub(crate) fn node_state(kv: &impl KvRead, id: BlobNodeId) -> Result<NodeState, StoreError> {
    Ok(kv
        .get(Table::NodeStates, &u64_key(id))?
        .map(|bytes| decode("node state", &bytes))
        .transpose()?
        .unwrap_or(NodeState::Up))
}

/// A single value of the `cluster` table, or its default when it was never written.
pub(crate) fn cluster_value<T: DeserializeOwned + Default>(
    kv: &impl KvRead,
    key: &[u8],
    what: &'static str,
) -> Result<T, StoreError> {
    Ok(kv
        .get(Table::ClusterMeta, key)?
        .map(|bytes| decode(what, &bytes))
        .transpose()?
        .unwrap_or_default())
}

pub(crate) fn put_cluster_value<T: Serialize>(
    txn: &mut Txn<'_>,
    key: &[u8],
    what: &'static str,
    value: &T,
) -> Result<(), StoreError> {
    txn.put(Table::ClusterMeta, key, encode(what, value)?);
    Ok(())
}

pub(crate) fn epoch(kv: &impl KvRead) -> Result<u64, StoreError> {
    cluster_value(kv, EPOCH, "cluster epoch")
}

pub(crate) fn policy(kv: &impl KvRead) -> Result<ReplicationPolicy, StoreError> {
    cluster_value(kv, POLICY, "replication policy")
}

/// The access-control state: one value, rewritten whole by each change (accounts and policies
/// number in the hundreds, not millions).
pub(crate) fn auth(kv: &impl KvRead) -> Result<AuthState, StoreError> {
    cluster_value(kv, AUTH, "access-control state")
}

/// Quotas on physical bytes, by namespace.
pub(crate) fn quotas(kv: &impl KvRead) -> Result<BTreeMap<String, u64>, StoreError> {
    cluster_value(kv, QUOTAS, "quotas")
}

pub(crate) fn put_quotas(
    txn: &mut Txn<'_>,
    quotas: &BTreeMap<String, u64>,
) -> Result<(), StoreError> {
    put_cluster_value(txn, QUOTAS, "quotas", quotas)
}

/// Placement rules (data residency), by id; part of the cluster map.
pub(crate) fn placement_rules(kv: &impl KvRead) -> Result<Vec<PlacementRule>, StoreError> {
    cluster_value(kv, PLACEMENT, "placement rules")
}

pub(crate) fn put_placement_rules(
    txn: &mut Txn<'_>,
    rules: &[PlacementRule],
) -> Result<(), StoreError> {
    put_cluster_value(txn, PLACEMENT, "placement rules", &rules)
}

/// Retention rules, by id.
pub(crate) fn retention_rules(kv: &impl KvRead) -> Result<Vec<RetentionRule>, StoreError> {
    cluster_value(kv, RETENTION, "retention rules")
}

pub(crate) fn put_retention_rules(
    txn: &mut Txn<'_>,
    rules: &[RetentionRule],
) -> Result<(), StoreError> {
    put_cluster_value(txn, RETENTION, "retention rules", &rules)
}

/// The pull-through cache's upstreams, by id.
pub(crate) fn proxies(kv: &impl KvRead) -> Result<Vec<ProxyUpstream>, StoreError> {
    cluster_value(kv, PROXIES, "proxy upstreams")
}

pub(crate) fn put_proxies(txn: &mut Txn<'_>, proxies: &[ProxyUpstream]) -> Result<(), StoreError> {
    put_cluster_value(txn, PROXIES, "proxy upstreams", &proxies)
}

/// The replication rules, by id.
pub(crate) fn replication_rules(kv: &impl KvRead) -> Result<Vec<ReplicationRule>, StoreError> {
    cluster_value(kv, REPLICATION, "replication rules")
}

pub(crate) fn put_replication_rules(
    txn: &mut Txn<'_>,
    rules: &[ReplicationRule],
) -> Result<(), StoreError> {
    put_cluster_value(txn, REPLICATION, "replication rules", &rules)
}

/// The last recorded pass of each replication rule, by rule id.
pub(crate) fn replication_status(
    kv: &impl KvRead,
) -> Result<BTreeMap<String, cluster_api::ReplicationStatus>, StoreError> {
    cluster_value(kv, REPLICATION_STATUS, "replication status")
}

pub(crate) fn put_replication_status(
    txn: &mut Txn<'_>,
    status: &BTreeMap<String, cluster_api::ReplicationStatus>,
) -> Result<(), StoreError> {
    put_cluster_value(txn, REPLICATION_STATUS, "replication status", status)
}

/// Marks `repo` as changed for every push replication rule covering it: the replicator copies
/// it soon after (its backlog), instead of waiting for its next full pass.
pub(crate) fn mark_replication(txn: &mut Txn<'_>, repo: &RepositoryName) -> Result<(), StoreError> {
    let rules = replication_rules(txn)?;
    let covering: Vec<&ReplicationRule> = rules
        .iter()
        .filter(|rule| {
            rule.mode == cluster_api::ReplicationMode::Push && rule.applies_to(repo.as_str())
        })
        .collect();
    if covering.is_empty() {
        return Ok(());
    }
    let seq: u64 = cluster_value::<u64>(txn, REPLICATION_SEQ, "replication sequence")? + 1;
    put_cluster_value(txn, REPLICATION_SEQ, "replication sequence", &seq)?;
    for rule in covering {
        txn.put(
            Table::ReplicationBacklog,
            key(&[&rule.id, repo.as_str()]),
            encode("replication backlog", &seq)?,
        );
    }
    Ok(())
}

/// The backlog: (rule, repository, sequence of its last change), in key order, at most `limit`.
pub(crate) fn replication_backlog(
    kv: &impl KvRead,
    limit: usize,
) -> Result<Vec<(String, RepositoryName, u64)>, StoreError> {
    let mut rows = Vec::new();
    kv.scan(Table::ReplicationBacklog, b"", None, &mut |row, value| {
        let [rule, repo] = split_key::<2>("replication backlog key", row)?;
        rows.push((
            rule.to_owned(),
            parse_repo("replication backlog key", repo)?,
            decode("replication backlog", value)?,
        ));
        Ok(rows.len() < limit)
    })?;
    Ok(rows)
}

/// Takes `repo` off `rule`'s backlog if it has not changed since `seq`.
pub(crate) fn replication_done(
    txn: &mut Txn<'_>,
    rule: &str,
    repo: &RepositoryName,
    seq: u64,
) -> Result<(), StoreError> {
    let row = key(&[rule, repo.as_str()]);
    let current: Option<u64> = txn
        .get(Table::ReplicationBacklog, &row)?
        .map(|bytes| decode("replication backlog", &bytes))
        .transpose()?;
    if current == Some(seq) {
        txn.delete(Table::ReplicationBacklog, row);
    }
    Ok(())
}

/// Drops `rule`'s whole backlog (the rule is gone).
pub(crate) fn drop_replication_backlog(txn: &mut Txn<'_>, rule: &str) -> Result<(), StoreError> {
    let mut rows = Vec::new();
    txn.scan(
        Table::ReplicationBacklog,
        &prefix(&[rule]),
        None,
        &mut |row, _| {
            rows.push(row.to_vec());
            Ok(true)
        },
    )?;
    for row in rows {
        txn.delete(Table::ReplicationBacklog, row);
    }
    Ok(())
}

/// The `pending_refs` row of `digest` in `repo`; `blob` tells a blob from a child manifest.
pub(crate) fn pending_key(repo: &RepositoryName, blob: bool, digest: &Digest) -> Vec<u8> {
    key(&[
        repo.as_str(),
        if blob { "b" } else { "m" },
        &digest.to_string(),
    ])
}

/// How many cached manifests of `repo` list `digest` while it is not linked there.
pub(crate) fn pending_refs(
    kv: &impl KvRead,
    repo: &RepositoryName,
    blob: bool,
    digest: &Digest,
) -> Result<u32, StoreError> {
    Ok(kv
        .get(Table::PendingRefs, &pending_key(repo, blob, digest))?
        .map(|bytes| decode("pending references", &bytes))
        .transpose()?
        .unwrap_or(0))
}

/// Sets the pending count (a count of 0 removes the row).
pub(crate) fn put_pending_refs(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    blob: bool,
    digest: &Digest,
    count: u32,
) -> Result<(), StoreError> {
    let row = pending_key(repo, blob, digest);
    if count == 0 {
        txn.delete(Table::PendingRefs, row);
    } else {
        txn.put(
            Table::PendingRefs,
            row,
            encode("pending references", &count)?,
        );
    }
    Ok(())
}

/// When cached manifest `digest` of `repo` was last pulled, if it is a cached one.
pub(crate) fn cache_access(
    kv: &impl KvRead,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<Option<u64>, StoreError> {
    kv.get(
        Table::CacheAccess,
        &key(&[repo.as_str(), &digest.to_string()]),
    )?
    .map(|bytes| decode("cache access time", &bytes))
    .transpose()
}

pub(crate) fn put_cache_access(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    ms: u64,
) -> Result<(), StoreError> {
    let row = key(&[repo.as_str(), &digest.to_string()]);
    txn.put(Table::CacheAccess, row, encode("cache access time", &ms)?);
    Ok(())
}

pub(crate) fn delete_cache_access(txn: &mut Txn<'_>, repo: &RepositoryName, digest: &Digest) {
    txn.delete(
        Table::CacheAccess,
        key(&[repo.as_str(), &digest.to_string()]),
    );
}

/// Every cached manifest with its last pull, in key order.
pub(crate) fn cache_accesses(
    kv: &impl KvRead,
) -> Result<Vec<(RepositoryName, Digest, u64)>, StoreError> {
    let mut rows = Vec::new();
    kv.scan(Table::CacheAccess, b"", None, &mut |row, value| {
        let [repo, digest] = split_key::<2>("cache access key", row)?;
        rows.push((
            parse_repo("cache access key", repo)?,
            parse_digest("cache access key", digest.as_bytes())?,
            decode("cache access time", value)?,
        ));
        Ok(true)
    })?;
    Ok(rows)
}

/// Every tag of `repo` with its record, in tag order.
pub(crate) fn tag_records(
    kv: &impl KvRead,
    repo: &RepositoryName,
) -> Result<Vec<(Tag, TagRecord)>, StoreError> {
    let mut tags = Vec::new();
    kv.scan(
        Table::Tags,
        &prefix(&[repo.as_str()]),
        None,
        &mut |key, value| {
            let [_, tag] = split_key::<2>("tag key", key)?;
            tags.push((parse_tag("tag key", tag)?, decode("tag", value)?));
            Ok(true)
        },
    )?;
    Ok(tags)
}

/// Every manifest link of `repo`, in digest order.
pub(crate) fn manifest_links_of(
    kv: &impl KvRead,
    repo: &RepositoryName,
) -> Result<Vec<(Digest, ManifestLinkRecord)>, StoreError> {
    let mut links = Vec::new();
    kv.scan(
        Table::ManifestLinks,
        &prefix(&[repo.as_str()]),
        None,
        &mut |key, value| {
            let [_, digest] = split_key::<2>("manifest link key", key)?;
            links.push((
                parse_digest("manifest link key", digest.as_bytes())?,
                decode("manifest link", value)?,
            ));
            Ok(true)
        },
    )?;
    Ok(links)
}

pub(crate) fn put_auth(txn: &mut Txn<'_>, auth: &AuthState) -> Result<(), StoreError> {
    put_cluster_value(txn, AUTH, "access-control state", auth)
}

pub(crate) fn immutable_tag_rules(kv: &impl KvRead) -> Result<Vec<ImmutableTagRule>, StoreError> {
    cluster_value(kv, IMMUTABLE_TAGS, "immutable-tag rules")
}

pub(crate) fn put_immutable_tag_rules(
    txn: &mut Txn<'_>,
    rules: &[ImmutableTagRule],
) -> Result<(), StoreError> {
    put_cluster_value(txn, IMMUTABLE_TAGS, "immutable-tag rules", &rules)
}

/// The cluster map: every blob node with its state, the policy and the epoch.
pub(crate) fn cluster_map(kv: &impl KvRead) -> Result<ClusterMap, StoreError> {
    let mut members = Vec::new();
    for node in blob_nodes(kv)? {
        let state = node_state(kv, node.id)?;
        members.push(ClusterMember { node, state });
    }
    Ok(ClusterMap {
        epoch: epoch(kv)?,
        policy: policy(kv)?,
        members,
        placement: placement_rules(kv)?,
    })
}

/// The tags of `repo` that point at `digest`, from [`Table::TagsByDigest`]: as many rows as
/// there are such tags, however many tags the repository has.
pub(crate) fn tags_pointing_at(
    kv: &impl KvRead,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<Vec<Tag>, StoreError> {
    let mut tags = Vec::new();
    kv.scan(
        Table::TagsByDigest,
        &prefix(&[repo.as_str(), &digest.to_string()]),
        None,
        &mut |key, _| {
            let [_, _, tag] = split_key::<3>("tag index key", key)?;
            tags.push(parse_tag("tag index key", tag)?);
            Ok(true)
        },
    )?;
    Ok(tags)
}

/// The digests of the manifests in `repo` whose subject is `subject`.
pub(crate) fn referrers_of(
    kv: &impl KvRead,
    repo: &RepositoryName,
    subject: &Digest,
) -> Result<Vec<Digest>, StoreError> {
    let mut referrers = Vec::new();
    kv.scan(
        Table::Referrers,
        &prefix(&[repo.as_str(), &subject.to_string()]),
        None,
        &mut |key, _| {
            let [_, _, referrer] = split_key::<3>("referrer key", key)?;
            referrers.push(parse_digest("referrer key", referrer.as_bytes())?);
            Ok(true)
        },
    )?;
    Ok(referrers)
}

// ---- writes ------------------------------------------------------------------------------------

pub(crate) fn put_applied(
    txn: &mut Txn<'_>,
    last_applied: Option<&LogId<u64>>,
    membership: &Membership,
) -> Result<(), StoreError> {
    match last_applied {
        Some(log_id) => txn.put(
            Table::SmMeta,
            LAST_APPLIED,
            encode("last applied log id", log_id)?,
        ),
        None => txn.delete(Table::SmMeta, LAST_APPLIED),
    }
    txn.put(Table::SmMeta, MEMBERSHIP, encode("membership", membership)?);
    Ok(())
}

pub(crate) fn put_repository(txn: &mut Txn<'_>, repo: &RepositoryName) {
    txn.put(Table::Repositories, repo.as_str().as_bytes(), Vec::new());
}

/// Points `tag` of `repo` at `record`'s manifest, and keeps [`Table::TagsByDigest`] in step;
/// `previous` is the manifest the tag pointed at until now (the caller has read it).
pub(crate) fn put_tag(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    tag: &Tag,
    record: &TagRecord,
    previous: Option<&Digest>,
) -> Result<(), StoreError> {
    if let Some(previous) = previous.filter(|previous| **previous != record.digest) {
        txn.delete(Table::TagsByDigest, tag_index_key(repo, previous, tag));
    }
    txn.put(
        Table::TagsByDigest,
        tag_index_key(repo, &record.digest, tag),
        [],
    );
    txn.put(
        Table::Tags,
        key(&[repo.as_str(), tag.as_str()]),
        encode("tag", record)?,
    );
    Ok(())
}

/// Removes `tag` of `repo`, which points at `digest` (the caller has read it), and its
/// [`Table::TagsByDigest`] row.
pub(crate) fn delete_tag(txn: &mut Txn<'_>, repo: &RepositoryName, tag: &Tag, digest: &Digest) {
    txn.delete(Table::TagsByDigest, tag_index_key(repo, digest, tag));
    txn.delete(Table::Tags, key(&[repo.as_str(), tag.as_str()]));
}

/// The [`Table::TagsByDigest`] row saying `tag` of `repo` points at `digest`.
pub(crate) fn tag_index_key(repo: &RepositoryName, digest: &Digest, tag: &Tag) -> Vec<u8> {
    key(&[repo.as_str(), &digest.to_string(), tag.as_str()])
}

pub(crate) fn put_manifest(
    txn: &mut Txn<'_>,
    digest: &Digest,
    record: &ManifestRecord,
) -> Result<(), StoreError> {
    txn.put(
        Table::Manifests,
        digest_key(digest),
        encode("manifest record", record)?,
    );
    Ok(())
}

pub(crate) fn put_manifest_link(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    link: &ManifestLinkRecord,
) -> Result<(), StoreError> {
    txn.put(
        Table::ManifestLinks,
        key(&[repo.as_str(), &digest.to_string()]),
        encode("manifest link", link)?,
    );
    Ok(())
}

pub(crate) fn delete_manifest_link(txn: &mut Txn<'_>, repo: &RepositoryName, digest: &Digest) {
    txn.delete(
        Table::ManifestLinks,
        key(&[repo.as_str(), &digest.to_string()]),
    );
}

pub(crate) fn put_blob(
    txn: &mut Txn<'_>,
    digest: &Digest,
    record: &BlobRecord,
) -> Result<(), StoreError> {
    txn.put(
        Table::Blobs,
        digest_key(digest),
        encode("blob record", record)?,
    );
    Ok(())
}

pub(crate) fn put_blob_link(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    link: &BlobLinkRecord,
) -> Result<(), StoreError> {
    txn.put(
        Table::BlobLinks,
        key(&[repo.as_str(), &digest.to_string()]),
        encode("blob link", link)?,
    );
    txn.put(Table::LinksByDigest, link_index_key(digest, repo), []);
    Ok(())
}

/// The [`Table::LinksByDigest`] row saying `repo` links blob `digest`.
pub(crate) fn link_index_key(digest: &Digest, repo: &RepositoryName) -> Vec<u8> {
    key(&[&digest.to_string(), repo.as_str()])
}

/// The repositories linking blob `digest`, in name order, from [`Table::LinksByDigest`].
pub(crate) fn repos_linking(
    kv: &impl KvRead,
    digest: &Digest,
) -> Result<Vec<RepositoryName>, StoreError> {
    let mut repos = Vec::new();
    kv.scan(
        Table::LinksByDigest,
        &prefix(&[&digest.to_string()]),
        None,
        &mut |key, _| {
            let [_, repo] = split_key::<2>("blob link index key", key)?;
            repos.push(parse_repo("blob link index key", repo)?);
            Ok(true)
        },
    )?;
    Ok(repos)
}

/// Blob `digest`'s placement ([`BlobInfo::placement`]): the distinct rule sets `rules` give the
/// repositories linking it; empty when none is under a rule.
pub(crate) fn placement_sets(
    kv: &impl KvRead,
    rules: &[PlacementRule],
    digest: &Digest,
) -> Result<Vec<Vec<String>>, StoreError> {
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let repos = repos_linking(kv, digest)?;
    Ok(cluster_api::placement_sets(
        rules,
        repos.iter().map(RepositoryName::as_str),
    ))
}

pub(crate) fn delete_blob(txn: &mut Txn<'_>, digest: &Digest) {
    txn.delete(Table::Blobs, digest_key(digest));
}

pub(crate) fn delete_manifest(txn: &mut Txn<'_>, digest: &Digest) {
    txn.delete(Table::Manifests, digest_key(digest));
}

pub(crate) fn put_doomed(
    txn: &mut Txn<'_>,
    digest: &Digest,
    record: &DoomedRecord,
) -> Result<(), StoreError> {
    txn.put(
        Table::Doomed,
        digest_key(digest),
        encode("doomed blob", record)?,
    );
    Ok(())
}

pub(crate) fn delete_doomed(txn: &mut Txn<'_>, digest: &Digest) {
    txn.delete(Table::Doomed, digest_key(digest));
}

pub(crate) fn put_fence(
    txn: &mut Txn<'_>,
    digest: &Digest,
    deleted_ms: u64,
) -> Result<(), StoreError> {
    txn.put(
        Table::Fences,
        fence_key(digest),
        encode("deletion fence", &deleted_ms)?,
    );
    Ok(())
}

pub(crate) fn delete_fence(txn: &mut Txn<'_>, digest: &Digest) {
    txn.delete(Table::Fences, fence_key(digest));
}

/// A fence row: `d` + digest (its time-ordered twin starts with `t`).
fn fence_key(digest: &Digest) -> Vec<u8> {
    [b"d".as_slice(), digest.to_string().as_bytes()].concat()
}

pub(crate) fn put_usage(
    txn: &mut Txn<'_>,
    namespace: &str,
    usage: &UsageRecord,
) -> Result<(), StoreError> {
    if *usage == UsageRecord::default() {
        txn.delete(Table::Usage, namespace.as_bytes());
    } else {
        txn.put(
            Table::Usage,
            namespace.as_bytes(),
            encode("namespace usage", usage)?,
        );
    }
    Ok(())
}

/// The `unreferenced` row of a blob link with no manifest referring to it: `pushed_ms` first (big
/// endian), so the garbage collector finds the expired ones by scanning from the start.
pub(crate) fn unreferenced_key(pushed_ms: u64, repo: &RepositoryName, digest: &Digest) -> Vec<u8> {
    let mut row = u64_key(pushed_ms).to_vec();
    row.extend_from_slice(&key(&[repo.as_str(), &digest.to_string()]));
    row
}

/// Splits an `unreferenced` row back into (pushed_ms, repository, digest).
pub(crate) fn parse_unreferenced_key(
    row: &[u8],
) -> Result<(u64, RepositoryName, Digest), StoreError> {
    const WHAT: &str = "unreferenced link key";
    if row.len() < 8 {
        return Err(StoreError::corrupt(WHAT, "shorter than its timestamp"));
    }
    let (time, rest) = row.split_at(8);
    let pushed_ms = u64_from_key(WHAT, time)?;
    let [repo, digest] = split_key::<2>(WHAT, rest)?;
    Ok((
        pushed_ms,
        parse_repo(WHAT, repo)?,
        parse_digest(WHAT, digest.as_bytes())?,
    ))
}

pub(crate) fn delete_blob_link(txn: &mut Txn<'_>, repo: &RepositoryName, digest: &Digest) {
    txn.delete(Table::BlobLinks, key(&[repo.as_str(), &digest.to_string()]));
    txn.delete(Table::LinksByDigest, link_index_key(digest, repo));
}

pub(crate) fn referrer_key(repo: &RepositoryName, subject: &Digest, referrer: &Digest) -> Vec<u8> {
    key(&[repo.as_str(), &subject.to_string(), &referrer.to_string()])
}

pub(crate) fn put_referrer(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    subject: &Digest,
    descriptor: &Descriptor,
) -> Result<(), StoreError> {
    let row = referrer_key(repo, subject, &descriptor.digest);
    txn.put(
        Table::Referrers,
        row,
        encode("referrer descriptor", descriptor)?,
    );
    Ok(())
}

pub(crate) fn delete_referrer(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    subject: &Digest,
    referrer: &Digest,
) {
    txn.delete(Table::Referrers, referrer_key(repo, subject, referrer));
}

pub(crate) fn put_blob_node(txn: &mut Txn<'_>, node: &BlobNodeInfo) -> Result<(), StoreError> {
    txn.put(
        Table::BlobNodes,
        u64_key(node.id),
        encode("blob node", node)?,
    );
    Ok(())
}

pub(crate) fn delete_blob_node(txn: &mut Txn<'_>, id: BlobNodeId) {
    txn.delete(Table::BlobNodes, u64_key(id));
    txn.delete(Table::NodeStates, u64_key(id));
}

pub(crate) fn put_node_state(
    txn: &mut Txn<'_>,
    id: BlobNodeId,
    state: NodeState,
) -> Result<(), StoreError> {
    txn.put(
        Table::NodeStates,
        u64_key(id),
        encode("node state", &state)?,
    );
    Ok(())
}

pub(crate) fn put_epoch(txn: &mut Txn<'_>, epoch: u64) -> Result<(), StoreError> {
    put_cluster_value(txn, EPOCH, "cluster epoch", &epoch)
}

/// Increments the cluster map's epoch: every change to the map goes through here.
pub(crate) fn bump_epoch(txn: &mut Txn<'_>) -> Result<(), StoreError> {
    let next = epoch(txn)? + 1;
    put_epoch(txn, next)
}

pub(crate) fn put_policy(txn: &mut Txn<'_>, policy: &ReplicationPolicy) -> Result<(), StoreError> {
    put_cluster_value(txn, POLICY, "replication policy", policy)
}
