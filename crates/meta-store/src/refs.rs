//! The reference graph and its counts, kept exact by every command that adds or removes a link,
//! in the same batch as the change itself.
//!
//! - A **manifest link** `(repo, digest)` is counted in its record's `links`; the record (bytes
//!   included) goes with the last link. The link's own `refs` counts the indexes in the same
//!   repository listing it as a child: such a manifest cannot be deleted on its own.
//! - A **blob link** `(repo, digest)` is counted in the blob record's `links`. Its `refs` counts
//!   the manifests of the repository listing the blob. A link with no reference is listed in
//!   `unreferenced` by its push time: the garbage collector removes it once the upload grace has
//!   passed (an upload waiting for its manifest is never collected before that).
//! - A blob whose last link goes is **doomed**: its record moves to `doomed`, listing the nodes
//!   still holding copies, which delete them through a confirmation (see
//!   [`confirm_deletion`]). A push of the same digest before then brings it back.
//! - Removing a manifest from a repository also removes, in the same batch, what lived only
//!   through it: index children left unreferenced and untagged, and untagged referrers of it.
//! - Each namespace's **usage** (logical: every link; physical: each distinct digest once) moves
//!   with the links.

use cluster_api::{BlobNodeId, MetaError, PutManifest};
use oci_model::{Digest, RepositoryName};

use crate::db::{decode, encode, u64_from_key, u64_key, Table};
use crate::error::StoreError;
use crate::kv::{KvRead, Txn};
use crate::state::{
    self, key, namespace, BlobLinkRecord, BlobRecord, DoomedRecord, ManifestLinkRecord,
    ManifestRecord,
};

/// How far a commit's upload must have started after the last deletion of the same digest on
/// some node for its claim ("this node holds the blob") to be trusted, in ms. A node sets its
/// copy aside before it asks meta to confirm the deletion, so a copy written by an upload that
/// started after the confirmation was never set aside; both times come from the proposing
/// leader's clock, and the margin covers a small step of that clock or skew across a leader
/// change.
pub(crate) const FENCE_MARGIN_MS: u64 = 250;

const GC_GENERATION: &[u8] = b"gc_generation";

#[derive(Clone, Copy)]
enum Kind {
    Blob,
    Manifest,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Blob => "b",
            Kind::Manifest => "m",
        }
    }
}

/// The `namespace_refs` row counting the links of `digest` in namespace `ns`.
fn namespace_ref_key(ns: &str, kind: Kind, digest: &Digest) -> Vec<u8> {
    key(&[ns, kind.tag(), &digest.to_string()])
}

/// Counts one link of `digest` (`size` bytes) more (`added`) or fewer in `repo`'s namespace:
/// logical bytes move with every link, physical bytes and the distinct counts with the first
/// link in and the last link out.
fn count_link(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    (kind, digest, size): (Kind, &Digest, u64),
    added: bool,
) -> Result<(), StoreError> {
    const WHAT: &str = "namespace reference count";
    let ns = namespace(repo);
    let row = namespace_ref_key(ns, kind, digest);
    let count: u32 = txn
        .get(Table::NamespaceRefs, &row)?
        .map(|bytes| decode(WHAT, &bytes))
        .transpose()?
        .unwrap_or(0);
    let count_after = if added {
        count + 1
    } else {
        count.saturating_sub(1)
    };
    let mut usage = state::usage(txn, ns)?;
    if added {
        usage.logical_bytes += size;
    } else {
        usage.logical_bytes = usage.logical_bytes.saturating_sub(size);
    }
    let distinct_change = match (count, count_after) {
        (0, 1) => Some(true),
        (_, 0) => Some(false),
        _ => None,
    };
    if let Some(first_in) = distinct_change {
        let distinct = match kind {
            Kind::Blob => &mut usage.blobs,
            Kind::Manifest => &mut usage.manifests,
        };
        if first_in {
            *distinct += 1;
            usage.physical_bytes += size;
        } else {
            *distinct = distinct.saturating_sub(1);
            usage.physical_bytes = usage.physical_bytes.saturating_sub(size);
        }
    }
    if count_after == 0 {
        txn.delete(Table::NamespaceRefs, row);
    } else {
        txn.put(Table::NamespaceRefs, row, encode(WHAT, &count_after)?);
    }
    state::put_usage(txn, ns, &usage)
}

