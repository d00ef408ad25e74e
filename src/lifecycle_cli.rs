//! `wharf admin usage|quota|retention|gc|fsck`: storage lifecycle through the Meta service, and
//! (fsck) through every blob node of the cluster map.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use clap::Subcommand;
use cluster_api::{
    BlobInfo, BlobNodes, DoomedBlob, MetaApi, NodeState, Placement, PlacementStatus,
    RetentionAction, RetentionRule,
};
use cluster_client::{GrpcBlobNodes, MetaClient, RetryPolicy};
use oci_model::Digest;
use serde_json::json;

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Blobs asked of a node or of meta per page.
const PAGE: usize = 1_000;

#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Limit a namespace's physical bytes (what it stores, each blob once), e.g. `team 50GiB`.
    /// A push that would go over is refused when it commits; what is stored stays.
    Set {
        namespace: String,
        /// Bytes, with an optional unit: B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB).
        #[arg(value_parser = parse_size)]
        size: u64,
    },
    /// Remove a namespace's quota.
    Rm { namespace: String },
}

#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Add or replace a retention rule (enforced continuously by the meta leader).
    Add {
        /// Rule id.
        #[arg(long)]
        id: String,
        /// Repository glob, e.g. `ci/**`.
        #[arg(long)]
        repos: String,
        /// Keep only the newest N tags by push time (plus those matching --keep-tags).
        #[arg(long)]
        keep_last: Option<u32>,
        /// Tags matching this glob are always kept, e.g. `v*`.
        #[arg(long)]
        keep_tags: Option<String>,
        /// Delete untagged manifests pushed longer ago than this (90d, 12h, 30m, 3600s).
        #[arg(long, value_parser = crate::admin_cli::parse_duration)]
        untagged_older_than: Option<u64>,
        /// Never enforce: only list what the rule would remove (`retention plan --all`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove a rule.
    Rm { id: String },
    /// List rules (JSON).
    List,
    /// What the rules would remove now, without removing anything (JSON lines).
    Plan {
        /// Include rules marked --dry-run.
        #[arg(long)]
        all: bool,
    },
}

/// `10GiB`, `512MB`, `1000` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 50GiB, 500MB or 1000"))?;
    let unit: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("{text:?}: unknown unit {other:?}")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn client(meta: &[String]) -> Result<MetaClient, Box<dyn std::error::Error>> {
    Ok(MetaClient::new(meta, RetryPolicy::default())?)
}

fn action_json(action: &RetentionAction) -> serde_json::Value {
    match action {
        RetentionAction::Untag {
            repo,
            tag,
            digest,
            rule,
            ..
        } => {
            json!({"action": "untag", "repository": repo, "tag": tag, "digest": digest, "rule": rule})
        }
        RetentionAction::DeleteUntagged {
            repo, digest, rule, ..
        } => json!({"action": "delete", "repository": repo, "digest": digest, "rule": rule}),
    }
}

pub async fn usage(meta: &[String], namespace: Option<String>) -> CliResult {
    let usage = client(meta)?.usage(namespace.as_deref()).await?;
    println!("{}", serde_json::to_string_pretty(&usage)?);
    Ok(())
}

pub async fn quota(meta: &[String], command: QuotaCommand) -> CliResult {
    let client = client(meta)?;
    match command {
        QuotaCommand::Set { namespace, size } => {
            client.set_quota(&namespace, Some(size)).await?;
            println!("namespace {namespace}: quota {size} bytes");
        }
        QuotaCommand::Rm { namespace } => {
            client.set_quota(&namespace, None).await?;
            println!("namespace {namespace}: no quota");
        }
    }
    Ok(())
}

