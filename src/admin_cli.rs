//! `wharf admin ...`: operate a running cluster through the meta nodes: `cluster ...` through
//! their Admin service; `user`, `robot`, `accounts`, `policy`, `key` (access control) through
//! the Meta service, each change one Raft entry. Passwords are hashed here (argon2id), so they
//! never cross the network; a robot's secret is generated here and printed once.

use clap::{Args, Subcommand, ValueEnum};
use cluster_api::{NodeState, ReplicationPolicy};
use cluster_client::{AdminClient, RetryPolicy};

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Meta node addresses (any of them; the leader is found and followed), comma-separated.
    #[arg(long, env = "WHARF_META", value_delimiter = ',', required = true)]
    pub meta: Vec<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Cluster membership and placement.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Users: people who log in with a password.
    #[command(subcommand)]
    User(UserCommand),
    /// Robot accounts: random secrets for CI, shown once, optionally expiring, revocable.
    #[command(subcommand)]
    Robot(RobotCommand),
    /// List users and robots (JSON; never their secrets).
    Accounts,
    /// Access policies: who may pull, push, delete or administer which repositories.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Token signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Immutable tags: rules under which an existing tag can neither move nor be deleted.
    #[command(subcommand)]
    Immutable(ImmutableCommand),
    /// Storage per namespace: logical and physical bytes, blobs, manifests, quota (JSON).
    Usage {
        /// One namespace (a repository name's first component) [default: all].
        namespace: Option<String>,
    },
    /// Quotas on a namespace's physical bytes.
    #[command(subcommand)]
    Quota(crate::lifecycle_cli::QuotaCommand),
    /// Placement rules (data residency): the zones a repository's blobs may be stored in.
    #[command(subcommand)]
    Placement(crate::placement_cli::PlacementCommand),
    /// Pull-through cache upstreams: repositories under a prefix pulled from another registry.
    #[command(subcommand)]
    Proxy(crate::proxy_cli::ProxyCommand),
    /// Replication rules: repositories copied to (`--to`) or from (`--from`) another registry.
    #[command(subcommand)]
    Replication(crate::replication_cli::ReplicationCommand),
    /// Retention rules: keep the newest N tags, keep tags by pattern, delete old untagged
    /// manifests; with a dry run.
    #[command(subcommand)]
    Retention(crate::lifecycle_cli::RetentionCommand),
    /// Run a garbage-collection sweep now (the leader also runs one every gc interval).
    Gc,
    /// Compare meta's counts and every blob node's files with meta's records; report orphans,
    /// missing replicas and lost blobs.
    Fsck {
        /// Doom orphans (their node deletes them) and drop missing replicas from the records
        /// (repair copies the blob again from a replica that holds it).
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImmutableCommand {
    /// Protect tags matching `--tags` in repositories matching `--repos` (globs).
    Add {
        /// Repository glob, e.g. `prod/**`.
        #[arg(long)]
        repos: String,
        /// Tag glob, e.g. `v*` (`*` protects every tag).
        #[arg(long)]
        tags: String,
        /// Rule id (replaces the rule with this id) [default: from the globs].
        #[arg(long)]
        id: Option<String>,
    },
    /// Remove a rule.
    Rm { id: String },
    /// List rules (JSON).
    List,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user. Without --password-stdin a random password is generated and printed.
    Add {
        name: String,
        /// A registry administrator: every action everywhere, and the admin API.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (tokens issued before stop working).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user and the policies naming it.
    Rm { name: String },
}

#[derive(Subcommand, Debug)]
pub enum RobotCommand {
    /// Create a robot account and print its secret (the only time it is shown).
    Add {
        name: String,
        /// Expire after this long: `90d`, `12h`, `30m`, `3600s` or seconds.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Revoke a robot: its secret and tokens stop working on every gateway within the state
    /// refresh interval (1 s by default).
    Rm { name: String },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Grant actions on repositories matching a glob (`*` within a segment, `**` across).
    Add {
        /// `anonymous`, `authenticated`, or an account name.
        #[arg(long)]
        subject: String,
        /// Repository glob, e.g. `ci/**`, `team-a/*`, `*/public/**`.
        #[arg(long)]
        repos: String,
        /// Comma-separated: pull, push, delete, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        actions: Vec<String>,
        /// Policy id (replaces the policy with this id) [default: from subject and glob].
        #[arg(long)]
        id: Option<String>,
    },
    /// Remove a policy.
    Rm { id: String },
    /// List policies (JSON).
    List,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Start signing tokens with a new key; tokens signed by the previous two keep verifying.
    Rotate,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Leader, term, meta voters, blob nodes with state and liveness, replication policy (JSON).
    Status,
    /// Add a meta node (it must be running with `--join` or be reachable at ADDR).
    AddMeta {
        id: u64,
        addr: String,
        /// Add as a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a meta node from the Raft membership (then stop its process).
    RemoveMeta { id: u64 },
    /// Set a blob node's state: `draining` moves its blobs away, `down` stops placing on it.
    BlobState { id: u64, state: StateArg },
    /// Remove a blob node from the cluster map (drain it first to keep every replica).
    RemoveBlob { id: u64 },
    /// Set the replication factor and write quorum (0 = every owner that is up, at least 2).
    Policy {
        #[arg(long)]
        replicas: u32,
        #[arg(long, default_value_t = 0)]
        write_quorum: u32,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StateArg {
    Up,
    Draining,
    Down,
}

impl From<StateArg> for NodeState {
    fn from(state: StateArg) -> NodeState {
        match state {
            StateArg::Up => NodeState::Up,
            StateArg::Draining => NodeState::Draining,
            StateArg::Down => NodeState::Down,
        }
    }
}

/// Runs one admin command and prints its result.
pub async fn run(args: AdminArgs) -> Result<(), Box<dyn std::error::Error>> {
    use crate::lifecycle_cli as lifecycle;
    let meta = &args.meta;
    let command = match args.command {
        AdminCommand::Cluster(command) => command,
        AdminCommand::Usage { namespace } => return lifecycle::usage(meta, namespace).await,
        AdminCommand::Quota(command) => return lifecycle::quota(meta, command).await,
        AdminCommand::Retention(command) => return lifecycle::retention(meta, command).await,
        AdminCommand::Placement(command) => {
            return crate::placement_cli::placement(meta, command).await
        }
        AdminCommand::Proxy(command) => return crate::proxy_cli::proxy(meta, command).await,
        AdminCommand::Replication(command) => {
            return crate::replication_cli::replication(meta, command).await
        }
        AdminCommand::Gc => return lifecycle::gc(meta).await,
        AdminCommand::Fsck { repair } => return lifecycle::fsck(meta, repair).await,
        other => return run_access(meta, other).await,
    };
    let admin = AdminClient::new(&args.meta, RetryPolicy::default())?;
    match command {
        ClusterCommand::Status => {
            let status = admin.cluster_status().await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        ClusterCommand::AddMeta { id, addr, learner } => {
            admin.add_meta_node(id, &addr, !learner).await?;
            println!(
                "meta node {id} at {addr} added as {}",
                if learner { "learner" } else { "voter" }
            );
        }
        ClusterCommand::RemoveMeta { id } => {
            admin.remove_meta_node(id).await?;
            println!("meta node {id} removed; stop its process");
        }
        ClusterCommand::BlobState { id, state } => {
            admin.set_blob_node_state(id, state.into()).await?;
            println!("blob node {id} is now {state:?}");
        }
        ClusterCommand::RemoveBlob { id } => {
            admin.remove_blob_node(id).await?;
            println!("blob node {id} removed from the cluster map");
        }
        ClusterCommand::Policy {
            replicas,
            write_quorum,
        } => {
            let policy = ReplicationPolicy {
                replicas,
                write_quorum,
            };
            admin.set_replication_policy(policy).await?;
            println!("replication policy: {replicas} replicas, write quorum {write_quorum}");
        }
    }
    Ok(())
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// `90d`, `12h`, `30m`, `3600s` or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.char_indices().last() {
        Some((index, unit)) if unit.is_ascii_alphabetic() => (&text[..index], unit),
        _ => (text, 's'),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90d, 12h, 30m or 3600s"))?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    number
        .checked_mul(unit)
        .filter(|secs| *secs > 0)
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

/// Stdin's first line, without its line ending (a password given with `--password-stdin`).
pub(crate) fn stdin_line() -> std::io::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// A CA bundle (PEM) read from `path` and checked the way the upstream client loads it.
pub(crate) fn read_ca_file(path: &std::path::Path) -> Result<String, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    proxy::check_ca_bundle(pem.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(pem)
}

/// The password from stdin's first line, or a generated one (printed).
fn password(from_stdin: bool) -> Result<String, Box<dyn std::error::Error>> {
    if from_stdin {
        return Ok(stdin_line()?);
    }
    let generated = auth::generate_robot_secret()
        .trim_start_matches("wharf_")
        .chars()
        .take(24)
        .collect::<String>();
    println!("password: {generated}");
    Ok(generated)
}

async fn run_access(meta: &[String], command: AdminCommand) -> CliResult {
    use cluster_api::{AuthChange, MetaApi};
    let client = cluster_client::MetaClient::new(meta, RetryPolicy::default())?;
    let state = || async {
        client
            .auth_state(None)
            .await?
            .ok_or_else(|| "meta sent no access-control state".into())
            .map_err(|e: Box<dyn std::error::Error>| e)
    };
    let change = |change: AuthChange| async { client.change_auth(change).await };
    match command {
        AdminCommand::Cluster(_)
        | AdminCommand::Usage { .. }
        | AdminCommand::Quota(_)
        | AdminCommand::Retention(_)
        | AdminCommand::Placement(_)
        | AdminCommand::Proxy(_)
        | AdminCommand::Replication(_)
        | AdminCommand::Gc
        | AdminCommand::Fsck { .. } => unreachable!("handled by run"),
        AdminCommand::User(UserCommand::Add {
            name,
            admin,
            password_stdin,
        }) => {
            let password = password(password_stdin)?;
            let account = auth::new_user(&name, &password, admin, now_unix())?;
            change(AuthChange::PutAccount {
                account,
                replace: false,
            })
            .await?;
            println!(
                "user {name} created{}",
                if admin { " (administrator)" } else { "" }
            );
        }
        AdminCommand::User(UserCommand::Passwd {
            name,
            password_stdin,
        }) => {
            let current = state().await?;
            let existing = current
                .account(&name)
                .filter(|account| account.kind == cluster_api::AccountKind::User)
                .ok_or_else(|| format!("user {name} does not exist"))?;
            let password = password(password_stdin)?;
            let account = auth::new_user(&name, &password, existing.admin, existing.created_at)?;
            change(AuthChange::PutAccount {
                account,
                replace: true,
            })
            .await?;
            println!("password of {name} changed");
        }
        AdminCommand::User(UserCommand::Rm { name })
        | AdminCommand::Robot(RobotCommand::Rm { name }) => {
            change(AuthChange::DeleteAccount { name: name.clone() }).await?;
            println!(
                "account {name} removed; every gateway refuses it and its tokens within a second"
            );
        }
        AdminCommand::Robot(RobotCommand::Add {
            name,
            expires,
            description,
        }) => {
            let now = now_unix();
            let expires_at = expires
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .map(|secs| now.saturating_add(secs));
            let (account, secret) = auth::new_robot(&name, expires_at, &description, now)?;
            change(AuthChange::PutAccount {
                account,
                replace: false,
            })
            .await?;
            println!("robot {name} created; its secret (shown only now):");
            println!("{secret}");
        }
        AdminCommand::Accounts => {
            let current = state().await?;
            let accounts: Vec<_> = current.accounts.iter().map(auth::account_view).collect();
            println!("{}", serde_json::to_string_pretty(&accounts)?);
        }
        AdminCommand::Policy(PolicyCommand::Add {
            subject,
            repos,
            actions,
            id,
        }) => {
            let policy = auth::policy_from_parts(id, &subject, &repos, &actions)?;
            let id = policy.id.clone();
            change(AuthChange::PutPolicy(policy)).await?;
            println!(
                "policy {id}: {subject} may {} on {repos}",
                actions.join(",")
            );
        }
        AdminCommand::Policy(PolicyCommand::Rm { id }) => {
            change(AuthChange::DeletePolicy { id: id.clone() }).await?;
            println!("policy {id} removed");
        }
        AdminCommand::Policy(PolicyCommand::List) => {
            let current = state().await?;
            let policies: Vec<_> = current.policies.iter().map(auth::policy_view).collect();
            println!("{}", serde_json::to_string_pretty(&policies)?);
        }
        AdminCommand::Immutable(ImmutableCommand::Add { repos, tags, id }) => {
            let id = id.unwrap_or_else(|| auth::rule_id(&[&repos, &tags]));
            let rule = cluster_api::ImmutableTagRule {
                id: id.clone(),
                repositories: repos.clone(),
                tags: tags.clone(),
            };
            change(AuthChange::PutImmutableTagRule(rule)).await?;
            println!("rule {id}: tags {tags} in {repos} are immutable");
        }
        AdminCommand::Immutable(ImmutableCommand::Rm { id }) => {
            change(AuthChange::DeleteImmutableTagRule { id: id.clone() }).await?;
            println!("rule {id} removed");
        }
        AdminCommand::Immutable(ImmutableCommand::List) => {
            let current = state().await?;
            let rules: Vec<_> = current
                .immutable_tags
                .iter()
                .map(auth::immutable_rule_view)
                .collect();
            println!("{}", serde_json::to_string_pretty(&rules)?);
        }
        AdminCommand::Key(KeyCommand::Rotate) => {
            let key = auth::generate_signing_key(now_unix());
            let kid = key.kid.clone();
            change(AuthChange::AddSigningKey {
                key,
                only_if_none: false,
            })
            .await?;
            println!("signing key {kid} is now in use");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Ok(90 * 86_400));
        assert_eq!(parse_duration("12h"), Ok(12 * 3600));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("3600s"), Ok(3600));
        assert_eq!(parse_duration("42"), Ok(42));
        for bad in ["", "d", "0", "5w", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