/// Refuses (`Denied`) linking `digest` (`size` bytes; a blob, else a manifest) into `repo` when
/// its namespace has a quota and the physical bytes would go over it. Something the namespace
/// already holds costs nothing, so a re-push or a second repository never trips the quota.
pub(crate) fn check_quota(
    kv: &impl KvRead,
    repo: &RepositoryName,
    blob: bool,
    digest: &Digest,
    size: u64,
) -> Result<Result<(), MetaError>, StoreError> {
    let ns = namespace(repo);
    let Some(quota) = state::quotas(kv)?.get(ns).copied() else {
        return Ok(Ok(()));
    };
    let kind = if blob { Kind::Blob } else { Kind::Manifest };
    let row = namespace_ref_key(ns, kind, digest);
    if size == 0 || kv.get(Table::NamespaceRefs, &row)?.is_some() {
        return Ok(Ok(()));
    }
    let used = state::usage(kv, ns)?.physical_bytes;
    if used.saturating_add(size) <= quota {
        return Ok(Ok(()));
    }
    Ok(Err(MetaError::Denied(format!(
        "quota exceeded: namespace {ns} uses {used} of its {quota} bytes, and {digest} needs {size} more"
    ))))
}

/// A commit refused after its nodes already stored the blob: their copies must not stay
/// behind unknown to meta. A live blob keeps them (repair counts them); a doomed one adds them
/// to the copies to delete; otherwise the blob is doomed at once, so the nodes delete them.
pub(crate) fn discard_claim(
    txn: &mut Txn<'_>,
    digest: &Digest,
    size: u64,
    replicas: &[BlobNodeId],
    now_ms: u64,
) -> Result<(), StoreError> {
    if state::blob(txn, digest)?.is_some() || replicas.is_empty() {
        return Ok(());
    }
    if let Some(mut doomed) = state::doomed(txn, digest)? {
        for node in replicas {
            if !doomed.pending.contains(node) {
                doomed.pending.push(*node);
            }
        }
        return state::put_doomed(txn, digest, &doomed);
    }
    let record = BlobRecord {
        size,
        replicas: replicas.to_vec(),
        links: 0,
    };
    doom(txn, digest, record, now_ms)
}

fn mark_unreferenced(txn: &mut Txn<'_>, repo: &RepositoryName, digest: &Digest, pushed_ms: u64) {
    txn.put(
        Table::Unreferenced,
        state::unreferenced_key(pushed_ms, repo, digest),
        Vec::new(),
    );
}

fn unmark_unreferenced(txn: &mut Txn<'_>, repo: &RepositoryName, digest: &Digest, pushed_ms: u64) {
    txn.delete(
        Table::Unreferenced,
        state::unreferenced_key(pushed_ms, repo, digest),
    );
}

fn missing(what: &'static str, digest: &Digest) -> StoreError {
    StoreError::corrupt(what, format!("{digest} is referenced but has no record"))
}

/// Links blob `digest` (which has a live record) into `repo` as uploaded or mounted at
/// `now_ms`: a new link starts unreferenced; a known one has its push time moved forward, which
/// restarts its grace when nothing refers to it.
pub(crate) fn link_blob(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    now_ms: u64,
) -> Result<(), StoreError> {
    match state::blob_link(txn, repo, digest)? {
        Some(mut link) => {
            if link.refs == 0 {
                unmark_unreferenced(txn, repo, digest, link.pushed_ms);
            }
            link.pushed_ms = link.pushed_ms.max(now_ms);
            if link.refs == 0 {
                mark_unreferenced(txn, repo, digest, link.pushed_ms);
            }
            state::put_blob_link(txn, repo, digest, &link)
        }
        None => {
            let mut record = state::blob(txn, digest)?.ok_or_else(|| missing("blob", digest))?;
            // Cached manifests that listed the blob before it was here use it from now on.
            let refs = state::pending_refs(txn, repo, true, digest)?;
            state::put_pending_refs(txn, repo, true, digest, 0)?;
            let link = BlobLinkRecord {
                refs,
                pushed_ms: now_ms,
            };
            state::put_blob_link(txn, repo, digest, &link)?;
            if refs == 0 {
                mark_unreferenced(txn, repo, digest, now_ms);
            }
            record.links += 1;
            count_link(txn, repo, (Kind::Blob, digest, record.size), true)?;
            state::put_blob(txn, digest, &record)
        }
    }
}

