//! `wharf admin replication add|list|rm`: replication rules, kept in the Raft state. A push
//! rule copies this registry's matching repositories to another registry; a pull rule copies
//! another registry's into this one.

use clap::Subcommand;
use cluster_api::{MetaApi, ReplicationMode, ReplicationRule};
use cluster_client::{MetaClient, RetryPolicy};
use serde_json::json;

type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Subcommand, Debug)]
pub enum ReplicationCommand {
    /// Add or replace a rule.
    Add {
        /// Rule id.
        #[arg(long)]
        id: String,
        /// Push the matching repositories to this registry (its root, `https://host[:port]`).
        #[arg(long, conflicts_with = "from", required_unless_present = "from")]
        to: Option<String>,
        /// Pull the matching repositories from this registry into this one.
        #[arg(long)]
        from: Option<String>,
        /// Repository glob, e.g. `prod/**` (`*` within a segment, `**` across).
        #[arg(long)]
        repos: String,
        /// Only the tags this glob matches, e.g. `v*`.
        #[arg(long)]
        tags: Option<String>,
        /// Also delete at the destination the tags and manifests gone at the source.
        #[arg(long)]
        deletes: bool,
        /// User name at the other registry.
        #[arg(long, requires = "password_stdin")]
        user: Option<String>,
        /// Read the other registry's password (or token) from stdin's first line.
        #[arg(long, requires = "user")]
        password_stdin: bool,
        /// PEM file of the CA(s) the other registry's TLS certificate may chain to, besides
        /// the system's (a private CA); kept with the rule.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Remove a rule. What it copied stays.
    Rm { id: String },
    /// The rules (JSON; never their passwords).
    List,
    /// Each rule's last pass: when, its lag (since the last pass without an error), what it
    /// copied and deleted, its errors (JSON).
    Status,
}

pub async fn replication(meta: &[String], command: ReplicationCommand) -> CliResult {
    let client = MetaClient::new(meta, RetryPolicy::default())?;
    match command {
        ReplicationCommand::Add {
            id,
            to,
            from,
            repos,
            tags,
            deletes,
            user,
            password_stdin,
            ca_file,
        } => {
            let ca_pem = ca_file
                .as_deref()
                .map(crate::admin_cli::read_ca_file)
                .transpose()?;
            let (mode, url) = match (to, from) {
                (Some(url), None) => (ReplicationMode::Push, url),
                (None, Some(url)) => (ReplicationMode::Pull, url),
                _ => return Err("give one of --to URL (push) and --from URL (pull)".into()),
            };
            let password = password_stdin
                .then(crate::admin_cli::stdin_line)
                .transpose()?;
            let rule = ReplicationRule {
                id: id.clone(),
                mode,
                url: url.clone(),
                repositories: repos.clone(),
                tags,
                deletes,
                username: user,
                password,
                ca_pem,
            };
            client.put_replication_rule(rule).await?;
            let direction = match mode {
                ReplicationMode::Push => "to",
                ReplicationMode::Pull => "from",
            };
            println!("replication rule {id} set: {repos} {direction} {url}");
        }
        ReplicationCommand::Rm { id } => {
            client.delete_replication_rule(&id).await?;
            println!("replication rule {id} removed");
        }
        ReplicationCommand::Status => {
            let rules = client.replication_rules().await?;
            let recorded = client.replication_status().await?;
            let report = cluster_api::replication_report(&rules, &recorded, unix_ms());
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "rules": report }))?
            );
        }
        ReplicationCommand::List => {
            let views: Vec<_> = client
                .replication_rules()
                .await?
                .iter()
                .map(ReplicationRule::view)
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "rules": views }))?
            );
        }
    }
    Ok(())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
