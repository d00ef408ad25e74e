//! [`StateReader`]: every `MetaApi` query, answered from the applied state. Callers that need
//! linearizable reads (all of `MetaApi`) first make sure this node has applied up to the leader's
//! commit index; the reader itself just reads what is on disk.

use std::sync::Arc;

use cluster_api::{
    AuthState, BlobInfo, BlobNodeId, BlobNodeInfo, ClusterMap, DoomedBlob, MetaError,
    NamespaceUsage, Page, ProxyUpstream, RetentionAction, RetentionRule, StoredManifest, UploadId,
    UploadToken,
};
use oci_model::{Descriptor, Digest, Reference, RepositoryName};
use openraft::LogId;

use crate::db::{decode, Database, Table};
use crate::error::StoreError;
use crate::kv::{DbView, KvRead};
use crate::refs;
use crate::state::{self, parse_digest, prefix, split_key, BlobRecord, DoomedRecord};

/// A cheap, clone-able read handle on the state machine's tables.
#[derive(Clone)]
pub struct StateReader {
    db: Arc<Database>,
}

impl From<StoreError> for MetaError {
    fn from(error: StoreError) -> Self {
        match error {
            // Another member can answer meanwhile.
            StoreError::Installing => MetaError::Unavailable { leader: None },
            error => MetaError::Internal(error.to_string()),
        }
    }
}

impl StateReader {
    pub(crate) fn new(db: Arc<Database>) -> StateReader {
        StateReader { db }
    }

