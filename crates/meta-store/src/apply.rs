//! What each [`Command`] does to the state. Every handler checks first and writes after, so a
//! command that fails leaves nothing behind; none reads a clock or a random source.

use cluster_api::{
    AuthChange, BlobInfo, BlobNodeId, BlobNodeInfo, MetaError, NodeState, PlacementRule,
    PutManifest, ReplicationPolicy, RepoPlacement, RetentionRule, SweepReport, UploadId,
    UploadToken,
};
use oci_model::{Digest, RepositoryName, Tag};

use crate::command::{Command, CommandOutput, CommandResponse};
use crate::db::Table;
use crate::error::StoreError;
use crate::kv::{KvRead, Txn};
use crate::refs;
use crate::state::{self, BlobRecord, TagRecord};

/// A handler's result: the domain outcome, or a storage failure that stops the state machine.
type Outcome = Result<Result<CommandOutput, MetaError>, StoreError>;

const DONE: Result<CommandOutput, MetaError> = Ok(CommandOutput::Done);

pub(crate) fn apply_command(
    txn: &mut Txn<'_>,
    command: Command,
) -> Result<CommandResponse, StoreError> {
    let outcome = match command {
        Command::CreateUpload { .. } | Command::DeleteUpload { .. } => Ok(DONE),
        Command::SetUploadKey { key } => {
            if state::upload_key(txn)?.is_none() {
                state::put_upload_key(txn, &key)?;
            }
            Ok(DONE)
        }
        Command::CommitBlob {
            repo,
            blob,
            upload,
            now_ms,
        } => commit_blob(txn, &repo, blob, upload.as_ref(), now_ms),
        Command::MountBlob {
            repo,
            digest,
            from,
            now_ms,
        } => mount_blob(txn, &repo, &digest, &from, now_ms),
        Command::UnlinkBlob {
            repo,
            digest,
            now_ms,
        } => unlink_blob(txn, &repo, &digest, now_ms),
        Command::PutManifest { put, now_ms } => put_manifest(txn, *put, now_ms, false),
        Command::PutCachedManifest { put, now_ms } => put_manifest(txn, *put, now_ms, true),
        Command::DeleteManifest {
            repo,
            digest,
            now_ms,
        } => delete_manifest(txn, &repo, &digest, now_ms),
        Command::DeleteTag { repo, tag } => delete_tag(txn, &repo, &tag),
        Command::RegisterBlobNode(node) => register_blob_node(txn, &node),
        Command::SetBlobNodeState {
            id,
            state,
            expected,
        } => set_blob_node_state(txn, id, state, expected),
        Command::RemoveBlobNode { id } => remove_blob_node(txn, id),
        Command::SetReplicationPolicy(policy) => set_replication_policy(txn, &policy),
        Command::AddBlobReplicas { digest, nodes } => add_blob_replicas(txn, &digest, &nodes),
        Command::RemoveBlobReplicas { digest, nodes } => remove_blob_replicas(txn, &digest, &nodes),
        Command::ChangeAuth(change) => change_auth(txn, change),
        Command::SetQuota { namespace, bytes } => set_quota(txn, namespace, bytes),
        Command::PutRetentionRule(rule) => put_retention_rule(txn, rule),
        Command::DeleteRetentionRule { id } => delete_retention_rule(txn, &id),
        Command::PutPlacementRule(rule) => put_placement_rule(txn, rule),
        Command::DeletePlacementRule { id } => delete_placement_rule(txn, &id),
        Command::TouchCached { entries, now_ms } => {
            for (repo, digest) in &entries {
                if let Some(seen) = state::cache_access(txn, repo, digest)? {
                    state::put_cache_access(txn, repo, digest, seen.max(now_ms))?;
                }
            }
            Ok(DONE)
        }
        Command::EvictCached { entries, now_ms } => evict_cached(txn, &entries, now_ms),
        Command::PutReplicationRule(rule) => {
            let mut rules = state::replication_rules(txn)?;
            if let Err(error) = cluster_api::put_replication_rule(&mut rules, rule) {
                return Ok(CommandResponse(Err(error)));
            }
            state::put_replication_rules(txn, &rules)?;
            Ok(DONE)
        }
        Command::DeleteReplicationRule { id } => {
            let mut rules = state::replication_rules(txn)?;
            if let Err(error) = cluster_api::delete_replication_rule(&mut rules, &id) {
                return Ok(CommandResponse(Err(error)));
            }
            state::put_replication_rules(txn, &rules)?;
            state::drop_replication_backlog(txn, &id)?;
            let mut status = state::replication_status(txn)?;
            if status.remove(&id).is_some() {
                state::put_replication_status(txn, &status)?;
            }
            Ok(DONE)
        }
        Command::ReplicationDone { rule, repo, seq } => {
            state::replication_done(txn, &rule, &repo, seq)?;
            Ok(DONE)
        }
        Command::RecordReplication(mut recorded) => {
            let rules = state::replication_rules(txn)?;
            if rules.iter().any(|rule| rule.id == recorded.rule) {
                recorded.errors.truncate(cluster_api::MAX_STATUS_ERRORS);
                recorded.refused.truncate(cluster_api::MAX_STATUS_ERRORS);
                let mut status = state::replication_status(txn)?;
                status.insert(recorded.rule.clone(), recorded);
                state::put_replication_status(txn, &status)?;
            }
            Ok(DONE)
        }
        Command::PutProxy(proxy) => {
            let mut proxies = state::proxies(txn)?;
            if let Err(error) = cluster_api::put_proxy(&mut proxies, proxy) {
                return Ok(CommandResponse(Err(error)));
            }
            state::put_proxies(txn, &proxies)?;
            Ok(DONE)
        }
        Command::DeleteProxy { id } => {
            let mut proxies = state::proxies(txn)?;
            if let Err(error) = cluster_api::delete_proxy(&mut proxies, &id) {
                return Ok(CommandResponse(Err(error)));
            }
            state::put_proxies(txn, &proxies)?;
            Ok(DONE)
        }
        Command::BlobsPurged { node, blobs } => {
            for (digest, generation) in &blobs {
                refs::purged(txn, node, digest, *generation)?;
            }
            Ok(DONE)
        }
        Command::DiscardOrphans {
            node,
            blobs,
            now_ms,
        } => {
            let mut doomed = 0;
            for (digest, size) in &blobs {
                if state::blob(txn, digest)?.is_none() {
                    refs::discard_claim(txn, digest, *size, &[node], now_ms)?;
                    doomed += 1;
                }
            }
            Ok(Ok(CommandOutput::Retained(doomed)))
        }
        Command::ApplyRetention { actions, now_ms } => {
            let applied = crate::retention::apply(txn, &actions, now_ms)?;
            let repos: std::collections::BTreeSet<&RepositoryName> = actions
                .iter()
                .map(|action| match action {
                    cluster_api::RetentionAction::Untag { repo, .. }
                    | cluster_api::RetentionAction::DeleteUntagged { repo, .. } => repo,
                })
                .collect();
            for repo in repos {
                state::mark_replication(txn, repo)?;
            }
            Ok(Ok(CommandOutput::Retained(applied)))
        }
        Command::Sweep {
            now_ms,
            links_pushed_before_ms,
            fences_before_ms,
            limit,
        } => sweep(
            txn,
            now_ms,
            (links_pushed_before_ms, fences_before_ms),
            limit,
        ),
        Command::ConfirmBlobDeletions {
            node: _,
            blobs,
            now_ms,
        } => confirm_blob_deletions(txn, &blobs, now_ms),
    }?;
    Ok(CommandResponse(outcome))
}