pub async fn retention(meta: &[String], command: RetentionCommand) -> CliResult {
    let client = client(meta)?;
    match command {
        RetentionCommand::Add {
            id,
            repos,
            keep_last,
            keep_tags,
            untagged_older_than,
            dry_run,
        } => {
            let rule = RetentionRule {
                id: id.clone(),
                repositories: repos,
                keep_last,
                keep_tags,
                untagged_older_than_secs: untagged_older_than,
                dry_run,
            };
            client.put_retention_rule(rule).await?;
            println!(
                "retention rule {id} set{}",
                if dry_run {
                    " (dry run: not enforced)"
                } else {
                    ""
                }
            );
        }
        RetentionCommand::Rm { id } => {
            client.delete_retention_rule(&id).await?;
            println!("retention rule {id} removed");
        }
        RetentionCommand::List => {
            let rules = client.retention_rules().await?;
            println!("{}", serde_json::to_string_pretty(&rules)?);
        }
        RetentionCommand::Plan { all } => {
            for action in client.retention_plan(all).await? {
                println!("{}", action_json(&action));
            }
        }
    }
    Ok(())
}

pub async fn gc(meta: &[String]) -> CliResult {
    let report = client(meta)?.collect_garbage().await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// What fsck found on one blob node.
#[derive(Default, serde::Serialize)]
struct NodeFindings {
    node: u64,
    blobs: u64,
    /// On the node, unknown to meta (neither live nor doomed there).
    orphans: Vec<(Digest, u64)>,
    /// Meta lists the node as a replica, the node does not have it.
    missing: Vec<Digest>,
    /// Held with a size other than meta's.
    wrong_size: Vec<Digest>,
    unreachable: Option<String>,
}

/// `wharf admin fsck [--repair]`: meta's counts recomputed, then every blob node's listing
/// compared with meta's records. With `--repair`: orphans are handed to meta, which dooms those
/// still unknown so their node deletes them through the usual confirmation (an upload committing
/// meanwhile is never hurt); a missing replica is dropped from the record, so repair copies the
/// blob to its owners again from the replicas that hold it. Also lists blobs with fewer copies
/// than the replication policy asks (repair is copying them). Exits non-zero when anything is
/// wrong that was not repaired, or while blobs are under-replicated.
pub async fn fsck(meta: &[String], repair: bool) -> CliResult {
    let client: Arc<MetaClient> = Arc::new(client(meta)?);
    let meta_api: Arc<dyn MetaApi> = client.clone();
    let problems = client.check_consistency().await?;
    let records: BTreeMap<Digest, BlobInfo> = {
        let client = &client;
        let all = every_page(
            |after| async move { client.list_blobs(after.as_ref(), PAGE).await },
            |blob: &BlobInfo| &blob.digest,
        )
        .await?;
        all.into_iter()
            .map(|blob| (blob.digest.clone(), blob))
            .collect()
    };
    let map = client.cluster_map().await?;
    let nodes = GrpcBlobNodes::new(meta_api);
    let mut findings = Vec::new();
    for member in &map.members {
        let id = member.node.id;
        let mut found = NodeFindings {
            node: id,
            ..NodeFindings::default()
        };
        if member.state == NodeState::Down {
            found.unreachable = Some("marked down".to_owned());
            findings.push(found);
            continue;
        }
        let held = match node_listing(&nodes, id).await {
            Ok(held) => held,
            Err(error) => {
                found.unreachable = Some(error.to_string());
                findings.push(found);
                continue;
            }
        };
        let doomed: BTreeSet<Digest> = {
            let client = &client;
            let all = every_page(
                |after| async move { client.doomed_blobs(id, after.as_ref(), PAGE).await },
                |blob: &DoomedBlob| &blob.digest,
            )
            .await?;
            all.into_iter().map(|blob| blob.digest).collect()
        };
        found.blobs = held.len() as u64;
        for (digest, size) in &held {
            match records.get(digest) {
                Some(record) if record.size != *size => found.wrong_size.push(digest.clone()),
                Some(_) => {}
                None if doomed.contains(digest) => {}
                None => found.orphans.push((digest.clone(), *size)),
            }
        }
        for (digest, record) in &records {
            if record.replicas.contains(&id) && !held.contains_key(digest) {
                found.missing.push(digest.clone());
            }
        }
        findings.push(found);
    }
    let missing: BTreeSet<(u64, &Digest)> = findings
        .iter()
        .flat_map(|found| found.missing.iter().map(|digest| (found.node, digest)))
        .collect();
    let lost: Vec<&Digest> = records
        .iter()
        .filter(|(digest, record)| {
            record
                .replicas
                .iter()
                .all(|replica| missing.contains(&(*replica, *digest)))
        })
        .map(|(digest, _)| digest)
        .collect();

    // Fewer copies than the policy asks for (or than there are nodes to hold them): the repair
    // loop is (or will be) copying them; reported so an operator can wait for it.
    let placeable = map
        .members
        .iter()
        .filter(|member| member.state == NodeState::Up)
        .count();
    let wanted = (map.policy.replicas as usize).min(placeable.max(1));
    let under_replicated: Vec<&Digest> = records
        .iter()
        .filter(|(_, record)| {
            let mut copies = record.replicas.clone();
            copies.sort_unstable();
            copies.dedup();
            copies.len() < wanted
        })
        .map(|(digest, _)| digest)
        .collect();

    // Data residency: copies outside their rules' zones, and copies the rules ask for that are
    // missing. Every node's repair loop moves them; `impossible` needs nodes in those zones.
    let placement = Placement::new(map.clone());
    let mut placement_status = PlacementStatus::new(&placement);
    for record in records.values() {
        placement_status.add(&placement, record);
    }

    let mut repaired = json!({"orphans_doomed": 0, "replicas_dropped": 0});
    if repair {
        let (mut doomed, mut dropped) = (0u64, 0u64);
        for found in &findings {
            for chunk in found.orphans.chunks(PAGE) {
                doomed += client.discard_orphans(found.node, chunk).await?;
            }
            for digest in &found.missing {
                // Check again: a copy may have arrived since the listing.
                let still_missing = match nodes.node(found.node).await {
                    Ok(node) => node.stat(digest).await?.is_none(),
                    Err(_) => false,
                };
                if still_missing
                    && client
                        .remove_blob_replicas(digest, &[found.node])
                        .await
                        .is_ok()
                {
                    dropped += 1;
                }
            }
        }
        repaired = json!({"orphans_doomed": doomed, "replicas_dropped": dropped});
    }
    let report = json!({
        "meta_problems": problems,
        "blob_records": records.len(),
        "nodes": findings,
        "lost": lost,
        "under_replicated": under_replicated,
        "placement": placement_status,
        "repaired": repaired,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let wrong_sizes = findings.iter().any(|found| !found.wrong_size.is_empty());
    let unrepaired_copies = !repair
        && findings
            .iter()
            .any(|found| !found.orphans.is_empty() || !found.missing.is_empty());
    let unreachable = findings.iter().any(|found| found.unreachable.is_some());
    if !problems.is_empty()
        || !lost.is_empty()
        || !under_replicated.is_empty()
        || wrong_sizes
        || unrepaired_copies
        || unreachable
        || placement_status.violations() > 0
        || placement_status.impossible > 0
    {
        return Err("fsck found problems (see the report above)".into());
    }
    Ok(())
}

async fn node_listing(
    nodes: &GrpcBlobNodes,
    id: u64,
) -> Result<BTreeMap<Digest, u64>, Box<dyn std::error::Error>> {
    let node = nodes.node(id).await?;
    let node = &node;
    let held = every_page(
        |after| async move { node.list_blobs(after.as_ref(), PAGE).await },
        |(digest, _): &(Digest, u64)| digest,
    )
    .await?;
    Ok(held.into_iter().collect())
}

/// Every item of a listing paged by digest: `page(after)` answers at most [`PAGE`] items after
/// `after`; a shorter page is the last.
async fn every_page<T, E, Fut>(
    mut page: impl FnMut(Option<Digest>) -> Fut,
    digest_of: impl Fn(&T) -> &Digest,
) -> Result<Vec<T>, E>
where
    Fut: std::future::Future<Output = Result<Vec<T>, E>>,
{
    let mut all = Vec::new();
    let mut after: Option<Digest> = None;
    loop {
        let items = page(after.take()).await?;
        let done = items.len() < PAGE;
        after = items.last().map(|item| digest_of(item).clone());
        all.extend(items);
        if done {
            return Ok(all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("2 KiB"), Ok(2048));
        for bad in ["", "GiB", "5XB", "-1", "99999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
