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
    // A reference to something not linked is only allowed as a pending one (a cached manifest
    // whose blob or child the pull-through cache has not fetched), counted exactly.
    let mut expected_pending: BTreeMap<(RepositoryName, bool, Digest), u32> = BTreeMap::new();
    for ((repo, digest), count) in &child_refs {
        if !manifest_links.contains_key(&(repo.clone(), digest.clone())) {
            expected_pending.insert((repo.clone(), false, digest.clone()), *count);
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
    for ((repo, digest), count) in &blob_refs {
        if !blob_links.contains_key(&(repo.clone(), digest.clone())) {
            expected_pending.insert((repo.clone(), true, digest.clone()), *count);
        }
    }
    let mut pending: BTreeMap<Vec<u8>, u32> = rows(kv, Table::PendingRefs, "pending references")?
        .into_iter()
        .collect();
    for ((repo, blob, digest), expected) in &expected_pending {
        let kept = pending
            .remove(&state::pending_key(repo, *blob, digest))
            .unwrap_or(0);
        if kept != *expected {
            let lister = if *blob { "a manifest" } else { "an index" };
            let what = if *blob { "blob " } else { "" };
            problems.push(format!(
                "{lister} in {repo} lists {what}{digest}, which is not linked ({kept} pending \
                 references kept, {expected} in the graph)"
            ));
        }
    }
    for (row, kept) in pending {
        problems.push(format!(
            "{kept} pending references kept for {}, which nothing lists",
            String::from_utf8_lossy(&row).replace('\0', " ")
        ));
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
    for (repo, digest, _) in state::cache_accesses(kv)? {
        if !manifest_links.contains_key(&(repo.clone(), digest.clone())) {
            problems.push(format!(
                "cached manifest {digest} of {repo} has an access time but is not linked"
            ));
        }
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

#[cfg(test)]
mod tests {
    //! The check must see every kind of disagreement: a consistent state built through the
    //! commands, then one row of one table changed at a time (in a transaction over it, so each
    //! case starts from the same state), each reported.

    use cluster_api::PutManifest;
    use oci_model::Tag;
    use tempfile::TempDir;

    use super::*;
    use crate::command::Command;
    use crate::db::{encode, open, Database, StoreClosed, StoreOptions};
    use crate::kv::Txn;
    use crate::testing::{apply, commit, digest, repo, T0_MS as NOW_MS};

    fn put(
        repo_name: &str,
        bytes: &str,
        tag: &str,
        blobs: &[&str],
        children: &[&Digest],
    ) -> Command {
        Command::PutManifest {
            put: Box::new(PutManifest {
                repo: repo(repo_name),
                digest: digest(bytes),
                media_type: oci_model::media_type::OCI_MANIFEST.to_owned(),
                bytes: bytes.as_bytes().to_vec(),
                tag: Some(tag.parse::<Tag>().expect("tag")),
                blobs: blobs.iter().map(|blob| digest(blob)).collect(),
                manifests: children.iter().map(|child| (*child).clone()).collect(),
                subject: None,
                referrer: None,
            }),
            now_ms: NOW_MS,
        }
    }

    const IMAGE: &str = r#"{"schemaVersion":2,"label":"image"}"#;
    const INDEX: &str = r#"{"schemaVersion":2,"label":"index"}"#;

    /// Two namespaces: `team/a` holds an image (config, layer) tagged `v1`, an index of it
    /// tagged `all`, and a blob no manifest uses; `other/b` holds the same image, mounted.
    fn consistent_state() -> (TempDir, Database, StoreClosed) {
        let dir = TempDir::new().expect("dir");
        let (db, closed) = open(dir.path(), &StoreOptions::default()).expect("open");
        let commands = vec![
            commit("team/a", "config"),
            commit("team/a", "layer"),
            commit("team/a", "loose"),
            put("team/a", IMAGE, "v1", &["config", "layer"], &[]),
            put("team/a", INDEX, "all", &[], &[&digest(IMAGE)]),
            commit("other/b", "config"),
            commit("other/b", "layer"),
            put("other/b", IMAGE, "v1", &["config", "layer"], &[]),
        ];
        for command in commands {
            let response = apply(&db, command);
            assert!(response.0.is_ok(), "{:?}", response.0);
        }
        (dir, db, closed)
    }

    fn digest_row(content: &str) -> Vec<u8> {
        digest(content).to_string().into_bytes()
    }

    fn link_row(repo_name: &str, content: &str) -> Vec<u8> {
        state::key(&[repo_name, &digest(content).to_string()])
    }

    /// What the check reports with `change` made over the consistent state.
    fn problems_after(db: &Database, change: impl FnOnce(&mut Txn<'_>)) -> Vec<String> {
        let mut txn = Txn::new(db);
        change(&mut txn);
        check(&txn).expect("check")
    }

    fn read<T: serde::de::DeserializeOwned>(txn: &Txn<'_>, table: Table, key: &[u8]) -> T {
        let bytes = txn.get(table, key).expect("get").expect("row");
        decode("test row", &bytes).expect("decode")
    }

    #[track_caller]
    fn reported(problems: &[String], expected: &str) {
        assert!(
            problems.iter().any(|problem| problem.contains(expected)),
            "expected a problem containing {expected:?}, got {problems:#?}"
        );
    }

    #[test]
    fn a_consistent_state_has_no_problems() {
        let (_dir, db, _closed) = consistent_state();
        assert_eq!(problems_after(&db, |_| {}), Vec::<String>::new());
        // Every table the check reads has rows, so the cases below change real ones.
        let view = crate::kv::DbView::live(&db);
        for table in [
            Table::Manifests,
            Table::Blobs,
            Table::ManifestLinks,
            Table::BlobLinks,
            Table::Unreferenced,
            Table::Usage,
            Table::NamespaceRefs,
            Table::Tags,
            Table::TagsByDigest,
            Table::LinksByDigest,
        ] {
            let mut any = false;
            view.scan(table, b"", None, &mut |_, _| {
                any = true;
                Ok(false)
            })
            .expect("scan");
            assert!(any, "{table:?} is empty");
        }
    }

    #[test]
    fn records_missing_under_their_links_are_reported() {
        let (_dir, db, _closed) = consistent_state();
        let problems = problems_after(&db, |txn| txn.delete(Table::Manifests, digest_row(INDEX)));
        reported(&problems, "team/a links manifest");
        reported(&problems, "which has no record");
        let problems = problems_after(&db, |txn| txn.delete(Table::Blobs, digest_row("loose")));
        reported(&problems, "team/a links blob");
        reported(&problems, "which has no live record");
    }

    #[test]
    fn wrong_reference_counts_on_links_are_reported() {
        let (_dir, db, _closed) = consistent_state();
        let image_link = link_row("team/a", IMAGE);
        let problems = problems_after(&db, |txn| {
            let mut link: ManifestLinkRecord = read(txn, Table::ManifestLinks, &image_link);
            assert_eq!(link.refs, 1, "the index references the image");
            link.refs = 2;
            txn.put(
                Table::ManifestLinks,
                image_link.clone(),
                encode("link", &link).expect("encode"),
            );
        });
        assert_eq!(
            problems,
            [format!(
                "manifest {} in team/a: 2 index references kept, 1 in the graph",
                digest(IMAGE)
            )]
        );

        let layer_link = link_row("other/b", "layer");
        let problems = problems_after(&db, |txn| {
            let mut link: BlobLinkRecord = read(txn, Table::BlobLinks, &layer_link);
            assert_eq!(link.refs, 1);
            link.refs = 0;
            txn.put(
                Table::BlobLinks,
                layer_link.clone(),
                encode("link", &link).expect("encode"),
            );
        });
        reported(
            &problems,
            &format!(
                "blob {} in other/b: 0 manifest references kept, 1 in the graph",
                digest("layer")
            ),
        );
        // A link at zero references must have its unreferenced row: it has none here.
        reported(
            &problems,
            "unreferenced-link rows kept, 2 expected (1 differ)",
        );
    }

    #[test]
    fn graph_edges_to_unlinked_targets_are_reported() {
        let (_dir, db, _closed) = consistent_state();
        // The index's child loses its link in team/a.
        let problems = problems_after(&db, |txn| {
            txn.delete(Table::ManifestLinks, link_row("team/a", IMAGE));
        });
        reported(
            &problems,
            &format!(
                "an index in team/a lists {}, which is not linked",
                digest(IMAGE)
            ),
        );
        // A layer loses its link in other/b while a manifest there lists it.
        let problems = problems_after(&db, |txn| {
            txn.delete(Table::BlobLinks, link_row("other/b", "layer"));
        });
        reported(
            &problems,
            &format!(
                "a manifest in other/b lists blob {}, which is not linked",
                digest("layer")
            ),
        );
        // A tag points at a manifest its repository does not link.
        let problems = problems_after(&db, |txn| {
            let tag = TagRecord {
                digest: digest(INDEX),
                pushed_ms: NOW_MS,
            };
            txn.put(
                Table::Tags,
                state::key(&["other/b", "v1"]),
                encode("tag", &tag).expect("encode"),
            );
        });
        reported(
            &problems,
            &format!("tag v1 of other/b points at unlinked {}", digest(INDEX)),
        );
    }

    #[test]
    fn unreferenced_rows_must_match_the_links_at_zero() {
        let (_dir, db, _closed) = consistent_state();
        let loose: BlobLinkRecord = {
            let txn = Txn::new(&db);
            read(&txn, Table::BlobLinks, &link_row("team/a", "loose"))
        };
        assert_eq!(loose.refs, 0);
        let row = state::unreferenced_key(loose.pushed_ms, &repo("team/a"), &digest("loose"));
        let problems = problems_after(&db, |txn| txn.delete(Table::Unreferenced, row.clone()));
        assert_eq!(
            problems,
            ["0 unreferenced-link rows kept, 1 expected (1 differ)"]
        );
        let stray = state::unreferenced_key(loose.pushed_ms, &repo("team/a"), &digest("layer"));
        let problems = problems_after(&db, |txn| txn.put(Table::Unreferenced, stray, []));
        assert_eq!(
            problems,
            ["2 unreferenced-link rows kept, 1 expected (1 differ)"]
        );
    }

    #[test]
    fn wrong_link_counts_on_records_are_reported() {
        let (_dir, db, _closed) = consistent_state();
        let problems = problems_after(&db, |txn| {
            let mut record: ManifestRecord = read(txn, Table::Manifests, &digest_row(IMAGE));
            assert_eq!(record.links, 2);
            record.links = 1;
            txn.put(
                Table::Manifests,
                digest_row(IMAGE),
                encode("manifest", &record).expect("encode"),
            );
        });
        assert_eq!(
            problems,
            [format!(
                "manifest {}: 1 links kept, 2 in the graph",
                digest(IMAGE)
            )]
        );
        let problems = problems_after(&db, |txn| {
            let mut record: BlobRecord = read(txn, Table::Blobs, &digest_row("config"));
            assert_eq!(record.links, 2);
            record.links = 3;
            txn.put(
                Table::Blobs,
                digest_row("config"),
                encode("blob", &record).expect("encode"),
            );
        });
        assert_eq!(
            problems,
            [format!(
                "blob {}: 3 links kept, 2 in the graph",
                digest("config")
            )]
        );
    }

    #[test]
    fn records_nothing_links_are_reported_even_at_zero() {
        let (_dir, db, _closed) = consistent_state();
        let orphan = ManifestRecord {
            media_type: oci_model::media_type::OCI_MANIFEST.to_owned(),
            bytes: b"{}".to_vec(),
            subject: None,
            blobs: Vec::new(),
            manifests: Vec::new(),
            links: 0,
        };
        let problems = problems_after(&db, |txn| {
            txn.put(
                Table::Manifests,
                digest_row("{}"),
                encode("manifest", &orphan).expect("encode"),
            );
        });
        assert_eq!(
            problems,
            [format!(
                "manifest {}: 0 links kept, 0 in the graph",
                digest("{}")
            )]
        );
        let orphan = BlobRecord {
            size: 6,
            replicas: vec![1],
            links: 0,
        };
        let problems = problems_after(&db, |txn| {
            txn.put(
                Table::Blobs,
                digest_row("orphan"),
                encode("blob", &orphan).expect("encode"),
            );
        });
        assert_eq!(
            problems,
            [format!(
                "blob {}: 0 links kept, 0 in the graph",
                digest("orphan")
            )]
        );
    }

    #[test]
    fn a_blob_both_live_and_doomed_is_reported() {
        let (_dir, db, _closed) = consistent_state();
        let doomed = state::DoomedRecord {
            size: 5,
            pending: vec![1],
            generation: 1,
            doomed_ms: NOW_MS,
        };
        let problems = problems_after(&db, |txn| {
            txn.put(
                Table::Doomed,
                digest_row("layer"),
                encode("doomed", &doomed).expect("encode"),
            );
        });
        assert_eq!(
            problems,
            [format!("blob {} is both live and doomed", digest("layer"))]
        );
    }

    #[test]
    fn usage_and_namespace_references_are_recomputed() {
        let (_dir, db, _closed) = consistent_state();
        // The state's usage is what the graph gives, field by field.
        let txn = Txn::new(&db);
        let team: UsageRecord = read(&txn, Table::Usage, b"team");
        let other: UsageRecord = read(&txn, Table::Usage, b"other");
        let blobs = ("config".len() + "layer".len()) as u64;
        let (image, index) = (IMAGE.len() as u64, INDEX.len() as u64);
        assert_eq!(
            team,
            UsageRecord {
                logical_bytes: blobs + "loose".len() as u64 + image + index,
                physical_bytes: blobs + "loose".len() as u64 + image + index,
                blobs: 3,
                manifests: 2,
            }
        );
        assert_eq!(
            other,
            UsageRecord {
                logical_bytes: blobs + image,
                physical_bytes: blobs + image,
                blobs: 2,
                manifests: 1,
            }
        );
        drop(txn);
        for field in 0..4 {
            let problems = problems_after(&db, |txn| {
                let mut usage = team;
                match field {
                    0 => usage.logical_bytes += 1,
                    1 => usage.physical_bytes -= 1,
                    2 => usage.blobs += 1,
                    _ => usage.manifests -= 1,
                }
                txn.put(
                    Table::Usage,
                    b"team".to_vec(),
                    encode("usage", &usage).expect("encode"),
                );
            });
            assert_eq!(problems.len(), 1, "{problems:#?}");
            reported(&problems, "namespace usage kept");
        }
        // One (namespace, digest) pair loses its reference row: 7 rows for 8 pairs (team: 3
        // blobs and 2 manifests, other: 2 blobs and 1 manifest).
        let mut first = None;
        crate::kv::DbView::live(&db)
            .scan(Table::NamespaceRefs, b"", None, &mut |key, _| {
                first = Some(key.to_vec());
                Ok(false)
            })
            .expect("scan");
        let first = first.expect("a namespace reference row");
        let problems = problems_after(&db, |txn| txn.delete(Table::NamespaceRefs, first));
        assert_eq!(
            problems,
            ["7 namespace reference rows kept, 8 distinct (namespace, digest) pairs"]
        );
    }

    #[test]
    fn derived_index_rows_missing_or_stray_are_reported() {
        let (_dir, db, _closed) = consistent_state();
        let tag_row =
            state::tag_index_key(&repo("team/a"), &digest(IMAGE), &"v1".parse().expect("tag"));
        let problems = problems_after(&db, |txn| txn.delete(Table::TagsByDigest, tag_row.clone()));
        assert_eq!(
            problems,
            [format!("the tag index lacks team/a {} v1", digest(IMAGE))]
        );
        let stray =
            state::tag_index_key(&repo("team/a"), &digest(INDEX), &"v1".parse().expect("tag"));
        let problems = problems_after(&db, |txn| txn.put(Table::TagsByDigest, stray, []));
        assert_eq!(
            problems,
            [format!(
                "the tag index holds team/a {} v1, which nothing implies",
                digest(INDEX)
            )]
        );
        let link_index = state::link_index_key(&digest("loose"), &repo("team/a"));
        let problems = problems_after(&db, |txn| txn.delete(Table::LinksByDigest, link_index));
        assert_eq!(
            problems,
            [format!(
                "the blob link index lacks {} team/a",
                digest("loose")
            )]
        );
    }
}