/// The id of an immutable-tag rule protecting `tag` in `repo`, if any.
fn protecting_rule(
    txn: &Txn<'_>,
    repo: &RepositoryName,
    tag: &Tag,
) -> Result<Option<String>, StoreError> {
    Ok(state::immutable_tag_rules(txn)?
        .into_iter()
        .find(|rule| rule.protects(repo.as_str(), tag.as_str()))
        .map(|rule| rule.id))
}

fn change_auth(txn: &mut Txn<'_>, change: AuthChange) -> Outcome {
    let mut auth = state::auth(txn)?;
    if let Err(error) = auth.apply(change) {
        return Ok(Err(error));
    }
    state::put_auth(txn, &auth)?;
    state::put_immutable_tag_rules(txn, &auth.immutable_tags)?;
    Ok(Ok(CommandOutput::AuthVersion(auth.version)))
}

fn set_quota(txn: &mut Txn<'_>, namespace: String, bytes: Option<u64>) -> Outcome {
    if namespace.is_empty() || namespace.contains('/') {
        return Ok(Err(MetaError::Invalid(format!(
            "{namespace:?} is not a namespace (the first component of a repository name)"
        ))));
    }
    let mut quotas = state::quotas(txn)?;
    match bytes {
        Some(bytes) => quotas.insert(namespace, bytes),
        None => quotas.remove(&namespace),
    };
    state::put_quotas(txn, &quotas)?;
    Ok(DONE)
}

