//! Retention: the plan (what the rules would remove now, read from one view) and its
//! application (each action re-checked against the state it finds, so a push racing a pass wins).

use std::collections::BTreeSet;

use cluster_api::{ImmutableTagRule, RetentionAction, RetentionRule};
use oci_model::{Digest, RepositoryName};

use crate::db::Table;
use crate::error::StoreError;
use crate::kv::{KvRead, Txn};
use crate::refs;
use crate::state::{self, split_key, TagRecord};

/// What the retention rules would remove at `now_ms`: enforced rules only, or with `dry_run`
/// rules too. Tag removals come first, then deletions of untagged manifests (some only untagged
/// by the removals before them).
pub(crate) fn plan(
    kv: &impl KvRead,
    now_ms: u64,
    include_dry_run: bool,
) -> Result<Vec<RetentionAction>, StoreError> {
    let rules: Vec<RetentionRule> = state::retention_rules(kv)?
        .into_iter()
        .filter(|rule| include_dry_run || !rule.dry_run)
        .collect();
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let immutable = state::immutable_tag_rules(kv)?;
    let mut repos = Vec::new();
    kv.scan(Table::Repositories, b"", None, &mut |key, _| {
        let [name] = split_key::<1>("repository key", key)?;
        repos.push(state::parse_repo("repository key", name)?);
        Ok(true)
    })?;
    let (mut untags, mut deletes) = (Vec::new(), Vec::new());
    for repo in repos {
        let matching: Vec<&RetentionRule> = rules
            .iter()
            .filter(|rule| rule.applies_to(repo.as_str()))
            .collect();
        if matching.is_empty() {
            continue;
        }
        let ids = matching
            .iter()
            .map(|rule| rule.id.as_str())
            .collect::<Vec<_>>()
            .join(",");
        plan_repo(
            kv,
            &repo,
            &matching,
            &immutable,
            now_ms,
            &ids,
            (&mut untags, &mut deletes),
        )?;
    }
    untags.append(&mut deletes);
    Ok(untags)
}

fn plan_repo(
    kv: &impl KvRead,
    repo: &RepositoryName,
    rules: &[&RetentionRule],
    immutable: &[ImmutableTagRule],
    now_ms: u64,
    ids: &str,
    (untags, deletes): (&mut Vec<RetentionAction>, &mut Vec<RetentionAction>),
) -> Result<(), StoreError> {
    let mut tags = state::tag_records(kv, repo)?;
    // Newest first; equal push times in tag order, so the plan is the same on every node.
    tags.sort_by(|(a_tag, a), (b_tag, b)| {
        b.pushed_ms
            .cmp(&a.pushed_ms)
            .then_with(|| a_tag.as_str().cmp(b_tag.as_str()))
    });
    // The manifests a kept tag points at.
    let mut kept: BTreeSet<Digest> = BTreeSet::new();
    for (rank, (tag, record)) in tags.into_iter().enumerate() {
        let protected = immutable
            .iter()
            .any(|rule| rule.protects(repo.as_str(), tag.as_str()));
        let released = !protected
            && rules
                .iter()
                .all(|rule| rule.releases_tag(tag.as_str(), rank));
        if released {
            untags.push(RetentionAction::Untag {
                repo: repo.clone(),
                tag,
                digest: record.digest,
                pushed_ms: record.pushed_ms,
                rule: ids.to_owned(),
            });
        } else {
            kept.insert(record.digest);
        }
    }
    for (digest, link) in state::manifest_links_of(kv, repo)? {
        if kept.contains(&digest) || link.refs > 0 {
            continue;
        }
        if !rules
            .iter()
            .all(|rule| rule.releases_untagged(link.pushed_ms, now_ms))
        {
            continue;
        }
        if subject_present(kv, repo, &digest)? {
            continue;
        }
        deletes.push(RetentionAction::DeleteUntagged {
            repo: repo.clone(),
            digest,
            pushed_ms: link.pushed_ms,
            rule: ids.to_owned(),
        });
    }
    Ok(())
}

/// A referrer lives with its subject: true when `digest` has a subject linked in `repo`.
fn subject_present(
    kv: &impl KvRead,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<bool, StoreError> {
    match state::manifest(kv, digest)?.and_then(|record| record.subject) {
        Some(subject) => state::manifest_linked(kv, repo, &subject),
        None => Ok(false),
    }
}

/// Applies each action whose premise still holds; returns how many were applied.
pub(crate) fn apply(
    txn: &mut Txn<'_>,
    actions: &[RetentionAction],
    now_ms: u64,
) -> Result<u64, StoreError> {
    let immutable = state::immutable_tag_rules(txn)?;
    let mut applied = 0;
    for action in actions {
        match action {
            RetentionAction::Untag {
                repo,
                tag,
                digest,
                pushed_ms,
                ..
            } => {
                let expected = TagRecord {
                    digest: digest.clone(),
                    pushed_ms: *pushed_ms,
                };
                let protected = immutable
                    .iter()
                    .any(|rule| rule.protects(repo.as_str(), tag.as_str()));
                if !protected && state::tag_record(txn, repo, tag)? == Some(expected) {
                    state::delete_tag(txn, repo, tag, digest);
                    applied += 1;
                }
            }
            RetentionAction::DeleteUntagged {
                repo,
                digest,
                pushed_ms,
                ..
            } => {
                let unchanged = state::manifest_link(txn, repo, digest)?
                    .is_some_and(|link| link.refs == 0 && link.pushed_ms == *pushed_ms);
                if unchanged
                    && state::tags_pointing_at(txn, repo, digest)?.is_empty()
                    && !subject_present(txn, repo, digest)?
                {
                    refs::unlink_manifest(txn, repo, digest, now_ms)?;
                    applied += 1;
                }
            }
        }
    }
    Ok(applied)
}
