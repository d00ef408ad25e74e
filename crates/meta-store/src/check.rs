//! The reference counts recomputed from scratch and compared with what the state machine keeps:
//! the meta half of `wharf admin fsck`, and the oracle the lifecycle tests hold every command to.
//! It reads one point-in-time view, so it may run beside the live state machine.

use std::collections::{BTreeMap, BTreeSet};

use oci_model::{Digest, RepositoryName};

use crate::db::{decode, Table};
use crate::error::StoreError;
use crate::kv::KvRead;
use crate::state::{
    self, namespace, parse_digest, parse_repo, split_key, BlobLinkRecord, BlobRecord,
    ManifestLinkRecord, ManifestRecord, TagRecord, UsageRecord,
};

type Links<T> = BTreeMap<(RepositoryName, Digest), T>;

fn rows<T: serde::de::DeserializeOwned>(
    kv: &impl KvRead,
    table: Table,
    what: &'static str,
) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
    let mut rows = Vec::new();
    kv.scan(table, b"", None, &mut |key, value| {
        rows.push((key.to_vec(), decode(what, value)?));
        Ok(true)
    })?;
    Ok(rows)
}

fn link_key(what: &'static str, key: &[u8]) -> Result<(RepositoryName, Digest), StoreError> {
    let [repo, digest] = split_key::<2>(what, key)?;
    Ok((
        parse_repo(what, repo)?,
        parse_digest(what, digest.as_bytes())?,
    ))
}