fn put_retention_rule(txn: &mut Txn<'_>, rule: RetentionRule) -> Outcome {
    if let Err(error) = rule.validate() {
        return Ok(Err(error));
    }
    let mut rules = state::retention_rules(txn)?;
    match rules.binary_search_by(|known| known.id.cmp(&rule.id)) {
        Ok(at) => rules[at] = rule,
        Err(at) => rules.insert(at, rule),
    }
    state::put_retention_rules(txn, &rules)?;
    Ok(DONE)
}

fn delete_retention_rule(txn: &mut Txn<'_>, id: &str) -> Outcome {
    let mut rules = state::retention_rules(txn)?;
    let before = rules.len();
    rules.retain(|rule| rule.id != id);
    if rules.len() == before {
        return Ok(Err(MetaError::Invalid(format!(
            "retention rule {id} does not exist"
        ))));
    }
    state::put_retention_rules(txn, &rules)?;
    Ok(DONE)
}

fn put_placement_rule(txn: &mut Txn<'_>, rule: PlacementRule) -> Outcome {
    let nodes = state::blob_nodes(txn)?;
    let zones = nodes.iter().map(|node| node.zone.as_str());
    let mut rules = state::placement_rules(txn)?;
    match cluster_api::put_placement_rule(&mut rules, rule, zones) {
        Err(error) => return Ok(Err(error)),
        Ok(false) => return Ok(DONE),
        Ok(true) => {}
    }
    state::put_placement_rules(txn, &rules)?;
    state::bump_epoch(txn)?;
    Ok(DONE)
}

fn delete_placement_rule(txn: &mut Txn<'_>, id: &str) -> Outcome {
    let mut rules = state::placement_rules(txn)?;
    if let Err(error) = cluster_api::delete_placement_rule(&mut rules, id) {
        return Ok(Err(error));
    }
    state::put_placement_rules(txn, &rules)?;
    state::bump_epoch(txn)?;
    Ok(DONE)
}

/// Where `repo`'s blobs may be stored under the current placement rules.
fn placement_of(txn: &Txn<'_>, repo: &RepositoryName) -> Result<RepoPlacement, StoreError> {
    let rules = state::placement_rules(txn)?;
    Ok(RepoPlacement::for_repository(&rules, repo.as_str()))
}

/// `repo`'s placement rules refuse copies on a node outside the zones they allow (or on a node
/// the map does not list): `PlacementUnmet`, naming the rules and the node.
fn check_placement(
    txn: &Txn<'_>,
    repo: &RepositoryName,
    placement: &RepoPlacement,
    replicas: &[BlobNodeId],
) -> Result<Result<(), MetaError>, StoreError> {
    if placement.is_unrestricted() {
        return Ok(Ok(()));
    }
    for &node in replicas {
        let zone = state::blob_node(txn, node)?.map(|info| info.zone);
        if !zone.as_deref().is_some_and(|zone| placement.allows(zone)) {
            let zone = zone.unwrap_or_else(|| "unknown".into());
            return Ok(Err(MetaError::PlacementUnmet(format!(
                "{} of {repo} does not allow a copy on blob node {node} (zone {zone})",
                placement.describe()
            ))));
        }
    }
    Ok(Ok(()))
}