/// Removes the link of blob `digest` from `repo`; dooms the blob when it was the last one.
/// Returns whether the blob was doomed.
pub(crate) fn unlink_blob(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    link: BlobLinkRecord,
    now_ms: u64,
) -> Result<bool, StoreError> {
    state::delete_blob_link(txn, repo, digest);
    if link.refs == 0 {
        unmark_unreferenced(txn, repo, digest, link.pushed_ms);
    }
    let mut record = state::blob(txn, digest)?.ok_or_else(|| missing("blob", digest))?;
    count_link(txn, repo, (Kind::Blob, digest, record.size), false)?;
    record.links = record.links.saturating_sub(1);
    if record.links > 0 {
        state::put_blob(txn, digest, &record)?;
        return Ok(false);
    }
    doom(txn, digest, record, now_ms)?;
    Ok(true)
}

/// Takes a blob no repository links out of the registry: its copies are now to be deleted.
fn doom(
    txn: &mut Txn<'_>,
    digest: &Digest,
    record: BlobRecord,
    now_ms: u64,
) -> Result<(), StoreError> {
    state::delete_blob(txn, digest);
    if record.replicas.is_empty() {
        return Ok(());
    }
    let generation = next_generation(txn)?;
    let doomed = DoomedRecord {
        size: record.size,
        pending: record.replicas,
        generation,
        doomed_ms: now_ms,
    };
    state::put_doomed(txn, digest, &doomed)
}

fn next_generation(txn: &mut Txn<'_>) -> Result<u64, StoreError> {
    let next = state::cluster_value::<u64>(txn, GC_GENERATION, "gc generation")? + 1;
    state::put_cluster_value(txn, GC_GENERATION, "gc generation", &next)?;
    Ok(next)
}

/// `node` asks to delete its copy of `digest` collected in `generation`. True (and a fence
/// remembers when) when the blob is still doomed in that generation; false when it was pushed
/// again or doomed anew since. The node stays listed until it reports the copy purged
/// ([`purged`]): a node that dies between the two puts its copy back when it restarts, finds the
/// blob still doomed on it, and deletes it again, so no copy outlives a crash as an orphan.
pub(crate) fn confirm_deletion(
    txn: &mut Txn<'_>,
    digest: &Digest,
    generation: u64,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let confirmed =
        state::doomed(txn, digest)?.is_some_and(|doomed| doomed.generation == generation);
    if confirmed {
        put_fence(txn, digest, now_ms)?;
    }
    Ok(confirmed)
}

/// `node` purged its copy of `digest` (generation `generation`): it is no longer listed, and
/// the doomed record goes with the last copy. A report for another generation changes nothing.
pub(crate) fn purged(
    txn: &mut Txn<'_>,
    node: BlobNodeId,
    digest: &Digest,
    generation: u64,
) -> Result<(), StoreError> {
    let Some(mut doomed) = state::doomed(txn, digest)? else {
        return Ok(());
    };
    if doomed.generation != generation {
        return Ok(());
    }
    doomed.pending.retain(|pending| *pending != node);
    if doomed.pending.is_empty() {
        state::delete_doomed(txn, digest);
        Ok(())
    } else {
        state::put_doomed(txn, digest, &doomed)
    }
}

/// Remembers that a copy of `digest` was deleted at `now_ms`, replacing an earlier fence.
fn put_fence(txn: &mut Txn<'_>, digest: &Digest, now_ms: u64) -> Result<(), StoreError> {
    if let Some(earlier) = state::fence(txn, digest)? {
        txn.delete(Table::Fences, fence_time_key(earlier, digest));
    }
    state::put_fence(txn, digest, now_ms)?;
    txn.put(Table::Fences, fence_time_key(now_ms, digest), Vec::new());
    Ok(())
}

/// The time-ordered twin of a fence row, so expired fences are found without a full scan.
/// Fence rows are keyed `d` + digest; these `t` + time + digest.
pub(crate) fn fence_time_key(deleted_ms: u64, digest: &Digest) -> Vec<u8> {
    let mut row = b"t".to_vec();
    row.extend_from_slice(&u64_key(deleted_ms));
    row.extend_from_slice(digest.to_string().as_bytes());
    row
}