    /// The live state; refused while a snapshot is being installed (the state is then being
    /// replaced in several writes and may be half old, half new).
    fn view(&self) -> Result<DbView<'_>, StoreError> {
        if self
            .db
            .installing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(StoreError::Installing);
        }
        Ok(DbView::live(&self.db))
    }

    /// RocksDB's memory as it accounts for it.
    pub fn memory_usage(&self) -> crate::MemoryUsage {
        self.db.memory_usage()
    }

    /// Writes every memtable out and frees it (an idle node's upkeep; no state changes).
    pub fn flush_memtables(&self) -> Result<(), MetaError> {
        Ok(self.db.flush_memtables()?)
    }

    /// Log and snapshot figures (for the snapshot schedule and metrics).
    pub fn stats(&self) -> &crate::StoreStats {
        &self.db.stats
    }

    /// The last log entry applied to the state.
    pub fn last_applied(&self) -> Result<Option<LogId<u64>>, StoreError> {
        state::last_applied(&self.view()?)
    }

    /// The key that signs upload tokens; `None` until a leader has set one.
    pub fn upload_key(&self) -> Result<Option<Vec<u8>>, MetaError> {
        Ok(state::upload_key(&self.view()?)?)
    }

    /// Blob `digest` if it is linked in `repo`; else `BlobUnknown`.
    /// Recomputes every reference count and the namespace usage from the graph and lists each
    /// disagreement with the kept figures (empty when consistent). Reads the whole state.
    pub fn check_consistency(&self) -> Result<Vec<String>, MetaError> {
        self.view()?;
        Ok(crate::check::check(&DbView::bulk(&self.db))?)
    }

    /// The retention rules, by id.
    pub fn retention_rules(&self) -> Result<Vec<RetentionRule>, MetaError> {
        Ok(state::retention_rules(&self.view()?)?)
    }

    pub fn proxies(&self) -> Result<Vec<ProxyUpstream>, MetaError> {
        Ok(state::proxies(&self.view()?)?)
    }

    pub fn replication_rules(&self) -> Result<Vec<cluster_api::ReplicationRule>, MetaError> {
        Ok(state::replication_rules(&self.view()?)?)
    }

    /// The push rules' backlog: (rule, repository, sequence of its last change), at most
    /// `limit`.
    pub fn replication_backlog(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, RepositoryName, u64)>, MetaError> {
        Ok(state::replication_backlog(&self.view()?, limit)?)
    }

    pub fn replication_status(&self) -> Result<Vec<cluster_api::ReplicationStatus>, MetaError> {
        Ok(state::replication_status(&self.view()?)?
            .into_values()
            .collect())
    }

    /// Cached manifests not pulled for their upstream's cache TTL at `now_ms`, with the last
    /// pull seen (what [`Command::EvictCached`] takes), at most `limit`. Content an upstream no
    /// longer covers (removed, or its TTL 0) stays.
    pub fn idle_cached(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(RepositoryName, Digest, u64)>, MetaError> {
        self.view()?;
        let view = DbView::frozen(&self.db);
        let proxies = state::proxies(&view)?;
        if proxies.iter().all(|proxy| proxy.cache_ttl_secs == 0) {
            return Ok(Vec::new());
        }
        let mut idle = Vec::new();
        for (repo, digest, seen) in state::cache_accesses(&view)? {
            let Some((proxy, _)) = cluster_api::proxy_for(&proxies, repo.as_str()) else {
                continue;
            };
            let ttl_ms = proxy.cache_ttl_secs.saturating_mul(1000);
            if ttl_ms > 0 && seen.saturating_add(ttl_ms) < now_ms {
                idle.push((repo, digest, seen));
                if idle.len() >= limit {
                    break;
                }
            }
        }
        Ok(idle)
    }

    /// What the retention rules would remove at `now_ms` (with `dry_run` rules when
    /// `include_dry_run`), read from one point-in-time view.
    pub fn retention_plan(
        &self,
        now_ms: u64,
        include_dry_run: bool,
    ) -> Result<Vec<RetentionAction>, MetaError> {
        self.view()?;
        Ok(crate::retention::plan(
            &DbView::frozen(&self.db),
            now_ms,
            include_dry_run,
        )?)
    }

    /// Usage of `namespace`, or of every namespace that holds something or has a quota (in name
    /// order) when `None`.
    pub fn usage(&self, namespace: Option<&str>) -> Result<Vec<NamespaceUsage>, MetaError> {
        let view = self.view()?;
        let quotas = state::quotas(&view)?;
        let mut names: std::collections::BTreeSet<String> = quotas.keys().cloned().collect();
        match namespace {
            Some(namespace) => {
                names.clear();
                names.insert(namespace.to_owned());
            }
            None => view.scan(Table::Usage, b"", None, &mut |key, _| {
                let [name] = split_key::<1>("usage key", key)?;
                names.insert(name.to_owned());
                Ok(true)
            })?,
        }
        let mut usage = Vec::with_capacity(names.len());
        for name in names {
            let record = state::usage(&view, &name)?;
            usage.push(NamespaceUsage {
                quota_bytes: quotas.get(&name).copied(),
                namespace: name,
                logical_bytes: record.logical_bytes,
                physical_bytes: record.physical_bytes,
                blobs: record.blobs,
                manifests: record.manifests,
            });
        }
        Ok(usage)
    }

    /// Those of `ids` that are upload tokens started at or after `since_ms` and after the fence
    /// horizon (so they could still commit), in the order given.
    pub fn open_uploads(
        &self,
        ids: &[UploadId],
        since_ms: u64,
    ) -> Result<Vec<UploadId>, MetaError> {
        let horizon = state::fence_horizon(&self.view()?)?;
        Ok(ids
            .iter()
            .filter(|id| {
                UploadToken::decode(id).is_some_and(|token| {
                    token.started_ms() >= since_ms.max(horizon + refs::FENCE_MARGIN_MS)
                })
            })
            .cloned()
            .collect())
    }

    /// Doomed blobs whose copy on `node` is still to be deleted, in digest order after `after`,
    /// at most `n`.
    pub fn doomed_blobs(
        &self,
        node: BlobNodeId,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<DoomedBlob>, MetaError> {
        let mut doomed = Vec::new();
        if n == 0 {
            return Ok(doomed);
        }
        let after = after.map(|digest| digest.to_string().into_bytes());
        self.view()?
            .scan(Table::Doomed, b"", after.as_deref(), &mut |key, value| {
                let record: DoomedRecord = decode("doomed blob", value)?;
                if record.pending.contains(&node) {
                    doomed.push(DoomedBlob {
                        digest: parse_digest("doomed blob key", key)?,
                        size: record.size,
                        generation: record.generation,
                    });
                }
                Ok(doomed.len() < n)
            })?;
        Ok(doomed)
    }

    /// Blob `digest` as linked in `repo`; else `BlobUnknown`. Under placement rules, its replicas
    /// in the zones `repo`'s rules allow come first (otherwise in their recorded order), so a
    /// read is served from a copy inside the zones whenever one exists.
    pub fn stat_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobInfo, MetaError> {
        let view = self.view()?;
        if !state::blob_linked(&view, repo, digest)? {
            return Err(MetaError::BlobUnknown(digest.clone()));
        }
        let Some(record) = state::blob(&view, digest)? else {
            return Err(MetaError::BlobUnknown(digest.clone()));
        };
        let mut info = record.info(digest.clone());
        let rules = state::placement_rules(&view)?;
        let placement = cluster_api::RepoPlacement::for_repository(&rules, repo.as_str());
        if !placement.is_unrestricted() {
            let nodes = state::blob_nodes(&view)?;
            let in_zones = |id: &BlobNodeId| {
                nodes
                    .iter()
                    .any(|node| node.id == *id && placement.allows(&node.zone))
            };
            info.replicas.sort_by_key(|id| !in_zones(id));
        }
        Ok(info)
    }

    /// The manifest a tag or digest names in `repo`; else `ManifestUnknown`.
    pub fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest, MetaError> {
        let view = self.view()?;
        let unknown = || MetaError::ManifestUnknown(reference.to_string());
        let digest = match reference {
            Reference::Tag(tag) => state::tag(&view, repo, tag)?.ok_or_else(unknown)?,
            Reference::Digest(digest) if state::manifest_linked(&view, repo, digest)? => {
                digest.clone()
            }
            Reference::Digest(_) => return Err(unknown()),
        };
        let record = state::manifest(&view, &digest)?.ok_or_else(unknown)?;
        Ok(StoredManifest {
            digest,
            media_type: record.media_type,
            bytes: record.bytes,
        })
    }

    /// Tags of `repo` in lexical order, at most `n`, strictly after `last`; `NameUnknown` when
    /// the repository does not exist.
    pub fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, MetaError> {
        let view = self.view()?;
        if !state::repository_exists(&view, repo)? {
            return Err(MetaError::NameUnknown(repo.to_string()));
        }
        let group = prefix(&[repo.as_str()]);
        let after = last.map(|last| [group.as_slice(), last.as_bytes()].concat());
        page(&view, Table::Tags, &group, after.as_deref(), n, |key| {
            let [_, tag] = split_key::<2>("tag key", key)?;
            Ok(tag.to_owned())
        })
    }

    /// Repository names in lexical order, at most `n`, strictly after `last`.
    pub fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Page, MetaError> {
        let after = last.map(str::as_bytes);
        page(&self.view()?, Table::Repositories, b"", after, n, |key| {
            let [repo] = split_key::<1>("repository key", key)?;
            Ok(repo.to_owned())
        })
    }

    /// Referrer descriptors of `subject` in `repo`, optionally only those of `artifact_type`,
    /// ordered by digest. An unknown repository or subject has none.
    pub fn list_referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        let mut referrers = Vec::new();
        let group = prefix(&[repo.as_str(), &subject.to_string()]);
        self.view()?
            .scan(Table::Referrers, &group, None, &mut |_, value| {
                let descriptor: Descriptor = decode("referrer descriptor", value)?;
                if artifact_type.is_none() || descriptor.artifact_type.as_deref() == artifact_type {
                    referrers.push(descriptor);
                }
                Ok(true)
            })?;
        Ok(referrers)
    }

    /// The blob nodes of the cluster map, by id, whatever their state.
    pub fn blob_nodes(&self) -> Result<Vec<BlobNodeInfo>, MetaError> {
        Ok(state::blob_nodes(&self.view()?)?)
    }

    /// The cluster map: members by id with their states, the replication policy, the epoch.
    pub fn cluster_map(&self) -> Result<ClusterMap, MetaError> {
        Ok(state::cluster_map(&self.view()?)?)
    }

    /// The access-control state.
    pub fn auth_state(&self) -> Result<AuthState, MetaError> {
        Ok(state::auth(&self.view()?)?)
    }

    /// The map's epoch alone (cheap: one key).
    pub fn epoch(&self) -> Result<u64, MetaError> {
        Ok(state::epoch(&self.view()?)?)
    }

    /// Global blob records in digest order strictly after `after`, at most `n`, each with its
    /// placement: the rule sets of the repositories linking it, under the rules as they stand.
    pub fn list_blobs(&self, after: Option<&Digest>, n: usize) -> Result<Vec<BlobInfo>, MetaError> {
        let mut blobs = Vec::new();
        if n == 0 {
            return Ok(blobs);
        }
        let after = after.map(|digest| digest.to_string().into_bytes());
        let view = self.view()?;
        view.scan(Table::Blobs, b"", after.as_deref(), &mut |key, value| {
            let record: BlobRecord = decode("blob record", value)?;
            blobs.push(record.info(parse_digest("blob key", key)?));
            Ok(blobs.len() < n)
        })?;
        let rules = state::placement_rules(&view)?;
        for blob in &mut blobs {
            blob.placement = state::placement_sets(&view, &rules, &blob.digest)?;
        }
        Ok(blobs)
    }
}

/// Up to `n` names from the keys under `group`, strictly after `after`, and whether more follow.
fn page(
    view: &DbView<'_>,
    table: Table,
    group: &[u8],
    after: Option<&[u8]>,
    n: usize,
    name_of: impl Fn(&[u8]) -> Result<String, StoreError>,
) -> Result<Page, MetaError> {
    let mut items = Vec::new();
    let mut more = false;
    view.scan(table, group, after, &mut |key, _| {
        if items.len() == n {
            more = true;
            return Ok(false);
        }
        items.push(name_of(key)?);
        Ok(true)
    })?;
    Ok(Page { items, more })
}