/// How many of `replicas` a mount into `repo` needs in the zones its placement rules allow
/// before it may link without a copy: none without rules; with rules, the copies they ask for,
/// or fewer when fewer `Up` nodes are in those zones, and at least one.
fn mount_satisfies_placement(
    txn: &Txn<'_>,
    placement: &RepoPlacement,
    replicas: &[BlobNodeId],
) -> Result<bool, StoreError> {
    if placement.is_unrestricted() {
        return Ok(true);
    }
    let map = state::cluster_map(txn)?;
    let in_zones = |id: &BlobNodeId| map.zone_of(*id).is_some_and(|zone| placement.allows(zone));
    let up_in_zones = map
        .members
        .iter()
        .filter(|member| member.state == NodeState::Up && placement.allows(&member.node.zone))
        .count();
    let wanted = (placement.replicas(&map.policy) as usize)
        .min(up_in_zones)
        .max(1);
    Ok(replicas.iter().filter(|node| in_zones(node)).count() >= wanted)
}

fn commit_blob(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    blob: BlobInfo,
    upload: Option<&UploadId>,
    now_ms: u64,
) -> Outcome {
    let started_ms = match upload.map(|id| (id, UploadToken::decode(id))) {
        Some((id, Some(token))) => {
            let signed = state::upload_key(txn)?.is_some_and(|key| token.verify(&key, repo));
            if !signed || token.started_ms() < state::fence_horizon(txn)? + refs::FENCE_MARGIN_MS {
                // Not an upload that may commit (forged, of another repository, or expired):
                // the copies its node wrote are doomed like those of any refused commit.
                refs::discard_claim(txn, &blob.digest, blob.size, &blob.replicas, now_ms)?;
                return Ok(Err(MetaError::UploadUnknown(id.to_string())));
            }
            Some(token.started_ms())
        }
        _ => None,
    };
    if let Err(error) = refs::check_fence(txn, &blob.digest, started_ms)? {
        refs::discard_claim(txn, &blob.digest, blob.size, &blob.replicas, now_ms)?;
        return Ok(Err(error));
    }
    let placement = placement_of(txn, repo)?;
    if let Err(error) = check_placement(txn, repo, &placement, &blob.replicas)? {
        refs::discard_claim(txn, &blob.digest, blob.size, &blob.replicas, now_ms)?;
        return Ok(Err(error));
    }
    if !state::blob_linked(txn, repo, &blob.digest)? {
        if let Err(error) = refs::check_quota(txn, repo, true, &blob.digest, blob.size)? {
            refs::discard_claim(txn, &blob.digest, blob.size, &blob.replicas, now_ms)?;
            return Ok(Err(error));
        }
    }
    let record = match state::blob(txn, &blob.digest)? {
        Some(mut existing) => {
            if existing.size != blob.size {
                let reason = format!(
                    "blob {} is recorded with {} bytes, not {}",
                    blob.digest, existing.size, blob.size
                );
                return Ok(Err(MetaError::Invalid(reason)));
            }
            // Known replicas keep their place in the read order; new ones are appended.
            for node in blob.replicas {
                if !existing.replicas.contains(&node) {
                    existing.replicas.push(node);
                }
            }
            existing
        }
        None => {
            // A doomed blob pushed again comes back with the copies this push wrote; nodes
            // still holding an old copy are told no when they ask to delete it.
            refs::resurrect(txn, &blob.digest);
            BlobRecord {
                size: blob.size,
                replicas: blob.replicas,
                links: 0,
            }
        }
    };
    state::put_blob(txn, &blob.digest, &record)?;
    refs::link_blob(txn, repo, &blob.digest, now_ms)?;
    state::put_repository(txn, repo);
    Ok(DONE)
}