/// Every disagreement between the stored counts and the graph, as one line each; empty when
/// the state is consistent.
pub(crate) fn check(kv: &impl KvRead) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let manifests: BTreeMap<Digest, ManifestRecord> = rows(kv, Table::Manifests, "manifest")?
        .into_iter()
        .map(|(key, record)| Ok((parse_digest("manifest key", &key)?, record)))
        .collect::<Result<_, StoreError>>()?;
    let blobs: BTreeMap<Digest, BlobRecord> = rows(kv, Table::Blobs, "blob")?
        .into_iter()
        .map(|(key, record)| Ok((parse_digest("blob key", &key)?, record)))
        .collect::<Result<_, StoreError>>()?;
    let manifest_links: Links<ManifestLinkRecord> =
        rows(kv, Table::ManifestLinks, "manifest link")?
            .into_iter()
            .map(|(key, link)| Ok((link_key("manifest link key", &key)?, link)))
            .collect::<Result<_, StoreError>>()?;
    let blob_links: Links<BlobLinkRecord> = rows(kv, Table::BlobLinks, "blob link")?
        .into_iter()
        .map(|(key, link)| Ok((link_key("blob link key", &key)?, link)))
        .collect::<Result<_, StoreError>>()?;

    // What the graph says each count should be.
    let mut child_refs: Links<u32> = BTreeMap::new();
    let mut blob_refs: Links<u32> = BTreeMap::new();
    let mut manifest_link_counts: BTreeMap<Digest, u32> = BTreeMap::new();
    let mut usage: BTreeMap<String, UsageRecord> = BTreeMap::new();
    let mut distinct: BTreeSet<(String, bool, Digest)> = BTreeSet::new();
    for (repo, digest) in manifest_links.keys() {
        *manifest_link_counts.entry(digest.clone()).or_default() += 1;
        let Some(record) = manifests.get(digest) else {
            problems.push(format!(
                "{repo} links manifest {digest}, which has no record"
            ));
            continue;
        };
        for child in record.distinct_children() {
            *child_refs.entry((repo.clone(), child)).or_default() += 1;
        }
        for blob in record.distinct_blobs() {
            *blob_refs.entry((repo.clone(), blob)).or_default() += 1;
        }
        let ns = namespace(repo).to_owned();
        let size = record.bytes.len() as u64;
        let entry = usage.entry(ns.clone()).or_default();
        entry.logical_bytes += size;
        if distinct.insert((ns, false, digest.clone())) {
            entry.physical_bytes += size;
            entry.manifests += 1;
        }
    }
    let mut blob_link_counts: BTreeMap<Digest, u32> = BTreeMap::new();
    for (repo, digest) in blob_links.keys() {
        *blob_link_counts.entry(digest.clone()).or_default() += 1;
        let Some(record) = blobs.get(digest) else {
            problems.push(format!(
                "{repo} links blob {digest}, which has no live record"
            ));
            continue;
        };
        let ns = namespace(repo).to_owned();
        let entry = usage.entry(ns.clone()).or_default();
        entry.logical_bytes += record.size;
        if distinct.insert((ns, true, digest.clone())) {
            entry.physical_bytes += record.size;
            entry.blobs += 1;
        }
    }

    for ((repo, digest), link) in &manifest_links {
        let expected = child_refs
            .get(&(repo.clone(), digest.clone()))
            .copied()
            .unwrap_or(0);
        if link.refs != expected {
            problems.push(format!(
                "manifest {digest} in {repo}: {} index references kept, {expected} in the graph",
                link.refs
            ));
        }
    }
    for (repo, digest) in child_refs.keys() {
        if !manifest_links.contains_key(&(repo.clone(), digest.clone())) {
            problems.push(format!(
                "an index in {repo} lists {digest}, which is not linked"
            ));
        }
    }
    let unreferenced: BTreeSet<Vec<u8>> = {
        let mut keys = BTreeSet::new();
        kv.scan(Table::Unreferenced, b"", None, &mut |key, _| {
            keys.insert(key.to_vec());
            Ok(true)
        })?;
        keys
    };
    let mut expected_unreferenced = BTreeSet::new();
    for ((repo, digest), link) in &blob_links {
        let expected = blob_refs
            .get(&(repo.clone(), digest.clone()))
            .copied()
            .unwrap_or(0);
        if link.refs != expected {
            problems.push(format!(
                "blob {digest} in {repo}: {} manifest references kept, {expected} in the graph",
                link.refs
            ));
        }
        if link.refs == 0 {
            expected_unreferenced.insert(state::unreferenced_key(link.pushed_ms, repo, digest));
        }
    }
    for (repo, digest) in blob_refs.keys() {
        if !blob_links.contains_key(&(repo.clone(), digest.clone())) {
            problems.push(format!(
                "a manifest in {repo} lists blob {digest}, which is not linked"
            ));
        }
    }
    if unreferenced != expected_unreferenced {
        problems.push(format!(
            "{} unreferenced-link rows kept, {} expected ({} differ)",
            unreferenced.len(),
            expected_unreferenced.len(),
            unreferenced
                .symmetric_difference(&expected_unreferenced)
                .count()
        ));
    }
    for (digest, record) in &manifests {
        let expected = manifest_link_counts.get(digest).copied().unwrap_or(0);
        if record.links != expected || expected == 0 {
            problems.push(format!(
                "manifest {digest}: {} links kept, {expected} in the graph",
                record.links
            ));
        }
    }
    for (digest, record) in &blobs {
        let expected = blob_link_counts.get(digest).copied().unwrap_or(0);
        if record.links != expected || expected == 0 {
            problems.push(format!(
                "blob {digest}: {} links kept, {expected} in the graph",
                record.links
            ));
        }
        if state::doomed(kv, digest)?.is_some() {
            problems.push(format!("blob {digest} is both live and doomed"));
        }
    }
    let kept: BTreeMap<String, UsageRecord> = rows(kv, Table::Usage, "namespace usage")?
        .into_iter()
        .map(|(key, record)| Ok((split_key::<1>("usage key", &key)?[0].to_owned(), record)))
        .collect::<Result<_, StoreError>>()?;
    if kept != usage {
        problems.push(format!(
            "namespace usage kept {kept:?}, recomputed {usage:?}"
        ));
    }
    let ns_refs = {
        let mut count = 0usize;
        kv.scan(Table::NamespaceRefs, b"", None, &mut |_, _| {
            count += 1;
            Ok(true)
        })?;
        count
    };
    if ns_refs != distinct.len() {
        problems.push(format!(
            "{ns_refs} namespace reference rows kept, {} distinct (namespace, digest) pairs",
            distinct.len()
        ));
    }
    for (key, tag) in rows::<TagRecord>(kv, Table::Tags, "tag")? {
        let [repo, name] = split_key::<2>("tag key", &key)?;
        let repo = parse_repo("tag key", repo)?;
        if !manifest_links.contains_key(&(repo.clone(), tag.digest.clone())) {
            problems.push(format!(
                "tag {name} of {repo} points at unlinked {}",
                tag.digest
            ));
        }
    }
    for index in crate::derived::ALL {
        check_index(kv, index, &mut problems)?;
    }
    Ok(problems)
}

/// A derived index holds exactly the rows its source implies.
fn check_index(
    kv: &impl KvRead,
    index: &crate::derived::DerivedIndex,
    problems: &mut Vec<String>,
) -> Result<(), StoreError> {
    let mut implied = BTreeSet::new();
    kv.scan(index.source, b"", None, &mut |key, value| {
        implied.insert((index.row)(key, value)?);
        Ok(true)
    })?;
    let mut held = BTreeSet::new();
    kv.scan(index.table, b"", None, &mut |key, _| {
        held.insert(key.to_vec());
        Ok(true)
    })?;
    let show = |row: &[u8]| String::from_utf8_lossy(row).replace('\0', " ");
    for missing in implied.difference(&held) {
        problems.push(format!("the {} lacks {}", index.what, show(missing)));
    }
    for extra in held.difference(&implied) {
        problems.push(format!(
            "the {} holds {}, which nothing implies",
            index.what,
            show(extra)
        ));
    }
    Ok(())
}