/// Splits a row written by [`fence_time_key`].
pub(crate) fn parse_fence_time_key(row: &[u8]) -> Result<(u64, Digest), StoreError> {
    const WHAT: &str = "fence time key";
    let rest = row
        .strip_prefix(b"t")
        .filter(|rest| rest.len() > 8)
        .ok_or_else(|| StoreError::corrupt(WHAT, "not t + time + digest"))?;
    let (time, digest) = rest.split_at(8);
    Ok((
        u64_from_key(WHAT, time)?,
        state::parse_digest(WHAT, digest)?,
    ))
}

/// Refuses a commit whose claim that its nodes hold `digest` may predate the deletion of a
/// copy: the upload must have started after the last deletion (with a margin). A commit
/// without its session (a retry after the session closed) cannot tell, so it is refused too
/// while a fence stands.
pub(crate) fn check_fence(
    kv: &impl KvRead,
    digest: &Digest,
    started_ms: Option<u64>,
) -> Result<Result<(), MetaError>, StoreError> {
    let Some(deleted_ms) = state::fence(kv, digest)? else {
        return Ok(Ok(()));
    };
    let trusted = started_ms.is_some_and(|started| started > deleted_ms + FENCE_MARGIN_MS);
    if trusted {
        Ok(Ok(()))
    } else {
        Ok(Err(MetaError::Retry(format!(
            "a copy of blob {digest} was garbage-collected while this upload was in flight"
        ))))
    }
}

/// Forgets that `digest` was doomed (if it was): a push brought it back, and the caller records
/// it live with the copies that push wrote. Nodes still to delete their old copies will be told
/// no and put them back; repair then counts them again where they belong.
pub(crate) fn resurrect(txn: &mut Txn<'_>, digest: &Digest) {
    state::delete_doomed(txn, digest);
}