fn mount_blob(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    from: &RepositoryName,
    now_ms: u64,
) -> Outcome {
    if !state::blob_linked(txn, from, digest)? {
        return Ok(Ok(CommandOutput::Mounted(None)));
    }
    let Some(record) = state::blob(txn, digest)? else {
        return Ok(Ok(CommandOutput::Mounted(None)));
    };
    // Data residency: a mount links without copying, so the blob must already hold the copies
    // `repo`'s rules ask for in their zones; else the client uploads it (202), and that upload
    // is staged and replicated in those zones.
    let placement = placement_of(txn, repo)?;
    if !mount_satisfies_placement(txn, &placement, &record.replicas)? {
        return Ok(Ok(CommandOutput::Mounted(None)));
    }
    if !state::blob_linked(txn, repo, digest)? {
        if let Err(error) = refs::check_quota(txn, repo, true, digest, record.size)? {
            return Ok(Err(error));
        }
    }
    refs::link_blob(txn, repo, digest, now_ms)?;
    state::put_repository(txn, repo);
    Ok(Ok(CommandOutput::Mounted(Some(
        record.info(digest.clone()),
    ))))
}

fn unlink_blob(txn: &mut Txn<'_>, repo: &RepositoryName, digest: &Digest, now_ms: u64) -> Outcome {
    let Some(link) = state::blob_link(txn, repo, digest)? else {
        return Ok(Err(MetaError::BlobUnknown(digest.clone())));
    };
    if link.refs > 0 {
        return Ok(Err(MetaError::Denied(format!(
            "blob {digest} is used by {} manifest(s) of {repo}; delete them first",
            link.refs
        ))));
    }
    refs::unlink_blob(txn, repo, digest, link, now_ms)?;
    Ok(DONE)
}

/// A manifest PUT, or with `cached` the pull-through cache's copy of an upstream manifest, whose
/// references need not be linked yet (see `refs::link_manifest`).
fn put_manifest(txn: &mut Txn<'_>, put: PutManifest, now_ms: u64, cached: bool) -> Outcome {
    let repo = &put.repo;
    if cached {
        if cluster_api::proxy_for(&state::proxies(txn)?, repo.as_str()).is_none() {
            return Ok(Err(MetaError::Invalid(format!(
                "{repo} is not under a proxy upstream's prefix: only a pull-through cache \
                 stores manifests whose blobs it has not fetched"
            ))));
        }
    } else {
        for blob in &put.blobs {
            if !state::blob_linked(txn, repo, blob)? {
                return Ok(Err(MetaError::ManifestBlobUnknown(blob.clone())));
            }
        }
        for child in &put.manifests {
            if !state::manifest_linked(txn, repo, child)? {
                return Ok(Err(MetaError::ManifestBlobUnknown(child.clone())));
            }
        }
    }
    let referrer = match (&put.subject, &put.referrer) {
        (None, None) => None,
        (Some(subject), Some(descriptor)) if descriptor.digest == put.digest => {
            Some((subject, descriptor))
        }
        _ => {
            let reason =
                "a manifest's subject and referrer descriptor (of the manifest itself) go together";
            return Ok(Err(MetaError::Invalid(reason.to_owned())));
        }
    };
    let current_tag = match &put.tag {
        Some(tag) => state::tag(txn, repo, tag)?,
        None => None,
    };
    if let Some(tag) = &put.tag {
        if current_tag
            .as_ref()
            .is_some_and(|digest| *digest != put.digest)
        {
            if let Some(rule) = protecting_rule(txn, repo, tag)? {
                return Ok(Err(MetaError::Denied(format!(
                    "tag {tag} of {repo} is immutable (rule {rule}); push under a new tag"
                ))));
            }
        }
    }
    if !state::manifest_linked(txn, repo, &put.digest)? {
        let size = put.bytes.len() as u64;
        if let Err(error) = refs::check_quota(txn, repo, false, &put.digest, size)? {
            return Ok(Err(error));
        }
    }
    if let Some((subject, descriptor)) = referrer {
        state::put_referrer(txn, repo, subject, descriptor)?;
    }
    if let Some(tag) = &put.tag {
        let record = TagRecord {
            digest: put.digest.clone(),
            pushed_ms: now_ms,
        };
        state::put_tag(txn, repo, tag, &record, current_tag.as_ref())?;
    }
    refs::link_manifest(txn, &put, now_ms, cached)?;
    if cached {
        state::put_cache_access(txn, repo, &put.digest, now_ms)?;
    }
    state::put_repository(txn, repo);
    state::mark_replication(txn, repo)?;
    Ok(DONE)
}

