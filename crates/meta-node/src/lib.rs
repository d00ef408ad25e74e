//! A metadata voter: openraft wired to `meta-store`'s RocksDB log and state machine
//! ([`MetaNode`]), the Raft transport over gRPC ([`RaftGrpc`] serving, [`GrpcNetwork`] calling),
//! and [`RaftMeta`], which implements `cluster_api::MetaApi` by proposing commands and reading
//! linearizably.
//!
//! This crate owns the Raft wiring only. It must not know RocksDB (that is `meta-store`'s) nor
//! bind sockets: the binary adds [`MetaNode::raft_service`] (and `wharf_proto::MetaGrpc` over
//! [`MetaNode::api`]) to its own tonic router. A follower answers writes and reads with
//! `MetaError::Unavailable { leader }` naming the leader's advertised address; clients follow it.
//!
//! On disk: `<data_dir>/db/` is the RocksDB database (layout in `meta-store`).

mod api;
mod config;
mod error;
mod network;
mod node;
mod service;

pub use api::RaftMeta;
pub use config::MetaConfig;
pub use error::MetaNodeError;
pub use network::{GrpcNetwork, GrpcRaftClient};
pub use node::MetaNode;
pub use service::{RaftGrpc, RAFT_MESSAGE_LIMIT};