fn add_blob_ref(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<(), StoreError> {
    let mut link =
        state::blob_link(txn, repo, digest)?.ok_or_else(|| missing("blob link", digest))?;
    if link.refs == 0 {
        unmark_unreferenced(txn, repo, digest, link.pushed_ms);
    }
    link.refs += 1;
    state::put_blob_link(txn, repo, digest, &link)
}

fn add_pending_ref(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    blob: bool,
    digest: &Digest,
) -> Result<(), StoreError> {
    let count = state::pending_refs(txn, repo, blob, digest)?;
    state::put_pending_refs(txn, repo, blob, digest, count + 1)
}

/// One cached manifest fewer lists `digest`, which is not linked in `repo`; `false` when no
/// pending reference was counted either.
fn drop_pending_ref(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    blob: bool,
    digest: &Digest,
) -> Result<bool, StoreError> {
    let count = state::pending_refs(txn, repo, blob, digest)?;
    if count == 0 {
        return Ok(false);
    }
    state::put_pending_refs(txn, repo, blob, digest, count - 1)?;
    Ok(true)
}

/// One manifest fewer uses blob `digest` in `repo`. When it was the last, the link's grace starts
/// again from `now_ms`: a client that has just seen the blob (a `HEAD` before pushing a manifest
/// that uses it) still finds it for the whole grace.
fn drop_blob_ref(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    now_ms: u64,
) -> Result<(), StoreError> {
    let Some(mut link) = state::blob_link(txn, repo, digest)? else {
        // A cached manifest's blob that was never fetched.
        if drop_pending_ref(txn, repo, true, digest)? {
            return Ok(());
        }
        return Err(missing("blob link", digest));
    };
    link.refs = link.refs.saturating_sub(1);
    if link.refs == 0 {
        link.pushed_ms = link.pushed_ms.max(now_ms);
        mark_unreferenced(txn, repo, digest, link.pushed_ms);
    }
    state::put_blob_link(txn, repo, digest, &link)
}

/// Links the manifest of `put` into its repository (pushed at `now_ms`), counting its references
/// to blobs and children the first time. Every reference must already be linked (checked by
/// the caller), except for a `cached` manifest (the pull-through cache's copy of an upstream
/// one): its references to what is not linked yet are counted in `pending_refs`, and the link,
/// when it comes ([`link_blob`], or this function for a child), takes them up as its `refs`.
pub(crate) fn link_manifest(
    txn: &mut Txn<'_>,
    put: &PutManifest,
    now_ms: u64,
    cached: bool,
) -> Result<(), StoreError> {
    let repo = &put.repo;
    if let Some(mut link) = state::manifest_link(txn, repo, &put.digest)? {
        link.pushed_ms = link.pushed_ms.max(now_ms);
        return state::put_manifest_link(txn, repo, &put.digest, &link);
    }
    let record = match state::manifest(txn, &put.digest)? {
        Some(mut record) => {
            record.links += 1;
            record
        }
        None => ManifestRecord {
            media_type: put.media_type.clone(),
            bytes: put.bytes.clone(),
            subject: put.subject.clone(),
            blobs: put.blobs.clone(),
            manifests: put.manifests.clone(),
            links: 1,
        },
    };
    // Cached indexes that listed this manifest before it was here.
    let refs = state::pending_refs(txn, repo, false, &put.digest)?;
    state::put_pending_refs(txn, repo, false, &put.digest, 0)?;
    let link = ManifestLinkRecord {
        refs,
        pushed_ms: now_ms,
    };
    state::put_manifest_link(txn, repo, &put.digest, &link)?;
    for blob in record.distinct_blobs() {
        if cached && state::blob_link(txn, repo, &blob)?.is_none() {
            add_pending_ref(txn, repo, true, &blob)?;
        } else {
            add_blob_ref(txn, repo, &blob)?;
        }
    }
    for child in record.distinct_children() {
        match state::manifest_link(txn, repo, &child)? {
            Some(mut child_link) => {
                child_link.refs += 1;
                state::put_manifest_link(txn, repo, &child, &child_link)?;
            }
            None if cached => add_pending_ref(txn, repo, false, &child)?,
            None => return Err(missing("manifest link", &child)),
        }
    }
    let size = record.bytes.len() as u64;
    count_link(txn, repo, (Kind::Manifest, &put.digest, size), true)?;
    state::put_manifest(txn, &put.digest, &record)
}

/// Removes manifest `digest` from `repo` with its tags and referrer entry, releasing its
/// references; then, in the same batch, every manifest of the repository that lived only through
/// it (index children now unreferenced and untagged, untagged referrers of it). The caller has
/// checked that `digest` is linked, listed by no index and carries no protected tag.
pub(crate) fn unlink_manifest(
    txn: &mut Txn<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    now_ms: u64,
) -> Result<(), StoreError> {
    let mut pending = vec![digest.clone()];
    while let Some(current) = pending.pop() {
        if state::manifest_link(txn, repo, &current)?.is_none() {
            continue;
        }
        let mut record =
            state::manifest(txn, &current)?.ok_or_else(|| missing("manifest", &current))?;
        for tag in state::tags_pointing_at(txn, repo, &current)? {
            state::delete_tag(txn, repo, &tag, &current);
        }
        if let Some(subject) = &record.subject {
            state::delete_referrer(txn, repo, subject, &current);
        }
        for blob in record.distinct_blobs() {
            drop_blob_ref(txn, repo, &blob, now_ms)?;
        }
        for child in record.distinct_children() {
            let Some(mut link) = state::manifest_link(txn, repo, &child)? else {
                // A cached index's child that was never fetched.
                drop_pending_ref(txn, repo, false, &child)?;
                continue;
            };
            link.refs = link.refs.saturating_sub(1);
            state::put_manifest_link(txn, repo, &child, &link)?;
            if link.refs == 0 && state::tags_pointing_at(txn, repo, &child)?.is_empty() {
                pending.push(child);
            }
        }
        for referrer in state::referrers_of(txn, repo, &current)? {
            let unreferenced =
                state::manifest_link(txn, repo, &referrer)?.is_some_and(|link| link.refs == 0);
            if unreferenced && state::tags_pointing_at(txn, repo, &referrer)?.is_empty() {
                pending.push(referrer);
            }
        }
        state::delete_manifest_link(txn, repo, &current);
        state::delete_cache_access(txn, repo, &current);
        let size = record.bytes.len() as u64;
        count_link(txn, repo, (Kind::Manifest, &current, size), false)?;
        record.links = record.links.saturating_sub(1);
        if record.links == 0 {
            state::delete_manifest(txn, &current);
        } else {
            state::put_manifest(txn, &current, &record)?;
        }
    }
    Ok(())
}