/// See [`Command::EvictCached`]: each entry goes only if what the plan saw still holds, so a
/// pull racing the eviction keeps the manifest.
fn evict_cached(
    txn: &mut Txn<'_>,
    entries: &[(RepositoryName, Digest, u64)],
    now_ms: u64,
) -> Outcome {
    let mut evicted = 0;
    for (repo, digest, seen) in entries {
        if state::cache_access(txn, repo, digest)? != Some(*seen) {
            continue;
        }
        let Some(link) = state::manifest_link(txn, repo, digest)? else {
            continue;
        };
        if link.refs > 0 {
            // An index still lists it: it goes with the index.
            continue;
        }
        let mut protected = false;
        for tag in state::tags_pointing_at(txn, repo, digest)? {
            protected |= protecting_rule(txn, repo, &tag)?.is_some();
        }
        if protected {
            continue;
        }
        refs::unlink_manifest(txn, repo, digest, now_ms)?;
        evicted += 1;
    }
    Ok(Ok(CommandOutput::Retained(evicted)))
}

fn delete_manifest(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    now_ms: u64,
) -> Outcome {
    let Some(link) = state::manifest_link(txn, repo, digest)? else {
        return Ok(Err(MetaError::ManifestUnknown(digest.to_string())));
    };
    if link.refs > 0 {
        return Ok(Err(MetaError::Denied(format!(
            "manifest {digest} is listed by {} index(es) of {repo}; delete the index first",
            link.refs
        ))));
    }
    for tag in state::tags_pointing_at(txn, repo, digest)? {
        if let Some(rule) = protecting_rule(txn, repo, &tag)? {
            return Ok(Err(MetaError::Denied(format!(
                "manifest {digest} carries the immutable tag {tag} (rule {rule})"
            ))));
        }
    }
    refs::unlink_manifest(txn, repo, digest, now_ms)?;
    state::mark_replication(txn, repo)?;
    Ok(DONE)
}

fn delete_tag(txn: &mut Txn<'_>, repo: &RepositoryName, tag: &Tag) -> Outcome {
    let Some(digest) = state::tag(txn, repo, tag)? else {
        return Ok(Err(MetaError::ManifestUnknown(tag.to_string())));
    };
    if let Some(rule) = protecting_rule(txn, repo, tag)? {
        return Ok(Err(MetaError::Denied(format!(
            "tag {tag} of {repo} is immutable (rule {rule})"
        ))));
    }
    state::delete_tag(txn, repo, tag, &digest);
    state::mark_replication(txn, repo)?;
    Ok(DONE)
}

