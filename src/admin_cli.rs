//! `wharf admin cluster ...`: operate a running cluster through the meta nodes' Admin service.

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
    let admin = AdminClient::new(&args.meta, RetryPolicy::default())?;
    let AdminCommand::Cluster(command) = args.command;
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
