//! `wharf admin placement add|list|rm|status`: data-residency rules through the Meta service. A rule
//! confines the blobs of repositories matching a glob to blob nodes in some zones; the rules are
//! part of the cluster map, so each change bumps its epoch.

use clap::Subcommand;
use cluster_api::{MetaApi, PlacementRule, PlacementStatus};
use cluster_client::{MetaClient, RetryPolicy};
use serde_json::json;

type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Subcommand, Debug)]
pub enum PlacementCommand {
    /// Add or replace a rule: blobs pushed into repositories matching `--repos` are stored only
    /// on blob nodes in `--zones`. A push into such a repository while no node of those zones
    /// is up is refused (503), never stored elsewhere.
    Add {
        /// Rule id.
        #[arg(long)]
        id: String,
        /// Repository glob, e.g. `eu/**` (`*` within a segment, `**` across).
        #[arg(long)]
        repos: String,
        /// Comma-separated zones, e.g. `eu-west,eu-central`.
        #[arg(long, value_delimiter = ',', required = true)]
        zones: Vec<String>,
        /// Copies of each blob in those zones [default: the replication policy's].
        #[arg(long)]
        replicas: Option<u32>,
    },
    /// Remove a rule.
    Rm { id: String },
    /// The rules, with the cluster map's epoch (JSON).
    List,
    /// Every blob record judged against the rules it was linked under: compliant, pending (the
    /// repair loop has yet to move a copy) or impossible (too few up nodes in the zones), in all
    /// and per rule, with the copies outside the zones and those missing (JSON).
    Status,
}

pub async fn placement(meta: &[String], command: PlacementCommand) -> CliResult {
    let client = MetaClient::new(meta, RetryPolicy::default())?;
    match command {
        PlacementCommand::Add {
            id,
            repos,
            zones,
            replicas,
        } => {
            let rule = PlacementRule {
                id: id.clone(),
                repositories: repos.clone(),
                zones: zones.clone(),
                replicas,
            };
            client.put_placement_rule(rule).await?;
            let copies = replicas.map_or_else(
                || "the replication policy's copies".to_owned(),
                |n| format!("{n} copies"),
            );
            println!(
                "placement rule {id} set: {repos} in zones {}, {copies}",
                zones.join(", ")
            );
        }
        PlacementCommand::Rm { id } => {
            client.delete_placement_rule(&id).await?;
            println!("placement rule {id} removed");
        }
        PlacementCommand::Status => {
            let status = PlacementStatus::of(&client).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        PlacementCommand::List => {
            let map = client.cluster_map().await?;
            let body = json!({ "epoch": map.epoch, "rules": map.placement });
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
    }
    Ok(())
}