/// One garbage-collection sweep; see [`Command::Sweep`]. Each part stops at `limit` rows and
/// reports `more`, so one entry stays small however much is due.
fn sweep(
    txn: &mut Txn<'_>,
    now_ms: u64,
    (links_before_ms, fences_before_ms): (u64, u64),
    limit: u32,
) -> Outcome {
    let limit = limit.max(1) as usize;
    let mut report = SweepReport::default();

    let mut expired = Vec::new();
    txn.scan(Table::Unreferenced, b"", None, &mut |row, _| {
        let (pushed_ms, repo, digest) = state::parse_unreferenced_key(row)?;
        if pushed_ms >= links_before_ms {
            return Ok(false);
        }
        expired.push((pushed_ms, repo, digest));
        Ok(expired.len() <= limit)
    })?;
    if expired.len() > limit {
        expired.truncate(limit);
        report.more = true;
    }
    for (pushed_ms, repo, digest) in expired {
        match state::blob_link(txn, &repo, &digest)? {
            Some(link) if link.refs == 0 && link.pushed_ms == pushed_ms => {
                report.links_removed += 1;
                if refs::unlink_blob(txn, &repo, &digest, link, now_ms)? {
                    report.blobs_doomed += 1;
                }
            }
            // Not the link this row was written for: the row is stale.
            _ => txn.delete(
                Table::Unreferenced,
                state::unreferenced_key(pushed_ms, &repo, &digest),
            ),
        }
    }

    let mut fences = Vec::new();
    txn.scan(Table::Fences, b"t", None, &mut |row, _| {
        let (deleted_ms, digest) = refs::parse_fence_time_key(row)?;
        if deleted_ms >= fences_before_ms {
            return Ok(false);
        }
        fences.push((deleted_ms, digest));
        Ok(fences.len() <= limit)
    })?;
    // Every fence before the horizon is gone; when the page stops short, only those it drops.
    let mut horizon = fences_before_ms;
    if fences.len() > limit {
        fences.truncate(limit);
        report.more = true;
        horizon = fences.last().map_or(0, |(deleted_ms, _)| deleted_ms + 1);
    }
    if horizon > state::fence_horizon(txn)? {
        state::put_fence_horizon(txn, horizon)?;
    }
    for (deleted_ms, digest) in fences {
        txn.delete(Table::Fences, refs::fence_time_key(deleted_ms, &digest));
        if state::fence(txn, &digest)? == Some(deleted_ms) {
            state::delete_fence(txn, &digest);
        }
        report.fences_expired += 1;
    }
    Ok(Ok(CommandOutput::Swept(report)))
}

/// Any node may delete a copy of a blob still doomed in the generation it names (one meta does
/// not list is only an extra copy); a node stays listed until it reports the purge.
fn confirm_blob_deletions(txn: &mut Txn<'_>, blobs: &[(Digest, u64)], now_ms: u64) -> Outcome {
    let mut verdicts = Vec::with_capacity(blobs.len());
    for (digest, generation) in blobs {
        verdicts.push(refs::confirm_deletion(txn, digest, *generation, now_ms)?);
    }
    Ok(Ok(CommandOutput::Confirmed(verdicts)))
}

fn register_blob_node(txn: &mut Txn<'_>, node: &BlobNodeInfo) -> Outcome {
    if state::blob_node(txn, node.id)?.as_ref() != Some(node) {
        state::put_blob_node(txn, node)?;
        state::bump_epoch(txn)?;
    }
    Ok(DONE)
}

fn set_blob_node_state(
    txn: &mut Txn<'_>,
    id: BlobNodeId,
    wanted: NodeState,
    expected: Option<NodeState>,
) -> Outcome {
    if state::blob_node(txn, id)?.is_none() {
        return Ok(Err(MetaError::Invalid(format!(
            "blob node {id} is not known"
        ))));
    }
    let current = state::node_state(txn, id)?;
    if current == wanted || expected.is_some_and(|expected| expected != current) {
        return Ok(DONE);
    }
    state::put_node_state(txn, id, wanted)?;
    state::bump_epoch(txn)?;
    Ok(DONE)
}

fn remove_blob_node(txn: &mut Txn<'_>, id: BlobNodeId) -> Outcome {
    if state::blob_node(txn, id)?.is_some() {
        state::delete_blob_node(txn, id);
        state::bump_epoch(txn)?;
    }
    Ok(DONE)
}

fn set_replication_policy(txn: &mut Txn<'_>, policy: &ReplicationPolicy) -> Outcome {
    if policy.replicas == 0 || policy.write_quorum > policy.replicas {
        let reason = format!(
            "replication policy needs replicas >= 1 and write_quorum <= replicas, not {policy:?}"
        );
        return Ok(Err(MetaError::Invalid(reason)));
    }
    if state::policy(txn)? != *policy {
        state::put_policy(txn, policy)?;
        state::bump_epoch(txn)?;
    }
    Ok(DONE)
}

