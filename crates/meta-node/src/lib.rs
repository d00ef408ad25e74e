//! A metadata voter: openraft wired to `meta-store`'s RocksDB log and state machine
//! ([`MetaNode`]), the Raft transport over gRPC ([`RaftGrpc`] serving, [`GrpcNetwork`] calling),
//! and [`RaftMeta`], which implements `cluster_api::MetaApi` by proposing commands and reading
//! linearizably.
//!
//! This crate owns the Raft wiring only. It must not know RocksDB (that is `meta-store`'s) nor
//! bind sockets: the binary adds [`MetaNode::raft_service`], [`MetaNode::admin_service`] and
//! `wharf_proto::MetaGrpc` over [`MetaNode::api`] to its own tonic router. A follower answers writes and reads with
//! `MetaError::Unavailable { leader }` naming the leader's advertised address; clients follow it.
//!
//! The leader also keeps blob node heartbeats in memory and runs the failure detector
//! (`liveness`) and the garbage-collection sweep (`gc`), and every node publishes Raft and cluster-map gauges (`observe`). A node opened
//! with `join` seeds asks the cluster to add it ([`MetaAdmin::add_meta_node`] on the leader).
//!
//! Tests cut voters apart through [`MetaNode::faults`] ([`NetworkFaults`], consulted by both
//! ends of the Raft transport) and read each voter's own view of leadership with [`probe_vote`].
//!
//! Snapshots are triggered by `snapshots` (when the log since the last one is large enough
//! next to the state), not by openraft's fixed-interval policy.
//!
//! On disk: `<data_dir>/db/` is the RocksDB database and `<data_dir>/db/snapshots/` the snapshot
//! files (layout in `meta-store`).

mod admin;
mod api;
mod config;
mod error;
mod faults;
mod fetch_leases;
mod gc;
mod idle;
mod liveness;
mod network;
mod node;
mod observe;
mod placement_check;
mod probe;
mod read_barrier;
mod service;
mod snapshots;

pub use admin::{AdminGrpc, MetaAdmin};
pub use api::RaftMeta;
pub use config::MetaConfig;
pub use error::MetaNodeError;
pub use faults::NetworkFaults;
pub use gc::GcSettings;
pub use network::{GrpcNetwork, GrpcRaftClient};
pub use node::MetaNode;
pub use probe::{probe_vote, VoteView};
pub use service::{RaftGrpc, RAFT_MESSAGE_LIMIT};