fn add_blob_replicas(txn: &mut Txn<'_>, digest: &Digest, nodes: &[BlobNodeId]) -> Outcome {
    let Some(mut record) = state::blob(txn, digest)? else {
        // Collected while repair copied it: the new copies are deleted with the others.
        if let Some(doomed) = state::doomed(txn, digest)? {
            refs::discard_claim(txn, digest, doomed.size, nodes, doomed.doomed_ms)?;
        }
        return Ok(Err(MetaError::BlobUnknown(digest.clone())));
    };
    let before = record.replicas.len();
    for node in nodes {
        if !record.replicas.contains(node) {
            record.replicas.push(*node);
        }
    }
    if record.replicas.len() != before {
        state::put_blob(txn, digest, &record)?;
    }
    Ok(DONE)
}

fn remove_blob_replicas(txn: &mut Txn<'_>, digest: &Digest, nodes: &[BlobNodeId]) -> Outcome {
    let Some(mut record) = state::blob(txn, digest)? else {
        return Ok(Err(MetaError::BlobUnknown(digest.clone())));
    };
    let before = record.replicas.len();
    record.replicas.retain(|node| !nodes.contains(node));
    if record.replicas.is_empty() {
        let reason = format!("removing {nodes:?} would leave blob {digest} with no replica");
        return Ok(Err(MetaError::Invalid(reason)));
    }
    if record.replicas.len() != before {
        state::put_blob(txn, digest, &record)?;
    }
    Ok(DONE)
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::db::{open, StoreOptions};
    use crate::testing::{apply, commit, digest, repo, T0_MS};

    #[test]
    fn a_sweep_drops_unreferenced_rows_no_link_matches_and_acts_on_none() {
        let dir = TempDir::new().expect("dir");
        let (db, _closed) = open(dir.path(), &StoreOptions::default()).expect("open");
        for content in ["loose", "used"] {
            assert!(apply(&db, commit("a", content)).0.is_ok());
        }
        let put = PutManifest {
            repo: repo("a"),
            digest: digest("manifest"),
            media_type: oci_model::media_type::OCI_MANIFEST.to_owned(),
            bytes: b"manifest".to_vec(),
            tag: None,
            blobs: vec![digest("used")],
            manifests: Vec::new(),
            subject: None,
            referrer: None,
        };
        let put = Command::PutManifest {
            put: Box::new(put),
            now_ms: T0_MS,
        };
        assert!(apply(&db, put).0.is_ok());
        // Rows the links do not match (as a database written before the rows were kept in step
        // with the links could hold): an older time for the unused blob, and the exact time of
        // a blob a manifest uses.
        let mut txn = Txn::new(&db);
        let used = state::blob_link(&txn, &repo("a"), &digest("used"))
            .expect("read")
            .expect("linked");
        assert_eq!(used.refs, 1);
        for (pushed_ms, content) in [(T0_MS - 5, "loose"), (used.pushed_ms, "used")] {
            txn.put(
                Table::Unreferenced,
                state::unreferenced_key(pushed_ms, &repo("a"), &digest(content)),
                [],
            );
        }
        db.write(txn.into_batch().expect("batch")).expect("write");
        let sweep = Command::Sweep {
            now_ms: T0_MS + 1,
            links_pushed_before_ms: T0_MS + 1,
            fences_before_ms: 0,
            limit: 10,
        };
        let report = match apply(&db, sweep).0 {
            Ok(CommandOutput::Swept(report)) => report,
            other => panic!("a sweep answered {other:?}"),
        };
        // Only the unused blob's real row acts: its link goes and the blob is doomed.
        assert_eq!((report.links_removed, report.blobs_doomed), (1, 1));
        let view = crate::kv::DbView::live(&db);
        assert!(state::blob_linked(&view, &repo("a"), &digest("used")).expect("read"));
        assert!(!state::blob_linked(&view, &repo("a"), &digest("loose")).expect("read"));
        // And the stale rows are gone with it.
        assert_eq!(
            crate::check::check(&view).expect("check"),
            Vec::<String>::new()
        );
    }
}
